//! The service as one function, for `main` and for the tests.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tiny_http::{Budget, Server};

use crate::config::{Config, ConfigError, MongoTarget};
use crate::http::{Handler, Limits};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// How long the management listener keeps answering probes after the API has drained.
const MANAGEMENT_GRACE: Duration = Duration::from_secs(1);

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

/// The two listening sockets: the API, and the management port for probes and metrics.
pub struct Listeners {
    pub api: TcpListener,
    pub management: TcpListener,
}

impl Listeners {
    /// Binds both ports of the configuration on its listen address.
    pub fn bind(address: IpAddr, api_port: u16, management_port: u16) -> io::Result<Listeners> {
        Ok(Listeners {
            api: TcpListener::bind((address, api_port))?,
            management: TcpListener::bind((address, management_port))?,
        })
    }

    /// Both on free ports of 127.0.0.1 (for tests).
    pub fn local() -> io::Result<Listeners> {
        Listeners::bind(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, 0)
    }
}

/// Serves HTTP until `shutdown` triggers, then drains and returns.
pub fn run(listeners: Listeners, config: Config, shutdown: Shutdown) -> Result<(), AppError> {
    let metrics = Arc::new(Metrics::new());
    // One budget for what requests hold: bodies (taken by the server before reading
    // them), documents being converted and written, listing batches and pages.
    let memory = Budget::new(config.request_memory());
    let store = Arc::new(Store::connect(
        &config,
        metrics.clone(),
        memory.clone(),
        config.queue_timeout(),
    )?);
    let limits = Limits {
        max_body_bytes: config.max_body_bytes,
        queue_timeout: config.queue_timeout(),
        page_limit_max: config.page_limit_max,
        listings: crate::http::listing_slots(config.workers),
        memory: memory.clone(),
    };
    let handler = Arc::new(Handler::new(store.clone(), metrics, limits));
    let api = {
        let handler = handler.clone();
        Server::from_listener(listeners.api, config.server_options(&memory), move |rq| {
            handler.route(rq)
        })?
    };
    let management = {
        let handler = handler.clone();
        Server::from_listener(
            listeners.management,
            config.management_options(),
            move |rq| {
                handler.manage(rq);
                None
            },
        )?
    };
    for server in [&api, &management] {
        let shutdown = shutdown.clone();
        server.on_failure(move || shutdown.trigger());
    }
    tracing::info!(
        address = %api.server_addr(),
        management_address = %management.server_addr(),
        workers = config.workers,
        mongo = mongo_label(&config),
        database = config.database(),
        "listening"
    );
    let served = crate::server::serve(
        &api,
        &handler,
        config.workers,
        config.shutdown_grace(),
        &shutdown,
    );
    // Probes keep their answers while the API drains; then the management port goes too.
    management.stop_accepting();
    if !management.wait_drained(Instant::now() + MANAGEMENT_GRACE) {
        management.abort_connections();
    }
    store.shutdown();
    served?;
    match api.failure().or_else(|| management.failure()) {
        Some(e) => Err(AppError::Io(e)),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

fn mongo_label(config: &Config) -> String {
    match config.mongo_target() {
        MongoTarget::Uri(_) => "MONGODB_URI".to_owned(),
        MongoTarget::Host { host, port, .. } => format!("{host}:{port}"),
    }
}
