//! `atlas load` and `atlas baseline`.

use std::path::Path;

use anyhow::Context as _;

use crate::load::*;

/// `atlas load`.
pub async fn cli_load(args: &LoadArgs, settings: &crate::config::Settings) -> anyhow::Result<()> {
    let load = settings_with_flags(&settings.load, args);
    let mut gate = settings.baseline.clone();
    if let Some(t) = args.threshold {
        gate.threshold_pct = t;
    }
    let target = args
        .target
        .as_deref()
        .context("no load target: pass --target URL")?;
    let (summary, comparison) = if let Some(base_url) = &args.baseline_target {
        let p = paired(&load, target, base_url, &gate).await?;
        (p.current, Some(p.comparison))
    } else {
        let s = run_repeated(&load, target).await?;
        let c = match &args.baseline {
            Some(path) => Some(compare(&read_summary(path)?, &s, &gate)),
            None => None,
        };
        (s, c)
    };
    eprint!("{}", summary_text(&summary));
    match &args.out {
        Some(path) => write_json(path, &summary)?,
        None => println!(
            "{}",
            serde_json::to_string_pretty(&summary).context("cannot serialise the summary")?
        ),
    }
    match comparison {
        Some(c) => gate_result(&c),
        None => Ok(()),
    }
}

/// `atlas baseline`.
pub async fn cli_baseline(
    cmd: &BaselineCommand,
    settings: &crate::config::Settings,
) -> anyhow::Result<()> {
    match cmd {
        BaselineCommand::Compare {
            files,
            history,
            model,
            history_runs,
            merge_base,
            threshold,
            out,
            json,
        } => {
            let mut gate = settings.baseline.clone();
            if let Some(t) = threshold {
                gate.threshold_pct = *t;
            }
            if let Some(m) = model {
                gate.model = *m;
            }
            if let Some(n) = history_runs {
                gate.history_runs = *n;
            }
            let c = match history {
                Some(path) => {
                    let runs = files
                        .iter()
                        .map(|f| read_summary(f))
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    let current =
                        Summary::median_of(&runs).context("no current summary was given")?;
                    let mut h = read_history(path)?;
                    if let Some(base) = merge_base {
                        h = h.up_to(base);
                    }
                    let gates = EndpointGate::from_specs(&settings.load.requests);
                    compare_history(&h, &current, &gate, &gates)
                }
                None => {
                    let [baseline, current] = files.as_slice() else {
                        anyhow::bail!(
                            "baseline compare takes BASELINE CURRENT (two files), or --history PATH CURRENT; got {} files",
                            files.len()
                        );
                    };
                    compare(&read_summary(baseline)?, &read_summary(current)?, &gate)
                }
            };
            if let Some(path) = out {
                write_json(path, &c)?;
            }
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&c).context("cannot serialise the comparison")?
                );
            }
            gate_result(&c)
        }
        BaselineCommand::Record {
            history,
            from,
            commit,
        } => {
            let path = history
                .clone()
                .or_else(|| settings.baseline.history.clone())
                .context("no history: pass --history PATH or set [baseline] history")?;
            let s = read_summary(from)?;
            let commit = commit
                .clone()
                .or_else(|| s.source.as_ref().and_then(|x| x.commit.clone()))
                .or_else(|| std::env::var("GITHUB_SHA").ok().filter(|v| !v.is_empty()))
                .context("no commit: pass --commit SHA (the summary records none)")?;
            let wrote = history::record(&path, &s, &commit, settings.baseline.history_max)?;
            eprintln!("history: recorded {} in {}", commit, wrote.display());
            Ok(())
        }
        BaselineCommand::Dashboard {
            history,
            current,
            releases,
            out,
            title,
        } => {
            let path = history
                .clone()
                .or_else(|| settings.baseline.history.clone())
                .context("no history: pass --history PATH or set [baseline] history")?;
            let h = read_history(&path)?;
            let cur = current.as_deref().map(read_summary).transpose()?;
            let html = dashboard::render(&h, cur.as_ref(), releases, title);
            std::fs::write(out, html).with_context(|| format!("cannot write {}", out.display()))?;
            eprintln!(
                "dashboard: wrote {} ({} runs)",
                out.display(),
                h.entries.len()
            );
            Ok(())
        }
        BaselineCommand::Update { from, out } => {
            let vars: Vec<(String, String)> = std::env::vars().collect();
            let b = baseline_from(read_summary(from)?, &vars);
            let out = out
                .clone()
                .unwrap_or_else(|| settings.baseline.path.clone());
            write_json(&out, &b)?;
            eprintln!(
                "baseline: wrote {} from {} (measured {} on {})",
                out.display(),
                from.display(),
                b.source
                    .as_ref()
                    .and_then(|s| s.measured_at.clone())
                    .unwrap_or_default(),
                b.source
                    .as_ref()
                    .and_then(|s| s.target.clone())
                    .unwrap_or_else(|| "an unknown target".into())
            );
            Ok(())
        }
    }
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot serialise json")?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

fn gate_result(c: &Comparison) -> anyhow::Result<()> {
    eprint!("{}", c.to_text());
    if c.verdict == Verdict::Fail {
        return Err(crate::error::GateFailed {
            stage: "load gate".into(),
            detail: c.failures(),
        }
        .into());
    }
    Ok(())
}
