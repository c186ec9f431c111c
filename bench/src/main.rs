//! Benchmarks for mongo-api, and the small MongoDB chores its recipes need.

mod admin;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "bench", about = "Load generator and baselines for mongo-api")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a MongoDB user (the first one through the localhost exception)
    CreateUser(admin::CreateUser),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CreateUser(args) => admin::create_user(&args),
    };
    if let Err(e) = result {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}
