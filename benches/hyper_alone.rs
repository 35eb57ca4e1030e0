//! hyper alone: the ceiling `benches/run.sh` measures wheelgate's warm throughput against.
//!
//! Issue 5 compares wheelgate with nginx, and nginx with sendfile is not a hyper server: when
//! wheelgate trails it, the question is whether the proxy's own work (routing, policy, cache
//! lookup, logging) is at fault or the HTTP stack and the kernel under it. This server answers
//! every request with the same bytes from memory, built the way wheelgate's front builds its
//! connections (tokio's multi-thread runtime, hyper-util's auto builder with the same HTTP/1
//! settings, `TCP_NODELAY`), and does nothing else: no routing, no lookup, no log. What it
//! reaches in the same run is as fast as a server on this stack can answer.
//!
//! `hyper_alone <file> <content-type>` listens on 127.0.0.1 on a free port, prints the port on
//! stdout, and serves until killed. Not a benchmark in cargo's sense (`harness = false`, and
//! `cargo bench` would only start it): `benches/run.sh` builds it with
//! `cargo build --release --bench hyper_alone` and runs the executable.

use std::convert::Infallible;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, content_type] = args.as_slice() else {
        eprintln!("usage: hyper_alone <file> <content-type>");
        return ExitCode::from(2);
    };
    let body = match std::fs::read(path) {
        Ok(bytes) => Bytes::from(bytes),
        Err(error) => {
            eprintln!("hyper_alone: cannot read {path}: {error}");
            return ExitCode::from(2);
        }
    };
    let Ok(content_type) = HeaderValue::from_str(content_type) else {
        eprintln!("hyper_alone: {content_type:?} is not a valid header value");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hyper_alone: cannot start the runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(body, content_type)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hyper_alone: {error}");
            ExitCode::from(1)
        }
    }
}

async fn serve(body: Bytes, content_type: HeaderValue) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", listener.local_addr()?.port())?;
    stdout.flush()?;
    // The settings of wheelgate's `front::Server::run`, so that the two differ only in what
    // happens between a parsed request and its response.
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(64 * 1024);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(_) => {
                // Out of descriptors at 1,000 connections and the like: as wheelgate does.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (body, content_type) = (body.clone(), content_type.clone());
        let service = service_fn(move |_request| {
            let mut response = hyper::Response::new(Full::new(body.clone()));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, content_type.clone());
            async move { Ok::<_, Infallible>(response) }
        });
        let builder = builder.clone();
        tokio::spawn(async move {
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
