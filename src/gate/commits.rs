//! Per-commit URLs: the gate routes `/_atlas/c/<sha7>/...` to a kept version of the app.
//!
//! A preview keeps the previous commits' app instances (a stopped Fly machine, a local process)
//! beside the current one; the gate knows each by its commit and upstream (`--commit
//! <sha>=<host:port>` or `<sha>=instance:<machine-id>`, which is the default upstream plus Fly's
//! `fly-force-instance-id`, so Fly's proxy wakes that one machine).
//!
//! How a request picks its version, first match wins:
//!
//! 1. **The prefix**: `/_atlas/c/<sha>/<rest>` goes to that commit as `/<rest>` (`<sha>`: 7 to 40
//!    lowercase hex digits naming one kept commit). The answer sets the session cookie
//!    `atlas_commit=<sha7>` (`Path=/`, `HttpOnly`, `SameSite=Lax`, no `Max-Age`) for rule 3.
//!    Anything else after the prefix (`..`, non-hex, too long, a commit that is not kept) is the
//!    gate's own 404 page listing the kept commits: it never reaches an upstream.
//! 2. **The `Referer`**: a request with a same-host `Referer` comes from a page of this preview:
//!    under a commit prefix, it is a subresource or link of that commit's page (an app's
//!    absolute `/static/app.js`); anywhere else, of a page shown at a stable URL, which is always
//!    the stable version (rule 3 redirects a commit's pages to their prefixed URL), so the
//!    cookie does not apply.
//! 3. **The cookie**: a request without a same-host `Referer` carrying `atlas_commit` stays on
//!    that commit, unless it is a navigation the reviewer started (`Sec-Fetch-Site: none` —
//!    typed, bookmarked — or `cross-site`, such as the stable link in the PR comment): that one
//!    is the stable version and clears the cookie, so the stable URL always means the newest
//!    commit.
//!
//! A navigation (`Sec-Fetch-Mode: navigate`) that rules 2 or 3 sent to a commit is redirected
//! (307, method and body kept) to its prefixed URL, so the address bar names the version shown
//! and its subresources carry the prefix in their `Referer`. Two tabs compare two commits side
//! by side through their prefixed URLs; an app that sends no `Referer` (`Referrer-Policy:
//! no-referrer`) relies on the cookie, which follows the commit opened last.
//!
//! Access rules are decided first: a commit URL asks for the same link, sign-in or bypass as the
//! stable URL, and the 404 list is shown only to those let in.

use http::header::{self, HeaderMap};

/// The path prefix of commit URLs.
pub const COMMIT_PREFIX: &str = "/_atlas/c/";
/// The cookie that keeps a browser on the commit it opened last.
pub const COMMIT_COOKIE: &str = "atlas_commit";

pub use crate::naming::{is_sha, sha7};

/// The index of the route whose commit `name` names (a prefix of exactly one kept sha).
pub fn lookup<'a>(shas: impl Iterator<Item = &'a str>, name: &str) -> Option<usize> {
    if !is_sha(name) {
        return None;
    }
    let mut found = None;
    for (i, s) in shas.enumerate() {
        if !s.is_empty() && s.starts_with(name) {
            if found.is_some() {
                return None;
            }
            found = Some(i);
        }
    }
    found
}

/// A path under the commit prefix split into the commit name and the rest (`""` or `/...`).
pub fn split(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix(COMMIT_PREFIX)?;
    Some(match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    })
}

/// A same-host `Referer`: `Some(Some(name))` under a commit prefix, `Some(None)` elsewhere;
/// `None` without one (no allocation).
pub fn referer_commit(h: &HeaderMap) -> Option<Option<&str>> {
    let r = h.get(header::REFERER)?.to_str().ok()?;
    let host = h.get(header::HOST)?.to_str().ok()?;
    let after_scheme = r.split_once("://")?.1;
    let (rhost, path) = match after_scheme.find('/') {
        Some(i) => (&after_scheme[..i], &after_scheme[i..]),
        None => return None,
    };
    if !rhost.eq_ignore_ascii_case(host) {
        return None;
    }
    Some(split(path).map(|(name, _)| name))
}

/// A navigation the reviewer started: typed, bookmarked or from another site.
pub fn fresh_navigation(h: &HeaderMap) -> bool {
    is_navigation(h)
        && h.get("sec-fetch-site")
            .is_some_and(|v| v == "none" || v == "cross-site")
}

/// A top-level document load (browsers say so in `Sec-Fetch-Mode`).
pub fn is_navigation(h: &HeaderMap) -> bool {
    h.get("sec-fetch-mode").is_some_and(|v| v == "navigate")
}

/// The commit cookie: a browser session's, host-only.
pub fn commit_cookie(sha7: &str, https: bool) -> String {
    format!(
        "{COMMIT_COOKIE}={sha7}; Path=/; HttpOnly; SameSite=Lax{}",
        if https { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn only_short_lowercase_hex_names_a_commit() {
        assert!(is_sha("abc1234"));
        assert!(is_sha(&"a".repeat(40)));
        for bad in [
            "abc123", "..", "../etc", "ABC1234", "abc123g", "", "abc1234/",
        ] {
            assert!(!is_sha(bad), "{bad}");
        }
        assert!(!is_sha(&"a".repeat(41)));
        let shas = ["abc1234ffff", "abc1299eeee", ""];
        assert_eq!(lookup(shas.iter().copied(), "abc1234"), Some(0));
        assert_eq!(lookup(shas.iter().copied(), "abc12"), None);
        // Ambiguous prefixes name nothing.
        let shas = ["abc1234aaaa", "abc1234bbbb"];
        assert_eq!(lookup(shas.iter().copied(), "abc1234"), None);
        assert_eq!(lookup(shas.iter().copied(), "abc1234b"), Some(1));
    }

    #[test]
    fn the_prefix_splits_into_name_and_rest() {
        assert_eq!(split("/_atlas/c/abc1234/x/y"), Some(("abc1234", "/x/y")));
        assert_eq!(split("/_atlas/c/abc1234"), Some(("abc1234", "")));
        assert_eq!(split("/_atlas/c/../x"), Some(("..", "/x")));
        assert_eq!(split("/menu"), None);
    }

    #[test]
    fn a_referer_counts_only_from_the_same_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("pr-7.fly.dev"));
        h.insert(
            header::REFERER,
            HeaderValue::from_static("https://pr-7.fly.dev/_atlas/c/abc1234/menu"),
        );
        assert_eq!(referer_commit(&h), Some(Some("abc1234")));
        h.insert(
            header::REFERER,
            HeaderValue::from_static("https://evil.example/_atlas/c/abc1234/"),
        );
        assert_eq!(referer_commit(&h), None);
        h.insert(
            header::REFERER,
            HeaderValue::from_static("https://pr-7.fly.dev/menu"),
        );
        assert_eq!(referer_commit(&h), Some(None));
    }
}
