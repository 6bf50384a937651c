//! The providers under test, built against the fakes: one place that knows how a Neon database,
//! a Fly platform and a Fly fleet are pointed at a fake (its URL, its token, short timeouts and
//! polling), so every test world is assembled the same way.

use std::time::Duration;

use atlas::config::{FlyAccess, NeonAccess, Settings};
use atlas::http::{RetryPolicy, Timeouts};
use atlas::provider::fly::FlyPlatform;
use atlas::provider::neon::NeonDatabase;
use atlas::secret::Secret;
use atlas::verify::fly::FlyFleet;

use super::fake_fly::FakeFly;
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
