//! The `kiln` binary: everything lives in the library; this only starts it.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    kiln::cli::init_tracing();
    kiln::cli::run(std::env::args_os()).await
}
