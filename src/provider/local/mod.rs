//! The local family: a PostgreSQL cluster per state directory ([`pg`]), the app as a local
//! process ([`process`]), a forge that writes files ([`forge`]), and the migrations runner
//! both the local database and the flows use ([`migrate`]).

use anyhow::Context as _;

pub mod forge;
pub mod migrate;
pub mod pg;
pub mod process;

/// A free loopback TCP port (bound then released; callers handle the rare race by retrying).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(l.local_addr()?.port())
}
