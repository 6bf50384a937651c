//! `atlas gate serve|mint`: the gate's secrets come from its environment only, never from flags.

use crate::gate::{self, GateCommand};
use crate::secret::Secret;

fn env(name: &str) -> Option<Secret> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .map(Secret::new)
}

pub async fn run(cmd: &GateCommand) -> anyhow::Result<()> {
    let key = env("ATLAS_GATE_KEY");
    match cmd {
        GateCommand::Serve(args) => {
            let gh = env("ATLAS_GATE_GITHUB_CLIENT_SECRET");
            let opts = args.options(
                key.as_ref().map(|k| k.expose()),
                gh.as_ref().map(|k| k.expose()),
            )?;
            gate::run(opts, args.listen).await
        }
        GateCommand::Mint(args) => {
            let root = env("ATLAS_GATE_SECRET").or_else(|| env("INPUT_GATE_SECRET"));
            println!(
                "{}",
                args.mint(root.as_ref(), key.as_ref().map(|k| k.expose()))?
            );
            Ok(())
        }
    }
}
