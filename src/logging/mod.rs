//! Log output: lines gathered in memory and written to stderr in batches.
//!
//! wheelgate writes one access-log line per request. Written one `write(2)` at a time — or handed
//! to a writer thread that must be woken for each line — the logging cost a measurable part of a
//! warm request (a quarter of the CPU time in a profile of cached page requests). Here a line is
//! appended to a shared buffer; the buffer goes to stderr when it fills, every
//! [`FLUSH_PERIOD`], and when the [`LogGuard`] is dropped at exit. A crash loses at most one
//! period of lines.

pub mod access;

use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in the buffer.
pub const FLUSH_PERIOD: Duration = Duration::from_millis(50);

/// The buffer size that triggers a write on its own.
const BUFFER: usize = 64 * 1024;

type Shared = Arc<Mutex<io::BufWriter<io::Stderr>>>;

fn lock(shared: &Shared) -> MutexGuard<'_, io::BufWriter<io::Stderr>> {
    // A panic while holding the lock leaves at worst a partial line: keep logging.
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The `MakeWriter` for tracing-subscriber.
#[derive(Clone)]
pub struct BufferedStderr {
    shared: Shared,
}

/// Flushes the buffer when dropped; keep it alive for the life of the process.
pub struct LogGuard {
    shared: Shared,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let _ = lock(&self.shared).flush();
    }
}

/// The writer and its guard; starts the thread that flushes every [`FLUSH_PERIOD`].
pub fn buffered_stderr() -> (BufferedStderr, LogGuard) {
    let shared: Shared = Arc::new(Mutex::new(io::BufWriter::with_capacity(BUFFER, io::stderr())));
    let flusher = Arc::downgrade(&shared);
    let spawned = thread::Builder::new().name("log flusher".into()).spawn(move || loop {
        thread::sleep(FLUSH_PERIOD);
        match flusher.upgrade() {
            Some(shared) => {
                let _ = lock(&shared).flush();
            }
            None => return,
        }
    });
    if spawned.is_err() {
        // Without the thread, lines still go out when the buffer fills and at exit; say so.
        eprintln!("warning: cannot start the log flusher thread; log lines may be delayed");
    }
    (
        BufferedStderr {
            shared: shared.clone(),
        },
        LogGuard { shared },
    )
}

/// One event's writes, appended under the lock so lines never interleave.
pub struct LineWriter<'a> {
    guard: MutexGuard<'a, io::BufWriter<io::Stderr>>,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.guard.write(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Flushing is the flusher's job; an event asking for it must not cost a syscall.
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BufferedStderr {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            guard: lock(&self.shared),
        }
    }
}
