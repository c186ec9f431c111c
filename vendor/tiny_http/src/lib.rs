//! A small HTTP/1.1 server for an internet-facing JSON service, grown from tiny_http 0.12.
//!
//! An accept thread gives every connection its own thread. That thread reads a request
//! in full, within deadlines and size limits, and passes it to the application's `route`
//! function, which either answers it on the spot (cheap answers that never block) or
//! hands it back to be queued for the application's workers ([`Server::recv`]). Either
//! way the response comes back to the connection's thread, which writes it: workers never
//! touch a socket, so a client that does not read holds only its own connection.
//! `DESIGN.md` says why each part is the way it is.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::io::Error as IoError;
use std::io::ErrorKind as IoErrorKind;
use std::io::Result as IoResult;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use connection::Connection;
use slots::Slots;
use util::MessagesQueue;

pub use body::{BodyReader, BodyWriter};
pub use budget::{Budget, Grant};
pub use common::{HTTPVersion, Header, HeaderField, Method, StatusCode};
pub use request::Request;
pub use response::{Response, ResponseBox};

mod body;
mod budget;
mod common;
mod connection;
pub mod framing;
mod request;
mod response;
mod slots;
mod util;

/// Limits every connection is held to. All of them are deliberately finite.
#[derive(Clone)]
pub struct ServerOptions {
    /// How long a connection may stay open without the first byte of a request arriving.
    pub keep_alive_timeout: Duration,
    /// How long a request may take to arrive in full, from its first byte to the end of its
    /// body. One deadline for the whole request, so trickling bytes does not extend it.
    pub request_timeout: Duration,
    /// How long writing one response may take.
    pub response_timeout: Duration,
    /// How long the producer of a streamed body waits for the client to make room for the
    /// next piece before the connection is cut (see [`BodyWriter`]).
    pub stream_stall_timeout: Duration,
    /// Largest request line plus headers, in bytes.
    pub max_head_bytes: usize,
    /// Largest request body that is read; a larger one is not read at all and the request
    /// arrives with [`Request::body_exceeds_limit`] set.
    pub max_body_bytes: usize,
    /// Connections open at once. A newcomer beyond it takes the slot of the connection that
    /// has waited longest for a complete request; if every connection is being answered,
    /// it gets `503`.
    pub max_connections: usize,
    /// If set, every request body is reserved from this budget before it is read (and
    /// held until the request is answered, or taken with [`Request::take_body`]); a body
    /// that cannot get its share within `memory_wait` is refused with `503`.
    pub memory: Option<Budget>,
    /// How long a body may wait for its share of `memory`.
    pub memory_wait: Duration,
    /// How long `accept()` may keep failing (for instance with no file descriptor left)
    /// before the server gives up and reports a failure (see [`Server::on_failure`]).
    pub accept_failure_limit: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            keep_alive_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(30),
            stream_stall_timeout: Duration::from_secs(5),
            max_head_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
            max_connections: 1024,
            memory: None,
            memory_wait: Duration::from_secs(1),
            accept_failure_limit: Duration::from_secs(30),
        }
    }
}

/// The application's first look at every request, on the connection's thread: answer it
/// there and return `None`, or return it to have it queued for [`Server::recv`].
pub type Route = dyn Fn(Request) -> Option<Request> + Send + Sync;

type FailureHook = Box<dyn FnOnce() + Send>;

/// State shared by the server handle, the accept thread and every connection.
pub(crate) struct Shared {
    pub(crate) options: ServerOptions,
    /// Set once: no new connections, no new requests on existing ones.
    draining: AtomicBool,
    slots: Arc<Slots>,
    queue: Arc<MessagesQueue<Request>>,
    failure: Mutex<(Option<IoError>, Option<FailureHook>)>,
}

impl Shared {
    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    fn fail(&self, error: IoError) {
        let hook = {
            let mut failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
            failure.0 = Some(error);
            failure.1.take()
        };
        self.draining.store(true, Ordering::Release);
        self.slots.drain();
        if let Some(hook) = hook {
            hook();
        }
    }
}

/// The server. Dropping it stops accepting connections, like [`Server::stop_accepting`].
pub struct Server {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

impl Server {
    /// Serves HTTP on a listener the caller bound, with the given limits. Every request
    /// is first given to `route` on its connection's thread.
    pub fn from_listener(
        listener: TcpListener,
        options: ServerOptions,
        route: impl Fn(Request) -> Option<Request> + Send + Sync + 'static,
    ) -> IoResult<Server> {
        let local_addr = listener.local_addr()?;
        let queue = Arc::new(MessagesQueue::new());
        let drained = queue.clone();
        let slots = Arc::new(Slots::new(
            options.max_connections,
            // Once draining and no connection is left, no request can come: workers go.
            Box::new(move || drained.close()),
        ));
        let shared = Arc::new(Shared {
            options,
            draining: AtomicBool::new(false),
            slots,
            queue,
            failure: Mutex::new((None, None)),
        });
        let accept_shared = shared.clone();
        let route: Arc<Route> = Arc::new(route);
        thread::Builder::new()
            .name("http-accept".into())
            .spawn(move || accept_loop(listener, accept_shared, route))?;
        Ok(Server { shared, local_addr })
    }

    /// The address the server listens on.
    pub fn server_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Connections currently open: waiting for a request, receiving one, or being answered.
    pub fn num_connections(&self) -> usize {
        self.shared.slots.count()
    }

    /// Starts a graceful stop: the listening socket is closed (connections the kernel had
    /// already completed are still served), idle connections are closed, requests already
    /// arriving are served with `Connection: close`. [`Server::recv`] returns `None` once
    /// the last connection is gone.
    pub fn stop_accepting(&self) {
        if self.shared.draining.swap(true, Ordering::AcqRel) {
            return;
        }
        // The accept thread is blocked in accept(); a connection wakes it up to see the flag.
        if TcpStream::connect_timeout(&wake_addr(self.local_addr), Duration::from_secs(1)).is_err()
        {
            self.shared.slots.drain();
        }
    }

    /// Waits until the drain is complete or `deadline` passes; returns whether it is.
    pub fn wait_drained(&self, deadline: Instant) -> bool {
        self.shared.slots.wait_empty(deadline)
    }

    /// Stops accepting and cuts every connection at once (the drain took too long).
    pub fn abort_connections(&self) {
        self.stop_accepting();
        self.shared.slots.drain();
        self.shared.slots.abort_all();
    }

    /// The next request for a worker, waiting for one. `None` once the server has drained:
    /// no connection is left that could send another.
    pub fn recv(&self) -> Option<Request> {
        self.shared.queue.pop()
    }

    /// Calls `hook` (at once, if it already happened) when the server fails: `accept()`
    /// kept failing for `accept_failure_limit`. The server then drains as if stopped.
    pub fn on_failure(&self, hook: impl FnOnce() + Send + 'static) {
        let mut failure = self
            .shared
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if failure.0.is_some() {
            drop(failure);
            hook();
        } else {
            failure.1 = Some(Box::new(hook));
        }
    }

    /// The failure that stopped the server, if one did.
    pub fn failure(&self) -> Option<IoError> {
        self.shared
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .take()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_accepting();
    }
}

/// An address a wake-up connection can reach when the listener is bound to a wildcard.
fn wake_addr(addr: SocketAddr) -> SocketAddr {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        match addr {
            SocketAddr::V4(ref mut a) => a.set_ip(std::net::Ipv4Addr::LOCALHOST),
            SocketAddr::V6(ref mut a) => a.set_ip(std::net::Ipv6Addr::LOCALHOST),
        }
    }
    addr
}

const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(5);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_millis(500);

/// Accepts until the server drains. Errors such as EMFILE are waited out with a growing
/// pause (the pending connection stays in the kernel's backlog meanwhile); only if they
/// last longer than `accept_failure_limit` does the server fail, so that the application
/// can exit and be restarted rather than stay up without serving.
fn accept_loop(listener: TcpListener, shared: Arc<Shared>, route: Arc<Route>) {
    let pool = util::TaskPool::new();
    let mut failing_since: Option<Instant> = None;
    let mut backoff = MIN_ACCEPT_BACKOFF;

    while !shared.draining() {
        match listener.accept() {
            Ok((stream, _)) => {
                failing_since = None;
                backoff = MIN_ACCEPT_BACKOFF;
                dispatch(stream, &pool, &shared, &route);
            }
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= shared.options.accept_failure_limit {
                    log::error!(
                        "accept() has failed for {:?}, giving up: {}",
                        since.elapsed(),
                        e
                    );
                    shared.fail(e);
                    return;
                }
                log::warn!("accept() failed, retrying in {:?}: {}", backoff, e);
                thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
            }
        }
    }
    // Clients whose connections the kernel completed before the listener closes are
    // served rather than reset; their responses say `Connection: close`.
    if listener.set_nonblocking(true).is_ok() {
        while let Ok((stream, _)) = listener.accept() {
            if stream.set_nonblocking(false).is_ok() {
                dispatch(stream, &pool, &shared, &route);
            }
        }
    }
    drop(listener);
    shared.slots.drain();
    log::debug!("accept loop stopped");
}

/// Errors that concern only the connection being accepted, not the listener.
fn is_per_connection(e: &IoError) -> bool {
    matches!(
        e.kind(),
        IoErrorKind::ConnectionAborted | IoErrorKind::ConnectionReset | IoErrorKind::Interrupted
    )
}

fn dispatch(stream: TcpStream, pool: &util::TaskPool, shared: &Arc<Shared>, route: &Arc<Route>) {
    let socket = Arc::new(stream);
    let slot = match shared.slots.admit(socket.clone()) {
        Ok(slot) => slot,
        Err(refused) => {
            log::warn!("no connection slot ({:?}); refusing a connection", refused);
            connection::refuse(&socket);
            return;
        }
    };
    let connection = match Connection::new(socket, slot, shared.clone()) {
        Ok(c) => c,
        Err(e) => {
            log::warn!("could not set up a connection: {}", e);
            return;
        }
    };
    let route = route.clone();
    let queue = shared.queue.clone();
    let spawned = pool.spawn(Box::new(move || {
        connection.serve(&*route, |rq| queue.push(rq));
    }));
    if let Err(e) = spawned {
        log::warn!("no thread for a new connection, closing it: {}", e);
    }
}
