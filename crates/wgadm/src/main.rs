//! The `wgadm` binary: parse the command line, run, report errors on stderr with an exit code.

use clap::Parser;

fn main() {
    let cli = wgadm::cli::Cli::parse();
    if let Err(e) = wgadm::commands::run(cli) {
        eprintln!("wgadm: error: {e}");
        std::process::exit(e.exit_code());
    }
}
