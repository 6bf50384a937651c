//! The few errors callers branch on. Everything else is `anyhow` with context.

/// The change did not pass: a gate, a smoke check or a verification stage failed. Exit code 1.
/// Operational errors (bad input, provider down) are every other error, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{stage} failed: {detail}")]
pub struct GateFailed {
    pub stage: String,
    pub detail: String,
}

/// An error from a provider's API: names the provider, the call and the status, and carries the
/// (redacted) response body. Callers branch on `status` (404 on delete means done).
#[derive(Debug, thiserror::Error)]
#[error("{provider}: {call} returned {status}: {body}")]
pub struct ProviderError {
    pub provider: &'static str,
    pub call: String,
    pub status: u16,
    pub body: String,
}

/// `[preview] max_previews` kept a new preview from being built (or made its run undo it): not
/// a failure of the change. The run reports `verdict=refused` and exits 0.
#[derive(Debug, thiserror::Error)]
#[error("preview refused: {reason}")]
pub struct QuotaRefused {
    pub reason: String,
}

/// A feature delivered by a later issue. Exit code 2 with a clear message.
#[derive(Debug, thiserror::Error)]
#[error("`atlas {0}` is not built yet in this version of atlas")]
pub struct NotYetBuilt(pub &'static str);

/// Exit codes: 0 ok, 1 a gate failed, 2 operational error.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if err
        .chain()
        .any(|e| e.downcast_ref::<GateFailed>().is_some())
    {
        1
    } else {
        2
    }
}
