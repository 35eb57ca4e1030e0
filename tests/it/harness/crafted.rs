//! A crafted upstream: an HTTP/1.1 server on 127.0.0.1 that answers each path exactly as a test
//! set it, lies included (a page declaring a size its file does not have, a body with no
//! `Content-Length`, a file link to an address wheelgate must not reach, a redirect there).
//!
//! The fixture upstream (`upstream.rs`) is an honest index; the tests of hostile upstreams need
//! one whose every byte they choose. Each connection serves one request and closes, so a body
//! without `Content-Length` ends where the test's bytes end.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What a path answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with this body; with `length: false` the body is delimited by closing the connection.
    Body {
        content_type: String,
        body: Vec<u8>,
        length: bool,
    },
    /// 302 to this location.
    Redirect(String),
}

/// A file as a PEP 691 page lists it.
#[derive(Debug, Clone)]
pub struct PageFile {
    pub filename: String,
    pub url: String,
    pub sha256: String,
    /// PEP 700 `size`; left out when None.
    pub size: Option<u64>,
}

/// The running server; stopped when dropped.
pub struct Crafted {
    addr: SocketAddr,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    seen: Arc<Mutex<Vec<String>>>,
    stopping: Arc<AtomicBool>,
}

impl Crafted {
    pub fn start() -> Crafted {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("cannot bind the crafted upstream: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("the crafted upstream has no address: {e}"));
        let routes: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let stopping = Arc::new(AtomicBool::new(false));
        let (serve_routes, serve_seen, serve_stopping) =
            (routes.clone(), seen.clone(), stopping.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if serve_stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (routes, seen) = (serve_routes.clone(), serve_seen.clone());
                std::thread::spawn(move || answer(stream, &routes, &seen));
            }
        });
        Crafted {
            addr,
            routes,
            seen,
            stopping,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The simple-index root to configure as a repository's `url`.
    pub fn index_url(&self) -> String {
        self.url("/simple/")
    }

    pub fn set(&self, path: &str, reply: Reply) {
        lock(&self.routes).insert(path.to_owned(), reply);
    }

    /// Serves `body` at `path`, with or without `Content-Length`.
    pub fn file(&self, path: &str, body: Vec<u8>, length: bool) {
        self.set(
            path,
            Reply::Body {
                content_type: "application/octet-stream".to_owned(),
                body,
                length,
            },
        );
    }

    /// Serves the PEP 691 JSON page of `project` listing `files`.
    pub fn page(&self, project: &str, files: &[PageFile]) {
        let files: Vec<serde_json::Value> = files
            .iter()
            .map(|file| {
                let mut entry = serde_json::json!({
                    "filename": file.filename,
                    "url": file.url,
                    "hashes": {"sha256": file.sha256},
                });
                if let Some(size) = file.size {
                    entry["size"] = serde_json::json!(size);
                }
                entry
            })
            .collect();
        let page = serde_json::json!({
            "meta": {"api-version": "1.1"},
            "name": project,
            "files": files,
        });
        self.set(
            &format!("/simple/{project}/"),
            Reply::Body {
                content_type: "application/vnd.pypi.simple.v1+json".to_owned(),
                body: page.to_string().into_bytes(),
                length: true,
            },
        );
    }

    /// The paths requested so far, in order.
    pub fn seen(&self) -> Vec<String> {
        lock(&self.seen).clone()
    }
}

impl Drop for Crafted {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn answer(
    mut stream: TcpStream,
    routes: &Mutex<HashMap<String, Reply>>,
    seen: &Mutex<Vec<String>>,
) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 65_536 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    lock(seen).push(path.clone());
    let reply = lock(routes).get(&path).cloned();
    let _ = match reply {
        None => stream.write_all(
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        ),
        Some(Reply::Redirect(location)) => stream.write_all(
            format!(
                "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            .as_bytes(),
        ),
        Some(Reply::Body {
            content_type,
            body,
            length,
        }) => {
            let length = if length {
                format!("content-length: {}\r\n", body.len())
            } else {
                String::new()
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\n{length}connection: close\r\n\r\n"
            );
            stream
                .write_all(head.as_bytes())
                .and_then(|()| stream.write_all(&body))
        }
    };
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Write);
}
