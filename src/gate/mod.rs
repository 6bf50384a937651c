//! The access gate: a reverse proxy in front of a preview app that decides who may open it.
//!
//! - `public`: everyone; the gate only forwards (and still strips Atlas's own headers/cookies).
//! - `signed-link`: an HMAC-signed, expiring link (`?atlas_token=`) is exchanged for an
//!   `HttpOnly` session cookie and a redirect to the clean URL ([`token`]).
//! - `github`: the OAuth web flow; users with read permission (or listed teams) get in
//!   ([`github`]).
//!
//! Atlas's own smoke and load traffic carries a run-scoped bypass token in `x-atlas-bypass`.
//! The proxy itself is in [`server`]; [`cli`] is `atlas gate`.

pub mod commits;
pub mod fly;
pub mod github;
pub mod local;
pub mod pages;
mod respond;
pub mod server;
pub mod token;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http::{HeaderName, HeaderValue};

pub use server::{BYPASS_HEADER, COOKIE, CommitRoute, Gate, GateOptions, LINK_PARAM, Limits};
pub use token::{Kind, PreviewKey};

use crate::secret::Secret;

/// Who may open a preview (`[preview] access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Public,
    SignedLink,
    Github,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Public => "public",
            Mode::SignedLink => "signed-link",
            Mode::Github => "github",
        }
    }

    /// The mode an `[preview] access` declaration names: its first word (`public (local: ...)`
    /// is public). `None` for a declaration no gate enforces.
    pub fn from_access(access: &str) -> Option<Mode> {
        let word = access
            .split(|c: char| c.is_whitespace() || c == '(')
            .next()
            .unwrap_or("");
        Mode::parse(word).ok()
    }

    /// Who gets in, in words, for the identity clause (`teams`: `[preview] allowed_teams`).
    pub fn who(self, repository: &str, teams: &[String]) -> String {
        match self {
            Mode::Public => "anyone with the URL".into(),
            Mode::SignedLink => {
                "holders of a signed link (minted from the repository's gate secret)".into()
            }
            Mode::Github if teams.is_empty() => {
                format!("GitHub users with read access to {repository}")
            }
            Mode::Github => format!(
                "GitHub users with read access to {repository} or in {}",
                teams.join(", ")
            ),
        }
    }

    pub fn parse(s: &str) -> Result<Mode, String> {
        match s.trim() {
            "" | "public" => Ok(Mode::Public),
            "signed-link" => Ok(Mode::SignedLink),
            "github" => Ok(Mode::Github),
            other => Err(format!(
                "unknown access mode `{other}` (expected public, signed-link or github)"
            )),
        }
    }
}

/// The mode `[preview]` asks for, checked against the settings only that mode reads.
pub fn mode_of(preview: &crate::config::PreviewSettings) -> anyhow::Result<Mode> {
    let mode = Mode::from_access(&preview.access).unwrap_or(Mode::Public);
    if mode != Mode::Github && !preview.allowed_teams.is_empty() {
        anyhow::bail!(
            "atlas.toml [preview] allowed_teams applies to access = \"github\" only (access is \"{}\"): remove it or sign in with GitHub",
            mode.as_str()
        );
    }
    Ok(mode)
}

/// Where the gate forwards: `host:port`, plus headers the platform's router needs.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub authority: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// `atlas gate serve|mint`.
// Parsed once per process: the size of the larger variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, clap::Subcommand)]
pub enum GateCommand {
    /// Run the gate in front of an app.
    Serve(GateArgs),
    /// Mint a link or a bypass token for a preview (prints it; the secret comes from the
    /// environment: ATLAS_GATE_SECRET with --nonce, or a preview's ATLAS_GATE_KEY).
    Mint(MintArgs),
}

/// `atlas gate mint` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct MintArgs {
    /// link or bypass.
    #[arg(long, default_value = "link")]
    pub kind: String,
    /// The preview's name.
    #[arg(long)]
    pub preview: String,
    /// The nonce the preview was created with (with ATLAS_GATE_SECRET).
    #[arg(long)]
    pub nonce: Option<String>,
    /// The run a bypass token belongs to.
    #[arg(long)]
    pub run: Option<String>,
    /// How long it stays valid.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// The preview's URL (a link is printed as `<url>?atlas_token=...`).
    #[arg(long)]
    pub url: Option<String>,
}

impl MintArgs {
    /// Mints from the repository secret (with `--nonce`) or from a preview's derived key.
    pub fn mint(&self, secret: Option<&Secret>, key_hex: Option<&str>) -> anyhow::Result<String> {
        if !token::is_field(&self.preview) {
            anyhow::bail!("--preview `{}` must be [A-Za-z0-9_-]", self.preview);
        }
        let key = match (secret, &self.nonce, key_hex) {
            (Some(s), Some(n), _) => PreviewKey::derive(s, &self.preview, n),
            (Some(_), None, _) => anyhow::bail!("ATLAS_GATE_SECRET needs --nonce (the preview's)"),
            (None, _, Some(k)) => PreviewKey::from_hex(&self.preview, k)
                .map_err(|e| anyhow::anyhow!("ATLAS_GATE_KEY: {e}"))?,
            (None, _, None) => {
                anyhow::bail!("set ATLAS_GATE_SECRET (with --nonce) or ATLAS_GATE_KEY")
            }
        };
        let exp = token::now() + self.ttl.as_secs();
        match self.kind.as_str() {
            "link" => {
                let t = key.mint(Kind::Link, exp, "link");
                Ok(match &self.url {
                    Some(u) => format!(
                        "{u}{}{LINK_PARAM}={t}",
                        if u.contains('?') { '&' } else { '?' }
                    ),
                    None => t,
                })
            }
            "bypass" => {
                let run = self.run.as_deref().context("a bypass token needs --run")?;
                if !token::is_field(run) {
                    anyhow::bail!("--run `{run}` must be [A-Za-z0-9_-]");
                }
                Ok(key.mint(Kind::Bypass, exp, run))
            }
            k => anyhow::bail!("--kind `{k}`: expected link or bypass"),
        }
    }
}

/// `atlas gate serve` flags. Secrets come from the environment only: `ATLAS_GATE_KEY` (the preview's
/// derived key, hex) and `ATLAS_GATE_GITHUB_CLIENT_SECRET`.
#[derive(Debug, Clone, clap::Args)]
pub struct GateArgs {
    /// Address to listen on.
    #[arg(long, env = "ATLAS_GATE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// The app behind the gate, `host:port`.
    #[arg(long, env = "ATLAS_GATE_UPSTREAM")]
    pub upstream: String,
    /// public, signed-link or github.
    #[arg(long, env = "ATLAS_GATE_MODE", default_value = "public", value_parser = Mode::parse)]
    pub mode: Mode,
    /// The preview's name (its links and cookies are bound to it).
    #[arg(long, env = "ATLAS_GATE_PREVIEW", default_value = "")]
    pub preview: String,
    /// The run whose bypass tokens are accepted.
    #[arg(long, env = "ATLAS_GATE_RUN")]
    pub run: Option<String>,
    /// The preview's pull request (for the help text on refusal pages).
    #[arg(long, env = "ATLAS_GATE_PR")]
    pub pr: Option<u64>,
    /// Honour X-Forwarded-For/-Proto from the edge in front (Fly's proxy).
    #[arg(long, env = "ATLAS_GATE_TRUST_FORWARDED")]
    pub trust_forwarded: bool,
    /// Reviewers reach the gate over HTTPS: cookies get `Secure`.
    #[arg(long, env = "ATLAS_GATE_HTTPS")]
    pub https: bool,
    /// GitHub sign-in: the OAuth client id.
    #[arg(long, env = "ATLAS_GATE_GITHUB_CLIENT_ID")]
    pub github_client_id: Option<String>,
    /// GitHub sign-in: `owner/name` whose readers may enter.
    #[arg(long, env = "ATLAS_GATE_GITHUB_REPO")]
    pub github_repo: Option<String>,
    /// GitHub sign-in: `org/team-slug` whose members may enter (repeatable).
    #[arg(
        long = "github-team",
        env = "ATLAS_GATE_GITHUB_TEAMS",
        value_delimiter = ','
    )]
    pub github_teams: Vec<String>,
    #[arg(long, default_value = "https://github.com")]
    pub github_url: String,
    #[arg(long, default_value = "https://api.github.com")]
    pub github_api_url: String,
    /// The URL reviewers open; GitHub's callback comes back under it.
    #[arg(long, env = "ATLAS_GATE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// How long a GitHub sign-in lasts.
    #[arg(long, default_value = "8h", value_parser = parse_duration)]
    pub session_ttl: Duration,
    /// The upstream must start answering within this.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,
    /// The commit the upstream runs (full sha): `/_atlas/c/<sha7>/` is the current version.
    #[arg(long, env = "ATLAS_GATE_SHA")]
    pub sha: Option<String>,
    /// Fly: the upstream is Fly's proxy (Flycast) and this machine is the stable version
    /// (sent as `fly-force-instance-id`).
    #[arg(long, env = "ATLAS_GATE_UPSTREAM_INSTANCE")]
    pub upstream_instance: Option<String>,
    /// A kept commit, `<sha>=<host:port>` or `<sha>=instance:<machine-id>` (the upstream with
    /// `fly-force-instance-id`); repeatable, newest first.
    #[arg(long = "commit", env = "ATLAS_GATE_COMMITS", value_delimiter = ',')]
    pub commits: Vec<String>,
    /// Worker threads; 1 (the default, a Fly shared-cpu-1x gate) runs on a current-thread
    /// runtime.
    #[arg(long, env = "ATLAS_GATE_THREADS", default_value_t = 1)]
    pub threads: usize,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("`{s}`: {e}"))
}

impl GateArgs {
    /// Validates flags plus the two secret variables into options.
    pub fn options(
        &self,
        key_hex: Option<&str>,
        github_secret: Option<&str>,
    ) -> anyhow::Result<GateOptions> {
        if !self.preview.is_empty() && !token::is_field(&self.preview) {
            anyhow::bail!("--preview `{}` must be [A-Za-z0-9_-]", self.preview);
        }
        if let Some(r) = &self.run
            && !token::is_field(r)
        {
            anyhow::bail!("--run `{r}` must be [A-Za-z0-9_-]");
        }
        let key = match key_hex.filter(|k| !k.trim().is_empty()) {
            Some(k) => {
                if self.preview.is_empty() {
                    anyhow::bail!("--preview is required with ATLAS_GATE_KEY");
                }
                Some(
                    PreviewKey::from_hex(&self.preview, k)
                        .map_err(|e| anyhow::anyhow!("ATLAS_GATE_KEY: {e}"))?,
                )
            }
            None => None,
        };
        let github = if self.mode == Mode::Github {
            let client_id = self
                .github_client_id
                .clone()
                .filter(|s| !s.is_empty())
                .context("access `github` needs --github-client-id")?;
            let secret = github_secret
                .filter(|s| !s.is_empty())
                .context("access `github` needs ATLAS_GATE_GITHUB_CLIENT_SECRET")?;
            let repo = self
                .github_repo
                .clone()
                .filter(|r| r.split('/').count() == 2)
                .context("access `github` needs --github-repo owner/name")?;
            for t in &self.github_teams {
                if t.split('/').count() != 2 {
                    anyhow::bail!("--github-team `{t}` must be org/team-slug");
                }
            }
            let public_url = self.public_url.clone().context(
                "access `github` needs --public-url (GitHub's callback comes back to it)",
            )?;
            Some(github::GithubAccess {
                client_id,
                client_secret: Secret::new(secret),
                repo,
                teams: self.github_teams.clone(),
                web_url: self.github_url.clone(),
                api_url: self.github_api_url.clone(),
                public_url,
            })
        } else {
            None
        };
        let upstream = Upstream {
            authority: self.upstream.clone(),
            headers: match &self.upstream_instance {
                Some(id) => vec![force_instance(id)?],
                None => Vec::new(),
            },
        };
        let mut commits = Vec::new();
        for c in self.commits.iter().filter(|c| !c.trim().is_empty()) {
            let (sha, target) = c
                .trim()
                .split_once('=')
                .with_context(|| format!("--commit `{c}` is not <sha>=<host:port>"))?;
            if !commits::is_sha(sha) {
                anyhow::bail!("--commit `{c}`: `{sha}` is not a lowercase hex sha");
            }
            let upstream = match target.strip_prefix("instance:") {
                Some(id) => Upstream {
                    authority: self.upstream.clone(),
                    headers: vec![force_instance(id)?],
                },
                None => Upstream {
                    authority: target.to_string(),
                    headers: Vec::new(),
                },
            };
            commits.push(CommitRoute {
                sha: sha.to_string(),
                upstream,
            });
        }
        if let Some(s) = &self.sha
            && !commits::is_sha(s)
        {
            anyhow::bail!("--sha `{s}` is not a lowercase hex sha");
        }
        Ok(GateOptions {
            mode: self.mode,
            upstream,
            sha: self.sha.clone().filter(|s| !s.is_empty()),
            commits,
            key,
            run: self.run.clone(),
            trust_forwarded: self.trust_forwarded,
            https: self.https,
            pr: self.pr,
            github,
            session_ttl: self.session_ttl,
            limits: Limits {
                upstream_timeout: self.upstream_timeout,
                ..Limits::default()
            },
        })
    }
}

/// Fly's routing header that sends a request through its proxy to one machine (waking it).
pub const FORCE_INSTANCE: &str = "fly-force-instance-id";

fn force_instance(id: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        anyhow::bail!("machine id `{id}` is not alphanumeric");
    }
    Ok((
        HeaderName::from_static(FORCE_INSTANCE),
        HeaderValue::from_str(id)?,
    ))
}

/// Binds and serves a gate until the process is stopped; prints one line with its address.
pub async fn run(opts: GateOptions, listen: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("gate: cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let mode = opts.mode;
    let upstream = opts.upstream.authority.clone();
    let gate = Arc::new(Gate::new(opts)?);
    println!(
        "atlas gate: listening on http://{addr} (access {}, upstream {upstream})",
        mode.as_str()
    );
    tokio::select! {
        r = gate.serve(listener) => r,
        _ = shutdown_signal() => Ok(()),
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Mints a link to a preview: `<url>?atlas_token=...`, valid for `ttl`.
pub fn mint_link(secret: &Secret, preview: &str, nonce: &str, url: &str, ttl: Duration) -> String {
    let key = PreviewKey::derive(secret, preview, nonce);
    let t = key.mint(Kind::Link, token::now() + ttl.as_secs(), "link");
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{LINK_PARAM}={t}")
}

/// Mints the run-scoped bypass token Atlas's own traffic carries, valid for `ttl`.
pub fn mint_bypass(
    secret: &Secret,
    preview: &str,
    nonce: &str,
    run: &str,
    ttl: Duration,
) -> Secret {
    let key = PreviewKey::derive(secret, preview, nonce);
    Secret::new(key.mint(Kind::Bypass, token::now() + ttl.as_secs(), run))
}

/// `settings` with `header` added to every smoke check and load request, so Atlas's own traffic
/// passes the gate and measures what reviewers get.
pub fn with_bypass(
    settings: &crate::config::Settings,
    header: &(String, Secret),
) -> crate::config::Settings {
    let mut s = settings.clone();
    for c in &mut s.smoke {
        c.headers
            .insert(header.0.clone(), header.1.expose().to_string());
    }
    for r in &mut s.load.requests {
        r.headers
            .insert(header.0.clone(), header.1.expose().to_string());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: GateArgs,
    }

    fn args(extra: &[&str]) -> GateArgs {
        let mut v = vec!["gate", "--upstream", "app.flycast:80"];
        v.extend_from_slice(extra);
        Cli::try_parse_from(v).unwrap().args
    }

    #[test]
    fn kept_commits_are_hex_shas_with_a_host_or_a_machine() {
        let sha = "b".repeat(40);
        let o = args(&[
            "--sha",
            &"c".repeat(40),
            "--upstream-instance",
            "e2865013b21d89",
            "--commit",
            &format!(
                "{sha}=instance:148e1d45ad4e89,{}=127.0.0.1:9001",
                "a".repeat(40)
            ),
        ])
        .options(None, None)
        .unwrap();
        assert_eq!(o.commits.len(), 2);
        assert_eq!(o.commits[0].upstream.authority, "app.flycast:80");
        assert_eq!(o.commits[0].upstream.headers[0].0.as_str(), FORCE_INSTANCE);
        assert_eq!(o.commits[0].upstream.headers[0].1, "148e1d45ad4e89");
        assert_eq!(o.commits[1].upstream.authority, "127.0.0.1:9001");
        assert_eq!(o.upstream.headers[0].1, "e2865013b21d89");
        for bad in [
            "--commit=zzzzzzz=127.0.0.1:1",
            "--commit=abc1234",
            "--commit=abc1234=instance:../x",
            "--sha=ABCDEF1",
            "--upstream-instance=a b",
        ] {
            assert!(args(&[bad]).options(None, None).is_err(), "{bad}");
        }
        // Empty (a Fly gate with no kept commit): none.
        assert!(
            args(&["--commit", ""])
                .options(None, None)
                .unwrap()
                .commits
                .is_empty()
        );
    }
}
