//! What `wheelgate warm` tells the person or the CI log watching it, and the tally it ends with.
//!
//! On a terminal a progress bar counts the files, with a line above it for each file that was
//! denied or failed; otherwise (a CI log, a pipe) every file gets one plain line. Both go to
//! stderr; the [`Summary`] is the command's result and is printed by the caller on stdout.

use std::fmt;
use std::sync::Mutex;

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What became of one file (or of one requirement whose files could not be listed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// wheelgate fetched it from its upstream (the file or its metadata was a miss).
    Fetched { bytes: u64 },
    /// wheelgate already had it (and its metadata).
    Cached { bytes: u64 },
    /// A download rule refused it: the refusal's words.
    Denied(String),
    /// It could not be warmed: why.
    Failed(String),
}

/// The tally of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub fetched: usize,
    pub cached: usize,
    pub denied: usize,
    pub failed: usize,
    /// Entries that no index serves (paths, VCS checkouts, editable projects).
    pub skipped: usize,
    pub fetched_bytes: u64,
    pub cached_bytes: u64,
}

impl Summary {
    fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Fetched { bytes } => {
                self.fetched += 1;
                self.fetched_bytes += bytes;
            }
            Outcome::Cached { bytes } => {
                self.cached += 1;
                self.cached_bytes += bytes;
            }
            Outcome::Denied(_) => self.denied += 1,
            Outcome::Failed(_) => self.failed += 1,
        }
    }

    /// Files warmed or refused, failures included.
    pub fn files(&self) -> usize {
        self.fetched + self.cached + self.denied + self.failed
    }
}

/// `16 files: 12 fetched (1.2 MiB), 2 already cached (40 KiB), 2 denied, 0 failed`.
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} files: {} fetched ({}), {} already cached ({}), {} denied, {} failed",
            self.files(),
            self.fetched,
            HumanBytes(self.fetched_bytes),
            self.cached,
            HumanBytes(self.cached_bytes),
            self.denied,
            self.failed
        )?;
        if self.skipped > 0 {
            write!(f, "; {} skipped (not from an index)", self.skipped)?;
        }
        Ok(())
    }
}

/// The running report. Shared by the concurrent downloads.
pub struct Progress {
    bar: Option<ProgressBar>,
    summary: Mutex<Summary>,
}

impl Progress {
    /// A bar when `terminal`, plain lines otherwise.
    pub fn new(terminal: bool) -> Progress {
        let bar = terminal.then(|| {
            // Drawn from the first stage on, once it has a length.
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
            if let Ok(style) =
                ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos}/{len} {wide_msg}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        Progress {
            bar,
            summary: Mutex::new(Summary::default()),
        }
    }

    /// A line above the bar, or on its own.
    pub fn note(&self, line: &str) {
        match &self.bar {
            // Before the first stage the bar is hidden, and a hidden bar prints nothing.
            Some(bar) if !bar.is_hidden() => bar.println(line),
            _ => eprintln!("{line}"),
        }
    }

    /// An entry with nothing to fetch.
    pub fn skipped(&self, what: &str, reason: &str) {
        crate::lock(&self.summary).skipped += 1;
        self.note(&format!("skipped  {what}: {reason}"));
    }

    /// A new stage (`pages`, `files`) with `len` steps.
    pub fn stage(&self, name: &'static str, len: usize) {
        if let Some(bar) = &self.bar {
            bar.set_length(len as u64);
            bar.set_position(0);
            bar.set_prefix(name);
            if bar.is_hidden() {
                bar.set_draw_target(ProgressDrawTarget::stderr());
            }
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
        }
    }

    /// One step of the stage done, nothing to say about it.
    pub fn step(&self, message: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(message.to_owned());
            bar.inc(1);
        }
    }

    /// `what` (a filename, or a requirement) ended as `outcome`.
    pub fn done(&self, what: &str, outcome: &Outcome) {
        crate::lock(&self.summary).add(outcome);
        let line = match outcome {
            Outcome::Fetched { bytes } => format!("fetched  {what} ({})", HumanBytes(*bytes)),
            Outcome::Cached { bytes } => format!("cached   {what} ({})", HumanBytes(*bytes)),
            Outcome::Denied(reason) => format!("denied   {what}: {reason}"),
            Outcome::Failed(reason) => format!("failed   {what}: {reason}"),
        };
        match &self.bar {
            Some(bar) => {
                if matches!(outcome, Outcome::Denied(_) | Outcome::Failed(_)) {
                    self.note(&line);
                }
                bar.set_message(what.to_owned());
                bar.inc(1);
            }
            None => eprintln!("{line}"),
        }
    }

    /// Clears the bar and returns the tally.
    pub fn finish(&self) -> Summary {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        *crate::lock(&self.summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_each_outcome() {
        let progress = Progress::new(false);
        progress.done("a.whl", &Outcome::Fetched { bytes: 2048 });
        progress.done("b.whl", &Outcome::Fetched { bytes: 1024 });
        progress.done("c.whl", &Outcome::Cached { bytes: 10 });
        progress.done("d.tar.gz", &Outcome::Denied("denied by no-sdists".into()));
        progress.done("x==1", &Outcome::Failed("404".into()));
        progress.skipped("-e .", "an editable project");
        let summary = progress.finish();
        assert_eq!(
            summary.to_string(),
            "5 files: 2 fetched (3.00 KiB), 1 already cached (10 B), 1 denied, 1 failed; \
             1 skipped (not from an index)"
        );
        assert_eq!(Summary::default().to_string().lines().count(), 1);
    }
}
