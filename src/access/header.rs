//! The `Authorization` request header, read as HTTP Basic credentials (RFC 7617).
//!
//! The header is the one place a client's secret enters wheelgate, so it is parsed here once into
//! [`BasicCredentials`], whose password is a [`Secret`] (redacted in every `Debug` and `Display`),
//! and every way it can be malformed is a [`HeaderProblem`] that describes the header without
//! quoting it.

use base64::Engine as _;

use crate::secret::Secret;

/// A header longer than this is not credentials anyone configured (user names are at most 64
/// bytes; tokens at most a few hundred), and decoding it would only cost memory.
const MAX_HEADER_LEN: usize = 8 * 1024;

/// The user name and password (or token) of an HTTP Basic `Authorization` header.
#[derive(Debug)]
pub(crate) struct BasicCredentials {
    /// As sent: not yet checked against the user-name pattern. May be empty.
    pub username: String,
    /// As sent, and possibly empty.
    pub password: Secret,
}

/// Why an `Authorization` header cannot be read as HTTP Basic credentials. The messages describe
/// the header and never quote it, since it may hold a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderProblem {
    #[error("it uses another scheme than Basic, the only one wheelgate accepts")]
    NotBasic,
    #[error("its Basic credentials are not valid base64")]
    NotBase64,
    #[error("its Basic credentials are not UTF-8 text")]
    NotUtf8,
    #[error("its Basic credentials have no ':' between the user name and the password")]
    NoColon,
    #[error("it is longer than {MAX_HEADER_LEN} bytes")]
    TooLong,
}

impl BasicCredentials {
    /// Reads the value of an `Authorization` header: `Basic <base64 of user:password>`, the scheme
    /// in any case (RFC 9110 §11.1), surrounding whitespace ignored. The user name ends at the
    /// first `:`; the password is the rest, colons included.
    pub(crate) fn parse(value: &[u8]) -> Result<BasicCredentials, HeaderProblem> {
        if value.len() > MAX_HEADER_LEN {
            return Err(HeaderProblem::TooLong);
        }
        let value = value.trim_ascii();
        let split = value
            .iter()
            .position(|b| *b == b' ' || *b == b'\t')
            .ok_or(HeaderProblem::NotBasic)?;
        let (scheme, encoded) = value.split_at(split);
        if !scheme.eq_ignore_ascii_case(b"basic") {
            return Err(HeaderProblem::NotBasic);
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim_ascii())
            .map_err(|_| HeaderProblem::NotBase64)?;
        let text = String::from_utf8(decoded).map_err(|_| HeaderProblem::NotUtf8)?;
        let (username, password) = text.split_once(':').ok_or(HeaderProblem::NoColon)?;
        Ok(BasicCredentials {
            username: username.to_owned(),
            password: Secret::new(password.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(credentials: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
        .into_bytes()
    }

    #[test]
    fn reads_user_and_password() {
        let credentials = BasicCredentials::parse(&basic("ci:s3cret:with:colons")).unwrap();
        assert_eq!(credentials.username, "ci");
        assert_eq!(credentials.password.expose(), "s3cret:with:colons");
        let empty = BasicCredentials::parse(&basic(":")).unwrap();
        assert_eq!((empty.username.as_str(), empty.password.expose()), ("", ""));
    }

    #[test]
    fn scheme_is_case_insensitive_and_whitespace_is_ignored() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("ci:pw");
        for value in [
            format!("basic {encoded}"),
            format!("BASIC  {encoded} "),
            format!(" Basic\t{encoded}"),
        ] {
            let credentials = BasicCredentials::parse(value.as_bytes()).unwrap();
            assert_eq!(credentials.password.expose(), "pw", "{value}");
        }
    }

    #[test]
    fn malformed_headers_are_named_without_quoting_them() {
        let cases: [(&[u8], HeaderProblem); 8] = [
            (b"Bearer abc.def.ghi", HeaderProblem::NotBasic),
            (b"Basic", HeaderProblem::NotBasic),
            (b"", HeaderProblem::NotBasic),
            (b"Basicx Y2k6cHc=", HeaderProblem::NotBasic),
            (b"Basic not*base64!", HeaderProblem::NotBase64),
            (b"Basic Y2k6cHc", HeaderProblem::NotBase64),
            (b"Basic Y2lwdw==", HeaderProblem::NoColon),
            // "ci:" followed by the bytes ff fe.
            (b"Basic Y2k6//4=", HeaderProblem::NotUtf8),
        ];
        for (value, expected) in cases {
            let problem = BasicCredentials::parse(value).unwrap_err();
            assert_eq!(problem, expected, "{}", String::from_utf8_lossy(value));
        }
        let long = [b'a'; MAX_HEADER_LEN + 1];
        assert_eq!(
            BasicCredentials::parse(&long).unwrap_err(),
            HeaderProblem::TooLong
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        let credentials = BasicCredentials::parse(&basic("ci:hunter2")).unwrap();
        let shown = format!("{credentials:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("ci"),
            "{shown}"
        );
    }
}
