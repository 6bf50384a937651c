//! Cloud providers (Neon, Fly) against stateful fakes that validate every request against the
//! vendors' published API descriptions.

#[path = "support/openapi.rs"]
mod openapi;
