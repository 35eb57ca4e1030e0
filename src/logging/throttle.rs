//! A gate for a warning that a fault can repeat many times a second.
//!
//! When the process runs out of file descriptors, every `accept` fails at once and keeps failing
//! until a descriptor is freed; when the connection cap is reached, every freed slot is taken
//! again at once. Logging each occurrence buried the log (hundreds of identical lines a minute)
//! and cost the CPU the server needed to recover. A [`Throttle`] lets the first occurrence through
//! at once, then at most one per period, and says how many it held back in between, so the log
//! still shows that the fault goes on and how often it happens.

use std::time::{Duration, Instant};

/// Admits one occurrence of a repeated event per period.
#[derive(Debug)]
pub struct Throttle {
    period: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    /// A throttle that admits at most one occurrence per `period`.
    pub fn new(period: Duration) -> Throttle {
        Throttle {
            period,
            last: None,
            held_back: 0,
        }
    }

    /// One occurrence at `now`. `Some(held_back)` when it is to be logged, with the number of
    /// occurrences held back since the last one logged; `None` when it is held back.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.period => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_occurrence_passes_then_one_per_period_with_the_count_held_back() {
        let period = Duration::from_secs(10);
        let mut throttle = Throttle::new(period);
        let start = Instant::now();
        assert_eq!(throttle.admit(start), Some(0));
        // A burst: hundreds of failures within the period are held back.
        for i in 1..=300 {
            assert_eq!(throttle.admit(start + Duration::from_millis(i * 20)), None);
        }
        // The period is over: the next one passes and says how many were held back.
        assert_eq!(throttle.admit(start + period), Some(300));
        assert_eq!(
            throttle.admit(start + period + Duration::from_secs(1)),
            None
        );
        // After a quiet spell the count starts again from what was held back since.
        assert_eq!(throttle.admit(start + period * 5), Some(1));
        assert_eq!(throttle.admit(start + period * 7), Some(0));
    }

    #[test]
    fn a_clock_that_goes_backwards_holds_back_rather_than_floods() {
        let mut throttle = Throttle::new(Duration::from_secs(10));
        let start = Instant::now() + Duration::from_secs(60);
        assert_eq!(throttle.admit(start), Some(0));
        assert_eq!(throttle.admit(start - Duration::from_secs(5)), None);
    }
}
