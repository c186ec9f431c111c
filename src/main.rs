use std::net::TcpListener;
use std::process::ExitCode;

use mongo_api::config::Config;
use mongo_api::shutdown::Shutdown;
use mongo_api::{app, logging};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

    let address = (config.bind_addr, config.port);
    let listener = match TcpListener::bind(address) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!(
                "mongo-api: cannot listen on {}:{}: {e}",
                address.0, address.1
            );
            return ExitCode::FAILURE;
        }
    };
    let shutdown = Shutdown::new();
    if let Err(e) = shutdown.on_signals() {
        eprintln!("mongo-api: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    match app::run(listener, config, shutdown) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "exiting");
            ExitCode::FAILURE
        }
    }
}
