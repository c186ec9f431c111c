//! A small HTTP/1.1 server: tiny_http 0.12.0 hardened for an internet-facing JSON service.
//!
//! The model is upstream's: an accept thread hands every connection to its own thread,
//! which parses requests and pushes them into a queue that the application drains with
//! [`Server::recv`] from as many worker threads as it likes. What changed and why is in
//! `FORK.md`; in short, every connection is bounded in time (idle, request and response
//! deadlines), in memory (head and body limits, bodies read by the connection thread before
//! the request is queued) and in number (`max_connections`), and the accept loop survives
//! transient errors such as running out of file descriptors.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![allow(clippy::match_like_matches_macro)]

use std::io::Error as IoError;
use std::io::ErrorKind as IoErrorKind;
use std::io::Result as IoResult;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use client::ClientConnection;
use util::MessagesQueue;

pub use common::{HTTPVersion, Header, HeaderField, Method, StatusCode};
pub use request::Request;
pub use response::{Response, ResponseBox};

mod client;
mod common;
mod request;
mod response;
mod util;

/// Limits every connection is held to. The defaults suit a JSON API behind a Kubernetes
/// Service; all of them are deliberately finite.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// How long a connection may stay open without the first byte of a request arriving.
    pub keep_alive_timeout: Duration,
    /// How long a request may take to arrive in full, from its first byte to the end of its
    /// body. One deadline for the whole request, so trickling bytes does not extend it.
    pub request_timeout: Duration,
    /// How long writing one response may take.
    pub response_timeout: Duration,
    /// Largest request line plus headers, in bytes.
    pub max_head_bytes: usize,
    /// Largest request body that is read; a larger one is not read at all and the request
    /// arrives with [`Request::body_exceeds_limit`] set.
    pub max_body_bytes: usize,
    /// Connections served at once; more are answered `503` and closed at once.
    pub max_connections: usize,
    /// How long `accept()` may keep failing (for instance with no file descriptor left)
    /// before the server gives up and reports an error through [`Server::recv`].
    pub accept_failure_limit: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            keep_alive_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(30),
            max_head_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
            max_connections: 1024,
            accept_failure_limit: Duration::from_secs(30),
        }
    }
}

/// State shared by the server handle, the accept thread and every connection.
pub(crate) struct Shared {
    pub(crate) options: ServerOptions,
    /// Set once: no new connections, no new requests on existing ones.
    draining: AtomicBool,
    connections: AtomicUsize,
}

impl Shared {
    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// Decrements the connection count when a connection's thread is done with it.
pub(crate) struct ConnectionSlot(Arc<Shared>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The server. Dropping it stops accepting connections, like [`Server::stop_accepting`].
pub struct Server {
    shared: Arc<Shared>,
    messages: Arc<MessagesQueue<Message>>,
    local_addr: SocketAddr,
}

enum Message {
    Error(IoError),
    NewRequest(Request),
}

impl Server {
    /// Serves HTTP on a listener the caller bound, with the given limits.
    pub fn from_listener(listener: TcpListener, options: ServerOptions) -> IoResult<Server> {
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            options,
            draining: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
        });
        let messages = MessagesQueue::with_capacity(64);

        let accept_shared = shared.clone();
        let accept_messages = messages.clone();
        thread::Builder::new()
            .name("http-accept".into())
            .spawn(move || accept_loop(listener, accept_shared, accept_messages))?;

        Ok(Server {
            shared,
            messages,
            local_addr,
        })
    }

    /// The address the server listens on.
    pub fn server_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Connections currently open: those waiting for a request, being read, queued, or
    /// being answered.
    pub fn num_connections(&self) -> usize {
        self.shared.connections.load(Ordering::Acquire)
    }

    /// Starts a graceful stop: the listening socket is closed, idle connections are closed
    /// within half a second, and every response from now on carries `Connection: close`.
    /// Requests already received stay in the queue; keep calling `recv` until
    /// [`Server::num_connections`] drops to zero.
    pub fn stop_accepting(&self) {
        if self.shared.draining.swap(true, Ordering::AcqRel) {
            return;
        }
        // The accept thread is blocked in accept(); a connection wakes it up to see the flag.
        let _ = TcpStream::connect_timeout(&wake_addr(self.local_addr), Duration::from_secs(1));
    }

    /// Blocks until a request arrives. An error means the server can no longer accept
    /// connections (see [`ServerOptions::accept_failure_limit`]).
    pub fn recv(&self) -> IoResult<Request> {
        match self.messages.pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(rq),
            None => Err(IoError::other("thread unblocked")),
        }
    }

    /// Wakes one thread blocked in [`Server::recv`].
    pub fn unblock(&self) {
        self.messages.unblock();
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
/// last longer than `accept_failure_limit` is the error passed to the application, which
/// should then exit so that it gets restarted.
fn accept_loop(listener: TcpListener, shared: Arc<Shared>, messages: Arc<MessagesQueue<Message>>) {
    let pool = util::TaskPool::new();
    let mut failing_since: Option<Instant> = None;
    let mut backoff = MIN_ACCEPT_BACKOFF;

    while !shared.draining() {
        match listener.accept() {
            Ok((stream, _)) => {
                failing_since = None;
                backoff = MIN_ACCEPT_BACKOFF;
                dispatch(stream, &pool, &shared, &messages);
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
                    messages.push(Message::Error(e));
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
                dispatch(stream, &pool, &shared, &messages);
            }
        }
    }
    log::debug!("accept loop stopped");
}

/// Errors that concern only the connection being accepted, not the listener.
fn is_per_connection(e: &IoError) -> bool {
    matches!(
        e.kind(),
        IoErrorKind::ConnectionAborted | IoErrorKind::ConnectionReset | IoErrorKind::Interrupted
    )
}

fn dispatch(
    stream: TcpStream,
    pool: &util::TaskPool,
    shared: &Arc<Shared>,
    messages: &Arc<MessagesQueue<Message>>,
) {
    if shared.connections.load(Ordering::Acquire) >= shared.options.max_connections {
        log::warn!("connection limit reached; refusing a connection");
        client::refuse(stream);
        return;
    }
    shared.connections.fetch_add(1, Ordering::AcqRel);
    let slot = ConnectionSlot(shared.clone());

    let connection = match ClientConnection::new(stream, shared.clone()) {
        Ok(c) => c,
        Err(e) => {
            log::warn!("could not set up a connection: {}", e);
            return;
        }
    };
    let messages = messages.clone();
    let spawned = pool.spawn(Box::new(move || {
        let _slot = slot;
        connection.serve(|rq| messages.push(Message::NewRequest(rq)));
    }));
    if let Err(e) = spawned {
        log::warn!("no thread for a new connection, closing it: {}", e);
    }
}
