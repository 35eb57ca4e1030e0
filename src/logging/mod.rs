//! Log output: lines gathered in memory and written to stderr in batches.
//!
//! wheelgate writes one access-log line per request. Written one `write(2)` at a time — or handed
//! to a writer thread that must be woken for each line — the logging cost a measurable part of a
//! warm request (a quarter of the CPU time in a profile of cached page requests). Here a line is
//! appended to a pending buffer under a short lock. A flusher thread swaps that buffer for an
//! empty one every [`FLUSH_PERIOD`] (sooner when it passes [`SOFT_LIMIT`]) and writes it to stderr
//! outside the lock, so a request never waits for the write itself. Should stderr stop draining
//! (a full pipe) and the pending lines pass [`HARD_LIMIT`], the thread that appends writes them
//! itself: logging then slows requests down rather than growing without bound. The
//! [`LogGuard`] writes what is left at exit; a crash loses at most one period of lines.

pub mod access;
pub mod throttle;

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

use crate::lock;

/// How long a line may wait in the buffer.
pub const FLUSH_PERIOD: Duration = Duration::from_millis(50);

/// Pending bytes that wake the flusher before its period is over.
const SOFT_LIMIT: usize = 256 * 1024;

/// Pending bytes past which the appending thread writes them itself.
const HARD_LIMIT: usize = 8 * 1024 * 1024;

/// The buffers behind every log line.
struct Shared {
    /// Lines not yet handed to stderr.
    pending: Mutex<Vec<u8>>,
    /// Wakes the flusher early.
    wake: Condvar,
    /// The batch being written and where it goes (stderr). Held for the whole write, so
    /// batches go out in order.
    writing: Mutex<(Vec<u8>, Box<dyn Write + Send>)>,
    /// Set by the guard at exit: the flusher stops.
    closed: AtomicBool,
}

impl Shared {
    /// Appends whole lines.
    fn append(&self, bytes: &[u8]) {
        let mut pending = lock(&self.pending);
        pending.extend_from_slice(bytes);
        self.appended(pending, bytes.len());
    }

    /// What follows an append of `added` bytes: wake the flusher or, past the hard limit, write.
    fn appended(&self, pending: MutexGuard<'_, Vec<u8>>, added: usize) {
        let len = pending.len();
        drop(pending);
        if len >= HARD_LIMIT {
            self.flush();
        } else if len >= SOFT_LIMIT && len - added < SOFT_LIMIT {
            self.wake.notify_one();
        }
    }

    /// Writes every pending line to stderr.
    fn flush(&self) {
        let mut writing = lock(&self.writing);
        let (batch, output) = &mut *writing;
        std::mem::swap(&mut *lock(&self.pending), batch);
        if !batch.is_empty() {
            // Nowhere to report a failed write to stderr; the lines are dropped.
            let _ = output.write_all(batch);
            let _ = output.flush();
            batch.clear();
        }
    }
}

/// The `MakeWriter` for tracing-subscriber; also where [`access`] lines go.
#[derive(Clone)]
pub struct BufferedStderr {
    shared: Arc<Shared>,
}

/// Writes the pending lines when dropped; keep it alive for the life of the process.
pub struct LogGuard {
    shared: Arc<Shared>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        self.shared.flush();
    }
}

/// The writer and its guard; starts the flusher thread.
pub fn buffered_stderr() -> (BufferedStderr, LogGuard) {
    buffered(Box::new(io::stderr()))
}

fn buffered(output: Box<dyn Write + Send>) -> (BufferedStderr, LogGuard) {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Vec::with_capacity(SOFT_LIMIT)),
        wake: Condvar::new(),
        writing: Mutex::new((Vec::with_capacity(SOFT_LIMIT), output)),
        closed: AtomicBool::new(false),
    });
    let flusher = shared.clone();
    let spawned = thread::Builder::new()
        .name("log flusher".into())
        .spawn(move || {
            while !flusher.closed.load(Ordering::Acquire) {
                {
                    let pending = lock(&flusher.pending);
                    if pending.len() < SOFT_LIMIT {
                        // A spurious or early wake-up only means an earlier write.
                        drop(flusher.wake.wait_timeout(pending, FLUSH_PERIOD));
                    }
                }
                flusher.flush();
            }
        });
    if spawned.is_err() {
        // Without the thread, lines still go out past the hard limit and at exit; say so.
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
    pending: Option<MutexGuard<'a, Vec<u8>>>,
    shared: &'a Shared,
    added: usize,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if let Some(pending) = self.pending.as_mut() {
            pending.extend_from_slice(bytes);
            self.added += bytes.len();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Flushing is the flusher's job; an event asking for it must not cost a syscall.
        Ok(())
    }
}

impl Drop for LineWriter<'_> {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            self.shared.appended(pending, self.added);
        }
    }
}

impl<'a> MakeWriter<'a> for BufferedStderr {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            pending: Some(lock(&self.shared.pending)),
            shared: &self.shared,
            added: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An output the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            lock(&self.0).extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(lock(&self.0).clone()).unwrap()
        }
    }

    #[test]
    fn lines_reach_the_output_within_the_period() {
        let captured = Captured::default();
        let (writer, _guard) = buffered(Box::new(captured.clone()));
        writer.shared.append(b"one\n");
        let deadline = Instant::now() + Duration::from_secs(5);
        while captured.text().is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(captured.text(), "one\n");
    }

    #[test]
    fn lines_from_many_threads_stay_whole_and_all_arrive_at_exit() {
        let captured = Captured::default();
        let (writer, guard) = buffered(Box::new(captured.clone()));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                thread::spawn(move || {
                    for i in 0..5_000 {
                        if i % 2 == 0 {
                            writer
                                .shared
                                .append(format!("thread {t} line {i}\n").as_bytes());
                        } else {
                            // Through tracing's door: several writes, one line.
                            let mut line = writer.make_writer();
                            write!(line, "thread {t} ").unwrap();
                            writeln!(line, "line {i}").unwrap();
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(guard);
        let text = captured.text();
        assert_eq!(text.lines().count(), 20_000);
        for t in 0..4 {
            let mut last = None;
            for line in text
                .lines()
                .filter(|l| l.starts_with(&format!("thread {t} ")))
            {
                let i: usize = line.rsplit(' ').next().unwrap().parse().unwrap();
                assert!(
                    last.is_none_or(|last| i == last + 1),
                    "{line} after {last:?}"
                );
                last = Some(i);
            }
            assert_eq!(last, Some(4_999));
        }
    }
}
