use std::process::ExitCode;

use mongo_api::app::{self, Listeners};
use mongo_api::config::Config;
use mongo_api::logging;
use mongo_api::shutdown::Shutdown;

fn main() -> ExitCode {
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("mongo-api: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(config.log_level);
    std::panic::set_hook(Box::new(|info| tracing::error!(panic = %info, "panic")));

    let listeners = match Listeners::bind(config.bind_addr, config.port, config.management_port) {
        Ok(listeners) => listeners,
        Err(e) => {
            eprintln!(
                "mongo-api: cannot listen on {} (ports {} and {}): {e}",
                config.bind_addr, config.port, config.management_port
            );
            return ExitCode::FAILURE;
        }
    };
    let shutdown = Shutdown::new();
    if let Err(e) = shutdown.on_signals() {
        eprintln!("mongo-api: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    match app::run(listeners, config, shutdown) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "exiting");
            ExitCode::FAILURE
        }
    }
}
