//! The service as one function, for `main` and for the tests.

use std::fmt;
use std::io;
use std::net::TcpListener;
use std::sync::Arc;

use crate::config::{Config, ConfigError, MongoTarget};
use crate::http::{Handler, Limits};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::Store;

#[derive(Debug)]
pub enum AppError {
    Config(ConfigError),
    Io(io::Error),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Config(e) => write!(f, "configuration: {e}"),
            AppError::Io(e) => write!(f, "server: {e}"),
        }
    }
}

impl std::error::Error for AppError {}

impl From<ConfigError> for AppError {
    fn from(e: ConfigError) -> Self {
        AppError::Config(e)
    }
}

impl From<io::Error> for AppError {
    fn from(e: io::Error) -> Self {
        AppError::Io(e)
    }
}

/// Serves HTTP on `listener` until `shutdown` triggers, then drains and returns.
pub fn run(listener: TcpListener, config: Config, shutdown: Shutdown) -> Result<(), AppError> {
    let metrics = Arc::new(Metrics::new());
    let store = Store::connect(&config, metrics.clone())?;
    let server = tiny_http::Server::from_listener(listener, config.server_options())?;
    let mongo = match config.mongo_target() {
        MongoTarget::Uri(_) => "MONGODB_URI".to_owned(),
        MongoTarget::Host { host, port, .. } => format!("{host}:{port}"),
    };
    tracing::info!(
        address = %server.server_addr(),
        workers = config.workers,
        mongo,
        database = config.database(),
        "listening"
    );
    let limits = Limits {
        max_body_bytes: config.max_body_bytes,
        queue_timeout: config.queue_timeout(),
        page_limit_max: config.page_limit_max,
    };
    let handler = Handler::new(store, metrics, limits);
    crate::server::serve(
        server,
        handler,
        config.workers,
        config.shutdown_grace(),
        &shutdown,
    )?;
    tracing::info!("stopped");
    Ok(())
}
