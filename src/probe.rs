//! `wheelgate health`: the health probe a container runtime runs inside wheelgate's own image.
//!
//! A runtime image holds the binary and little else (no curl, no wget), and a Docker
//! `HEALTHCHECK` or a Kubernetes `exec` probe runs a command in it; so the binary probes itself.
//! It reads the configuration for the address the server listens on (an unspecified address such
//! as `0.0.0.0` is reached on loopback), asks `/-/health` over plain HTTP and succeeds on a 200.
//! With `[server.tls]` it checks only that the port accepts connections: the server's
//! certificate is issued for the name clients use, which loopback is not.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::ServerConfig;
use crate::upstream::error_chain;

/// How long the whole probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `GET http://<addr>/-/health` must answer 200.
    Health(SocketAddr),
    /// The server terminates TLS: a TCP connection to `addr` must be accepted.
    Connect(SocketAddr),
}

/// Why the server is not healthy.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{target} did not answer within {} s; the server is stuck or overloaded", after.as_secs())]
    Timeout { target: String, after: Duration },
    #[error("cannot reach {target}: {reason}; is wheelgate running and listening there?")]
    Unreachable { target: String, reason: String },
    #[error("{target} answered {status} instead of 200")]
    Status { target: String, status: StatusCode },
}

impl Probe {
    /// The probe for a server configured with `server`.
    pub fn for_server(server: &ServerConfig) -> Probe {
        let addr = reachable(server.listen);
        if server.tls.is_some() {
            Probe::Connect(addr)
        } else {
            Probe::Health(addr)
        }
    }

    /// What is probed, for messages.
    pub fn target(&self) -> String {
        match self {
            Probe::Health(addr) => format!("http://{addr}/-/health"),
            Probe::Connect(addr) => format!("{addr} (TLS: connection only)"),
        }
    }

    /// Runs the probe, within [`PROBE_TIMEOUT`].
    pub async fn run(&self) -> Result<(), ProbeError> {
        match tokio::time::timeout(PROBE_TIMEOUT, self.attempt()).await {
            Ok(result) => result,
            Err(_) => Err(ProbeError::Timeout {
                target: self.target(),
                after: PROBE_TIMEOUT,
            }),
        }
    }

    async fn attempt(&self) -> Result<(), ProbeError> {
        let unreachable = |reason: String| ProbeError::Unreachable {
            target: self.target(),
            reason,
        };
        match self {
            Probe::Connect(addr) => tokio::net::TcpStream::connect(addr)
                .await
                .map(drop)
                .map_err(|e| unreachable(e.to_string())),
            Probe::Health(_) => {
                let uri: Uri = self
                    .target()
                    .parse()
                    .map_err(|e: http::uri::InvalidUri| unreachable(e.to_string()))?;
                let client: Client<HttpConnector, Empty<Bytes>> =
                    Client::builder(TokioExecutor::new()).build(HttpConnector::new());
                let request = Request::get(uri)
                    .header(http::header::USER_AGENT, "wheelgate-health")
                    .body(Empty::new())
                    .map_err(|e| unreachable(e.to_string()))?;
                let response = client
                    .request(request)
                    .await
                    .map_err(|e| unreachable(error_chain(&e)))?;
                match response.status() {
                    StatusCode::OK => Ok(()),
                    status => Err(ProbeError::Status {
                        target: self.target(),
                        status,
                    }),
                }
            }
        }
    }
}

/// Where a client on this machine reaches a server listening on `listen`: the unspecified
/// addresses (`0.0.0.0`, `::`) are reached on loopback.
fn reachable(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_probed_on_loopback() {
        let cases = [
            ("0.0.0.0:3141", "127.0.0.1:3141"),
            ("[::]:3141", "[::1]:3141"),
            ("10.1.2.3:80", "10.1.2.3:80"),
        ];
        for (listen, probed) in cases {
            let listen: SocketAddr = listen.parse().unwrap();
            assert_eq!(reachable(listen).to_string(), probed);
        }
    }
}
