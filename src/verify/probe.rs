//! A small paired HTTP sampler for the canary analysis: the same request sequence goes to two
//! targets (canary and stable) at the same time, so both see the same runner noise and the same
//! moment of the database. Sample sizes are small (hundreds), so latencies are kept in a `Vec`;
//! the open-model load generator of `crate::load` is for the long runs.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::fleet::Target;

/// Latency and error statistics of one side of one sample (or of all samples pooled).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SideStats {
    pub requests: usize,
    pub errors: usize,
    pub error_rate: f64,
    pub avg_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// Raw results of one side.
#[derive(Debug, Clone, Default)]
pub struct SideRaw {
    pub latencies_ms: Vec<f64>,
    pub errors: usize,
    /// Probe tasks that panicked or were cancelled: their requests are unaccounted for, so the
    /// measurement is incomplete and cannot promote.
    pub lost: usize,
}

impl SideRaw {
    pub fn extend(&mut self, other: &SideRaw) {
        self.latencies_ms.extend_from_slice(&other.latencies_ms);
        self.errors += other.errors;
        self.lost += other.lost;
    }

    pub fn stats(&self) -> SideStats {
        let mut l = self.latencies_ms.clone();
        l.sort_by(f64::total_cmp);
        let n = l.len();
        let q = |p: f64| -> f64 {
            if n == 0 {
                return 0.0;
            }
            // nearest-rank percentile
            let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
            l[rank - 1]
        };
        SideStats {
            requests: n,
            errors: self.errors,
            error_rate: if n == 0 {
                0.0
            } else {
                self.errors as f64 / n as f64
            },
            avg_ms: if n == 0 {
                0.0
            } else {
                l.iter().sum::<f64>() / n as f64
            },
            p50_ms: q(0.50),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
        }
    }
}

/// Sends `count` requests to `target` over `paths` (round-robin), `concurrency` at a time.
/// A non-2xx/3xx status, a timeout or a connection error counts as an error; every request
/// (errors included) contributes its latency.
pub async fn run_side(
    client: &reqwest::Client,
    target: &Target,
    paths: &[String],
    count: usize,
    concurrency: usize,
) -> SideRaw {
    let concurrency = concurrency.max(1);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let client = client.clone();
        let target = target.clone();
        let paths = paths.to_vec();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut raw = SideRaw::default();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count || paths.is_empty() {
                    break;
                }
                let path = &paths[i % paths.len()];
                let url = format!("{}{}", target.base_url.trim_end_matches('/'), path);
                let mut req = client.get(&url);
                for (k, v) in &target.headers {
                    req = req.header(k, v);
                }
                let start = Instant::now();
                let ok = match req.send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        // read the body so the latency includes it, as a user would see it
                        // (at most CHECK_BODY_LIMIT of it: the canary runs untrusted code)
                        let body =
                            crate::http::read_prefix(resp, crate::http::CHECK_BODY_LIMIT).await;
                        body.is_ok() && (status.is_success() || status.is_redirection())
                    }
                    Err(_) => false,
                };
                raw.latencies_ms
                    .push(start.elapsed().as_secs_f64() * 1000.0);
                if !ok {
                    raw.errors += 1;
                }
            }
            raw
        }));
    }
    collect(tasks).await
}

/// Joins the probe tasks of one side; a task that panicked or was cancelled is counted as
/// lost rather than dropped, so the analysis sees the gap.
pub(crate) async fn collect(tasks: Vec<tokio::task::JoinHandle<SideRaw>>) -> SideRaw {
    let mut out = SideRaw::default();
    for t in tasks {
        match t.await {
            Ok(r) => out.extend(&r),
            Err(_) => out.lost += 1,
        }
    }
    out
}

/// Runs both sides at the same time and returns (a, b).
pub async fn run_pair(
    client: &reqwest::Client,
    a: &Target,
    b: &Target,
    paths: &[String],
    count: usize,
    concurrency: usize,
) -> (SideRaw, SideRaw) {
    tokio::join!(
        run_side(client, a, paths, count, concurrency),
        run_side(client, b, paths, count, concurrency)
    )
}

/// An HTTP client for probes: bounded timeouts, no proxies from the environment.
pub fn client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .no_proxy()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the http client: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let raw = SideRaw {
            latencies_ms: (1..=100).map(f64::from).collect(),
            errors: 3,
            lost: 0,
        };
        let s = raw.stats();
        assert_eq!(s.requests, 100);
        assert_eq!(s.p50_ms, 50.0);
        assert_eq!(s.p95_ms, 95.0);
        assert_eq!(s.p99_ms, 99.0);
        assert!((s.error_rate - 0.03).abs() < 1e-9);
        assert_eq!(SideRaw::default().stats().p95_ms, 0.0);
    }

    #[tokio::test]
    async fn a_panicking_or_cancelled_probe_task_is_counted_as_lost() {
        let ok = tokio::spawn(async {
            SideRaw {
                latencies_ms: vec![1.0, 2.0],
                errors: 1,
                lost: 0,
            }
        });
        let panics = tokio::spawn(async {
            if std::hint::black_box(true) {
                panic!("probe task panicked");
            }
            SideRaw::default()
        });
        let cancelled = tokio::spawn(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            SideRaw::default()
        });
        cancelled.abort();
        let out = collect(vec![ok, panics, cancelled]).await;
        assert_eq!(out.lost, 2);
        assert_eq!(out.latencies_ms.len(), 2);
        assert_eq!(out.errors, 1);
    }
}
