//! The trend dashboard: one self-contained HTML page (inline SVG drawn here, no script or
//! style from anywhere else, a Content-Security-Policy that forbids fetching anything) with
//! p95, average latency and error rate over the history's commits, overall and per endpoint,
//! release markers, and the current run's point.

use std::fmt::Write as _;

use super::history::History;
use super::summary::Summary;

/// One chart's data.
struct Chart {
    title: String,
    unit: &'static str,
    /// (commit label, value) oldest first
    points: Vec<(String, f64)>,
    current: Option<f64>,
    /// indices into `points` that are releases
    releases: Vec<usize>,
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn fmt_value(unit: &str, v: f64) -> String {
    if unit == "%" {
        format!("{:.2}%", v * 100.0)
    } else {
        format!("{v:.1} ms")
    }
}

const W: f64 = 560.0;
const H: f64 = 200.0;
const PAD_L: f64 = 64.0;
const PAD_R: f64 = 16.0;
const PAD_T: f64 = 16.0;
const PAD_B: f64 = 28.0;

fn svg(chart: &Chart, id: usize) -> String {
    let n = chart.points.len() + usize::from(chart.current.is_some());
    let values = chart
        .points
        .iter()
        .map(|p| p.1)
        .chain(chart.current)
        .filter(|v| v.is_finite());
    let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    lo = lo.min(0.0);
    if hi <= lo {
        hi = lo + 1.0;
    }
    hi *= 1.1;
    let x = |i: usize| {
        if n <= 1 {
            PAD_L + (W - PAD_L - PAD_R) / 2.0
        } else {
            PAD_L + (W - PAD_L - PAD_R) * i as f64 / (n - 1) as f64
        }
    };
    let y = |v: f64| PAD_T + (H - PAD_T - PAD_B) * (1.0 - (v - lo) / (hi - lo));
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" id="chart-{id}" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="{}">"#,
        esc(&chart.title)
    );
    let _ = write!(
        s,
        r##"<rect x="0" y="0" width="{W}" height="{H}" fill="#fff"/><line x1="{PAD_L}" y1="{}" x2="{}" y2="{}" stroke="#888"/><line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{}" stroke="#888"/>"##,
        H - PAD_B,
        W - PAD_R,
        H - PAD_B,
        H - PAD_B
    );
    for v in [lo, (lo + hi) / 2.0, hi] {
        let _ = write!(
            s,
            r##"<text x="{}" y="{:.1}" font-size="10" text-anchor="end" fill="#444">{}</text>"##,
            PAD_L - 4.0,
            y(v) + 3.0,
            esc(&fmt_value(chart.unit, v))
        );
    }
    for &r in &chart.releases {
        let _ = write!(
            s,
            r##"<line class="release" x1="{0:.1}" y1="{PAD_T}" x2="{0:.1}" y2="{1}" stroke="#c80" stroke-dasharray="4 3"><title>release {2}</title></line>"##,
            x(r),
            H - PAD_B,
            esc(&chart.points[r].0)
        );
    }
    let line: Vec<String> = chart
        .points
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{:.1},{:.1}", x(i), y(p.1)))
        .collect();
    if !line.is_empty() {
        let _ = write!(
            s,
            r##"<polyline fill="none" stroke="#2563eb" stroke-width="2" points="{}"/>"##,
            line.join(" ")
        );
    }
    for (i, (label, v)) in chart.points.iter().enumerate() {
        let _ = write!(
            s,
            r##"<circle class="pt" cx="{:.1}" cy="{:.1}" r="3.5" fill="#2563eb"><title>{}: {}</title></circle>"##,
            x(i),
            y(*v),
            esc(label),
            esc(&fmt_value(chart.unit, *v))
        );
    }
    if let Some(v) = chart.current {
        let _ = write!(
            s,
            r##"<circle class="pt current" cx="{:.1}" cy="{:.1}" r="5.5" fill="#dc2626"><title>this run: {}</title></circle>"##,
            x(n - 1),
            y(v),
            esc(&fmt_value(chart.unit, v))
        );
    }
    if let (Some(first), Some(last)) = (chart.points.first(), chart.points.last()) {
        let _ = write!(
            s,
            r##"<text x="{PAD_L}" y="{}" font-size="10" fill="#444">{}</text><text x="{}" y="{}" font-size="10" text-anchor="end" fill="#444">{}</text>"##,
            H - 8.0,
            esc(&first.0),
            W - PAD_R,
            H - 8.0,
            esc(&last.0)
        );
    }
    s.push_str("</svg>");
    s
}

fn label_of(commit: Option<&str>, fallback: &str) -> String {
    match commit {
        Some(c) => c.get(..7).unwrap_or(c).to_string(),
        None => fallback.to_string(),
    }
}

/// Renders the dashboard. `releases` are commits (full or abbreviated) to mark; `current` is
/// the run under review (a PR's), drawn as a separate point after the history.
pub fn render(
    history: &History,
    current: Option<&Summary>,
    releases: &[String],
    title: &str,
) -> String {
    let entries = &history.entries;
    let labels: Vec<String> = entries
        .iter()
        .map(|e| label_of(e.commit.as_deref(), &e.label))
        .collect();
    let release_idx: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            e.commit.as_deref().is_some_and(|c| {
                releases
                    .iter()
                    .any(|r| r.len() >= 7 && (c.starts_with(r.as_str()) || r.starts_with(c)))
            })
        })
        .map(|(i, _)| i)
        .collect();
    // the endpoint names, in first-seen order
    let mut names: Vec<String> = Vec::new();
    for s in entries.iter().map(|e| &e.summary).chain(current) {
        for ep in &s.endpoints {
            if !names.contains(&ep.name) {
                names.push(ep.name.clone());
            }
        }
    }
    type Pick = fn(&Summary, Option<&str>) -> Option<f64>;
    let metrics: [(&str, &'static str, Pick); 3] = [
        ("p95 latency", "ms", |s, ep| match ep {
            None => Some(s.metrics.http_req_duration.p95),
            Some(n) => s
                .endpoints
                .iter()
                .find(|e| e.name == n)
                .map(|e| e.duration.p95),
        }),
        ("average latency", "ms", |s, ep| match ep {
            None => Some(s.metrics.http_req_duration.avg),
            Some(n) => s
                .endpoints
                .iter()
                .find(|e| e.name == n)
                .map(|e| e.duration.avg),
        }),
        ("error rate", "%", |s, ep| match ep {
            None => Some(s.metrics.errors.rate),
            Some(n) => s
                .endpoints
                .iter()
                .find(|e| e.name == n && e.count > 0)
                .map(|e| e.errors as f64 / e.count as f64),
        }),
    ];
    let mut sections = vec![(String::from("all requests"), None::<String>)];
    if names.len() > 1 {
        sections.extend(names.iter().map(|n| (n.clone(), Some(n.clone()))));
    }
    let mut body = String::new();
    let mut id = 0;
    let mut total_points = 0usize;
    for (heading, ep) in &sections {
        let _ = write!(
            body,
            "<section><h2>{}</h2><div class=\"row\">",
            esc(heading)
        );
        for (name, unit, pick) in &metrics {
            let mut points = Vec::new();
            let mut rel = Vec::new();
            for (i, e) in entries.iter().enumerate() {
                if let Some(v) = pick(&e.summary, ep.as_deref()) {
                    if release_idx.contains(&i) {
                        rel.push(points.len());
                    }
                    points.push((labels[i].clone(), v));
                }
            }
            let cur = current.and_then(|c| pick(c, ep.as_deref()));
            let chart = Chart {
                title: format!("{heading}: {name}"),
                unit,
                points,
                current: cur,
                releases: rel,
            };
            total_points += chart.points.len() + usize::from(chart.current.is_some());
            let _ = write!(
                body,
                "<figure><figcaption>{}</figcaption>{}</figure>",
                esc(name),
                svg(&chart, id)
            );
            id += 1;
        }
        body.push_str("</div></section>");
    }
    let notes: String = history
        .notes
        .iter()
        .map(|n| format!("<li>{}</li>", esc(n)))
        .collect();
    format!(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#111;background:#f8fafc}}
h1{{font-size:20px}} h2{{font-size:16px;margin:18px 0 6px}}
.row{{display:flex;flex-wrap:wrap;gap:12px}} figure{{margin:0;background:#fff;border:1px solid #ddd;padding:6px}}
figcaption{{font-size:12px;color:#444}} .legend span{{margin-right:16px;font-size:12px}}
</style></head>
<body data-charts="{charts}" data-expected-points="{total_points}">
<h1>{title}</h1>
<p class="legend"><span style="color:#2563eb">&#9679; history ({runs} runs)</span><span style="color:#dc2626">&#9679; this run</span><span style="color:#c80">&#9482; release</span></p>
{body}
{notes_html}
<script>
// counts what was drawn, so a test (or a reader) can check the page rendered every point.
document.body.dataset.points = String(document.querySelectorAll("svg.chart circle.pt").length);
</script>
</body></html>
"##,
        title = esc(title),
        charts = id,
        runs = entries.len(),
        notes_html = if notes.is_empty() {
            String::new()
        } else {
            format!("<h2>notes</h2><ul>{notes}</ul>")
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::history::HistoryEntry;

    #[test]
    fn user_text_is_inert_and_nothing_is_fetched() {
        let mut s = Summary::default();
        s.metrics.http_req_duration.p95 = 100.0;
        s.metrics.http_reqs.total = 10;
        let h = History {
            entries: vec![HistoryEntry {
                label: "<script>alert(1)</script>".into(),
                commit: None,
                summary: s.clone(),
            }],
            notes: vec!["skipped <img src=x>".into()],
        };
        let html = render(&h, Some(&s), &[], "perf \"<b>\"");
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("://"), "the page must not reference any URL");
        assert!(html.contains("default-src 'none'"));
        assert_eq!(html.matches("class=\"pt\"").count(), 3);
        assert_eq!(html.matches("class=\"pt current\"").count(), 3);
    }
}
