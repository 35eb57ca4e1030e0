//! S3 requests signed with AWS Signature Version 4, made by curl (`--aws-sigv4`), path-style, and
//! the reading of ListObjectsV2 answers.
//!
//! curl signs the path and query exactly as given, so they are encoded here the way SigV4's
//! canonical request expects: every byte but `A-Z a-z 0-9 - _ . ~` as `%XX`, query parameters in
//! name order. The payload is sent unsigned (`x-amz-content-sha256: UNSIGNED-PAYLOAD`), which S3
//! allows and saves hashing bodies in the harness.

use std::io::Write;
use std::process::{Command, Stdio};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;

/// What SigV4 leaves unencoded in a path segment or a query value.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A request of the harness never legitimately takes longer than this.
const REQUEST_TIMEOUT_SECS: &str = "60";

/// An access key pair of the S3 server.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// Where requests go and how they are signed.
#[derive(Debug, Clone)]
pub struct Signer {
    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub endpoint: String,
    pub region: String,
    pub credentials: Credentials,
}

/// The server's answer.
#[derive(Debug)]
pub struct S3Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl S3Response {
    /// The body as text, for failure messages (S3 errors are XML).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// curl could not complete the exchange.
#[derive(Debug)]
pub struct CurlFailure {
    /// curl's exit status (7: could not connect); None when it was killed.
    pub exit_code: Option<i32>,
    pub message: String,
}

impl CurlFailure {
    /// Whether nothing listened on the endpoint (the connection was refused).
    pub fn is_connection_refused(&self) -> bool {
        self.exit_code == Some(7)
    }
}

impl Signer {
    /// `method <path>` with `headers` and, if any, `body`. `path` is already encoded (see
    /// `object_path`).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<S3Response, CurlFailure> {
        let mut command = Command::new("curl");
        command
            .args(["--silent", "--show-error", "--path-as-is"])
            .args(["--max-time", REQUEST_TIMEOUT_SECS])
            .args(["--request", method])
            .arg("--aws-sigv4")
            .arg(format!("aws:amz:{}:s3", self.region))
            .arg("--user")
            .arg(format!(
                "{}:{}",
                self.credentials.access_key_id, self.credentials.secret_access_key
            ))
            .args(["--header", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
            .args(["--output", "-", "--write-out", "%{http_code}"]);
        for (name, value) in headers {
            command.arg("--header").arg(format!("{name}: {value}"));
        }
        if body.is_some() {
            // `@-` reads the whole body before connecting, so it goes with a Content-Length.
            command
                .args(["--header", "content-type: application/octet-stream"])
                .args(["--data-binary", "@-"]);
        }
        command
            .arg(format!("{}{path}", self.endpoint))
            .stdin(if body.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot run curl (is it installed? .ci/run installs it): {e}")
        });
        if let (Some(body), Some(mut stdin)) = (body, child.stdin.take()) {
            // curl reads all of its input before it writes anything, so this cannot deadlock.
            stdin
                .write_all(body)
                .unwrap_or_else(|e| panic!("cannot hand {method} {path}'s body to curl: {e}"));
        }
        let output = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("curl for {method} {path} vanished: {e}"));
        if !output.status.success() {
            return Err(CurlFailure {
                exit_code: output.status.code(),
                message: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        // The body, then the three digits of `--write-out`.
        let mut body = output.stdout;
        let code_at = body.len().saturating_sub(3);
        let status = std::str::from_utf8(&body[code_at..])
            .ok()
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("curl printed no status for {method} {path}"));
        body.truncate(code_at);
        Ok(S3Response { status, body })
    }

    /// As `request`, panicking with curl's message when the exchange fails.
    pub fn expect_answer(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> S3Response {
        self.request(method, path, headers, body)
            .unwrap_or_else(|failure| {
                panic!(
                    "{method} {}{path}: curl failed ({:?}): {}",
                    self.endpoint, failure.exit_code, failure.message
                )
            })
    }

    /// Every object under `prefix` in `bucket`, as (key, size) in key order, page after page.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
        let mut objects = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            // Parameters in name order, as the canonical request has them.
            let mut query = String::new();
            if let Some(token) = &continuation {
                query.push_str(&format!("continuation-token={}&", encode(token)));
            }
            query.push_str(&format!("list-type=2&prefix={}", encode(prefix)));
            let path = format!("/{}?{query}", encode(bucket));
            let answer = self.expect_answer("GET", &path, &[], None);
            assert_eq!(
                answer.status,
                200,
                "listing {bucket}/{prefix}: {}",
                answer.text()
            );
            let page: ListBucketResult =
                quick_xml::de::from_str(&answer.text()).unwrap_or_else(|e| {
                    panic!(
                        "listing {bucket}/{prefix}: unreadable answer ({e}): {}",
                        answer.text()
                    )
                });
            objects.extend(page.contents.into_iter().map(|c| (c.key, c.size)));
            match page.next_continuation_token {
                Some(token) if page.is_truncated => continuation = Some(token),
                _ => return objects,
            }
        }
    }
}

/// The encoded path of `key` in `bucket` (slashes between key segments stay as they are).
pub fn object_path(bucket: &str, key: &str) -> String {
    let segments: Vec<String> = key.split('/').map(encode).collect();
    format!("/{}/{}", encode(bucket), segments.join("/"))
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, UNRESERVED).to_string()
}

/// The parts of a ListObjectsV2 answer the harness reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListBucketResult {
    #[serde(default)]
    contents: Vec<ListedObject>,
    is_truncated: bool,
    next_continuation_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedObject {
    key: String,
    size: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_as_sigv4_signs_them() {
        assert_eq!(
            object_path("bkt", "dir/a b+c=~._-.whl"),
            "/bkt/dir/a%20b%2Bc%3D~._-.whl"
        );
        assert_eq!(encode("dir/"), "dir%2F");
    }

    #[test]
    fn listings_are_read() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>d/</Prefix><IsTruncated>true</IsTruncated><Contents><Key>d/a&amp;b</Key><Size>6</Size></Contents><Contents><Key>d/c</Key><Size>0</Size></Contents><NextContinuationToken>t1</NextContinuationToken></ListBucketResult>"#;
        let page: ListBucketResult = quick_xml::de::from_str(xml).expect("readable");
        let keys: Vec<_> = page
            .contents
            .iter()
            .map(|c| (c.key.as_str(), c.size))
            .collect();
        assert_eq!(keys, [("d/a&b", 6), ("d/c", 0)]);
        assert!(page.is_truncated);
        assert_eq!(page.next_continuation_token.as_deref(), Some("t1"));
        let empty = r#"<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>"#;
        let page: ListBucketResult = quick_xml::de::from_str(empty).expect("readable");
        assert!(page.contents.is_empty());
    }
}
