//! The load-gate adapter: a measured [`Summary`] judged against the `[baseline]` history (the
//! threshold models of [`crate::load::history`]) or else its fixed file
//! ([`crate::load::gate::compare`]). Preview and verify both judge through here, so the gate
//! has one rule set and its verdict one sentence.

use std::path::PathBuf;

use crate::config::{GateSettings, RequestSpec};
use crate::load::gate::{Comparison, Verdict};
use crate::load::history::{EndpointGate, compare_history, gate_summary};
use crate::load::summary::Summary;
use crate::provider::Forge;

/// The history kept on the forge's data branch, and where a PR's runs stop.
#[derive(Clone, Copy)]
pub struct BranchHistory<'a> {
    pub forge: &'a dyn Forge,
    pub branch: &'a str,
    /// A PR's merge base with the default branch: the runs after it are not the PR's base.
    pub up_to: Option<&'a str>,
}

/// A measured load run and, when a baseline file exists, its comparison with it.
#[derive(Debug, Clone)]
pub struct GateRun {
    pub summary: Summary,
    /// `None`: no baseline file, so measured but not gated.
    pub comparison: Option<Comparison>,
    /// Where the baseline was looked for.
    pub baseline: PathBuf,
}

/// Judges `summary` against `[baseline] history` when it exists (each endpoint of `requests`
/// against its own runs), else `[baseline] path`; neither means "measured, not gated", an
/// unreadable one is an error naming the file.
pub fn judge(
    summary: Summary,
    gate: &GateSettings,
    requests: &[RequestSpec],
) -> anyhow::Result<GateRun> {
    let comparison = gate_summary(&summary, gate, requests)?;
    Ok(GateRun {
        summary,
        comparison,
        baseline: gate.path.clone(),
    })
}

/// Like [`judge`], with the data branch's history in the middle of the order: `[baseline]
/// history` (a path) when it exists, else the branch's runs (up to the merge base) when there
/// are at least `min_history` of them (or some and no fixed baseline file: inconclusive, with
/// how many), else `[baseline] path`. A
/// branch that cannot be read is a note, and the fixed baseline decides.
pub async fn judge_with(
    summary: Summary,
    gate: &GateSettings,
    requests: &[RequestSpec],
    branch: Option<BranchHistory<'_>>,
) -> anyhow::Result<GateRun> {
    let explicit = gate.history.as_ref().is_some_and(|h| h.exists());
    let Some(b) = branch.filter(|_| !explicit) else {
        return judge(summary, gate, requests);
    };
    let mut notes = Vec::new();
    let history = match crate::load::store::read(b.forge, b.branch).await {
        Ok(h) => Some(match b.up_to {
            Some(base) if !h.entries.is_empty() => h.up_to(base),
            _ => h,
        }),
        Err(e) => {
            notes.push(format!(
                "the load history on {} could not be read: {}",
                b.branch,
                crate::secret::redact(&format!("{e:#}"))
            ));
            None
        }
    };
    let fixed = gate.path.is_file();
    let mut run = match history {
        // An empty history and no fixed file: measured, not gated, as before any history.
        Some(h) if h.entries.len() >= gate.min_history || (!fixed && !h.entries.is_empty()) => {
            let c = compare_history(&h, &summary, gate, &EndpointGate::from_specs(requests));
            GateRun {
                summary,
                comparison: Some(c),
                baseline: gate.path.clone(),
            }
        }
        Some(h) if fixed => {
            notes.push(format!(
                "the load history on {} has {} runs (fewer than {}): compared with the fixed baseline {}",
                b.branch,
                h.entries.len(),
                gate.min_history,
                gate.path.display()
            ));
            judge(summary, gate, requests)?
        }
        _ => judge(summary, gate, requests)?,
    };
    if let Some(c) = run.comparison.as_mut() {
        notes.append(&mut c.notes);
        c.notes = notes;
    }
    Ok(run)
}

impl GateRun {
    /// The run in one line: requests, error rate, mean and p95 latency.
    pub fn measured(&self) -> String {
        let m = &self.summary.metrics;
        format!(
            "{} requests, {:.2}% errors, avg {:.1} ms, p95 {:.1} ms",
            m.http_reqs.total,
            m.errors.rate * 100.0,
            m.http_req_duration.avg,
            m.http_req_duration.p95
        )
    }

    /// The gate's verdict; `None` when there was no baseline to compare with.
    pub fn verdict(&self) -> Option<Verdict> {
        self.comparison.as_ref().map(|c| c.verdict)
    }

    /// The failure sentence when the gate failed: the one wording for every flow.
    pub fn failure(&self) -> Option<String> {
        let c = self.comparison.as_ref()?;
        (c.verdict == Verdict::Fail).then(|| match &c.model {
            Some(model) => format!("worse than the history ({model} model): {}", c.failures()),
            None => format!(
                "more than {}% worse than the baseline: {}",
                c.threshold_pct,
                c.failures()
            ),
        })
    }

    /// Why the comparison could not decide, when it could not.
    pub fn inconclusive(&self) -> Option<String> {
        let c = self.comparison.as_ref()?;
        (c.verdict == Verdict::Inconclusive)
            .then(|| format!("baseline gate inconclusive: {}", c.notes.join("; ")))
    }

    /// The sentence for a run with no baseline file.
    pub fn not_gated(&self) -> Option<String> {
        self.comparison.is_none().then(|| {
            format!(
                "no baseline at {}: measured, not gated (write one with `atlas baseline update`)",
                self.baseline.display()
            )
        })
    }
}
