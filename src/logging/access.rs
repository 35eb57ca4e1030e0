//! The access log: one line per request, written without tracing's formatting machinery.
//!
//! A cached page answers in about a microsecond; formatting its log line through
//! tracing-subscriber (a visitor per field, `Debug` for every string, a float for the duration, a
//! fresh timestamp) cost a fifth of the server's throughput on warm pages. The line keeps
//! tracing's shape (same timestamp, level and target, same JSON layout), so operators parse one
//! format, but it is written by hand: integers by `itoa`, the timestamp's seconds formatted once
//! per second per thread, the line built in a thread-local buffer and appended to the shared
//! log buffer under one short lock.
//!
//! The line honours the tracing filter (`WHEELGATE_LOG=warn` or `wheelgate::access=off` turns it
//! off), as it stands when [`install`] is called. Until then (in tests, or for a library user)
//! lines go through tracing itself.

use std::cell::RefCell;
use std::io::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{BufferedStderr, Shared};

/// The target access lines carry, as tracing would name it.
pub const TARGET: &str = "wheelgate::access";

/// How log lines are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-11-25T09:20:11.062277Z  INFO wheelgate::access: request method=GET …`
    Text,
    /// One JSON object per line, as tracing-subscriber's JSON formatter writes it.
    Json,
}

/// What one request's line says.
pub struct AccessRecord<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    /// The announced length; `None` for a stream of unknown length (written `-`).
    pub bytes: Option<u64>,
    /// `hit`, `miss`, `stale`, `revalidated`, or `-`.
    pub cache: &'a str,
    /// The rules or controls that refused the request, or `-`.
    pub denied_by: &'a str,
    /// The audited rules (or controls) that would have refused the request, which was served
    /// anyway; written as `audit=…` only when there are some.
    pub audit: Option<&'a str>,
    /// Time to the response head.
    pub elapsed: Duration,
}

struct Sink {
    shared: Arc<Shared>,
    format: LogFormat,
    /// Whether the tracing filter lets access lines through; filters are fixed at start-up.
    enabled: bool,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Sends access lines to `writer` (the buffer tracing writes to as well) in `format`. Called once
/// by the binary, after the tracing subscriber is installed (its filter decides whether access
/// lines are written); a second call is ignored.
pub fn install(writer: &BufferedStderr, format: LogFormat) {
    let _ = SINK.set(Sink {
        shared: writer.shared.clone(),
        format,
        enabled: tracing::enabled!(target: TARGET, tracing::Level::INFO),
    });
}

/// Writes one access line, if the tracing filter lets `wheelgate::access` at INFO through.
pub fn write(record: &AccessRecord<'_>) {
    let Some(sink) = SINK.get() else {
        let ms = record.elapsed.as_secs_f64() * 1000.0;
        tracing::info!(
            target: TARGET,
            method = record.method,
            path = record.path,
            status = record.status,
            bytes = record.bytes,
            cache = record.cache,
            denied_by = record.denied_by,
            audit = record.audit,
            ms,
            "request"
        );
        return;
    };
    if !sink.enabled {
        return;
    }
    LINE.with(|line| {
        let mut line = line.borrow_mut();
        line.clear();
        format_line(&mut line, sink.format, SystemTime::now(), record);
        sink.shared.append(&line);
    });
}

thread_local! {
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
    /// The second last formatted on this thread and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
}

fn format_line(out: &mut Vec<u8>, format: LogFormat, now: SystemTime, record: &AccessRecord<'_>) {
    let mut numbers = itoa::Buffer::new();
    match format {
        LogFormat::Text => {
            timestamp(out, now);
            out.extend_from_slice(b"  INFO wheelgate::access: request method=");
            out.extend_from_slice(record.method.as_bytes());
            out.extend_from_slice(b" path=");
            text_value(out, record.path);
            out.extend_from_slice(b" status=");
            out.extend_from_slice(numbers.format(record.status).as_bytes());
            out.extend_from_slice(b" bytes=");
            match record.bytes {
                Some(bytes) => out.extend_from_slice(numbers.format(bytes).as_bytes()),
                None => out.push(b'-'),
            }
            out.extend_from_slice(b" cache=");
            out.extend_from_slice(record.cache.as_bytes());
            out.extend_from_slice(b" denied_by=");
            text_value(out, record.denied_by);
            if let Some(audit) = record.audit {
                out.extend_from_slice(b" audit=");
                text_value(out, audit);
            }
            out.extend_from_slice(b" ms=");
            millis(out, record.elapsed);
        }
        LogFormat::Json => {
            out.extend_from_slice(b"{\"timestamp\":\"");
            timestamp(out, now);
            out.extend_from_slice(
                b"\",\"level\":\"INFO\",\"fields\":{\"message\":\"request\",\"method\":",
            );
            json_string(out, record.method);
            out.extend_from_slice(b",\"path\":");
            json_string(out, record.path);
            out.extend_from_slice(b",\"status\":");
            out.extend_from_slice(numbers.format(record.status).as_bytes());
            out.extend_from_slice(b",\"bytes\":");
            match record.bytes {
                Some(bytes) => out.extend_from_slice(numbers.format(bytes).as_bytes()),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"cache\":");
            json_string(out, record.cache);
            out.extend_from_slice(b",\"denied_by\":");
            json_string(out, record.denied_by);
            if let Some(audit) = record.audit {
                out.extend_from_slice(b",\"audit\":");
                json_string(out, audit);
            }
            out.extend_from_slice(b",\"ms\":");
            millis(out, record.elapsed);
            out.extend_from_slice(b"},\"target\":\"wheelgate::access\"}");
        }
    }
    out.push(b'\n');
}

/// RFC 3339 in UTC with microseconds, as tracing-subscriber writes it.
fn timestamp(out: &mut Vec<u8>, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != seconds {
            let text = chrono::DateTime::from_timestamp(seconds as i64, 0)
                .unwrap_or_default()
                .format("%Y-%m-%dT%H:%M:%S")
                .to_string();
            let mut prefix = [b'0'; 19];
            let n = text.len().min(19);
            prefix[..n].copy_from_slice(&text.as_bytes()[..n]);
            *cached = (seconds, prefix);
        }
        out.extend_from_slice(&cached.1);
    });
    out.push(b'.');
    padded(out, u64::from(since.subsec_micros()), 6);
    out.push(b'Z');
}

/// `elapsed` in milliseconds with three decimals (`0.041`), without floating point.
fn millis(out: &mut Vec<u8>, elapsed: Duration) {
    let micros = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
    out.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
    out.push(b'.');
    padded(out, micros % 1000, 3);
}

/// `value` in exactly `width` digits, zero-padded; `value` is below `10^width`.
fn padded(out: &mut Vec<u8>, mut value: u64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for digit in out[start..].iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// A value as the text format shows it: bare when it is one plain word, quoted otherwise (the
/// rule list a refusal names has spaces and quotes; a path is the client's, so it is never
/// trusted to be plain).
fn text_value(out: &mut Vec<u8>, value: &str) {
    if !value.is_empty()
        && crate::all_bytes(value.as_bytes(), |b| {
            b.is_ascii_graphic() & (b != b'"') & (b != b'\\')
        })
    {
        out.extend_from_slice(value.as_bytes());
    } else {
        json_string(out, value);
    }
}

fn json_string(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    for c in value.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let mut utf8 = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(denied_by: &'a str, bytes: Option<u64>) -> AccessRecord<'a> {
        AccessRecord {
            method: "GET",
            path: "/simple/demo/",
            status: 200,
            bytes,
            cache: "hit",
            denied_by,
            audit: None,
            elapsed: Duration::from_micros(1_041),
        }
    }

    fn line(format: LogFormat, record: &AccessRecord<'_>) -> String {
        let mut out = Vec::new();
        let now = UNIX_EPOCH + Duration::new(1_795_000_000, 62_277_000);
        format_line(&mut out, format, now, record);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_lines_have_tracing_shape() {
        assert_eq!(
            line(LogFormat::Text, &record("-", Some(19072))),
            "2026-11-18T11:06:40.062277Z  INFO wheelgate::access: request method=GET \
             path=/simple/demo/ status=200 bytes=19072 cache=hit denied_by=- ms=1.041\n"
        );
    }

    #[test]
    fn text_values_with_spaces_are_quoted() {
        let text = line(LogFormat::Text, &record("rule \"no-old\" of pypi", None));
        assert!(text.contains(" bytes=- "), "{text}");
        assert!(
            text.contains(r#"denied_by="rule \"no-old\" of pypi" ms="#),
            "{text}"
        );
        let odd = AccessRecord {
            path: "/simple/a\"b/",
            ..record("-", None)
        };
        assert!(
            line(LogFormat::Text, &odd).contains(r#" path="/simple/a\"b/" "#),
            "a quote in a path is escaped"
        );
    }

    #[test]
    fn json_lines_parse_and_carry_every_field() {
        let text = line(LogFormat::Json, &record("rule \"x\"\n", Some(5)));
        let value: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(value["timestamp"], "2026-11-18T11:06:40.062277Z");
        assert_eq!(value["level"], "INFO");
        assert_eq!(value["target"], "wheelgate::access");
        let fields = &value["fields"];
        assert_eq!(fields["message"], "request");
        assert_eq!(fields["path"], "/simple/demo/");
        assert_eq!(fields["status"], 200);
        assert_eq!(fields["bytes"], 5);
        assert_eq!(fields["denied_by"], "rule \"x\"\n");
        assert_eq!(fields["ms"], 1.041);
    }

    #[test]
    fn an_audited_request_names_the_rules_after_audit() {
        let audited = AccessRecord {
            audit: Some("rule \"no-2\" in repository \"pypi\""),
            ..record("-", Some(5))
        };
        let text = line(LogFormat::Text, &audited);
        assert!(
            text.contains(r#" denied_by=- audit="rule \"no-2\" in repository \"pypi\"" ms="#),
            "{text}"
        );
        let json = line(LogFormat::Json, &audited);
        let value: serde_json::Value = serde_json::from_str(json.trim_end()).unwrap();
        assert_eq!(
            value["fields"]["audit"],
            "rule \"no-2\" in repository \"pypi\""
        );
        // Without an audit, no field at all.
        assert!(!line(LogFormat::Text, &record("-", None)).contains("audit"));
    }

    #[test]
    fn durations_keep_three_decimals() {
        let mut out = Vec::new();
        millis(&mut out, Duration::from_micros(7));
        millis(&mut out, Duration::from_secs(2));
        assert_eq!(out, b"0.0072000.000");
    }
}
