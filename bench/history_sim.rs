//! The load gate's false-alarm and detection rates, measured against the built `atlas` binary
//! on synthetic k6 `--summary-export` summaries (see bench/history_sim.sh).
//!
//! Each trial draws a history of HISTORY runs and 3 candidate runs. A run is REQUESTS requests
//! with lognormal latency (median 268 ms, sigma 0.224: the seed's avg 275 ms and p95 388 ms),
//! every latency of the run multiplied by one run-to-run factor exp(N(0, NOISE)) (a slower or
//! faster machine), and binomial errors at 0.93% times its own exp(N(0, NOISE)) factor. In
//! the regression scenario the candidates' latencies are multiplied by 1 + REGRESSION.
//!
//! For each trial the same files go through:
//! - `single`: today's gate, `atlas baseline compare BASELINE CURRENT` with the last history
//!   run as the baseline;
//! - each model with one candidate run and with the median of 3 (`--history DIR CUR...`).
//!
//! Output: one line per configuration, `config null_fail null_inconclusive reg_fail
//! reg_inconclusive trials`, then a markdown table.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use rand::{Rng, SeedableRng};

struct Cfg {
    name: String,
    args: Vec<String>,
}

fn normal(rng: &mut impl Rng) -> f64 {
    // Box-Muller
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn env<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// One k6 --summary-export document.
fn run_summary(rng: &mut impl Rng, requests: usize, noise: f64, scale: f64) -> String {
    let f = (noise * normal(rng)).exp() * scale;
    let (mu, sigma) = (268f64.ln(), 0.224);
    let mut lat: Vec<f64> = (0..requests)
        .map(|_| (mu + sigma * normal(rng)).exp() * f)
        .collect();
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| {
        let h = (lat.len() - 1) as f64 * p;
        let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
        lat[lo] + (h - lo as f64) * (lat[hi] - lat[lo])
    };
    let avg = lat.iter().sum::<f64>() / lat.len() as f64;
    let rate = 0.0093 * (noise * normal(rng)).exp();
    let errors = (0..requests).filter(|_| rng.random::<f64>() < rate).count();
    let secs = 60.0;
    format!(
        r#"{{"metrics":{{"http_req_duration":{{"avg":{avg},"min":{},"med":{},"max":{},"p(90)":{},"p(95)":{}}},"http_reqs":{{"count":{requests},"rate":{}}},"http_req_failed":{{"passes":{errors},"fails":{},"value":{}}}}},"state":{{"testRunDurationMs":{}}}}}"#,
        lat[0],
        q(0.5),
        lat[lat.len() - 1],
        q(0.9),
        q(0.95),
        requests as f64 / secs,
        requests - errors,
        errors as f64 / requests as f64,
        secs * 1000.0
    )
}

/// `fail`, `pass` or `inconclusive` from the gate's last stderr line.
fn verdict(atlas: &Path, dir: &Path, args: &[String]) -> String {
    let out = Command::new(atlas)
        .current_dir(dir)
        .args(args)
        .output()
        .expect("cannot run atlas");
    let err = String::from_utf8_lossy(&out.stderr);
    let v = err
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("gate: "))
        .unwrap_or("")
        .trim()
        .to_string();
    match (out.status.code(), v.as_str()) {
        (Some(1), "fail") => "fail".into(),
        (Some(0), "pass") => "pass".into(),
        (Some(0), "inconclusive") => "inconclusive".into(),
        _ => panic!("unexpected atlas result {:?}: {err}", out.status.code()),
    }
}

fn main() {
    let atlas =
        PathBuf::from(std::env::var("ATLAS").unwrap_or_else(|_| "target/release/atlas".into()))
            .canonicalize()
            .expect("ATLAS: the atlas binary");
    let null_trials: usize = env("NULL_TRIALS", 2000);
    let reg_trials: usize = env("REG_TRIALS", 1000);
    let history: usize = env("HISTORY", 20);
    let requests: usize = env("REQUESTS", 3000);
    let noise: f64 = env("NOISE", 0.10);
    let regression: f64 = env("REGRESSION", 0.30);
    let seed: u64 = env("SEED", 1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let work = tempfile::tempdir().expect("tempdir");
    let hist = work.path().join("history");
    std::fs::create_dir(&hist).expect("mkdir");
    // no atlas.toml: the defaults.
    let mut cfgs = vec![Cfg {
        name: "single baseline (today)".into(),
        args: vec![
            "baseline".into(),
            "compare".into(),
            format!("history/run-{:03}.json", history - 1),
            "cand-1.json".into(),
        ],
    }];
    for model in ["percentage", "t_test", "iqr"] {
        for runs in [1usize, 3] {
            let mut args: Vec<String> = vec![
                "baseline".into(),
                "compare".into(),
                "--history".into(),
                "history".into(),
                "--model".into(),
                model.into(),
            ];
            args.extend((1..=runs).map(|i| format!("cand-{i}.json")));
            cfgs.push(Cfg {
                name: format!(
                    "{model}, candidate {}",
                    if runs == 1 {
                        "1 run".to_string()
                    } else {
                        format!("median of {runs}")
                    }
                ),
                args,
            });
        }
    }
    // counts[cfg] = (null fail, null inconclusive, reg fail, reg inconclusive)
    let mut counts = vec![(0usize, 0usize, 0usize, 0usize); cfgs.len()];
    for (scenario, trials) in [(0usize, null_trials), (1, reg_trials)] {
        let scale = if scenario == 0 { 1.0 } else { 1.0 + regression };
        for t in 0..trials {
            for i in 0..history {
                std::fs::write(
                    hist.join(format!("run-{i:03}.json")),
                    run_summary(&mut rng, requests, noise, 1.0),
                )
                .expect("write");
            }
            for i in 1..=3 {
                std::fs::write(
                    work.path().join(format!("cand-{i}.json")),
                    run_summary(&mut rng, requests, noise, scale),
                )
                .expect("write");
            }
            for (k, c) in cfgs.iter().enumerate() {
                let v = verdict(&atlas, work.path(), &c.args);
                let e = &mut counts[k];
                match (scenario, v.as_str()) {
                    (0, "fail") => e.0 += 1,
                    (0, "inconclusive") => e.1 += 1,
                    (1, "fail") => e.2 += 1,
                    (1, "inconclusive") => e.3 += 1,
                    _ => {}
                }
            }
            if (t + 1) % 200 == 0 {
                eprintln!("scenario {scenario}: {} / {trials}", t + 1);
            }
        }
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "history {history} runs, {requests} requests/run, noise {noise}, regression +{:.0}%, {null_trials} null trials, {reg_trials} regression trials, seed {seed}\n",
        regression * 100.0
    )
    .ok();
    writeln!(out, "| gate | false alarms | inconclusive (no change) | +{:.0}% detected | inconclusive (regressed) |", regression * 100.0).ok();
    writeln!(out, "| --- | --- | --- | --- | --- |").ok();
    let p = |n: usize, d: usize| format!("{:.2}% ({n}/{d})", n as f64 * 100.0 / d.max(1) as f64);
    for (c, e) in cfgs.iter().zip(&counts) {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            c.name,
            p(e.0, null_trials),
            p(e.1, null_trials),
            p(e.2, reg_trials),
            p(e.3, reg_trials)
        )
        .ok();
    }
}
