//! `[server]` and `[server.tls]`: where wheelgate listens, which repository `/simple/` serves,
//! the public URL and the server-wide limits.

use std::net::SocketAddr;
use std::time::Duration;

use toml::Spanned;

use super::{base_url, Key, Parser};
use crate::config::raw::{RawServer, RawTls, Scalar};
use crate::config::{ConfigError, Problem, RepoName, RepositoryConfig, ServerConfig, TlsConfig};

/// The default listen address is 127.0.0.1 on this port.
const DEFAULT_PORT: u16 = 3141;
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
const DEFAULT_MAX_UPLOAD_SIZE: u64 = 1 << 30;
/// Above the largest files public indexes serve (GPU wheels of a few GiB), far below a disk.
const DEFAULT_MAX_FILE_SIZE: u64 = 8 << 30;
const DEFAULT_MAX_CONCURRENT_FETCHES: i64 = 64;
/// An upper bound that keeps a typo (an extra zero or two) from opening thousands of sockets.
const MAX_CONCURRENT_FETCHES: i64 = 65_536;
const DEFAULT_REQUEST_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an upload body may pause; nginx's `client_body_timeout` is 60 s too.
const DEFAULT_UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Far above any file limit a kernel grants by default; a larger number is a typo.
const MAX_CONNECTIONS: i64 = 1 << 24;

impl Parser<'_> {
    pub(super) fn server(
        &self,
        raw: Option<&RawServer>,
        repositories: &[RepositoryConfig],
    ) -> Result<ServerConfig, ConfigError> {
        let fallback = RawServer::default();
        let fields = raw.unwrap_or(&fallback);
        let key = |name| Key {
            section: "[server]",
            name,
        };

        let listen = match &fields.listen {
            None => SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            Some(field) => {
                let text = self.text(field, key("listen"))?;
                text.trim()
                    .parse()
                    .map_err(|error: std::net::AddrParseError| {
                        self.at(
                            field,
                            key("listen"),
                            Problem::ListenAddress {
                                value: text.clone(),
                                reason: error.to_string(),
                            },
                        )
                    })?
            }
        };

        let defined = || {
            repositories
                .iter()
                .map(|repo| repo.name.to_string())
                .collect::<Vec<_>>()
        };
        let default_repository = match &fields.default_repository {
            Some(field) => {
                let text = self.text(field, key("default_repository"))?;
                let name = RepoName::parse(&text).map_err(|error| {
                    self.at(field, key("default_repository"), Problem::RepoName(error))
                })?;
                if !repositories.iter().any(|repo| repo.name == name) {
                    return Err(self.at(
                        field,
                        key("default_repository"),
                        Problem::UnknownDefaultRepository {
                            name: name.to_string(),
                            defined: defined(),
                        },
                    ));
                }
                name
            }
            None => match repositories {
                [only] => only.name.clone(),
                _ => {
                    // Point at [server] where the key belongs, or else at the second repository,
                    // the one that made the choice ambiguous.
                    let line = self
                        .table_line("server")
                        .or_else(|| repositories.get(1).map(|repo| repo.line));
                    return Err(self.invalid(
                        line,
                        key("default_repository"),
                        Problem::AmbiguousDefaultRepository { defined: defined() },
                    ));
                }
            },
        };

        let public_url = match &fields.public_url {
            None => None,
            Some(field) => {
                let text = self.text(field, key("public_url"))?;
                if text.trim().is_empty() {
                    None
                } else {
                    Some(
                        base_url(&text)
                            .map_err(|problem| self.at(field, key("public_url"), problem))?,
                    )
                }
            }
        };

        let tls = match &fields.tls {
            None => None,
            Some(tls) => Some(self.tls(tls)?),
        };

        let max_concurrent_fetches = self.integer(
            fields.max_concurrent_fetches.as_ref(),
            key("max_concurrent_fetches"),
            DEFAULT_MAX_CONCURRENT_FETCHES,
            1,
            MAX_CONCURRENT_FETCHES,
        )?;
        Ok(ServerConfig {
            listen,
            default_repository,
            public_url,
            tls,
            shutdown_grace: self.duration(
                fields.shutdown_grace.as_ref(),
                key("shutdown_grace"),
                DEFAULT_SHUTDOWN_GRACE,
                false,
            )?,
            max_upload_size: self.size(
                fields.max_upload_size.as_ref(),
                key("max_upload_size"),
                DEFAULT_MAX_UPLOAD_SIZE,
                Some("; uploads larger than this are refused, so it must allow at least one byte"),
            )?,
            // The range check above keeps this conversion lossless.
            max_concurrent_fetches: usize::try_from(max_concurrent_fetches).unwrap_or(1),
            request_header_timeout: self.timeout(
                fields.request_header_timeout.as_ref(),
                "request_header_timeout",
                DEFAULT_REQUEST_HEADER_TIMEOUT,
                "; every connection would be closed before its request arrived, so give clients \
                 some seconds, e.g. \"30s\"",
            )?,
            upload_idle_timeout: self.timeout(
                fields.upload_idle_timeout.as_ref(),
                "upload_idle_timeout",
                DEFAULT_UPLOAD_IDLE_TIMEOUT,
                "; every upload would be abandoned at its first pause, so give clients some \
                 seconds, e.g. \"60s\"",
            )?,
            max_connections: match &fields.max_connections {
                None => None,
                Some(field) => {
                    let max =
                        self.integer(Some(field), key("max_connections"), 1, 1, MAX_CONNECTIONS)?;
                    // The range check keeps this conversion lossless.
                    Some(usize::try_from(max).unwrap_or(1))
                }
            },
            max_file_size: self.size(
                fields.max_file_size.as_ref(),
                key("max_file_size"),
                DEFAULT_MAX_FILE_SIZE,
                Some("; files larger than this are refused, so it must allow at least one byte"),
            )?,
        })
    }

    /// A `[server]` duration that must not be zero, with `hint` saying why.
    fn timeout(
        &self,
        field: Option<&Spanned<Scalar>>,
        name: &'static str,
        default: Duration,
        hint: &'static str,
    ) -> Result<Duration, ConfigError> {
        let key = Key {
            section: "[server]",
            name,
        };
        let timeout = self.duration(field, key, default, false)?;
        match field {
            Some(field) if timeout.is_zero() => Err(self.at(field, key, Problem::Zero { hint })),
            _ => Ok(timeout),
        }
    }

    fn tls(&self, fields: &RawTls) -> Result<TlsConfig, ConfigError> {
        let key = |name| Key {
            section: "[server.tls]",
            name,
        };
        let required = |field: &Option<Spanned<Scalar>>, name: &'static str, hint: &'static str| {
            let field = field.as_ref().ok_or_else(|| {
                let line = self
                    .sibling_line(&[fields.cert_file.as_ref(), fields.key_file.as_ref()])
                    .or_else(|| self.table_line("server.tls"));
                self.invalid(line, key(name), Problem::MissingKey { hint })
            })?;
            self.existing_file(field, key(name), hint)
        };
        Ok(TlsConfig {
            cert_file: required(
                &fields.cert_file,
                "cert_file",
                "give the PEM certificate chain, e.g. cert_file = \"tls.crt\"",
            )?,
            key_file: required(
                &fields.key_file,
                "key_file",
                "give the PEM private key, e.g. key_file = \"tls.key\"",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn default_repository_must_be_defined() {
        let error = error_of(&format!(
            "[server]\ndefault_repository = \"all\"\n{MINIMAL}"
        ));
        assert_eq!(error.line(), Some(2));
        let message = error.to_string();
        assert!(
            message.contains("no repository is named \"all\"") && message.contains("are pypi"),
            "{message}"
        );
    }

    #[test]
    fn default_repository_is_required_with_several_repositories() {
        let second = MINIMAL.replace("pypi", "corp");
        let error = error_of(&format!("[server]\n{MINIMAL}{second}"));
        assert_eq!(error.line(), Some(1));
        assert!(error.to_string().contains("one of pypi, corp"), "{error}");
        let config = parse_text(&format!(
            "[server]\ndefault_repository = \"corp\"\n{MINIMAL}{second}"
        ))
        .unwrap();
        assert_eq!(config.server.default_repository.as_str(), "corp");
        assert!(config
            .repository(&RepoName::parse("corp").unwrap())
            .is_some());
        assert!(config
            .repository(&RepoName::parse("other").unwrap())
            .is_none());
    }

    #[test]
    fn public_url_is_normalised() {
        let config = parse_text(&format!(
            "[server]\npublic_url = \"https://pypi.example.invalid/mirror\"\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(
            config.server.public_url.map(String::from),
            Some("https://pypi.example.invalid/mirror/".to_owned())
        );
    }

    #[test]
    fn tls_files_must_exist_and_resolve_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tls.crt"), "").unwrap();
        std::fs::write(dir.path().join("tls.key"), "").unwrap();
        let origin = dir.path().join("proxy.toml").display().to_string();
        let source =
            format!("[server.tls]\ncert_file = \"tls.crt\"\nkey_file = \"tls.key\"\n{MINIMAL}");
        let config = parse(&source, &origin, &no_env).unwrap();
        let tls = config.server.tls.unwrap();
        assert_eq!(tls.cert_file, dir.path().join("tls.crt"));
        assert_eq!(tls.key_file, dir.path().join("tls.key"));
        let error = parse(
            &format!("[server.tls]\ncert_file = \"tls.crt\"\n{MINIMAL}"),
            &origin,
            &no_env,
        )
        .unwrap_err();
        assert_eq!(error.line(), Some(2));
        assert!(
            error.to_string().contains("[server.tls] key_file: missing"),
            "{error}"
        );
    }

    #[test]
    fn timeouts_have_defaults_and_are_checked() {
        let config = parse_text(MINIMAL).unwrap();
        assert_eq!(
            config.server.request_header_timeout,
            Duration::from_secs(30)
        );
        assert_eq!(config.server.upload_idle_timeout, Duration::from_secs(60));
        let config = parse_text(&format!(
            "[server]\nrequest_header_timeout = \"1500ms\"\nupload_idle_timeout = \"2m\"\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(
            config.server.request_header_timeout,
            Duration::from_millis(1500)
        );
        assert_eq!(config.server.upload_idle_timeout, Duration::from_secs(120));

        for key in ["request_header_timeout", "upload_idle_timeout"] {
            for (value, says) in [
                ("\"0s\"", "must not be zero"),
                ("\"-5s\"", ""),
                ("\"soon\"", ""),
                ("30", "with a unit"),
            ] {
                let error = error_of(&format!(
                    "[server]\nlisten = \"127.0.0.1:0\"\n{key} = {value}\n{MINIMAL}"
                ));
                assert_eq!(error.line(), Some(3), "{key} = {value}: {error}");
                let message = error.to_string();
                assert!(
                    message.contains(&format!("[server] {key}")) && message.contains(says),
                    "{key} = {value}: {message}"
                );
            }
        }
    }

    #[test]
    fn max_connections_has_a_default_and_is_checked() {
        let config = parse_text(MINIMAL).unwrap();
        assert_eq!(config.server.max_connections, None);
        let config = parse_text(&format!("[server]\nmax_connections = 20\n{MINIMAL}")).unwrap();
        assert_eq!(config.server.max_connections, Some(20));
        let config =
            parse_text(&format!("[server]\nmax_connections = \"300\"\n{MINIMAL}")).unwrap();
        assert_eq!(config.server.max_connections, Some(300));

        for (value, says) in [
            ("0", "from 1 to"),
            ("-3", "from 1 to"),
            ("\"many\"", "\"many\" is not a whole number"),
            ("\"1m\"", "is not a whole number"),
            ("1.5", "a whole number"),
        ] {
            let error = error_of(&format!("[server]\nmax_connections = {value}\n{MINIMAL}"));
            assert_eq!(error.line(), Some(2), "{value}: {error}");
            let message = error.to_string();
            assert!(
                message.contains("[server] max_connections") && message.contains(says),
                "{value}: {message}"
            );
        }
    }

    #[test]
    fn listen_address_must_be_an_ip_and_port() {
        let config = parse_text(&format!("[server]\nlisten = \"127.0.0.1:0\"\n{MINIMAL}")).unwrap();
        assert_eq!(config.server.listen.port(), 0);
        let error = error_of(&format!("[server]\nlisten = \"localhost:3141\"\n{MINIMAL}"));
        assert_eq!(error.line(), Some(2));
        assert!(error.to_string().contains("127.0.0.1:3141"), "{error}");
    }
}
