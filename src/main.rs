use std::process::ExitCode;

use mongo_api::app::{self, Listeners};
use mongo_api::logging;
use mongo_api::settings::{Settings, SettingsError};
use mongo_api::shutdown::Shutdown;

fn main() -> ExitCode {
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(SettingsError::Informational(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("mongo-api: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(settings.log_level);
    std::panic::set_hook(Box::new(|info| tracing::error!(panic = %info, "panic")));

    let http = &settings.http;
    let listeners = match Listeners::bind(http) {
        Ok(listeners) => listeners,
        Err(e) => {
            eprintln!(
                "mongo-api: cannot listen on {} (ports {} and {}): {e}",
                http.bind_addr, http.port, http.management_port
            );
            return ExitCode::FAILURE;
        }
    };
    let shutdown = Shutdown::new();
    if let Err(e) = shutdown.on_signals() {
        eprintln!("mongo-api: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    match app::run(listeners, settings, shutdown) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "exiting");
            ExitCode::FAILURE
        }
    }
}
