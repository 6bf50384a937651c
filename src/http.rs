//! One retry policy for every provider (DESIGN.md section 6): exponential backoff with full
//! jitter, `Retry-After` honoured, bounded attempts and an overall deadline.
//!
//! The core is [`with_retry`]: the caller classifies each attempt's outcome ([`Attempt`]) and
//! this module decides whether and when to try again. Provider clients build on it.

use std::future::Future;
use std::time::{Duration, Instant};

/// Bounds on retrying.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// No retry starts after this much time since the first attempt.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            deadline: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// Fast policy for tests against local fakes.
    pub fn fast() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(100),
            deadline: Duration::from_secs(20),
        }
    }

    /// Full-jitter backoff for attempt `n` (1-based): uniform in `[0, min(max, base * 2^(n-1))]`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        use rand::Rng;
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let cap = exp.min(self.max_delay);
        let ms = cap.as_millis() as u64;
        Duration::from_millis(if ms == 0 {
            0
        } else {
            rand::rng().random_range(0..=ms)
        })
    }
}

/// The outcome of one attempt, as classified by the caller.
pub enum Attempt<T> {
    /// Finished (successfully or with an error that must not be retried).
    Done(anyhow::Result<T>),
    /// Transient: try again, after `after` if the server said so (`Retry-After`, rate-limit
    /// reset), else after the policy's backoff. `error` is returned if no attempt is left.
    Retry {
        after: Option<Duration>,
        error: anyhow::Error,
    },
}

/// Runs `f` until it is done, the attempts are used up or the deadline passes.
pub async fn with_retry<T, F, Fut>(policy: &RetryPolicy, mut f: F) -> anyhow::Result<T>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    let start = Instant::now();
    let mut attempt = 1;
    loop {
        match f(attempt).await {
            Attempt::Done(r) => return r,
            Attempt::Retry { after, error } => {
                let wait = after
                    .map(|a| a.min(policy.max_delay.max(Duration::from_secs(60))))
                    .unwrap_or_else(|| policy.backoff(attempt));
                if attempt >= policy.max_attempts || start.elapsed() + wait > policy.deadline {
                    return Err(error.context(format!(
                        "gave up after {attempt} attempt(s) in {:.1}s",
                        start.elapsed().as_secs_f64()
                    )));
                }
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retries_then_succeeds_and_gives_up_when_bounded() {
        let p = RetryPolicy::fast();
        let r: anyhow::Result<u32> = with_retry(&p, |n| async move {
            if n < 3 {
                Attempt::Retry {
                    after: None,
                    error: anyhow::anyhow!("transient {n}"),
                }
            } else {
                Attempt::Done(Ok(n))
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
        let r: anyhow::Result<u32> = with_retry(&p, |n| async move {
            Attempt::Retry {
                after: Some(Duration::from_millis(1)),
                error: anyhow::anyhow!("always {n}"),
            }
        })
        .await;
        let e = format!("{:#}", r.unwrap_err());
        assert!(
            e.contains("gave up after 5 attempt(s)") && e.contains("always 5"),
            "{e}"
        );
    }

    #[test]
    fn backoff_is_bounded() {
        let p = RetryPolicy::default();
        for n in 1..40 {
            assert!(p.backoff(n) <= p.max_delay);
        }
    }
}
