//! Hostile and idle connections (issue 16): a connection that never completes a request head —
//! silent, a partial HTTP/2 preface, half a request head, an unfinished TLS handshake — is closed
//! within `[server] request_header_timeout`, and so is a keep-alive connection left idle; a flood
//! of such sockets is held under `[server] max_connections` without keeping `/-/health` out, and
//! the warnings it causes are rate-limited.
//!
//! Each client here is a raw socket (or `openssl s_client`), so that it sends exactly the bytes it
//! means to and nothing more.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::certs::self_signed;
use crate::harness::http;
use crate::harness::wheelgate::{toml_string, Wheelgate};
use crate::harness::{wait_until, write_file};

/// The request deadline the tests configure.
const DEADLINE: Duration = Duration::from_secs(1);

/// How much later than the deadline a close may come (a loaded test machine).
const SLACK: Duration = Duration::from_secs(3);

/// A configuration with one offline remote repository, `[server]` holding `server` (raw TOML
/// lines) and `tls` appended (raw TOML), written to `<dir>/proxy.toml`.
fn config(dir: &Path, server: &str, tls: &str) -> std::path::PathBuf {
    let path = dir.join("proxy.toml");
    let store = toml_string(&dir.join("store").to_string_lossy());
    write_file(
        &path,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n[store]\npath = {store}\n\n\
             [[repository]]\nname = \"pypi\"\ntype = \"remote\"\nurl = \"\"\n{tls}"
        ),
    );
    path
}

/// Connects to `addr` and sends `bytes` (nothing, when empty).
fn open(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream =
        TcpStream::connect(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    if !bytes.is_empty() {
        stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("cannot write to {addr}: {e}"));
    }
    stream
}

/// Reads (and discards) until the server closes the connection; returns when it did, or None
/// when it was still open after `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        stream
            .set_read_timeout(Some(left))
            .unwrap_or_else(|e| panic!("cannot set a read timeout: {e}"));
        match stream.read(&mut buffer) {
            Ok(0) => return Some(Instant::now()),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            // A reset is a close too.
            Err(_) => return Some(Instant::now()),
        }
    }
}

/// The value of the unlabelled series `name` in `/-/metrics`.
fn metric(wheelgate: &Wheelgate, name: &str) -> f64 {
    let text = http::get(&wheelgate.url("/-/metrics"), &[]).text();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /-/metrics:\n{text}"))
}

/// The number of open file descriptors of process `pid`.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("cannot list /proc/{pid}/fd: {e}"))
        .count()
}

fn lines_containing(log: &str, needle: &str) -> usize {
    log.lines().filter(|line| line.contains(needle)).count()
}

#[test]
fn connections_that_never_complete_a_request_are_closed_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let path = config(dir.path(), "request_header_timeout = \"1s\"", "");
    let wheelgate = Wheelgate::start(&path, dir.path(), "info");
    let addr = wheelgate.addr();

    let clients: [(&str, &[u8]); 5] = [
        ("a socket that sends nothing", b""),
        ("a partial HTTP/2 preface", b"PRI * HTTP/2.0\r\n"),
        (
            "the whole HTTP/2 preface and no SETTINGS or request",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ),
        ("a few bytes of a request line", b"GET /-/he"),
        (
            "half a request head",
            b"GET /-/health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow",
        ),
    ];
    let started = Instant::now();
    let mut sockets: Vec<(&str, TcpStream)> = clients
        .iter()
        .map(|(what, bytes)| (*what, open(addr, bytes)))
        .collect();
    for (what, socket) in &mut sockets {
        let closed = closed_within(socket, DEADLINE + SLACK).unwrap_or_else(|| {
            panic!(
                "{what}: still open {:?} after connecting, with request_header_timeout = 1s",
                started.elapsed()
            )
        });
        let after = closed.duration_since(started);
        assert!(
            after >= DEADLINE - Duration::from_millis(100),
            "{what}: closed after {after:?}, before the deadline"
        );
    }

    // A keep-alive connection left idle after its response is closed a deadline later.
    let mut keep_alive = open(addr, b"GET /-/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let mut head = [0u8; 12];
    keep_alive
        .read_exact(&mut head)
        .unwrap_or_else(|e| panic!("no answer to a complete request: {e}"));
    assert_eq!(&head, b"HTTP/1.1 200", "{}", String::from_utf8_lossy(&head));
    let answered = Instant::now();
    let closed = closed_within(&mut keep_alive, DEADLINE + SLACK).unwrap_or_else(|| {
        panic!(
            "an idle keep-alive connection is still open {:?} after its response",
            answered.elapsed()
        )
    });
    assert!(
        closed.duration_since(answered) >= DEADLINE - Duration::from_millis(100),
        "the idle connection was closed {:?} after its response, before the deadline",
        closed.duration_since(answered)
    );

    // The five that never sent a request are counted; the idle one, which did, is not. Only the
    // scrape's own connection is open now.
    assert!(
        wait_until(Duration::from_secs(5), || {
            metric(&wheelgate, "wheelgate_connection_header_timeouts_total") == 5.0
                && metric(&wheelgate, "wheelgate_open_connections") == 1.0
        }),
        "header timeouts {}, open connections {}",
        metric(&wheelgate, "wheelgate_connection_header_timeouts_total"),
        metric(&wheelgate, "wheelgate_open_connections")
    );
}

#[test]
fn unfinished_and_idle_tls_connections_are_closed_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let pair = self_signed(dir.path());
    let tls = format!(
        "\n[server.tls]\ncert_file = {}\nkey_file = {}\n",
        toml_string(&pair.cert.to_string_lossy()),
        toml_string(&pair.key.to_string_lossy())
    );
    let path = config(dir.path(), "request_header_timeout = \"1s\"", &tls);
    let wheelgate = Wheelgate::start(&path, dir.path(), "info");
    let addr = wheelgate.addr();

    // No ClientHello at all, and the first bytes of one (a handshake record header announcing
    // 512 bytes that never come).
    let started = Instant::now();
    let mut silent = open(addr, b"");
    let mut partial = open(addr, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
    for (what, socket) in [
        ("no ClientHello", &mut silent),
        ("half a ClientHello", &mut partial),
    ] {
        let closed = closed_within(socket, DEADLINE + SLACK).unwrap_or_else(|| {
            panic!(
                "TLS client with {what}: still open {:?} after connecting",
                started.elapsed()
            )
        });
        assert!(closed.duration_since(started) >= DEADLINE - Duration::from_millis(100));
    }

    // A finished handshake (HTTP/2 or HTTP/1.1 by ALPN) and then no request: `openssl s_client`
    // with its input held open exits when the server closes the connection.
    for alpn in ["h2", "http/1.1"] {
        let started = Instant::now();
        let mut client = Command::new("openssl")
            .args(["s_client", "-quiet", "-alpn", alpn, "-CAfile"])
            .arg(&pair.cert)
            .args(["-connect", &addr.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run openssl s_client: {e}"));
        let exited = wait_until(DEADLINE + SLACK, || {
            matches!(client.try_wait(), Ok(Some(_)))
        });
        let elapsed = started.elapsed();
        let _ = client.kill();
        let output = client.wait_with_output();
        let stderr = output
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_default();
        assert!(
            exited,
            "ALPN {alpn}: a TLS connection without a request is still open after {elapsed:?}:\n{stderr}"
        );
        assert!(
            elapsed >= DEADLINE - Duration::from_millis(100),
            "ALPN {alpn}: closed after {elapsed:?}, before the deadline (did the handshake fail?):\n{stderr}"
        );
        assert!(
            stderr.contains("verify return:1"),
            "ALPN {alpn}: the handshake did not complete:\n{stderr}"
        );
    }

    // HTTPS still serves.
    let (mut curl, _home) = crate::harness::clients::isolated(Path::new("curl"));
    curl.args(["-sS", "--http2", "--cacert"])
        .arg(&pair.cert)
        .args(["-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("https://{addr}/-/health"));
    let run = crate::harness::clients::run_bounded(&mut curl, Duration::from_secs(30));
    assert_eq!(run.stdout.trim(), "200", "{}", run.output());
}

#[test]
fn a_flood_of_silent_sockets_is_capped_and_health_still_answers() {
    const CAP: usize = 20;
    const FLOOD: usize = 60;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let path = config(
        dir.path(),
        &format!("request_header_timeout = \"1s\"\nmax_connections = {CAP}"),
        "",
    );
    let wheelgate = Wheelgate::start(&path, dir.path(), "info");
    let addr = wheelgate.addr();
    let pid = wheelgate.pid();
    let before = open_files(pid);

    let started = Instant::now();
    let flood: Vec<TcpStream> = (0..FLOOD).map(|_| open(addr, b"")).collect();
    // The health check queues behind the flood: the server takes CAP at a time, each batch
    // freed by the deadline, so it is answered after about FLOOD / CAP deadlines.
    let checking = std::thread::spawn(move || {
        let asked = Instant::now();
        let answer = http::raw_get(addr, b"/-/health");
        (answer.map(|a| a.status), asked.elapsed())
    });
    // Watched until the health check is answered, and at least for two deadlines.
    let mut most = 0;
    while (!checking.is_finished() || started.elapsed() < DEADLINE * 2)
        && started.elapsed() < Duration::from_secs(30)
    {
        most = most.max(open_files(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, waited) = checking
        .join()
        .unwrap_or_else(|_| panic!("the health check thread panicked"));
    assert_eq!(status, Ok(200), "/-/health during the flood");
    eprintln!(
        "flood of {FLOOD}, cap {CAP}: /-/health answered after {waited:?}; files open: {before} \
         before, at most {most} during"
    );
    let bound = DEADLINE * (FLOOD / CAP + 1) as u32 + SLACK;
    assert!(
        waited < bound,
        "/-/health took {waited:?} with {FLOOD} silent sockets and max_connections = {CAP} \
         (bound {bound:?})"
    );
    assert!(
        most <= before + CAP + 8,
        "wheelgate held {most} files during the flood ({before} before, max_connections = {CAP})"
    );
    drop(flood);

    let log = wheelgate.output();
    let reached = lines_containing(&log, "[server] max_connections (20) reached");
    assert!(
        (1..=2).contains(&reached),
        "the cap-reached warning was logged {reached} times:\n{log}"
    );
}

#[test]
fn the_default_cap_follows_the_file_limit_and_accept_failures_are_rate_limited() {
    const FILE_LIMIT: u64 = 160;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));

    // Sized to the file limit: (160 - 96) / 2, 96 being kept for the store (with the 32 blobs
    // it keeps open), the listener and the runtime.
    let path = config(dir.path(), "request_header_timeout = \"1s\"", "");
    let sized = Wheelgate::start_with_file_limit(&path, dir.path(), "info", FILE_LIMIT);
    let log = sized.output();
    assert!(
        log.contains("serving at most 32 connections at once, sized to the file limit (160)"),
        "{log}"
    );
    sized.terminate();

    // A cap above what the file limit can hold: accept fails with "too many open files" while
    // the flood lasts, and says so at most once per period, not at every retry.
    let path = config(
        dir.path(),
        "request_header_timeout = \"2s\"\nmax_connections = 1000",
        "",
    );
    let wheelgate = Wheelgate::start_with_file_limit(&path, dir.path(), "info", FILE_LIMIT);
    assert!(
        wheelgate
            .output()
            .contains("is more than the file limit (160) can hold"),
        "{}",
        wheelgate.output()
    );
    let addr = wheelgate.addr();
    let flood: Vec<TcpStream> = (0..200).map(|_| open(addr, b"")).collect();
    assert!(
        wait_until(Duration::from_secs(10), || wheelgate
            .output()
            .contains("accept failed")),
        "accept never failed with {} sockets and a file limit of {FILE_LIMIT}:\n{}",
        flood.len(),
        wheelgate.output()
    );
    // The descriptors come back as the deadline closes the silent sockets, and health answers.
    let asked = Instant::now();
    let health = http::raw_get(addr, b"/-/health").map(|a| a.status);
    assert_eq!(health, Ok(200), "/-/health after the flood");
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "{:?}",
        asked.elapsed()
    );
    drop(flood);
    let log = wheelgate.output();
    let failures = lines_containing(&log, "accept failed");
    eprintln!(
        "file limit {FILE_LIMIT}, 200 silent sockets: accept failures logged {failures} times; \
         /-/health answered after {:?}",
        asked.elapsed()
    );
    assert!(
        (1..=3).contains(&failures),
        "accept failures were logged {failures} times in {:?}:\n{log}",
        asked.elapsed()
    );
}

#[test]
fn an_idle_http2_connection_is_closed_after_its_last_response() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let path = config(dir.path(), "request_header_timeout = \"1s\"", "");
    let wheelgate = Wheelgate::start(&path, dir.path(), "info");
    let url = wheelgate.url("/-/health");
    let addr = wheelgate.addr();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot start a runtime: {e}"));
    runtime.block_on(async {
        // HTTP/2 with prior knowledge (h2c), as hyper's client speaks it; the client answers the
        // server's pings, so only the idle limit can end the connection.
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        let (mut sender, connection) =
            hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(TokioIo::new(stream))
                .await
                .unwrap_or_else(|e| panic!("HTTP/2 handshake with {addr}: {e}"));
        let driving = tokio::spawn(connection);
        let request = ::http::Request::get(&url)
            .body(Empty::<bytes::Bytes>::new())
            .unwrap_or_else(|e| panic!("request: {e}"));
        let response = sender
            .send_request(request)
            .await
            .unwrap_or_else(|e| panic!("GET {url} over h2c: {e}"));
        assert_eq!(response.version(), ::http::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        let _ = response.into_body().collect().await;
        let answered = Instant::now();
        let ended = tokio::time::timeout(DEADLINE + SLACK, driving).await;
        let after = answered.elapsed();
        assert!(
            ended.is_ok(),
            "the idle HTTP/2 connection is still open {after:?} after its response"
        );
        assert!(
            after >= DEADLINE - Duration::from_millis(100),
            "the HTTP/2 connection was closed {after:?} after its response, before the deadline"
        );
        drop(sender);
    });
}
