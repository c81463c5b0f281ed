//! The `csirt` binary: parse the command line and hand over to the library.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // clap prints usage errors itself and exits 2, the contract's usage-error status.
    let cli = csirt::cli::Cli::parse();
    csirt::cli::run(cli)
}
