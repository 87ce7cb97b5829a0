//! `drover-server`: a shim over [`drover_server::cli::run`].

use std::process::ExitCode;

fn main() -> ExitCode {
    // Info by default: the request log is the point; RUST_LOG overrides.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: drover_server::cli::Args = argh::from_env();
    match drover_server::cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` prints the whole context chain once, on one line.
            eprintln!("drover-server: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
