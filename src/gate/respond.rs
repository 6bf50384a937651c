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

/// The session cookie: host-only, `HttpOnly`, `SameSite=Lax`, `Secure` over HTTPS.
pub(super) fn session_cookie(value: &str, max_age: u64, https: bool) -> String {
    format!(
        "{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        if https { "; Secure" } else { "" }
    )
}

/// The value of cookie `name`, if the request carries it.
pub(super) fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// The raw value of query parameter `name` (tokens need no decoding: their alphabet is URL-safe).
pub(super) fn query_param<'a>(uri: &'a Uri, name: &str) -> Option<&'a str> {
    uri.query()?
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
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

pub(super) fn html(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
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
