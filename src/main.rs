//! The `tokenwarden` command: parses the arguments, sets up logging and the async runtime, and
//! exits with the code the command returns. The commands live in [`tokenwarden::cli`], the
//! exit codes in [`tokenwarden::cli::Exit`].

use std::process::ExitCode;

use clap::Parser;
use tokenwarden::cli::{self, Cli, Exit};

fn main() -> ExitCode {
    let args = Cli::parse();
    cli::init_logging(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Exit::Failure.into();
        }
    };
    runtime.block_on(cli::dispatch(args)).into()
}
