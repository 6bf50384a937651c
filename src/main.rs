//! The `atlas` binary: parse flags, run, map the result to an exit code
//! (0 ok, 1 a gate failed, 2 an operational error) and print errors as one redacted chain.

use clap::Parser;

fn main() {
    let cli = atlas::cli::Cli::parse();
    // The access gate forwards on one core by default: a current-thread runtime has no work
    // stealing and no cross-thread wake-ups, which is most of a proxied request's cost here.
    let builder = match &cli.command {
        atlas::cli::Command::Gate(atlas::gate::GateCommand::Serve(a)) if a.threads <= 1 => {
            tokio::runtime::Builder::new_current_thread()
        }
        atlas::cli::Command::Gate(atlas::gate::GateCommand::Serve(a)) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(a.threads);
            b
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let mut builder = builder;
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    };
    let result = runtime.block_on(atlas::run(cli));
    // Child processes and servers are shut down by their owners; don't wait on stray tasks.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    if let Err(err) = result {
        atlas::report_error(&err);
        std::process::exit(atlas::error::exit_code(&err));
    }
}
