//! Logs for the window Atlas measured a preview in: a link into the team's log tool through the
//! `[evidence] logs_url` template, and, for a local app, the tail of its log file (redacted and
//! bounded) for the comment.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;

/// At most this much of the end of a log file is read.
pub const TAIL_BYTES: u64 = 16 * 1024;
/// At most this many lines of it are kept.
pub const TAIL_LINES: usize = 60;

/// The `[evidence] logs_url` template filled for `app` over `from..to` (RFC 3339, UTC).
pub fn link(
    template: &str,
    app: &str,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> String {
    let t = |d: chrono::DateTime<chrono::Utc>| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    crate::text::fill_url(
        template,
        &[("app", app), ("from", &t(from)), ("to", &t(to))],
    )
}

/// The last lines of the log file at `path` (at most [`TAIL_LINES`] lines of its last
/// [`TAIL_BYTES`]), secret values redacted; `None` when it cannot be read or is empty.
pub fn tail_file(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    f.take(TAIL_BYTES).read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    // a read that starts mid-file starts mid-line: that partial line is dropped.
    let text = if start > 0 {
        text.split_once('\n').map_or("", |(_, rest)| rest)
    } else {
        &text
    };
    let tail = super::checks::tail(text, TAIL_LINES);
    (!tail.trim().is_empty()).then(|| crate::secret::redact(&tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_has_the_app_and_the_window() {
        let from = chrono::DateTime::parse_from_rfc3339("2026-12-02T15:00:00Z")
            .unwrap()
            .to_utc();
        let to = from + chrono::Duration::minutes(5);
        assert_eq!(
            link(
                "https://logs.example.com/?q=app%3D{app}&from={from}&to={to}",
                "atlas-pr-2",
                from,
                to
            ),
            "https://logs.example.com/?q=app%3Datlas-pr-2&from=2026-12-02T15%3A00%3A00Z&to=2026-12-02T15%3A05%3A00Z"
        );
    }

    #[test]
    fn the_tail_is_bounded_and_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("app.log");
        let secret = "tail-secret-5d1e0c";
        crate::secret::register(secret);
        let mut text = String::new();
        for i in 0..5000 {
            text.push_str(&format!("line {i} token={secret}\n"));
        }
        std::fs::write(&p, &text).unwrap();
        let t = tail_file(&p).unwrap();
        assert_eq!(t.lines().count(), TAIL_LINES);
        assert!(t.ends_with("line 4999 token=***"), "{t}");
        assert!(!t.contains(secret));
        assert!(t.len() as u64 <= TAIL_BYTES);
        std::fs::write(&p, "").unwrap();
        assert_eq!(tail_file(&p), None);
        assert_eq!(tail_file(&dir.path().join("missing")), None);
    }
}
