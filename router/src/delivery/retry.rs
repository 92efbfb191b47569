//! The retry schedule of a subscription.

use std::time::Duration;

use rand::Rng;

use crate::config::RetryConfig;

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Try again at this time (ms since the epoch).
    RetryAt(u64),
    /// Give up, for this reason.
    GiveUp(String),
}

/// Exponential backoff with jitter, bounded by attempts and by age.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub max_age: Duration,
    pub initial: Duration,
    pub max: Duration,
}

impl From<&RetryConfig> for RetryPolicy {
    fn from(c: &RetryConfig) -> Self {
        Self {
            max_attempts: c.max_attempts,
            max_age: c.max_age,
            initial: c.backoff.initial,
            max: c.backoff.max,
        }
    }
}

impl RetryPolicy {
    /// The delay after attempt number `attempt` (1-based) failed, before jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// Decide after `attempts` failed attempts of an event enqueued at `enqueued_ms`.
    /// The delay is jittered to between half and all of the backoff, so retries of
    /// many events spread out; a `retry_after` from the target is a lower bound.
    pub fn next(
        &self,
        attempts: u32,
        enqueued_ms: u64,
        now_ms: u64,
        retry_after: Option<Duration>,
    ) -> Next {
        if attempts >= self.max_attempts {
            return Next::GiveUp(format!("gave up after {attempts} attempts"));
        }
        let base = self.backoff(attempts).as_millis() as u64;
        let jittered = base / 2 + rand::thread_rng().gen_range(0..=base - base / 2);
        let delay = jittered.max(retry_after.map_or(0, |d| d.as_millis() as u64));
        let due = now_ms.saturating_add(delay);
        let deadline = enqueued_ms.saturating_add(self.max_age.as_millis() as u64);
        if due > deadline {
            return Next::GiveUp(format!(
                "max_age {} reached",
                humantime::format_duration(self.max_age)
            ));
        }
        Next::RetryAt(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            max_age: Duration::from_secs(60),
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        }
    }

    #[test]
    fn backs_off_exponentially_up_to_max() {
        let p = policy();
        let got: Vec<u64> = (1..=6).map(|a| p.backoff(a).as_millis() as u64).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
        for _ in 0..100 {
            let Next::RetryAt(due) = p.next(3, 0, 1000, None) else {
                panic!()
            };
            assert!((1200..=1400).contains(&due), "{due}");
        }
    }

    #[test]
    fn gives_up_on_attempts_and_age_and_honours_retry_after() {
        let p = policy();
        assert_eq!(
            p.next(5, 0, 0, None),
            Next::GiveUp("gave up after 5 attempts".into())
        );
        assert!(matches!(p.next(1, 0, 59_990, None), Next::GiveUp(m) if m.contains("max_age")));
        assert_eq!(
            p.next(1, 0, 0, Some(Duration::from_secs(7))),
            Next::RetryAt(7000)
        );
    }
}
