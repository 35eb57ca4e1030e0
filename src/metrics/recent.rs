//! What the status page lists besides counts: the last denials and the last upstream errors,
//! and the capped per-name denial counters behind `wheelgate_denials_total`.
//!
//! These are written on refusals and failures only, never on a hit, so a mutex is fine here.
//! Everything is bounded: a fixed number of recent entries, and at most [`MAX_DENIAL_NAMES`]
//! distinct rule or group names per counter (later names are counted as `other`), so a
//! configuration with generated rule names cannot grow the exposition without limit.

use std::collections::{HashMap, VecDeque};
use std::time::SystemTime;

use super::labels::DenialKind;
use crate::config::Mode;

/// How many denials the status page lists.
pub const RECENT_DENIALS: usize = 100;

/// How many upstream errors the status page lists.
pub const RECENT_UPSTREAM_ERRORS: usize = 20;

/// The most distinct `name` label values of `wheelgate_denials_total`.
pub const MAX_DENIAL_NAMES: usize = 100;

/// The `name` label of denials beyond [`MAX_DENIAL_NAMES`].
pub const OTHER_NAME: &str = "other";

/// One refusal, as the status page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenialRecord {
    pub at: SystemTime,
    pub repository: String,
    pub package: String,
    /// `None` for a whole page refused.
    pub version: Option<String>,
    pub kind: DenialKind,
    /// The rule, or the package group of an origin control.
    pub name: String,
    pub mode: Mode,
}

/// One failed upstream request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamErrorRecord {
    pub at: SystemTime,
    pub repository: String,
    /// Without credentials or query.
    pub url: String,
    pub error: String,
}

/// The key of one `wheelgate_denials_total` series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DenialSeries {
    pub repository: String,
    pub kind: &'static str,
    pub name: String,
    pub mode: &'static str,
}

/// The recent events and the denial counters.
#[derive(Debug, Default)]
pub struct Recent {
    denials: VecDeque<DenialRecord>,
    upstream_errors: VecDeque<UpstreamErrorRecord>,
    denial_counts: HashMap<DenialSeries, u64>,
    /// The names counted under their own label so far.
    names: Vec<String>,
}

fn push_bounded<T>(list: &mut VecDeque<T>, item: T, bound: usize) {
    if list.len() == bound {
        list.pop_front();
    }
    list.push_back(item);
}

impl Recent {
    pub fn record_denial(&mut self, denial: DenialRecord) {
        let name = if self.names.contains(&denial.name) {
            denial.name.clone()
        } else if self.names.len() < MAX_DENIAL_NAMES {
            self.names.push(denial.name.clone());
            denial.name.clone()
        } else {
            OTHER_NAME.to_owned()
        };
        let series = DenialSeries {
            repository: denial.repository.clone(),
            kind: denial.kind.as_str(),
            name,
            mode: denial.mode.as_str(),
        };
        *self.denial_counts.entry(series).or_default() += 1;
        push_bounded(&mut self.denials, denial, RECENT_DENIALS);
    }

    pub fn record_upstream_error(&mut self, error: UpstreamErrorRecord) {
        push_bounded(&mut self.upstream_errors, error, RECENT_UPSTREAM_ERRORS);
    }

    /// The last denials, newest first.
    pub fn denials(&self) -> Vec<DenialRecord> {
        self.denials.iter().rev().cloned().collect()
    }

    /// The last upstream errors, newest first.
    pub fn upstream_errors(&self) -> Vec<UpstreamErrorRecord> {
        self.upstream_errors.iter().rev().cloned().collect()
    }

    /// Every denial series with its count, sorted.
    pub fn denial_counts(&self) -> Vec<(DenialSeries, u64)> {
        let mut counts: Vec<_> = self
            .denial_counts
            .iter()
            .map(|(series, count)| (series.clone(), *count))
            .collect();
        counts.sort();
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denial(name: &str, package: &str) -> DenialRecord {
        DenialRecord {
            at: SystemTime::UNIX_EPOCH,
            repository: "pypi".into(),
            package: package.into(),
            version: Some("1.0".into()),
            kind: DenialKind::Rule,
            name: name.into(),
            mode: Mode::Enforce,
        }
    }

    #[test]
    fn the_list_keeps_the_last_hundred_newest_first() {
        let mut recent = Recent::default();
        for n in 0..150 {
            recent.record_denial(denial("no-old", &format!("p{n}")));
        }
        let denials = recent.denials();
        assert_eq!(denials.len(), RECENT_DENIALS);
        assert_eq!(denials[0].package, "p149");
        assert_eq!(denials[99].package, "p50");
        let counts = recent.denial_counts();
        assert_eq!(counts.len(), 1);
        assert_eq!(counts[0].1, 150);
    }

    #[test]
    fn names_beyond_the_cap_count_as_other() {
        let mut recent = Recent::default();
        for n in 0..MAX_DENIAL_NAMES + 5 {
            recent.record_denial(denial(&format!("rule-{n}"), "p"));
        }
        // A name seen before the cap keeps its own series.
        recent.record_denial(denial("rule-0", "p"));
        let counts = recent.denial_counts();
        assert_eq!(counts.len(), MAX_DENIAL_NAMES + 1);
        let count_of = |name: &str| {
            counts
                .iter()
                .find(|(series, _)| series.name == name)
                .map(|(_, n)| *n)
        };
        assert_eq!(count_of(OTHER_NAME), Some(5));
        assert_eq!(count_of("rule-0"), Some(2));
    }

    #[test]
    fn upstream_errors_are_bounded() {
        let mut recent = Recent::default();
        for n in 0..RECENT_UPSTREAM_ERRORS + 3 {
            recent.record_upstream_error(UpstreamErrorRecord {
                at: SystemTime::UNIX_EPOCH,
                repository: "pypi".into(),
                url: format!("http://127.0.0.1/{n}"),
                error: "refused".into(),
            });
        }
        let errors = recent.upstream_errors();
        assert_eq!(errors.len(), RECENT_UPSTREAM_ERRORS);
        assert!(errors[0]
            .url
            .ends_with(&format!("/{}", RECENT_UPSTREAM_ERRORS + 2)));
    }
}
