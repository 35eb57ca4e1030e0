//! Small, bounded HTTP clients for the tests.
//!
//! `request` is a hyper client that never follows redirects and reports a body that broke off
//! separately from the bytes received, because the integrity test must tell "the transfer failed"
//! apart from "a complete body arrived". `get_streaming` hands the body to a callback as it
//! arrives, so that a test can watch a transfer in progress (first bytes before the upstream is
//! done, a kill at 40 MiB) and hash 200 MiB without keeping it. `raw_get` writes the request line by hand over TCP so that
//! malformed paths reach wheelgate exactly as written, with nothing normalising them on the way.
//!
//! The upload tests need requests with bodies, written by hand too: `raw_request` sends a body
//! (a legacy-API upload built with `Multipart`) and returns the answer with its reason phrase,
//! even when wheelgate answers before it has read the whole body (a 401 or a 413 may come early);
//! `begin_request` sends the head and then the body piece by piece at the test's pace, so that a
//! test can stop half-way (and kill the server, or wait for a 413 that must come while the body is
//! still incomplete).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Upper bound for the response head, and for any pause in the body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The header in which wheelgate says how it obtained a page or a file.
pub const CACHE_HEADER: &str = "x-wheelgate-cache";

/// What a request produced.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body bytes received (all of them, or those before the transfer broke off).
    pub body: Vec<u8>,
    /// Set when the body did not arrive completely (connection aborted, length not reached, timeout).
    pub body_error: Option<String>,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header as text, or None when absent or not visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// What `X-Wheelgate-Cache` says (hit, miss, stale, revalidated), or None.
    pub fn cache(&self) -> Option<&str> {
        self.header(CACHE_HEADER)
    }

    /// Every header, `name: value` per line, for leak checks and failure messages.
    pub fn headers_text(&self) -> String {
        self.headers
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())))
            .collect()
    }

    /// The body parsed as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("expected a JSON body ({e}), got:\n{}", self.text()))
    }

    /// The body, asserting it arrived whole with a 200.
    pub fn expect_ok(&self, what: &str) -> &[u8] {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "{what}: unexpected status; body:\n{}",
            self.text()
        );
        assert!(
            self.body_error.is_none(),
            "{what}: body broke off: {:?}",
            self.body_error
        );
        &self.body
    }
}

/// `GET url` with the given headers.
pub fn get(url: &str, headers: &[(&str, &str)]) -> HttpResponse {
    request(Method::GET, url, headers)
}

/// `GET url`, following redirects (at most five) the way pip and uv do. Returns the final
/// response and every URL requested, the first one included, so that a test can show both where
/// a request ended and that it was redirected on the way.
pub fn get_following(url: &str, headers: &[(&str, &str)]) -> (HttpResponse, Vec<String>) {
    const MAX_REDIRECTS: usize = 5;
    let mut visited = vec![url.to_owned()];
    loop {
        let current = visited.last().cloned().unwrap_or_default();
        let response = get(&current, headers);
        let location = match response.status.as_u16() {
            301 | 302 | 303 | 307 | 308 => response.header("location").map(str::to_owned),
            _ => None,
        };
        let Some(location) = location else {
            return (response, visited);
        };
        assert!(
            visited.len() <= MAX_REDIRECTS,
            "more than {MAX_REDIRECTS} redirects from {url}: {visited:?}"
        );
        visited.push(super::resolve(&current, &location).to_string());
    }
}

/// `HEAD url` with the given headers.
pub fn head(url: &str, headers: &[(&str, &str)]) -> HttpResponse {
    request(Method::HEAD, url, headers)
}

/// One request, bounded by `REQUEST_TIMEOUT`; a failure before the response head panics with the URL.
pub fn request(method: Method, url: &str, headers: &[(&str, &str)]) -> HttpResponse {
    try_request(method.clone(), url, headers)
        .unwrap_or_else(|e| panic!("{method} {url} failed before a response arrived: {e}"))
}

/// `GET url`, reporting a connection that ends before the response head as an error instead of
/// panicking (a server that aborts a transfer before its first byte does exactly that).
pub fn try_get(url: &str, headers: &[(&str, &str)]) -> Result<HttpResponse, String> {
    try_request(Method::GET, url, headers)
}

fn try_request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<HttpResponse, String> {
    let mut body = Vec::new();
    let streamed = streaming_request(method, url, headers, &mut |data: &[u8]| {
        body.extend_from_slice(data)
    })?;
    Ok(HttpResponse {
        status: streamed.status,
        headers: streamed.headers,
        body,
        body_error: streamed.body_error,
    })
}

/// What a streamed request produced; the body went to the callback.
#[derive(Debug)]
pub struct StreamedResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// How many body bytes arrived.
    pub received: u64,
    /// Set when the body did not arrive completely (connection aborted, length not reached, stall).
    pub body_error: Option<String>,
}

impl StreamedResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn cache(&self) -> Option<&str> {
        self.header(CACHE_HEADER)
    }
}

/// `GET url`, handing every body chunk to `on_data` as it arrives. Err when the connection ends
/// before the response head; the head is awaited at most `REQUEST_TIMEOUT`, and so is each pause
/// in the body.
pub fn get_streaming(
    url: &str,
    headers: &[(&str, &str)],
    on_data: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<StreamedResponse, String> {
    streaming_request(Method::GET, url, headers, on_data)
}

fn streaming_request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    on_data: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<StreamedResponse, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot build a runtime for the HTTP client: {e}"));
    runtime.block_on(send(method, url, headers, on_data))
}

async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    on_data: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<StreamedResponse, String> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    let mut builder = Request::builder().method(method.clone()).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(Empty::new())
        .map_err(|e| format!("invalid request: {e}"))?;
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, client.request(request)).await {
        Ok(response) => response.map_err(|e| format!("{e:?}"))?,
        Err(_) => panic!("{method} {url}: no response head within {REQUEST_TIMEOUT:?}"),
    };
    let (parts, mut body) = response.into_parts();
    let mut received = 0u64;
    let mut body_error = None;
    loop {
        match tokio::time::timeout(REQUEST_TIMEOUT, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    received += data.len() as u64;
                    on_data(&data);
                }
            }
            Ok(Some(Err(e))) => {
                body_error = Some(format!("{e:?}"));
                break;
            }
            Ok(None) => break,
            Err(_) => {
                body_error = Some(format!("body stalled for {REQUEST_TIMEOUT:?}"));
                break;
            }
        }
    }
    Ok(StreamedResponse {
        status: parts.status,
        headers: parts.headers,
        received,
        body_error,
    })
}

/// What a hand-written request produced.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub reason_phrase: String,
    /// Header lines, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked when the response was chunked.
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `GET <target> HTTP/1.1` byte for byte with `Connection: close` and reads the whole answer.
pub fn raw_get(addr: SocketAddr, target: &[u8]) -> Result<RawResponse, String> {
    raw_request(addr, "GET", target, &[], &[])
}

/// The `Authorization` value for HTTP Basic credentials.
pub fn basic_auth(username: &str, password: &str) -> String {
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    format!("Basic {encoded}")
}

/// Sends `<method> <target> HTTP/1.1` with `headers`, `Connection: close` and, when `body` is not
/// empty, the body with its `Content-Length`; returns the answer. The body is written while the
/// answer is read, so an answer that comes before the whole body was accepted (wheelgate refusing
/// an upload early) is still returned; the write error that may follow is not an error here.
pub fn raw_request(
    addr: SocketAddr,
    method: &str,
    target: &[u8],
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<RawResponse, String> {
    let length = (!body.is_empty() || method != "GET").then_some(body.len() as u64);
    let mut request = begin_request(addr, method, target, headers, length)?;
    // A refusal may close the connection before the body is through: the answer decides.
    let _ = request.send(body);
    request.finish()
}

/// How a hand-written request frames its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length: n` (the length announced, whatever is sent in the end).
    Length(u64),
    /// `Transfer-Encoding: chunked`; each `send` is one chunk.
    Chunked,
}

/// A request whose head is sent and whose body goes out piece by piece; a thread reads the answer
/// as soon as it comes. Dropping it closes the connection.
pub struct PartialRequest {
    addr: SocketAddr,
    stream: TcpStream,
    framing: Option<Framing>,
    /// Body bytes written so far (chunk framing not counted).
    pub sent: u64,
    answer: mpsc::Receiver<Result<RawResponse, String>>,
}

/// Connects and sends the head `<method> <target> HTTP/1.1` with `Host`, `Connection: close`,
/// `headers`, and the framing of the body to come (`Content-Length` when `content_length` is
/// Some, chunked when it is None and the method is not GET or HEAD).
pub fn begin_request(
    addr: SocketAddr,
    method: &str,
    target: &[u8],
    headers: &[(&str, &str)],
    content_length: Option<u64>,
) -> Result<PartialRequest, String> {
    let framing = match content_length {
        Some(length) => Some(Framing::Length(length)),
        None if matches!(method, "GET" | "HEAD") => None,
        None => Some(Framing::Chunked),
    };
    begin_framed(addr, method, target, headers, framing)
}

/// As `begin_request`, with the framing given outright.
pub fn begin_framed(
    addr: SocketAddr,
    method: &str,
    target: &[u8],
    headers: &[(&str, &str)],
    framing: Option<Framing>,
) -> Result<PartialRequest, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    stream
        .set_write_timeout(Some(REQUEST_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut head = method.as_bytes().to_vec();
    head.push(b' ');
    head.extend_from_slice(target);
    head.extend_from_slice(
        format!(
            " HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: wheelgate-tests\r\nConnection: close\r\n"
        )
        .as_bytes(),
    );
    for (name, value) in headers {
        head.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    match framing {
        Some(Framing::Length(length)) => {
            head.extend_from_slice(format!("Content-Length: {length}\r\n").as_bytes())
        }
        Some(Framing::Chunked) => head.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        None => {}
    }
    head.extend_from_slice(b"\r\n");
    stream
        .write_all(&head)
        .map_err(|e| format!("write to {addr}: {e}"))?;
    let mut reader = stream
        .try_clone()
        .map_err(|e| format!("cannot clone the connection to {addr}: {e}"))?;
    let (sender, answer) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(read_answer(&mut reader));
    });
    Ok(PartialRequest {
        addr,
        stream,
        framing,
        sent: 0,
        answer,
    })
}

impl PartialRequest {
    /// Writes `data` as more of the body (one chunk when chunked). Err when the connection no
    /// longer takes it (the server answered and closed, or died).
    pub fn send(&mut self, data: &[u8]) -> Result<(), String> {
        if data.is_empty() {
            return Ok(());
        }
        let addr = self.addr;
        let written = match self.framing {
            Some(Framing::Chunked) => {
                let mut frame = format!("{:x}\r\n", data.len()).into_bytes();
                frame.extend_from_slice(data);
                frame.extend_from_slice(b"\r\n");
                self.stream.write_all(&frame)
            }
            _ => self.stream.write_all(data),
        };
        written.map_err(|e| format!("write to {addr} after {} body bytes: {e}", self.sent))?;
        self.sent += data.len() as u64;
        Ok(())
    }

    /// The answer, if one arrives within `limit` (it may come while the body is incomplete).
    /// None when nothing came in time; Some(Err) when the connection ended without an answer.
    pub fn answer_within(&self, limit: Duration) -> Option<Result<RawResponse, String>> {
        match self.answer.recv_timeout(limit) {
            Ok(answer) => Some(answer),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Some(Err("the reading thread ended without an answer".to_owned()))
            }
        }
    }

    /// Ends a chunked body (a length-framed one is complete when its bytes are sent) and waits
    /// for the answer.
    pub fn finish(mut self) -> Result<RawResponse, String> {
        if self.framing == Some(Framing::Chunked) {
            // As for `send`: an answer may already be there, and it decides.
            let _ = self.stream.write_all(b"0\r\n\r\n");
        }
        let addr = self.addr;
        self.answer_within(REQUEST_TIMEOUT)
            .unwrap_or_else(|| Err(format!("no answer from {addr} within {REQUEST_TIMEOUT:?}")))
    }
}

impl Drop for PartialRequest {
    fn drop(&mut self) {
        // Also ends the reading thread, whose read then returns.
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Reads one answer: the head, then the body as its framing says (`Content-Length`, chunked, or
/// up to the end of the connection). A connection that fails after a complete head still yields
/// the answer, with the body received so far.
fn read_answer(stream: &mut TcpStream) -> Result<RawResponse, String> {
    let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT * 4));
    let mut answer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if answer_complete(&answer) {
            break;
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            // A reset after the head (wheelgate closing on a body it refused): keep the answer.
            Err(_) if answer.windows(4).any(|w| w == b"\r\n\r\n") => break,
            Err(e) => {
                return Err(format!(
                    "the connection failed before a complete answer head ({e}); received {:?}",
                    String::from_utf8_lossy(&answer)
                ))
            }
        }
    }
    parse_raw_response(&answer)
}

/// Whether `answer` holds a whole response whose end is known without the connection closing.
fn answer_complete(answer: &[u8]) -> bool {
    let Some(split) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    let body = &answer[split + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(0);
    if (100..200).contains(&status) {
        // An interim answer (100 Continue): the real one follows.
        return false;
    }
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match name.trim() {
            "content-length" => {
                return value
                    .trim()
                    .parse::<usize>()
                    .is_ok_and(|length| body.len() >= length)
            }
            "transfer-encoding" if value.contains("chunked") => {
                return body.ends_with(b"0\r\n\r\n")
            }
            _ => {}
        }
    }
    false
}

fn parse_raw_response(answer: &[u8]) -> Result<RawResponse, String> {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {:?}", String::from_utf8_lossy(answer)))?;
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let rest = &answer[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut fields = status_line.splitn(3, ' ');
    let _version = fields.next();
    let status = fields
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let reason_phrase = fields.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Ok(RawResponse {
        status,
        reason_phrase,
        headers,
        body,
    })
}

/// Decodes a chunked body leniently: whatever complete chunks arrived.
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            break;
        };
        data = &data[line_end + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
    out
}

/// A `multipart/form-data` body (RFC 7578), as the legacy upload API takes it.
pub struct Multipart {
    boundary: String,
    body: Vec<u8>,
}

impl Default for Multipart {
    fn default() -> Self {
        Self::new()
    }
}

impl Multipart {
    /// An empty form with a random boundary.
    pub fn new() -> Multipart {
        Multipart {
            boundary: format!("wheelgate-tests-{:032x}", rand::random::<u128>()),
            body: Vec::new(),
        }
    }

    /// A text field.
    pub fn text(&mut self, name: &str, value: &str) -> &mut Multipart {
        self.body.extend_from_slice(
            format!(
                "--{}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n",
                self.boundary
            )
            .as_bytes(),
        );
        self
    }

    /// A file field.
    pub fn file(&mut self, name: &str, filename: &str, content: &[u8]) -> &mut Multipart {
        self.body.extend_from_slice(
            format!(
                "--{}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n",
                self.boundary
            )
            .as_bytes(),
        );
        self.body.extend_from_slice(content);
        self.body.extend_from_slice(b"\r\n");
        self
    }

    /// The `Content-Type` header value.
    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// The whole body, closing delimiter included.
    pub fn body(&self) -> Vec<u8> {
        let mut body = self.body.clone();
        body.extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        body
    }
}

/// `GET url` over HTTP/2 with prior knowledge (no upgrade dance, as gRPC-style clients and
/// `curl --http2-prior-knowledge` do): returns the status, the protocol version the response came
/// with, and the body.
pub fn get_http2(url: &str) -> Result<(StatusCode, http::Version, Vec<u8>), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot build a runtime for the HTTP/2 client: {e}"))?;
    runtime.block_on(async {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        let request = Request::get(url)
            .body(Empty::new())
            .map_err(|e| format!("invalid request: {e}"))?;
        let response = tokio::time::timeout(REQUEST_TIMEOUT, client.request(request))
            .await
            .map_err(|_| format!("GET {url} over HTTP/2: no response within {REQUEST_TIMEOUT:?}"))?
            .map_err(|e| format!("GET {url} over HTTP/2 failed: {e:?}"))?;
        let (status, version) = (response.status(), response.version());
        let body = tokio::time::timeout(REQUEST_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| format!("GET {url} over HTTP/2: body stalled"))?
            .map_err(|e| format!("GET {url} over HTTP/2: body failed: {e}"))?
            .to_bytes();
        Ok((status, version, body.to_vec()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_responses_are_parsed_and_dechunked() {
        let answer = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let parsed = parse_raw_response(answer).expect("parses");
        assert_eq!(parsed.status, 400);
        assert_eq!(parsed.reason_phrase, "Bad Request");
        assert_eq!(parsed.header("content-type"), Some("text/plain"));
        assert_eq!(parsed.text(), "hello world");
    }

    #[test]
    fn answers_are_complete_by_their_framing() {
        assert!(!answer_complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
        ));
        assert!(!answer_complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab"
        ));
        assert!(answer_complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
        ));
        assert!(answer_complete(
            b"HTTP/1.1 413 Payload Too Large\r\ntransfer-encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n\r\n"
        ));
        assert!(!answer_complete(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
        ));
        assert!(!answer_complete(b"HTTP/1.1 200 OK\r\n\r\nuntil the end"));
    }

    #[test]
    fn multipart_bodies_hold_their_parts() {
        let mut form = Multipart::new();
        form.text(":action", "file_upload")
            .file("content", "a.whl", b"PK\x03\x04");
        let body = String::from_utf8_lossy(&form.body()).into_owned();
        let boundary = form
            .content_type()
            .strip_prefix("multipart/form-data; boundary=")
            .expect("boundary")
            .to_owned();
        assert!(body.starts_with(&format!("--{boundary}\r\n")));
        assert!(body.ends_with(&format!("\r\n--{boundary}--\r\n")));
        assert!(body.contains("name=\":action\"\r\n\r\nfile_upload\r\n"));
        assert!(body.contains("name=\"content\"; filename=\"a.whl\""));
        assert_eq!(basic_auth("reader", "pw"), "Basic cmVhZGVyOnB3");
    }

    #[test]
    fn plain_bodies_are_kept() {
        let parsed = parse_raw_response(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nnop")
            .expect("parses");
        assert_eq!((parsed.status, parsed.text().as_str()), (404, "nop"));
        assert!(parse_raw_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
