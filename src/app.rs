//! The service as one function, for `main` and for the tests: wires the layers together,
//! serves until told to stop, and closes what it opened.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use budget::Budget;
use socket2::{Domain, Protocol, Socket, Type};
use tiny_http::{Queue, Server, ServerOptions};

use crate::http::{listing_workers, Handler, Limits, Port, LISTINGS, QUEUES};
use crate::metrics::Metrics;
use crate::settings::{HttpSettings, Settings};
use crate::shutdown::Shutdown;
use crate::store::{ConnectError, Store};
use crate::workers;

/// How long the management listener keeps answering probes after the API has drained.
const MANAGEMENT_GRACE: Duration = Duration::from_secs(1);
/// Workers for the management port's readiness pings, apart from the API's so that a busy
/// API cannot delay them: one can wait out a hung MongoDB while the other answers.
const PROBE_WORKERS: u16 = 2;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("server: {0}")]
    Io(#[from] io::Error),
}

/// The two listening sockets: the API, and the management port for probes and metrics.
pub struct Listeners {
    pub api: TcpListener,
    pub management: TcpListener,
}

/// A port that could not be listened on, with the setting that chooses it: a port another
/// process holds (macOS's AirPlay Receiver holds 5000) is moved with that setting.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {address} ({setting}): {source}{}",
    advice(source, setting)
)]
pub struct BindError {
    address: SocketAddr,
    setting: &'static str,
    source: io::Error,
}

fn advice(error: &io::Error, setting: &str) -> String {
    match error.kind() {
        io::ErrorKind::AddrInUse => {
            format!("; another process holds it: set {setting} to another port")
        }
        _ => String::new(),
    }
}

impl Listeners {
    /// Binds both ports the settings name, on their listen address.
    pub fn bind(settings: &HttpSettings) -> Result<Listeners, BindError> {
        Listeners::on(settings.bind_addr, settings.port, settings.management_port)
    }

    /// Both on free ports of 127.0.0.1 (for tests).
    pub fn local() -> Result<Listeners, BindError> {
        Listeners::on(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, 0)
    }

    fn on(address: IpAddr, api: u16, management: u16) -> Result<Listeners, BindError> {
        Ok(Listeners {
            api: listen(SocketAddr::new(address, api), "PORT")?,
            management: listen(SocketAddr::new(address, management), "MANAGEMENT_PORT")?,
        })
    }
}

/// Connections the kernel completes and queues for `accept()`: as many as it allows
/// (`net.core.somaxconn`, 4,096 on current kernels, caps it), as Go's net package asks.
/// The standard library's 128 overflowed when 600 clients connected at once, and a
/// client whose handshake the kernel then dropped waited out its retransmissions.
const BACKLOG: i32 = 65_535;

fn listen(address: SocketAddr, setting: &'static str) -> Result<TcpListener, BindError> {
    let socket = || -> io::Result<TcpListener> {
        let socket = Socket::new(
            Domain::for_address(address),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        // As the standard library does: a restarted process can bind at once.
        socket.set_reuse_address(true)?;
        socket.bind(&address.into())?;
        socket.listen(BACKLOG)?;
        Ok(socket.into())
    };
    socket().map_err(|source| BindError {
        address,
        setting,
        source,
    })
}

/// What a configuration means, as `--print-config` prints it: the ports it listens on,
/// the paths each port serves, and the memory limit it needs (docs/memory.md).
pub fn describe(settings: &Settings) -> serde_json::Value {
    let http = &settings.http;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    serde_json::json!({
        "ports": { "PORT": http.port, "MANAGEMENT_PORT": http.management_port },
        "paths": { "api": crate::http::paths(Port::Api), "management": crate::http::paths(Port::Management) },
        "memory": {
            "needed_mib": mib(http.memory_needed()),
            "request_memory_mib": http.request_memory_mib,
            "max_connections": http.max_connections,
            "at_rest_mib": mib(crate::settings::MEMORY_AT_REST),
            "per_connection_kib": crate::settings::MEMORY_PER_CONNECTION as f64 / 1024.0,
            "margin_mib": mib(crate::settings::MEMORY_MARGIN),
        },
        "io_threads": http.io_threads(),
        "workers": http.workers,
    })
}

/// Serves HTTP until `shutdown` triggers, then drains and returns.
pub fn run(listeners: Listeners, settings: Settings, shutdown: Shutdown) -> Result<(), AppError> {
    let http = &settings.http;
    let metrics = Arc::new(Metrics::new());
    // One budget for what requests hold: bodies (taken by the server before reading
    // them), documents being converted and written, listing batches and pages.
    let memory = Budget::new(http.request_memory());
    let listers = listing_workers(http, &memory);
    let store = Arc::new(Store::new(
        &settings.mongo,
        listers,
        metrics.clone(),
        memory.clone(),
        http.queue_timeout(),
    )?);
    let handler = Arc::new(Handler::new(
        store.clone(),
        metrics,
        Limits::new(http, memory.clone()),
    ));
    let api = {
        let handler = handler.clone();
        let options = ServerOptions {
            queues: QUEUES,
            ..http.server_options(&memory)
        };
        Server::from_listener(listeners.api, options, move |rq| {
            handler.triage(rq, Port::Api)
        })?
    };
    let management = {
        let handler = handler.clone();
        Server::from_listener(listeners.management, http.management_options(), move |rq| {
            handler.triage(rq, Port::Management)
        })?
    };
    for server in [&api, &management] {
        let shutdown = shutdown.clone();
        server.on_failure(move || shutdown.trigger());
    }
    tracing::info!(
        address = %api.server_addr(),
        management_address = %management.server_addr(),
        workers = http.workers,
        listing_workers = listers,
        mongo = settings.mongo.label(),
        database = settings.mongo.database(),
        "listening"
    );
    let answer_api = |rq, session: &_| handler.answer(rq, Port::Api, session);
    let answer_probe = |rq, session: &_| handler.answer(rq, Port::Management, session);
    let served = std::thread::scope(|scope| {
        workers::spawn(
            scope,
            &management,
            Queue::FIRST,
            &store,
            PROBE_WORKERS,
            "probe",
            &answer_probe,
        )?;
        workers::spawn(
            scope,
            &api,
            Queue::FIRST,
            &store,
            http.workers,
            "worker",
            &answer_api,
        )?;
        workers::spawn(
            scope,
            &api,
            LISTINGS,
            &store,
            listers,
            "lister",
            &answer_api,
        )?;
        workers::drain_on(&api, http.shutdown_grace(), &shutdown);
        // Probes keep their answers while the API drains; then the management port goes
        // too, and the scope joins every worker.
        management.stop_accepting();
        if !management.wait_drained(Instant::now() + MANAGEMENT_GRACE) {
            management.abort_connections();
        }
        Ok::<(), io::Error>(())
    });
    served?;
    if let Some(failure) = api.failure().or_else(|| management.failure()) {
        return Err(AppError::Io(failure));
    }
    tracing::info!("stopped");
    Ok(())
}
