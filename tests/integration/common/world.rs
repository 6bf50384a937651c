//! The providers under test, built against the fakes: one place that knows how a Neon database,
//! a Fly platform and a Fly fleet are pointed at a fake (its URL, its token, short timeouts and
//! polling), so every test world is assembled the same way; and [`Fakes`], the three fakes
//! together with the inputs that point the `atlas` binary at them.

use std::time::Duration;

use atlas::config::{FlyAccess, NeonAccess, Settings};
use atlas::http::{RetryPolicy, Timeouts};
use atlas::provider::fly::FlyPlatform;
use atlas::provider::github::GithubForge;
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
