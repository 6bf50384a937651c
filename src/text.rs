//! Plain text helpers shared by every floor.

/// GitHub rejects comment bodies longer than this (in characters).
pub const COMMENT_LIMIT: usize = 65_536;

/// `s` cut to `n` characters, with an ellipsis when anything was cut.
pub fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n).collect();
        t.push('…');
        t
    }
}

/// Checks a link template from the configuration: an `http(s)://` URL whose `{name}` parts are
/// all among `allowed`.
pub fn check_url_template(template: &str, allowed: &[&str]) -> Result<(), String> {
    if !(template.starts_with("https://") || template.starts_with("http://")) {
        return Err("it is not an http:// or https:// URL".into());
    }
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        let Some(j) = rest[i..].find('}') else {
            return Err("a { without its }".into());
        };
        let name = &rest[i + 1..i + j];
        if !allowed.contains(&name) {
            return Err(format!(
                "{{{name}}} is not a placeholder here (use {})",
                allowed
                    .iter()
                    .map(|a| format!("{{{a}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = &rest[i + j + 1..];
    }
    Ok(())
}

/// Fills a link template checked by [`check_url_template`]: each `{name}` becomes its value,
/// percent-encoded whole. The template's own text is made inert for a markdown link target and
/// for HTML: anything outside the URL characters that cannot end a link, open a tag or a
/// comment (`<!--`) is percent-encoded too.
pub fn fill_url(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        inert_url(&rest[..i], &mut out);
        let end = rest[i..].find('}').map(|j| i + j);
        match end.and_then(|e| {
            vars.iter()
                .find(|(k, _)| *k == &rest[i + 1..e])
                .map(|v| (e, v.1))
        }) {
            Some((e, value)) => {
                for b in value.bytes() {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        out.push(b as char);
                    } else {
                        out.push_str(&format!("%{b:02X}"));
                    }
                }
                rest = &rest[e + 1..];
            }
            None => {
                inert_url("{", &mut out);
                rest = &rest[i + 1..];
            }
        }
    }
    inert_url(rest, &mut out);
    out
}

/// URL text with only characters that are safe inside `[..](...)` and HTML, others encoded.
fn inert_url(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:/?#@!$&*+,;=%".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// Cuts a body to the comment limit on a line boundary (closing an open code fence) and says so.
pub fn truncate_comment(body: &str) -> String {
    const NOTE: &str = "\n\n> [!WARNING]\n> This comment was truncated to fit GitHub's 65,536-character limit; the full report is in the job summary.\n";
    let budget = COMMENT_LIMIT - NOTE.chars().count() - 8;
    let mut out = String::new();
    let mut count = 0;
    for line in body.split_inclusive('\n') {
        let n = line.chars().count();
        if count + n > budget {
            break;
        }
        out.push_str(line);
        count += n;
    }
    if out.is_empty() {
        out = body.chars().take(budget).collect();
    }
    if out.matches("```").count() % 2 == 1 {
        out.push_str("\n```");
    }
    out.push_str(NOTE);
    out
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn templates_are_checked_and_filled_inert() {
        let t = "https://grafana.example.com/explore?traceId={trace_id}&x=1";
        assert_eq!(check_url_template(t, &["trace_id"]), Ok(()));
        assert_eq!(
            fill_url(t, &[("trace_id", "0af7651916cd43dd8448eb211c80319c")]),
            "https://grafana.example.com/explore?traceId=0af7651916cd43dd8448eb211c80319c&x=1"
        );
        assert!(check_url_template("javascript:alert(1)//{trace_id}", &["trace_id"]).is_err());
        assert_eq!(
            check_url_template("https://x/{trace}", &["trace_id"]),
            Err("{trace} is not a placeholder here (use {trace_id})".into())
        );
        assert!(check_url_template("https://x/{trace_id", &["trace_id"]).is_err());
        // the template's text and the values cannot end the link, open a tag or a comment.
        let filled = fill_url(
            "https://x/a b)<!-- [y](z) -->\n`|\"'<b>{v}",
            &[("v", "<!--x--> &q=1)")],
        );
        for bad in ["<", ">", " ", ")", "(", "[", "]", "`", "|", "\"", "'", "\n"] {
            assert!(!filled.contains(bad), "{bad:?} in {filled}");
        }
        assert!(filled.ends_with("%3C%21--x--%3E%20%26q%3D1%29"), "{filled}");
        // RFC 3339 times keep their meaning through the encoding.
        assert_eq!(
            fill_url(
                "https://l/?from={from}",
                &[("from", "2026-12-02T15:00:00+00:00")]
            ),
            "https://l/?from=2026-12-02T15%3A00%3A00%2B00%3A00"
        );
    }
}
