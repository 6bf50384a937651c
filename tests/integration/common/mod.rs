//! Support code shared by the integration tests: stateful vendor fakes checked against the
//! vendors' OpenAPI descriptions, the test servers for the load generator, and the environments
//! (runner, local, verify) the tests run Atlas in: every one of them runs the binary through
//! [`bin`] and builds its project directory with [`project`]; the providers over the fakes
//! come from [`world`].

pub mod bin;
pub mod fake_fly;
pub mod fake_github;
pub mod fake_neon;
pub mod load_servers;
pub mod local_env;
pub mod openapi;
pub mod project;
pub mod runner_env;
pub mod verify_env;
pub mod world;
