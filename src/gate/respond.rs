//! The responses and request helpers the gate's modules share: its own pages, cookies,
//! redirects and the query/cookie readers. Nothing here decides access.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use super::pages::{esc, fresh_link_hint, page};

/// The response body: the upstream's, streamed, or one the gate wrote.
pub type Body = Either<Incoming, Full<Bytes>>;

/// The session cookie.
pub const COOKIE: &str = "atlas_gate";
/// The OAuth round trip's nonce cookie.
pub const OAUTH_COOKIE: &str = "atlas_oauth";
/// Every cookie of the gate's starts with this; none of them reaches the app.
pub(super) const COOKIE_PREFIX: &str = "atlas_";

/// The session cookie: host-only, `HttpOnly`, `SameSite=Lax`, `Secure` over HTTPS.
pub(super) fn session_cookie(value: &str, max_age: u64, https: bool) -> String {
    format!(
        "{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        if https { "; Secure" } else { "" }
    )
}

/// The value of cookie `name`, if the request carries it.
pub(super) fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    cookie_in(
        h.get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()),
        name,
    )
}

/// The value of cookie `name` in these `Cookie` header values.
pub(super) fn cookie_in<'a>(values: impl Iterator<Item = &'a str>, name: &str) -> Option<&'a str> {
    values
        .flat_map(|s| s.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// The raw value of query parameter `name` (tokens need no decoding: their alphabet is URL-safe).
pub(super) fn query_param<'a>(uri: &'a Uri, name: &str) -> Option<&'a str> {
    param_in(uri.query()?, name)
}

/// The raw value of parameter `name` in a query string.
pub(super) fn param_in<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The cookies of these `Cookie` header values that are not Atlas's own (`atlas_*`,
/// `__Host-atlas_*`): what the app may see.
pub(super) fn app_cookies<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    values
        .flat_map(|s| s.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .filter(|c| {
            let name = c.split('=').next().unwrap_or("").trim();
            !name.starts_with(COOKIE_PREFIX) && !name.starts_with("__Host-atlas_")
        })
        .collect()
}

/// Whether a `Cookie` header value may name an Atlas cookie (a cheap look before parsing).
pub(super) fn may_hold_atlas_cookie(value: &[u8]) -> bool {
    value
        .windows(COOKIE_PREFIX.len())
        .any(|w| w.eq_ignore_ascii_case(COOKIE_PREFIX.as_bytes()))
}

/// A local `next` path for after sign-in: same origin only, else `/`.
pub(super) fn safe_next(next: &str) -> String {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && next.len() <= 2048
        && next.bytes().all(|b| (0x21..0x7f).contains(&b));
    if ok { next.to_string() } else { "/".into() }
}

pub(super) fn clear_cookie(name: &str) -> String {
    format!("{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax")
}

pub(super) fn set_cookie(r: &mut Response<Body>, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The headers of every page the gate writes itself (besides its content type).
pub(super) const PAGE_HEADERS: [(&str, &str); 3] = [
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
];
pub(super) const HTML: &str = "text/html; charset=utf-8";

pub(super) fn html(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(HTML));
    for (n, v) in PAGE_HEADERS {
        h.insert(n, HeaderValue::from_static(v));
    }
    r
}

/// The page a gate writes when the app behind it cannot be reached or did not answer in time.
pub(super) fn upstream_failed(timed_out: bool) -> (StatusCode, String) {
    if timed_out {
        (
            StatusCode::GATEWAY_TIMEOUT,
            page(
                "The preview app timed out",
                &["The app behind the gate did not start answering in time.".into()],
                None,
            ),
        )
    } else {
        (
            StatusCode::BAD_GATEWAY,
            page(
                "The preview app did not answer",
                &["The gate could not reach the app behind it; it may be starting or have crashed. Try again in a moment.".into()],
                None,
            ),
        )
    }
}

/// 303 to a same-origin location; the page that held the token is not sent as `Referer`.
pub(super) fn redirect(location: &str) -> Response<Body> {
    let mut r = html(
        StatusCode::SEE_OTHER,
        page("Redirecting", &["Opening the preview.".into()], None),
    );
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    } else {
        r.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("/"));
    }
    r
}

pub(super) fn refused(title: &str, why: &str, pr: Option<u64>) -> Response<Body> {
    html(
        StatusCode::FORBIDDEN,
        page(title, &[esc(why), fresh_link_hint(pr)], None),
    )
}
