//! Sign in with GitHub: the OAuth web flow, then a permission check with the user's own token.
//!
//! `/_atlas/github/login` sends the browser to GitHub's authorize page with a signed `state`
//! (bound to a nonce cookie, so a callback cannot be replayed into another browser);
//! `/_atlas/github/callback` exchanges the code, asks `GET /user` who signed in, and lets them in
//! when `GET /repos/{repo}/collaborators/{login}/permission` says at least `read`, or when they
//! are an active member of one of the listed teams. The session cookie is signed and expires.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::pages::{esc, page};
use super::respond::{
    Body, OAUTH_COOKIE, clear_cookie, cookie, html, query_param, redirect, safe_next,
    session_cookie, set_cookie,
};
use super::token::{Kind, PreviewKey, new_nonce, now};
use crate::secret::Secret;

/// The OAuth app a preview's gate signs in with (the `gate_github_client_id` and
/// `gate_github_client_secret` inputs), and the teams whose members may enter besides the
/// repository's readers (`[preview] allowed_teams`).
#[derive(Debug, Clone)]
pub struct OauthApp {
    pub client_id: String,
    pub client_secret: Secret,
    /// `org/team-slug` whose members may enter besides the repository's readers.
    pub teams: Vec<String>,
}

/// The OAuth app (or GitHub App) the gate signs in with, and who may enter.
#[derive(Debug, Clone)]
pub struct GithubAccess {
    pub client_id: String,
    pub client_secret: Secret,
    /// `owner/name`: users need at least read permission on it.
    pub repo: String,
    /// `org/team-slug`: active members get in even without repository permission.
    pub teams: Vec<String>,
    /// `https://github.com` (the authorize and token endpoints).
    pub web_url: String,
    /// `https://api.github.com`.
    pub api_url: String,
    /// The URL reviewers open (`https://<app>.fly.dev`): the callback is under it.
    pub public_url: String,
}

impl GithubAccess {
    fn callback(&self) -> String {
        format!(
            "{}/_atlas/github/callback",
            self.public_url.trim_end_matches('/')
        )
    }
}

/// What a sign-in needs of its gate (the gate builds it; this module never sees the proxy).
pub struct SignIn<'a> {
    pub github: &'a GithubAccess,
    pub key: &'a PreviewKey,
    pub https: bool,
    pub pr: Option<u64>,
    pub session_ttl: std::time::Duration,
    pub http: &'a reqwest::Client,
}

const STATE_TTL: u64 = 600;

pub(super) fn login(gate: &SignIn<'_>, req: &Request<Incoming>) -> Response<Body> {
    let (gh, key) = (gate.github, gate.key);
    let next = query_param(req.uri(), "next")
        .map(|n| {
            url::form_urlencoded::parse(format!("n={n}").as_bytes())
                .next()
                .map(|(_, v)| v.to_string())
                .unwrap_or_default()
        })
        .map(|n| safe_next(&n))
        .filter(|n| n.len() <= 512)
        .unwrap_or_else(|| "/".into());
    let nonce = new_nonce();
    let extra = format!("{nonce}_{}", URL_SAFE_NO_PAD.encode(next.as_bytes()));
    let state = key.mint(Kind::OauthState, now() + STATE_TTL, &extra);
    let mut authorize = format!(
        "{}/login/oauth/authorize?client_id={}&redirect_uri={}&state={}&allow_signup=false",
        gh.web_url.trim_end_matches('/'),
        enc(&gh.client_id),
        enc(&gh.callback()),
        state
    );
    if !gh.teams.is_empty() {
        authorize.push_str("&scope=read%3Aorg");
    }
    let mut r = redirect(&authorize);
    set_cookie(
        &mut r,
        &format!(
            "{OAUTH_COOKIE}={nonce}; Path=/_atlas/github/; Max-Age={STATE_TTL}; HttpOnly; SameSite=Lax{}",
            if gate.https { "; Secure" } else { "" }
        ),
    );
    r
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub(super) async fn callback(gate: &SignIn<'_>, req: &Request<Incoming>) -> Response<Body> {
    let (gh, key) = (gate.github, gate.key);
    let restart = |why: &str| {
        html(
            StatusCode::FORBIDDEN,
            page(
                "Sign-in did not complete",
                &[esc(why)],
                Some(("/_atlas/github/login", "Sign in with GitHub again")),
            ),
        )
    };
    if let Some(err) = query_param(req.uri(), "error") {
        return restart(&format!("GitHub answered `{err}`."));
    }
    let (Some(code), Some(state)) = (
        query_param(req.uri(), "code"),
        query_param(req.uri(), "state"),
    ) else {
        return restart("The callback had no code or state.");
    };
    let Ok(claims) = key.verify(Kind::OauthState, state, now()) else {
        return restart("The sign-in state was not issued by this preview or has expired.");
    };
    let Some((nonce, next_b64)) = claims.extra.split_once('_') else {
        return restart("The sign-in state is malformed.");
    };
    if cookie(req.headers(), OAUTH_COOKIE) != Some(nonce) {
        return restart("The sign-in was started in another browser.");
    }
    let next = URL_SAFE_NO_PAD
        .decode(next_b64)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .map(|n| safe_next(&n))
        .unwrap_or_else(|| "/".into());
    let code = url::form_urlencoded::parse(format!("c={code}").as_bytes())
        .next()
        .map(|(_, v)| v.to_string())
        .unwrap_or_default();
    let login = match sign_in(gate, gh, &code).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "atlas gate: GitHub sign-in failed: {}",
                crate::secret::redact(&format!("{e:#}"))
            );
            return restart("GitHub did not confirm the sign-in; try again.");
        }
    };
    match allowed(gate, gh, &login.0, &login.1).await {
        Ok(true) => {
            let ttl = gate.session_ttl.as_secs().max(60);
            let session = key.mint(Kind::Session, now() + ttl, &login.0);
            let mut r = redirect(&next);
            set_cookie(&mut r, &session_cookie(&session, ttl, gate.https));
            set_cookie(&mut r, &clear_cookie(OAUTH_COOKIE));
            r
        }
        Ok(false) => html(
            StatusCode::FORBIDDEN,
            page(
                "No access to this preview",
                &[format!(
                    "You are signed in to GitHub as <code>{}</code>, who has no read access to <code>{}</code>{}.",
                    esc(&login.0),
                    esc(&gh.repo),
                    if gh.teams.is_empty() {
                        String::new()
                    } else {
                        format!(" and is not in {}", esc(&gh.teams.join(", ")))
                    }
                )],
                None,
            ),
        ),
        Err(e) => {
            eprintln!(
                "atlas gate: permission check failed: {}",
                crate::secret::redact(&format!("{e:#}"))
            );
            restart("GitHub did not answer the permission check; try again.")
        }
    }
}

/// Code -> user token -> login. The token is registered for redaction and never stored.
async fn sign_in(
    gate: &SignIn<'_>,
    gh: &GithubAccess,
    code: &str,
) -> anyhow::Result<(String, Secret)> {
    let url = format!(
        "{}/login/oauth/access_token",
        gh.web_url.trim_end_matches('/')
    );
    let resp = gate
        .http
        .post(&url)
        .header("accept", "application/json")
        .form(&[
            ("client_id", gh.client_id.as_str()),
            ("client_secret", gh.client_secret.expose()),
            ("code", code),
            ("redirect_uri", &gh.callback()),
        ])
        .send()
        .await?;
    let status = resp.status();
    let v: serde_json::Value = resp.json().await?;
    let Some(token) = v["access_token"].as_str() else {
        anyhow::bail!(
            "GitHub POST /login/oauth/access_token: {status}: {}",
            v["error"].as_str().unwrap_or("no access_token")
        );
    };
    let token = Secret::new(token);
    let resp = api(gate, gh, &token, "/user").await?;
    let status = resp.status();
    if !status.is_success() {
        anyhow::bail!("GitHub GET /user: {status}");
    }
    let v: serde_json::Value = resp.json().await?;
    let login = v["login"].as_str().unwrap_or_default().to_string();
    if !super::token::is_field(&login) {
        anyhow::bail!("GitHub GET /user: no usable login");
    }
    Ok((login, token))
}

async fn api(
    gate: &SignIn<'_>,
    gh: &GithubAccess,
    token: &Secret,
    path: &str,
) -> reqwest::Result<reqwest::Response> {
    gate.http
        .get(format!("{}{path}", gh.api_url.trim_end_matches('/')))
        .header("accept", "application/vnd.github+json")
        .header("user-agent", "atlas-gate")
        .header("x-github-api-version", "2022-11-28")
        .bearer_auth(token.expose())
        .send()
        .await
}

/// Read permission on the repository, or active membership of a listed team.
async fn allowed(
    gate: &SignIn<'_>,
    gh: &GithubAccess,
    login: &str,
    token: &Secret,
) -> anyhow::Result<bool> {
    let path = format!("/repos/{}/collaborators/{login}/permission", gh.repo);
    let resp = api(gate, gh, token, &path).await?;
    let status = resp.status();
    if status.is_success() {
        let v: serde_json::Value = resp.json().await?;
        if matches!(
            v["permission"].as_str(),
            Some("read" | "triage" | "write" | "maintain" | "admin")
        ) {
            return Ok(true);
        }
    } else if !matches!(status.as_u16(), 403 | 404) {
        // 403/404: the user cannot see the repository, which is a "no", not an outage.
        anyhow::bail!("GitHub GET {path}: {status}");
    }
    for team in &gh.teams {
        let Some((org, slug)) = team.split_once('/') else {
            continue;
        };
        let path = format!("/orgs/{org}/teams/{slug}/memberships/{login}");
        let resp = api(gate, gh, token, &path).await?;
        let status = resp.status();
        if status.is_success() {
            let v: serde_json::Value = resp.json().await?;
            if v["state"].as_str() == Some("active") {
                return Ok(true);
            }
        } else if !matches!(status.as_u16(), 403 | 404) {
            anyhow::bail!("GitHub GET {path}: {status}");
        }
    }
    Ok(false)
}
