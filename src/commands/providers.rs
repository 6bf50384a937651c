//! Provider assembly, one place for every command: the cloud family (Neon, Fly behind its
//! optional access gate, GitHub) from the inputs, and the local family (the cluster, the
//! process, the file forge) from `atlas.toml`. Each is built once per command, with the retry
//! policy `Ctx` chose.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::ctx::Ctx;
use crate::config::{Config, Settings};
use crate::provider::fly::FlyPlatform;
use crate::provider::github::GithubForge;
use crate::provider::local::forge::LocalForge;
use crate::provider::local::pg::LocalPg;
use crate::provider::local::process::LocalProcess;
use crate::provider::neon::NeonDatabase;
use crate::provider::{BranchRequest, Deleted, Providers};
use crate::secret;

/// The GitHub forge of this run, from the `github_token` input.
pub fn forge(ctx: &Ctx) -> anyhow::Result<GithubForge> {
    forge_for(ctx, &ctx.config)
}

fn forge_for(ctx: &Ctx, config: &Config) -> anyhow::Result<GithubForge> {
    Ok(GithubForge::from_env(&ctx.github, config)?.with_policy(ctx.retry.clone()))
}

/// The Neon database of `repo`'s previews (and of a release's rehearsal branch).
pub fn neon(ctx: &Ctx, config: &Config, repo: &str) -> anyhow::Result<NeonDatabase> {
    NeonDatabase::new(&config.neon, &ctx.settings, repo, ctx.retry.clone())
}

pub(super) fn repository(ctx: &Ctx) -> anyhow::Result<String> {
    ctx.github
        .repository
        .clone()
        .context("GITHUB_REPOSITORY is not set: atlas run needs the runner's environment")
}

/// Neon + Fly + GitHub from the inputs. Fails (naming the input) before any network call.
pub fn cloud(ctx: &Ctx) -> anyhow::Result<Providers> {
    ctx.config.require_cloud()?;
    build_cloud(ctx, &ctx.config)
}

fn build_cloud(ctx: &Ctx, config: &Config) -> anyhow::Result<Providers> {
    config.require_github_token()?;
    let repo = repository(ctx)?;
    let forge = forge_for(ctx, config)?;
    let database = neon(ctx, config, &repo)?;
    let platform = FlyPlatform::new(&config.fly, &ctx.settings, &repo, ctx.retry.clone())?;
    Ok(Providers {
        database: Box::new(database),
        platform: gated_fly(ctx, config, platform)?,
        forge: Box::new(forge),
    })
}

/// The Atlas image a gate machine runs when `gate_image` is not given.
fn default_gate_image() -> String {
    format!("ghcr.io/atlas-preview/atlas:v{}", env!("CARGO_PKG_VERSION"))
}

/// The Fly platform, behind an access gate when `[preview] access` asks for one.
fn gated_fly(
    ctx: &Ctx,
    config: &Config,
    fly: FlyPlatform,
) -> anyhow::Result<Box<dyn crate::provider::Platform>> {
    use crate::gate::Mode;
    let mode = crate::gate::mode_of(&ctx.settings.preview)?;
    if mode == Mode::Public {
        return Ok(Box::new(fly));
    }
    let secret = config.gate.secret.clone().with_context(|| {
        format!(
            "input `gate_secret` is required for [preview] access = \"{}\"",
            mode.as_str()
        )
    })?;
    let github = match (
        &config.gate.github_client_id,
        &config.gate.github_client_secret,
    ) {
        (Some(id), Some(s)) if mode == Mode::Github => Some(crate::gate::fly::FlyGithub {
            client_id: id.clone(),
            client_secret: s.clone(),
            teams: ctx.settings.preview.allowed_teams.clone(),
        }),
        _ => None,
    };
    // This run's bypass tokens name it; a later run's gate refuses them.
    let run = match (&ctx.github.run_id, &ctx.github.run_attempt) {
        (Some(id), Some(a)) => format!("gh-{id}-{a}"),
        (Some(id), None) => format!("gh-{id}"),
        _ => format!("run-{}", crate::gate::token::new_nonce()),
    };
    let image = config.gate.image.clone().unwrap_or_else(default_gate_image);
    Ok(Box::new(crate::gate::fly::FlyGate::new(
        fly, mode, secret, &image, &run, github,
    )?))
}

/// The sweep needs no image: only credentials.
pub fn cloud_for_sweep(ctx: &Ctx) -> anyhow::Result<Providers> {
    let mut c = ctx.config.clone();
    if c.image.is_none() {
        c.image = Some("unused-by-sweep".into());
    }
    c.require_cloud()?;
    build_cloud(ctx, &c)
}

/// The local family, with the state directory resolved. The returned `LocalPg` handle is also
/// kept so callers can stop the cluster.
pub struct LocalSetup {
    pub providers: Providers,
    pub pg: std::sync::Arc<LocalPg>,
    pub state_dir: PathBuf,
}

struct ArcDb(std::sync::Arc<LocalPg>);

#[async_trait::async_trait]
impl crate::provider::Database for ArcDb {
    fn kind(&self) -> &'static str {
        self.0.kind()
    }
    async fn ensure_branch(&self, req: &BranchRequest) -> anyhow::Result<crate::provider::Branch> {
        self.0.ensure_branch(req).await
    }
    async fn delete_branch(&self, name: &str) -> anyhow::Result<Deleted> {
        self.0.delete_branch(name).await
    }
    async fn schema_diff(
        &self,
        branch: &crate::provider::Branch,
    ) -> anyhow::Result<crate::provider::SchemaDiff> {
        self.0.schema_diff(branch).await
    }
    async fn list_branches(&self) -> anyhow::Result<Vec<crate::provider::Owned>> {
        self.0.list_branches().await
    }
    async fn set_expiry(
        &self,
        name: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<()> {
        self.0.set_expiry(name, at).await
    }
    async fn reset_branch(
        &self,
        branch: &crate::provider::Branch,
        req: &BranchRequest,
    ) -> anyhow::Result<crate::provider::Branch> {
        self.0.reset_branch(branch, req).await
    }
    async fn mask_mark(&self, branch: &crate::provider::Branch) -> anyhow::Result<Option<String>> {
        self.0.mask_mark(branch).await
    }
    async fn mask_again(
        &self,
        branch: &crate::provider::Branch,
        req: &BranchRequest,
        since: Option<&str>,
    ) -> anyhow::Result<()> {
        self.0.mask_again(branch, req, since).await
    }
    async fn clear_expiry(&self, name: &str) -> anyhow::Result<()> {
        self.0.clear_expiry(name).await
    }
    async fn snapshot_branch(
        &self,
        req: &BranchRequest,
    ) -> anyhow::Result<Option<crate::provider::Branch>> {
        self.0.snapshot_branch(req).await
    }
}

/// Builds the local providers: starts (or reuses) the cluster and prepares the parent database.
pub async fn local_providers(
    settings: &Settings,
    state_dir: &Path,
    print_comments: bool,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<LocalSetup> {
    use crate::provider::Database as _;
    // Settings errors before anything starts.
    let gate_mode = crate::gate::mode_of(&settings.preview)?;
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create the state directory {}", state_dir.display()))?;
    let state_dir = state_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", state_dir.display()))?;
    let command = settings.local.command.clone().context(
        "[local] command is not set in atlas.toml: it is the shell command that runs the app",
    )?;
    let pg = LocalPg::start(&settings.local, &state_dir, log).await?;
    if let Err(e) = pg
        .ensure_parent(
            &settings.database.parent,
            settings.database.migrations.as_deref(),
            log,
        )
        .await
    {
        // Do not leave a cluster running that serves no preview.
        if pg.owns_cluster() && pg.list_branches().await.is_ok_and(|b| b.is_empty()) {
            let _ = pg.stop().await;
        }
        return Err(e);
    }
    let pg = std::sync::Arc::new(pg);
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let mut platform: Box<dyn crate::provider::Platform> =
        Box::new(LocalProcess::new(&state_dir, &command, &cwd));
    if let Some(mode) = Some(gate_mode).filter(|m| *m != crate::gate::Mode::Public) {
        let exe = std::env::current_exe().context("cannot find the atlas binary for the gate")?;
        let mut gate = crate::gate::local::LocalGate::for_state_dir(
            platform,
            &state_dir,
            mode,
            gate_secret(),
            &exe,
        )?
        .with_keep_commits(settings.preview.keep_commits);
        if mode == crate::gate::Mode::Github {
            gate = gate.with_github(local_github(settings, std::env::vars())?);
        }
        platform = Box::new(gate);
    }
    Ok(LocalSetup {
        providers: Providers {
            database: Box::new(ArcDb(pg.clone())),
            platform,
            forge: Box::new(LocalForge::new(&state_dir, print_comments)),
        },
        pg,
        state_dir,
    })
}

/// The local family for a CLI command run outside Actions: `atlas.toml`, the `INPUT_*`
/// variables a local run may still set, and the providers in `[local] state_dir`.
pub async fn local_for_cli(
    config: Option<&Path>,
) -> anyhow::Result<(Settings, Config, LocalSetup)> {
    let settings = super::ctx::settings_for_cli(config)?;
    let mut log = |l: &str| eprintln!("{}", secret::redact(l));
    let setup = local_providers(&settings, &settings.local.state_dir, false, &mut log).await?;
    let config = Config::from_vars(std::env::vars())?;
    Ok((settings, config, setup))
}

/// GitHub sign-in for a local preview, from the same inputs as on Fly
/// (`INPUT_GATE_GITHUB_CLIENT_ID`, `INPUT_GATE_GITHUB_CLIENT_SECRET`), the repository whose
/// readers get in (`ATLAS_GATE_GITHUB_REPO`, else `GITHUB_REPOSITORY`) and the GitHub to sign in
/// with (`GITHUB_SERVER_URL`, `GITHUB_API_URL`: github.com unless set).
fn local_github(
    settings: &Settings,
    vars: impl Iterator<Item = (String, String)>,
) -> anyhow::Result<crate::gate::local::LocalGithub> {
    let vars: Vec<(String, String)> = vars.collect();
    let config = Config::from_vars(vars.iter().cloned())?;
    let github = crate::github_env::GithubEnv::from_vars(vars.iter().cloned());
    let (Some(client_id), Some(client_secret)) = (
        config.gate.github_client_id.clone(),
        config.gate.github_client_secret.clone(),
    ) else {
        anyhow::bail!(
            "[preview] access = \"github\" needs a GitHub OAuth app: set INPUT_GATE_GITHUB_CLIENT_ID and INPUT_GATE_GITHUB_CLIENT_SECRET (its callback URL http://127.0.0.1/_atlas/github/callback: GitHub accepts any loopback port)"
        );
    };
    let repo = local_repository(&vars).context(
            "[preview] access = \"github\" needs the repository whose readers may open the preview: set GITHUB_REPOSITORY (or ATLAS_GATE_GITHUB_REPO) to owner/name",
        )?;
    Ok(crate::gate::local::LocalGithub {
        app: crate::gate::github::OauthApp {
            client_id,
            client_secret,
            teams: settings.preview.allowed_teams.clone(),
        },
        repo,
        web_url: github.server_url.clone(),
        api_url: github.api_url.clone(),
    })
}

/// The repository a local preview stands for: `ATLAS_GATE_GITHUB_REPO`, else
/// `GITHUB_REPOSITORY`, when it is `owner/name`. Its readers are the ones a local
/// `access = "github"` lets in, and the comment's identity clause names it.
pub(super) fn local_repository(vars: &[(String, String)]) -> Option<String> {
    let github = crate::github_env::GithubEnv::from_vars(vars.iter().cloned());
    vars.iter()
        .find(|(k, v)| k == "ATLAS_GATE_GITHUB_REPO" && !v.is_empty())
        .map(|(_, v)| v.clone())
        .or(github.repository)
        .filter(|r| r.split('/').count() == 2 && !r.starts_with('/') && !r.ends_with('/'))
}

/// The repository's gate secret, when the environment has one (`ATLAS_GATE_SECRET`, or the
/// action's `gate_secret` input).
pub(super) fn gate_secret() -> Option<secret::Secret> {
    ["ATLAS_GATE_SECRET", "INPUT_GATE_SECRET"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.trim().is_empty())
        .map(|v| secret::Secret::new(v.trim()))
}

#[cfg(test)]
mod tests {
    fn vars(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn a_local_github_sign_in_takes_the_fly_inputs_and_the_runner_variables() {
        let mut s = crate::config::Settings::default();
        s.preview.allowed_teams = vec!["acme/reviewers".into()];
        let g = super::local_github(
            &s,
            vars(&[
                ("INPUT_GATE_GITHUB_CLIENT_ID", "Iv1.local"),
                ("INPUT_GATE_GITHUB_CLIENT_SECRET", "local-secret-c3"),
                ("GITHUB_REPOSITORY", "acme/shop"),
                ("GITHUB_SERVER_URL", "https://ghes.acme.example/"),
                ("GITHUB_API_URL", "https://ghes.acme.example/api/v3"),
            ]),
        )
        .unwrap();
        assert_eq!(g.app.client_id, "Iv1.local");
        assert_eq!(g.app.client_secret.expose(), "local-secret-c3");
        assert_eq!(g.app.teams, ["acme/reviewers"]);
        assert_eq!(g.repo, "acme/shop");
        assert_eq!(g.web_url, "https://ghes.acme.example");
        assert_eq!(g.api_url, "https://ghes.acme.example/api/v3");
        // The gate's own variable names the repository over the runner's; github.com by default.
        let g = super::local_github(
            &s,
            vars(&[
                ("INPUT_GATE_GITHUB_CLIENT_ID", "Iv1.local"),
                ("INPUT_GATE_GITHUB_CLIENT_SECRET", "local-secret-c3"),
                ("GITHUB_REPOSITORY", "acme/other"),
                ("ATLAS_GATE_GITHUB_REPO", "acme/shop"),
            ]),
        )
        .unwrap();
        assert_eq!(g.repo, "acme/shop");
        assert_eq!(g.web_url, "https://github.com");
        assert_eq!(g.api_url, "https://api.github.com");
        // Missing pieces are errors that say what to set.
        let e = super::local_github(&s, vars(&[("GITHUB_REPOSITORY", "acme/shop")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("INPUT_GATE_GITHUB_CLIENT_ID"), "{e}");
        let e = super::local_github(
            &s,
            vars(&[
                ("INPUT_GATE_GITHUB_CLIENT_ID", "Iv1.local"),
                ("INPUT_GATE_GITHUB_CLIENT_SECRET", "local-secret-c3"),
                ("GITHUB_REPOSITORY", "shop"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("GITHUB_REPOSITORY"), "{e}");
    }
}
