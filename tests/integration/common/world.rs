//! The providers under test, built against the fakes: one place that knows how a Neon database,
//! a Fly platform and a Fly fleet are pointed at a fake (its URL, its token, short timeouts and
//! polling), so every test world is assembled the same way; [`Fakes`], the three fakes
//! together with the inputs that point the `atlas` binary at them; [`Cloud`], the Neon and Fly
//! fakes with the providers over them, and [`Preview`], the orchestration over those.

use std::time::Duration;

use atlas::config::{FlyAccess, NeonAccess, Settings};
use atlas::http::{RetryPolicy, Timeouts};
use atlas::preview::{self, DownOutcome, PreviewRequest, UpOptions, UpOutcome};
use atlas::provider::Providers;
use atlas::provider::fly::FlyPlatform;
use atlas::provider::github::GithubForge;
use atlas::provider::local::forge::LocalForge;
use atlas::provider::neon::NeonDatabase;
use atlas::secret::Secret;
use atlas::verify::fly::FlyFleet;

use super::fake_fly::FakeFly;
use super::fake_github::FakeGithub;
use super::fake_neon::{self, FakeNeon};

/// How the providers talk to the fakes: the retry policy, the timeouts and the poll interval.
#[derive(Clone)]
pub struct Wire {
    pub policy: RetryPolicy,
    pub timeouts: Timeouts,
    pub poll: Duration,
}

impl Wire {
    /// Short everything: a test that waits, waits on purpose.
    pub fn fast(max_attempts: u32, max_delay: Duration, deadline: Duration) -> Wire {
        Wire {
            policy: RetryPolicy {
                max_attempts,
                base_delay: Duration::from_millis(5),
                max_delay,
                deadline,
            },
            timeouts: Timeouts {
                connect: Duration::from_secs(2),
                request: Duration::from_millis(700),
            },
            poll: Duration::from_millis(5),
        }
    }
}

/// The Neon provider on the fake's project, with its token.
pub fn neon_database(neon: &FakeNeon, settings: &Settings, repo: &str, w: &Wire) -> NeonDatabase {
    NeonDatabase::new(
        &NeonAccess {
            api_key: Some(Secret::new(neon.core.token.clone())),
            project_id: Some(fake_neon::PROJECT.into()),
            api_url: url::Url::parse(&neon.api_url).expect("the fake's url"),
        },
        settings,
        repo,
        w.policy.clone(),
    )
    .expect("neon provider")
    .with_timeouts(w.timeouts, w.poll)
    .expect("neon timeouts")
}

/// The Fly provider of previews in `org`.
pub fn fly_platform(
    fly: &FakeFly,
    settings: &Settings,
    repo: &str,
    org: &str,
    w: &Wire,
) -> FlyPlatform {
    FlyPlatform::new(&fly_access(fly, org), settings, repo, w.policy.clone())
        .expect("fly provider")
        .with_timeouts(w.timeouts, w.poll)
        .expect("fly timeouts")
}

/// The Fly fleet of the verify chain (QA and production apps named from `prefix`).
pub fn fly_fleet(
    fly: &FakeFly,
    settings: &Settings,
    prefix: &str,
    org: &str,
    w: &Wire,
) -> FlyFleet {
    FlyFleet::new(&fly_access(fly, org), settings, prefix, w.policy.clone())
        .expect("fly fleet")
        .with_timeouts(w.timeouts, w.poll)
        .expect("fleet timeouts")
}

fn fly_access(fly: &FakeFly, org: &str) -> FlyAccess {
    FlyAccess {
        api_token: Some(Secret::new(fly.core.token.clone())),
        org: Some(org.into()),
        api_url: url::Url::parse(&fly.api_url).expect("the fake's url"),
    }
}

/// The GitHub fake of `repo` and the forge pointed at it with `token`; `GET /user` names
/// `user` (403 without one, as for an installation token).
pub async fn github_forge(
    repo: &str,
    token: &str,
    user: Option<&str>,
) -> (FakeGithub, GithubForge) {
    let gh = FakeGithub::start(repo, user).await;
    let forge = forge_for(&gh, repo, token);
    (gh, forge)
}

/// A new forge (as a new process makes one) of `repo` pointed at the running fake `gh`.
pub fn forge_for(gh: &FakeGithub, repo: &str, token: &str) -> GithubForge {
    GithubForge::new(&gh.url, repo, &Secret::new(token))
        .expect("github forge")
        .with_policy(RetryPolicy::fast())
}

/// Every request the GitHub fake received matched GitHub's API description.
pub fn assert_github_clean(gh: &FakeGithub) {
    let v = gh.violations();
    assert!(v.is_empty(), "requests that break GitHub's spec: {v:#?}");
}

/// The three cloud fakes of one world, started together, with the settings that point a
/// process at them: in process the providers above take their URLs and tokens; the `atlas`
/// binary takes the same from [`Fakes::inputs`] and [`Fakes::runner_vars`].
pub struct Fakes {
    pub neon: FakeNeon,
    pub fly: FakeFly,
    pub gh: FakeGithub,
}

impl Fakes {
    /// `GET /user` of the GitHub fake answers 403 (as for the workflow's installation token)
    /// unless `gh_user` names the token's user.
    pub async fn start(
        neon_key: &str,
        fly_token: &str,
        repo: &str,
        gh_user: Option<&str>,
    ) -> Fakes {
        Fakes {
            neon: FakeNeon::start(neon_key).await,
            fly: FakeFly::start(fly_token).await,
            gh: FakeGithub::start(repo, gh_user).await,
        }
    }

    /// The action inputs that point `atlas run` at the Neon and Fly fakes, Fly apps in `org`.
    pub fn inputs<'a>(&'a self, org: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("neon_api_key", &self.neon.core.token),
            ("neon_project_id", fake_neon::PROJECT),
            ("neon_api_url", &self.neon.api_url),
            ("fly_api_token", &self.fly.core.token),
            ("fly_org", org),
            ("fly_api_url", &self.fly.api_url),
        ]
    }

    /// The process environment that points `atlas` at the GitHub fake, with the short retry
    /// policy (the fakes' faults are bursts of a few calls).
    pub fn runner_vars(&self) -> [(String, String); 2] {
        [
            ("GITHUB_API_URL".into(), self.gh.url.clone()),
            ("ATLAS_RETRY_POLICY".into(), "fast".into()),
        ]
    }

    /// Calls received by (Neon, Fly, GitHub) since the last [`Fakes::reset_calls`].
    pub fn calls(&self) -> (usize, usize, usize) {
        (
            self.neon.core.call_count(),
            self.fly.core.call_count(),
            self.gh.calls().len(),
        )
    }

    pub fn reset_calls(&self) {
        self.neon.core.reset_calls();
        self.fly.core.reset_calls();
        self.gh.reset_calls();
    }

    /// No request reached Neon or Fly (GitHub may have been asked).
    pub fn assert_no_cloud_calls(&self) {
        let (neon, fly) = (&self.neon.core, &self.fly.core);
        assert_eq!(neon.call_count(), 0, "neon: {:?}", neon.calls());
        assert_eq!(fly.call_count(), 0, "fly: {:?}", fly.calls());
    }

    /// Every request each fake received matched its vendor's API description.
    pub fn assert_spec_clean(&self) {
        assert_eq!(self.neon.core.violations(), Vec::<String>::new(), "neon");
        assert_eq!(self.fly.core.violations(), Vec::<String>::new(), "fly");
        assert_eq!(self.gh.violations(), Vec::<String>::new(), "github");
    }
}

/// The Neon and Fly fakes of one world and the providers over them: the app's URL is a plain
/// health server unless `tune` points it elsewhere, Neon operations give up after 2 s.
pub struct Cloud {
    pub neon: FakeNeon,
    pub fly: FakeFly,
    pub db: NeonDatabase,
    pub platform: FlyPlatform,
    /// The app-name prefix of `repo` (`naming::prefix`).
    pub prefix: String,
    /// What the providers were built with.
    pub settings: Settings,
}

impl Cloud {
    /// Starts the fakes with these credentials and builds the providers of `repo` (Fly apps in
    /// `org`) after `tune` has adjusted the settings.
    pub async fn start(
        (neon_key, fly_token): (&str, &str),
        (repo, org): (&str, &str),
        wire: &Wire,
        tune: impl FnOnce(&mut Settings, &FakeFly),
    ) -> Cloud {
        let neon = FakeNeon::start(neon_key).await;
        let fly = FakeFly::start(fly_token).await;
        let mut settings = Settings::default();
        settings.fly.preview_url = Some(super::openapi::serve_health().await);
        settings.neon.operation_timeout = Duration::from_secs(2);
        tune(&mut settings, &fly);
        let db = neon_database(&neon, &settings, repo, wire);
        let platform = fly_platform(&fly, &settings, repo, org, wire);
        let prefix = atlas::naming::prefix(settings.app.name.as_deref(), repo);
        Cloud {
            neon,
            fly,
            db,
            platform,
            prefix,
            settings,
        }
    }

    /// The preview orchestration over these providers and a local forge in a new directory;
    /// `opts` gets that directory (for the audit log).
    pub fn preview(
        self,
        settings: Settings,
        opts: impl FnOnce(&std::path::Path) -> UpOptions,
    ) -> Preview {
        let dir = tempfile::tempdir().unwrap();
        let opts = opts(dir.path());
        Preview {
            neon: self.neon,
            fly: self.fly,
            providers: Providers {
                database: Box::new(self.db),
                platform: Box::new(self.platform),
                forge: Box::new(LocalForge::new(dir.path(), false)),
            },
            settings,
            opts,
            dir,
        }
    }
}

/// `preview::up` / `preview::down` as the action runs them, without the binary: the cloud
/// providers over the fakes, a local forge, the settings and options of the run.
pub struct Preview {
    pub neon: FakeNeon,
    pub fly: FakeFly,
    pub providers: Providers,
    pub settings: Settings,
    pub opts: UpOptions,
    /// The local forge's directory.
    dir: tempfile::TempDir,
}

/// The options of a preview run of the kitchen image on the cloud fakes; a test sets its TTL,
/// secrets or audit log over these.
pub fn kitchen_options(prefix: &str) -> UpOptions {
    UpOptions {
        image: Some("registry.fly.io/kitchen:abc".into()),
        artifact: "registry.fly.io/kitchen:abc".into(),
        prefix: prefix.into(),
        ..UpOptions::default()
    }
}

impl Preview {
    /// The local forge's directory (a second handle on the same forge opens it again).
    pub fn forge_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// `preview::up` of `req`, with its log.
    pub async fn up_logged(&self, req: &PreviewRequest) -> (anyhow::Result<UpOutcome>, String) {
        let mut lines = Vec::new();
        let r = preview::up(&self.providers, &self.settings, req, &self.opts, &mut |l| {
            lines.push(l.to_string())
        })
        .await;
        (r, lines.join("\n"))
    }

    /// `preview::down` of `req`, quietly.
    pub async fn down_quietly(&self, req: &PreviewRequest) -> anyhow::Result<DownOutcome> {
        preview::down(
            &self.providers,
            &self.settings,
            req,
            &self.opts,
            &mut |_| {},
        )
        .await
    }

    /// No preview branch and no app is left, and every request matched the specs.
    pub fn assert_clean(&self) {
        assert!(
            self.neon.preview_branches().is_empty(),
            "{:?}",
            self.neon.preview_branches()
        );
        assert!(
            self.fly.app_names().is_empty(),
            "{:?}",
            self.fly.app_names()
        );
        self.assert_spec();
    }

    /// Every request to Neon and Fly matched its vendor's API description.
    pub fn assert_spec(&self) {
        assert_eq!(self.neon.core.violations(), Vec::<String>::new());
        assert_eq!(self.fly.core.violations(), Vec::<String>::new());
    }
}
