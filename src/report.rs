//! Rendering: one minijinja environment with the templates of `templates/` embedded, strict
//! undefined variables, an override directory, a `md` filter that makes user text inert in
//! markdown, and a cap at GitHub's 65,536-character comment limit.
//!
//! Override templates come from the repository, on a PR from its head: untrusted code. Every
//! render has a fuel budget, so a template that loops for ever stops with an error; a failed
//! override falls back to the built-in template, with a warning naming the override.
//!
//! Providers never render; templates never call providers. Contexts are `Serialize` structs.

use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior, Value};

// The comment limit lives on the ground floor, where the forges can keep to it too.
pub use crate::text::{COMMENT_LIMIT, truncate_comment};

/// The embedded templates: (name, source).
pub const TEMPLATES: &[(&str, &str)] = &[
    ("macros.md.j2", include_str!("../templates/macros.md.j2")),
    ("preview.md.j2", include_str!("../templates/preview.md.j2")),
    (
        "destroyed.md.j2",
        include_str!("../templates/destroyed.md.j2"),
    ),
    ("summary.md.j2", include_str!("../templates/summary.md.j2")),
    ("skip.md.j2", include_str!("../templates/skip.md.j2")),
    ("chart.md.j2", include_str!("../templates/chart.md.j2")),
    ("verify.md.j2", include_str!("../templates/verify.md.j2")),
    ("estate.md.j2", include_str!("../templates/estate.md.j2")),
];

/// Makes user-controlled text inert in markdown: no HTML, no mentions, no links or emphasis, no
/// marker spoofing (`<!--` cannot survive), no control, bidi or zero-width characters, one line,
/// bounded length.
pub fn escape_markdown(s: &str) -> String {
    const MAX: usize = 300;
    let mut out = String::with_capacity(s.len().min(MAX * 2));
    for (n, c) in s.chars().enumerate() {
        if n >= MAX {
            out.push('…');
            break;
        }
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            // bidi controls, zero-width characters, BOM: dropped (they hide or reorder text).
            '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}'
            | '\u{FEFF}' => {}
            c if c.is_control() => {}
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            // `@` as an entity: GitHub renders it but does not notify anyone.
            '@' => out.push_str("&#64;"),
            '\\' | '`' | '*' | '_' | '{' | '}' | '[' | ']' | '(' | ')' | '#' | '+' | '-' | '.'
            | '!' | '|' | '~' | ':' | '$' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Text for inside a fenced code block: the fence cannot be closed early.
pub fn escape_code(s: &str) -> String {
    s.replace("```", "`\u{200B}``")
}

/// Strict mode lets undefined values reach filters; the text filters refuse them, so a typo in
/// a template is an error rather than an empty cell.
fn defined(v: &Value, filter: &str) -> Result<(), minijinja::Error> {
    if v.is_undefined() {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::UndefinedError,
            format!("undefined value passed to the `{filter}` filter"),
        ));
    }
    Ok(())
}

fn md_filter(v: Value) -> Result<String, minijinja::Error> {
    defined(&v, "md")?;
    Ok(match v.as_str() {
        Some(s) => escape_markdown(s),
        None => escape_markdown(&v.to_string()),
    })
}

fn code_filter(v: Value) -> Result<String, minijinja::Error> {
    defined(&v, "code")?;
    Ok(match v.as_str() {
        Some(s) => escape_code(&crate::secret::redact(s)),
        None => escape_code(&v.to_string()),
    })
}

/// A link target: an http(s) URL with anything that could end the link or open a tag or a
/// comment percent-encoded; anything else (a `javascript:` URL) becomes an empty target.
fn url_filter(v: Value) -> Result<String, minijinja::Error> {
    defined(&v, "url")?;
    let s = v
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string());
    if !(s.starts_with("https://") || s.starts_with("http://")) {
        return Ok("#".into());
    }
    Ok(crate::text::fill_url(&s, &[]))
}

/// The text of a pin value: `at_deploy` for [`crate::contract::PINNED_AT_DEPLOY`], else
/// `login` of the login.
fn pin_text(
    v: Value,
    filter: &str,
    at_deploy: &str,
    login: impl Fn(&str) -> String,
) -> Result<String, minijinja::Error> {
    defined(&v, filter)?;
    let by = v
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string());
    Ok(if by == crate::contract::PINNED_AT_DEPLOY {
        at_deploy.to_string()
    } else {
        login(&by)
    })
}

/// A pin in the comment: `pinned by @login` (the login escaped), or `pinned (label present at
/// deploy)` when no one is known to have added the label.
fn pinned_filter(v: Value) -> Result<String, minijinja::Error> {
    let at_deploy = crate::contract::pin_phrase(crate::contract::PINNED_AT_DEPLOY);
    pin_text(v, "pinned", &at_deploy, |by| {
        format!("pinned by @{}", escape_markdown(by))
    })
}

/// A pin in the estate table's Pinned column: `@login` (escaped, so no one is notified), or
/// `label present at deploy`.
fn pinner_filter(v: Value) -> Result<String, minijinja::Error> {
    pin_text(v, "pinner", crate::contract::PINNED_AT_DEPLOY, |by| {
        escape_markdown(&format!("@{by}"))
    })
}

/// Formats a number with a fixed number of decimals (`{{ x | fixed(2) }}`).
fn fixed(v: Value, digits: Option<u32>) -> String {
    let d = digits.unwrap_or(2) as usize;
    match f64::try_from(v.clone()) {
        Ok(x) if x.is_finite() => format!("{x:.d$}"),
        _ => v.to_string(),
    }
}

/// Formats a ratio as a percentage (`0.0093 | percent` -> `0.93%`).
fn percent(v: Value, digits: Option<u32>) -> String {
    let d = digits.unwrap_or(2) as usize;
    match f64::try_from(v.clone()) {
        Ok(x) if x.is_finite() => format!("{:.d$}%", x * 100.0),
        _ => v.to_string(),
    }
}

/// A time a person reads: `2026-12-04 23:24 UTC (in 3 days)`, relative to `now`. Anything that
/// is not an RFC 3339 time (`in an earlier run`) is returned as it is. The record keeps the
/// exact RFC 3339 time; this is only how comments show it.
pub fn human_time(value: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(value.trim()) else {
        return value.to_string();
    };
    let t = t.with_timezone(&chrono::Utc);
    format!("{} ({})", t.format("%Y-%m-%d %H:%M UTC"), relative(t - now))
}

/// `in 3 days`, `5 hours ago`, `now`.
fn relative(d: chrono::TimeDelta) -> String {
    let secs = d.num_seconds();
    let a = secs.unsigned_abs();
    if a < 60 {
        return "now".into();
    }
    let (n, unit) = if a < 3600 {
        (a / 60, "minute")
    } else if a < 48 * 3600 {
        ((a + 1800) / 3600, "hour")
    } else {
        // Rounded, not floored: a 72-hour TTL read a few seconds after it was set is "in 3
        // days", which is what the person who set it expects to see.
        ((a + 43_200) / 86_400, "day")
    };
    let unit = if n == 1 {
        unit.to_string()
    } else {
        format!("{unit}s")
    };
    if secs > 0 {
        format!("in {n} {unit}")
    } else {
        format!("{n} {unit} ago")
    }
}

/// Instructions one render may execute: the built-in templates use well under 1% of it on a
/// full comment; `{% for a in range(10000) %}{% for b in range(10000) %}` runs out.
pub const RENDER_FUEL: u64 = 10_000_000;

/// The rendering environment.
pub struct Renderer {
    env: Environment<'static>,
    /// The embedded templates alone, when some were overridden: the fallback.
    builtin: Option<Box<Renderer>>,
    overridden: Vec<String>,
}

fn environment(now: chrono::DateTime<chrono::Utc>) -> Environment<'static> {
    let mut env = Environment::new();
    env.add_filter("when", move |v: String| human_time(&v, now));
    env.set_fuel(Some(RENDER_FUEL));
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(true);
    env.add_filter("md", md_filter);
    env.add_filter("code", code_filter);
    env.add_filter("url", url_filter);
    env.add_filter("fixed", fixed);
    env.add_filter("percent", percent);
    env.add_filter("pinned", pinned_filter);
    env.add_filter("pinner", pinner_filter);
    env
}

impl Renderer {
    /// Embedded templates, overridden by same-named `*.md.j2` files in `override_dir`; times
    /// are shown relative to the moment of rendering.
    pub fn new(override_dir: Option<&Path>) -> anyhow::Result<Renderer> {
        Renderer::new_at(override_dir, chrono::Utc::now())
    }

    /// As [`Renderer::new`], with times shown relative to `now` (the `when` filter).
    pub fn new_at(
        override_dir: Option<&Path>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<Renderer> {
        let mut env = environment(now);
        let mut overridden = Vec::new();
        for (name, src) in TEMPLATES {
            let src = match override_dir {
                Some(dir) => match std::fs::read_to_string(dir.join(name)) {
                    Ok(s) => {
                        overridden.push(name.to_string());
                        s
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => src.to_string(),
                    Err(e) => {
                        return Err(anyhow::anyhow!(
                            "cannot read template override {}: {e}",
                            dir.join(name).display()
                        ));
                    }
                },
                None => src.to_string(),
            };
            env.add_template_owned(name.to_string(), src)
                .map_err(|e| anyhow::anyhow!("template {name} does not compile: {e:#}"))?;
        }
        if let Some(dir) = override_dir
            && !dir.is_dir()
        {
            return Err(anyhow::anyhow!(
                "template directory {} does not exist (input `template_dir` / [templates] dir)",
                dir.display()
            ));
        }
        let builtin = if overridden.is_empty() {
            None
        } else {
            Some(Box::new(Renderer::new_at(None, now)?))
        };
        Ok(Renderer {
            env,
            builtin,
            overridden,
        })
    }

    /// Renders a template with a serializable context. The result is redacted. When an
    /// override fails (out of fuel, an undefined variable), the built-in template renders
    /// instead and the output starts with a warning naming the override and why.
    pub fn render<S: serde::Serialize>(&self, name: &str, ctx: &S) -> anyhow::Result<String> {
        let ctx = Value::from_serialize(ctx);
        match self.render_value(name, &ctx) {
            Ok(out) => Ok(out),
            Err(e) => match &self.builtin {
                // an override of `macros.md.j2` breaks the templates that import it
                Some(builtin) if !self.overridden.is_empty() => {
                    let out = builtin.render_value(name, &ctx).map_err(|b| {
                        anyhow::anyhow!("{e:#}; the built-in {name} failed too: {b:#}")
                    })?;
                    Ok(format!(
                        "> [!WARNING]\n> The template override failed ({}); the built-in {} was used.\n\n{out}",
                        escape_markdown(&format!("{e:#}")),
                        escape_markdown(name)
                    ))
                }
                _ => Err(e),
            },
        }
    }

    fn render_value(&self, name: &str, ctx: &Value) -> anyhow::Result<String> {
        let t = self
            .env
            .get_template(name)
            .map_err(|e| anyhow::anyhow!("no template {name}: {e}"))?;
        let out = t.render(ctx).map_err(|e| {
            let why = if e.kind() == minijinja::ErrorKind::OutOfFuel {
                format!("it ran past the budget of {RENDER_FUEL} instructions (an endless loop?)")
            } else {
                format!("{e:#}")
            };
            anyhow::anyhow!("rendering {name} failed: {why}")
        })?;
        Ok(crate::secret::redact(&out))
    }

    /// Renders a comment within GitHub's limit, degrading gracefully: first with details, then
    /// without (`details = false` in the context), then truncated with a note.
    pub fn render_comment<S: serde::Serialize>(
        &self,
        name: &str,
        ctx: &S,
    ) -> anyhow::Result<String> {
        let full = self.render_with_details(name, ctx, true)?;
        if full.chars().count() <= COMMENT_LIMIT {
            return Ok(full);
        }
        let lean = self.render_with_details(name, ctx, false)?;
        if lean.chars().count() <= COMMENT_LIMIT {
            return Ok(lean);
        }
        Ok(truncate_comment(&lean))
    }

    fn render_with_details<S: serde::Serialize>(
        &self,
        name: &str,
        ctx: &S,
        details: bool,
    ) -> anyhow::Result<String> {
        let mut v = serde_json::to_value(ctx)?;
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("details".into(), serde_json::Value::Bool(details));
        }
        self.render(name, &v)
    }
}

/// A template directory from the input (wins) or atlas.toml.
pub fn override_dir(input: Option<&PathBuf>, settings: Option<&PathBuf>) -> Option<PathBuf> {
    input.or(settings).cloned()
}

// ---------------------------------------------------------------------------------------------
// Render contexts: one struct per template, so a template's variables are a type, not a
// hand-written `json!` at each call site.

/// `summary.md.j2`: the job summary of any command.
#[derive(Debug, serde::Serialize)]
pub struct SummaryContext<'a, C: serde::Serialize> {
    pub command: &'a str,
    pub pr: Option<u64>,
    pub verdict: &'a str,
    pub reason: Option<&'a str>,
    pub contract: Option<&'a C>,
    pub error: Option<&'a str>,
}

/// `preview.md.j2`: the sticky comment of a live (or failed) preview.
#[derive(Debug, serde::Serialize)]
pub struct PreviewComment<'a, C: serde::Serialize> {
    pub marker: String,
    pub pr: u64,
    /// `ready` or `failed`.
    pub status: &'a str,
    pub contract: &'a C,
    pub error: Option<String>,
    pub generated_at: String,
    /// A signed-link preview on a private repository: a link that opens it (valid until the
    /// preview expires). Never set on a public repository, where anyone reads the comment.
    pub signed_link: Option<String>,
    /// A signed-link preview on a public repository: the command that mints a link.
    pub mint_hint: Option<String>,
}

/// `destroyed.md.j2`: the sticky comment after `down`.
#[derive(Debug, serde::Serialize)]
pub struct DestroyedComment<'a, C: serde::Serialize, R: serde::Serialize> {
    pub marker: String,
    pub pr: u64,
    pub destroyed_at: &'a str,
    pub removed: &'a R,
    pub audit: Option<String>,
    pub contract: &'a C,
    pub generated_at: String,
}

/// `skip.md.j2`.
#[derive(Debug, serde::Serialize)]
pub struct SkipContext<'a> {
    pub reason: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_a_date_and_how_far_away_it_is() {
        let now: chrono::DateTime<chrono::Utc> = "2026-12-01T23:24:00Z".parse().unwrap();
        assert_eq!(
            human_time("2026-12-04T23:24:53.926373574+00:00", now),
            "2026-12-04 23:24 UTC (in 3 days)"
        );
        assert_eq!(
            human_time("2026-12-01T18:00:00Z", now),
            "2026-12-01 18:00 UTC (5 hours ago)"
        );
        assert_eq!(
            human_time("2026-12-01T23:25:00+01:00", now),
            "2026-12-01 22:25 UTC (59 minutes ago)"
        );
        assert_eq!(
            human_time("2026-12-01T23:24:30Z", now),
            "2026-12-01 23:24 UTC (now)"
        );
        assert_eq!(
            human_time("2026-12-04T23:23:55Z", now),
            "2026-12-04 23:23 UTC (in 3 days)"
        );
        assert_eq!(human_time("in an earlier run", now), "in an earlier run");
    }

    #[test]
    fn escape_markdown_makes_text_inert() {
        let hostile = "<!-- atlas:preview --> @octocat **bold** [x](http://e) {{ 7*7 }} `code` \u{202e}evil\u{200b}\n::error::x";
        let e = escape_markdown(hostile);
        assert!(!e.contains("<!--"));
        assert!(!e.contains('<'));
        assert!(!e.contains("@octocat"));
        assert!(!e.contains('\n'));
        assert!(!e.contains('\u{202e}') && !e.contains('\u{200b}'));
        assert!(!e.contains("**"));
        assert!(!e.contains("{{"));
        assert!(!e.contains("::"));
        assert!(escape_markdown(&"x".repeat(70_000)).chars().count() <= 301);
    }

    #[test]
    fn truncation_respects_the_limit_and_fences() {
        let body = format!("# t\n```\n{}\n```\n", "line\n".repeat(20_000));
        let t = truncate_comment(&body);
        assert!(t.chars().count() <= COMMENT_LIMIT);
        assert_eq!(t.matches("```").count() % 2, 0);
        assert!(t.contains("truncated"));
    }

    #[test]
    fn strict_undefined_is_an_error() {
        let r = Renderer::new(None).unwrap();
        let err = r.render("skip.md.j2", &serde_json::json!({})).unwrap_err();
        assert!(err.to_string().contains("skip.md.j2"), "{err}");
    }

    #[test]
    fn override_dir_replaces_a_template() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("skip.md.j2"), "custom {{ reason | md }}").unwrap();
        let r = Renderer::new(Some(dir.path())).unwrap();
        let out = r
            .render("skip.md.j2", &serde_json::json!({"reason": "a_b"}))
            .unwrap();
        assert_eq!(out, "custom a\\_b");
        assert!(Renderer::new(Some(Path::new("/nonexistent/atlas-templates"))).is_err());
    }

    #[test]
    fn an_endless_override_runs_out_of_fuel_and_the_built_in_renders() {
        let endless = "{% for a in range(10000) %}{% for b in range(10000) %}{% for c in range(10000) %}x{% endfor %}{% endfor %}{% endfor %}";
        let ctx = serde_json::json!({"reason": "a_b"});
        let builtin = Renderer::new(None)
            .unwrap()
            .render("skip.md.j2", &ctx)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("skip.md.j2"), endless).unwrap();
        let r = Renderer::new(Some(dir.path())).unwrap();
        let out = r.render("skip.md.j2", &ctx).unwrap();
        // the warning is our words around names, escaped like any text of the comment
        assert!(
            out.contains(&escape_markdown("budget of 10000000 instructions")),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "the built-in {} was used",
                escape_markdown("skip.md.j2")
            )),
            "{out}"
        );
        assert!(out.ends_with(&builtin), "{out}");
        // the budget itself, without the fallback: a clear error naming the template
        let mut env = environment(chrono::Utc::now());
        env.add_template("loop", endless).unwrap();
        let e = env.get_template("loop").unwrap().render(()).unwrap_err();
        assert_eq!(e.kind(), minijinja::ErrorKind::OutOfFuel);
        // a template that is not overridden has no fallback: its error is the error
        let err = r
            .render("summary.md.j2", &serde_json::json!({}))
            .unwrap_err();
        assert!(err.to_string().contains("summary.md.j2"), "{err}");
    }
}
