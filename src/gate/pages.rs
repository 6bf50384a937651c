//! The pages the gate answers itself: sign-in (401), refused (403), upstream trouble (502/504).
//! Everything interpolated is escaped; no token or key is ever written into a page.

use std::fmt::Write as _;

/// HTML-escapes text for element content and quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One page: a title, paragraphs of already-escaped HTML, and an optional action link.
pub fn page(title: &str, paragraphs: &[String], action: Option<(&str, &str)>) -> String {
    let mut body = String::new();
    for p in paragraphs {
        let _ = writeln!(body, "<p>{p}</p>");
    }
    if let Some((href, label)) = action {
        let _ = writeln!(
            body,
            "<p><a class=\"button\" id=\"atlas-action\" href=\"{}\">{}</a></p>",
            esc(href),
            esc(label)
        );
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width\"><meta name=\"robots\" content=\"noindex\">\
<title>{t}</title><style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#1f2328}}\
code{{background:#f6f8fa;padding:.1rem .3rem;border-radius:4px}}.button{{display:inline-block;padding:.5rem 1rem;background:#1f883d;color:#fff;border-radius:6px;text-decoration:none}}</style>\
</head><body><h1>{t}</h1>\n{body}<p><small>Atlas access gate</small></p></body></html>\n",
        t = esc(title)
    )
}

/// How to get in again, worded for the preview's PR when it is known.
pub fn fresh_link_hint(pr: Option<u64>) -> String {
    let cmd = match pr {
        Some(n) => format!("atlas preview link --pr {n}"),
        None => "atlas preview link --pr &lt;number&gt;".to_string(),
    };
    format!(
        "Get a fresh link from the pull request's Atlas comment (on a private repository), \
or ask someone with the repository's gate secret to mint one with <code>{cmd}</code>. \
Re-running the preview workflow also mints a new one."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_text_is_inert() {
        let p = page("<x>", &[esc("<script>\"'&")], Some(("/a?\"b", "go")));
        assert!(!p.contains("<script>"));
        assert!(p.contains("&lt;script&gt;&quot;&#39;&amp;"));
        assert!(p.contains("href=\"/a?&quot;b\""));
    }
}
