//! A target's `rate_limit`: a token bucket shared by every subscription that
//! delivers to the target, so a function that can take 50 events a second gets
//! 50 whatever number of rules send to it.
//!
//! Tokens refill at `rate` a second up to a burst of a tenth of a second's worth
//! (at least one). A delivery of `n` events takes `n` tokens at once, going into
//! debt if it must, and waits until the debt is paid: concurrent deliveries
//! queue in the order they asked, and a batch larger than the bucket is still
//! sent, at the rate.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    /// (tokens, when they were counted); tokens below zero are owed.
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// A bucket refilling `per_second` tokens a second, full at first.
    pub(crate) fn new(per_second: f64) -> Self {
        let burst = (per_second / 10.0).max(1.0);
        Self {
            rate: per_second,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Wait until `n` events may be sent.
    pub(crate) async fn acquire(&self, n: usize) {
        let wait = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let (tokens, since) = *state;
            let refilled =
                (tokens + now.duration_since(since).as_secs_f64() * self.rate).min(self.burst);
            let left = refilled - n as f64;
            *state = (left, now);
            if left >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-left / self.rate)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn events_go_at_the_rate_after_a_small_burst() {
        let limiter = RateLimiter::new(50.0);
        let start = Instant::now();
        for _ in 0..300 {
            limiter.acquire(1).await;
        }
        // 5 at once (the burst), then 295 at 50 a second.
        let took = start.elapsed().as_secs_f64();
        assert!((5.85..=5.95).contains(&took), "{took}");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_rate_and_batches_pay_their_size() {
        let limiter = std::sync::Arc::new(RateLimiter::new(100.0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    for _ in 0..10 {
                        limiter.acquire(10).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        // 400 events through one bucket of 100/s (burst 10): about 3.9 s.
        let took = start.elapsed().as_secs_f64();
        assert!((3.85..=3.95).contains(&took), "{took}");
    }
}
