//! The trace ids the evidence cites: from the load summary (the slowest requests of each
//! endpoint, the failed ones) and from the checks (the failed ones), each linked through the
//! `[evidence] trace_url` template when there is one.

use crate::contract::{SmokeResult, TraceRef};
use crate::load::summary::Summary;

/// The slowest requests shown per endpoint (the summary keeps a few more).
pub const SLOWEST_SHOWN: usize = 3;

/// The cited requests, slowest per endpoint first, then the failed load requests, then the
/// failed checks.
pub fn collect(
    smoke: &[SmokeResult],
    summary: Option<&Summary>,
    trace_url: Option<&str>,
) -> Vec<TraceRef> {
    let link = |id: &str| trace_url.map(|t| crate::text::fill_url(t, &[("trace_id", id)]));
    let mut out = Vec::new();
    if let Some(s) = summary {
        for e in &s.endpoints {
            for t in e.slowest.iter().take(SLOWEST_SHOWN) {
                out.push(TraceRef {
                    kind: "slowest".into(),
                    name: e.name.clone(),
                    trace_id: t.trace_id.clone(),
                    latency_ms: t.latency_ms,
                    detail: None,
                    url: link(&t.trace_id),
                });
            }
        }
        for t in s.run.iter().flat_map(|r| &r.failed) {
            out.push(TraceRef {
                kind: "failed".into(),
                name: t.endpoint.clone().unwrap_or_default(),
                trace_id: t.trace_id.clone(),
                latency_ms: t.latency_ms,
                detail: t.error.clone(),
                url: link(&t.trace_id),
            });
        }
    }
    for c in smoke.iter().filter(|c| !c.ok) {
        if let Some(id) = &c.trace_id {
            out.push(TraceRef {
                kind: "failed".into(),
                name: c.name.clone(),
                trace_id: id.clone(),
                latency_ms: c.duration_ms as f64,
                detail: c.detail.clone(),
                url: link(id),
            });
        }
    }
    out
}
