//! A small HTTP/1.1 server for an internet-facing JSON service, grown from tiny_http 0.12.
//!
//! A few event-loop threads own every socket: they accept, read and parse requests
//! within deadlines, size limits and a memory budget, give each request to the
//! application's `route` function (which answers cheap ones on the spot and hands back
//! the ones that may block), and write every response. Requests handed back wait for the
//! application's worker threads ([`Server::recv`]); a worker's [`Request::respond`] puts
//! the response in the connection's loop's mailbox and returns. Workers never touch a
//! socket, and a connection costs a few KiB, not a thread. `DESIGN.md` says why each
//! part is the way it is.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use admission::Admission;
use jobs::Jobs;
use mailbox::{Mailbox, Message};

pub use budget::{Budget, Grant};
pub use common::{HTTPVersion, Header, HeaderField, Method, StatusCode};
pub use jobs::{NoRequest, Ready};
pub use request::{Queue, Request};
pub use response::{Body, Piece, Response, Stream};

mod admission;
mod common;
mod connection;
mod event_loop;
pub mod framing;
mod jobs;
mod lists;
mod mailbox;
mod request;
mod response;

/// Limits every connection is held to. All of them are deliberately finite.
#[derive(Clone)]
pub struct ServerOptions {
    /// Event-loop threads that own the connections.
    pub io_threads: usize,
    /// How long a connection may stay open without the first byte of a request arriving.
    pub keep_alive_timeout: Duration,
    /// How long a request may take to arrive in full, from its first byte to the end of
    /// its body (checked every second), however its bytes are spaced.
    pub request_timeout: Duration,
    /// A request must keep arriving at this many bytes a second on average, once
    /// `min_rate_grace` has passed since it began (Apache's `mod_reqtimeout` MinRate): a
    /// slower one gets `408` early, and may be closed at once to make room for a
    /// newcomer. A steady sender is never cut inside `request_timeout`.
    pub min_request_rate: u64,
    pub min_rate_grace: Duration,
    /// How long a response may go without the client taking a byte of it.
    pub response_timeout: Duration,
    /// Largest request line plus headers, in bytes.
    pub max_head_bytes: usize,
    /// Largest request body that is read; a larger one is not read at all and the request
    /// arrives with [`Request::body_exceeds_limit`] set.
    pub max_body_bytes: usize,
    /// Connections open at once. At the limit a newcomer takes the slot of the oldest idle
    /// connection, else of the oldest one receiving below the minimum rate; if every
    /// connection is being served, it gets `503`.
    pub max_connections: usize,
    /// If set, what connections buffer (partial heads, what a client sent ahead, bodies)
    /// is taken from this budget before it is read; a body that cannot get its share
    /// within `memory_wait` is refused with `503`, unread.
    pub memory: Option<Budget>,
    pub memory_wait: Duration,
    /// How long `accept()` may keep failing (for instance with no file descriptor left)
    /// before the server gives up and reports a failure (see [`Server::on_failure`]).
    pub accept_failure_limit: Duration,
    /// Job queues, each for the workers that serve it (see [`Queue`]); at least 1.
    pub queues: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            io_threads: 1,
            keep_alive_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            min_request_rate: 500,
            min_rate_grace: Duration::from_secs(2),
            response_timeout: Duration::from_secs(30),
            max_head_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
            max_connections: 1024,
            memory: None,
            memory_wait: Duration::from_secs(1),
            accept_failure_limit: Duration::from_secs(30),
            queues: 1,
        }
    }
}

/// The application's first look at every request, on its connection's event loop: answer
/// it there (it must not block) and return `None`, or return it to have it queued for
/// the workers (in the queue [`Request::set_queue`] chose).
pub type Route = dyn Fn(Request) -> Option<Request> + Send + Sync;

type FailureHook = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Failure {
    error: Option<(io::ErrorKind, String)>,
    hook: Option<FailureHook>,
}

/// State shared by the server handle and its loops.
pub(crate) struct Shared {
    pub(crate) options: ServerOptions,
    pub(crate) route: Box<Route>,
    /// One per [`Queue`].
    pub(crate) jobs: Box<[Jobs]>,
    pub(crate) admission: Admission,
    pub(crate) mailboxes: Vec<Arc<Mailbox>>,
    /// When the server started: the clock the loads are published on.
    pub(crate) epoch: Instant,
    draining: AtomicBool,
    /// The listener is closed: no connection can arrive any more.
    accepting_stopped: AtomicBool,
    drained: Mutex<bool>,
    drained_changed: Condvar,
    failure: Mutex<Failure>,
}

impl Shared {
    fn post_all(&self, message: impl Fn() -> Message) {
        for mailbox in &self.mailboxes {
            mailbox.post(message());
        }
    }

    fn drain(&self) {
        if !self.draining.swap(true, Ordering::AcqRel) {
            self.post_all(|| Message::Drain);
        }
    }

    pub(crate) fn stopped_accepting(&self) {
        self.accepting_stopped.store(true, Ordering::Release);
        self.check_drained();
    }

    /// Once no connection is left and none can come: workers get `None`, waiters on
    /// [`Server::wait_drained`] return, and the loops end.
    pub(crate) fn check_drained(&self) {
        if !self.accepting_stopped.load(Ordering::Acquire) || self.admission.open() > 0 {
            return;
        }
        let mut drained = self.drained.lock().unwrap_or_else(PoisonError::into_inner);
        if *drained {
            return;
        }
        *drained = true;
        self.drained_changed.notify_all();
        drop(drained);
        for jobs in self.jobs.iter() {
            jobs.close();
        }
        self.post_all(|| Message::Drained);
    }

    /// `accept()` kept failing: the server drains and the application is told.
    pub(crate) fn fail(&self, error: io::Error) {
        let hook = {
            let mut failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
            failure.error = Some((error.kind(), error.to_string()));
            failure.hook.take()
        };
        self.drain();
        if let Some(hook) = hook {
            hook();
        }
    }
}

/// The server. Dropping it cuts what is left of its connections and joins its loops.
pub struct Server {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    loops: Vec<JoinHandle<()>>,
}

impl Server {
    /// Serves HTTP on a listener the caller bound, with the given limits. Every request
    /// is first given to `route` on its connection's event loop.
    pub fn from_listener(
        listener: TcpListener,
        options: ServerOptions,
        route: impl Fn(Request) -> Option<Request> + Send + Sync + 'static,
    ) -> io::Result<Server> {
        let local_addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let threads = options.io_threads.max(1);
        let mut polls = Vec::with_capacity(threads);
        let mut mailboxes = Vec::with_capacity(threads);
        for _ in 0..threads {
            let poll = mio::Poll::new()?;
            let waker = mio::Waker::new(poll.registry(), event_loop::WAKER)?;
            mailboxes.push(Arc::new(Mailbox::new(waker)));
            polls.push(poll);
        }
        let queues = options.queues.max(1);
        let shared = Arc::new(Shared {
            admission: Admission::new(options.max_connections, threads),
            options,
            route: Box::new(route),
            jobs: (0..queues).map(|_| Jobs::default()).collect(),
            mailboxes,
            epoch: Instant::now(),
            draining: AtomicBool::new(false),
            accepting_stopped: AtomicBool::new(false),
            drained: Mutex::new(false),
            drained_changed: Condvar::new(),
            failure: Mutex::new(Failure::default()),
        });
        let mut listener = Some(mio::net::TcpListener::from_std(listener));
        let mut loops = Vec::with_capacity(threads);
        for (index, poll) in polls.into_iter().enumerate() {
            let event_loop =
                event_loop::EventLoop::new(index, poll, shared.clone(), listener.take())?;
            let spawned = thread::Builder::new()
                .name(format!("http-loop-{index}"))
                .spawn(move || event_loop.run());
            match spawned {
                Ok(handle) => loops.push(handle),
                Err(e) => {
                    let server = Server {
                        shared,
                        local_addr,
                        loops,
                    };
                    drop(server);
                    return Err(e);
                }
            }
        }
        Ok(Server {
            shared,
            local_addr,
            loops,
        })
    }

    /// The address the server listens on.
    pub fn server_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Connections currently open.
    pub fn num_connections(&self) -> usize {
        self.shared.admission.open()
    }

    /// Starts a graceful stop: the listening socket is closed (connections the kernel had
    /// already completed are still served), idle keep-alive connections are closed,
    /// connections that have not sent a first request get a moment to send it, and every
    /// response from now on says `Connection: close`. [`Server::recv`] returns `None` once
    /// the last connection is gone.
    pub fn stop_accepting(&self) {
        self.shared.drain();
    }

    /// Waits until the drain is complete or `deadline` passes; returns whether it is.
    pub fn wait_drained(&self, deadline: Instant) -> bool {
        let mut drained = self
            .shared
            .drained
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while !*drained {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            drained = self
                .shared
                .drained_changed
                .wait_timeout(drained, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Stops accepting and cuts every connection at once (the drain took too long).
    pub fn abort_connections(&self) {
        self.shared.drain();
        self.shared.post_all(|| Message::Abort);
    }

    /// The next request for a worker of the first queue, waiting for one; meanwhile the
    /// worker produces the next pieces of streamed bodies whose connections have written
    /// the previous ones. `None` once the server has drained: no connection is left that
    /// could send another.
    pub fn recv(&self) -> Option<Request> {
        self.jobs(Queue::FIRST).next_request()
    }

    /// The next request of `queue` if one is queued, without waiting (the turns of
    /// streamed bodies queued before it run first, here). For a worker that must keep
    /// something else running while it waits (a MongoDB driver on the worker's own
    /// runtime): on [`NoRequest::Empty`] it waits for [`Server::work_ready`] inside that
    /// runtime.
    pub fn try_recv(&self, queue: Queue) -> Result<Request, NoRequest> {
        self.jobs(queue).try_next()
    }

    /// Completes once [`Server::try_recv`] has something for `queue` (or the server has
    /// drained).
    pub fn work_ready(&self, queue: Queue) -> Ready<'_> {
        self.jobs(queue).ready()
    }

    /// A worker asking for a queue the server does not have is a bug in its setup.
    fn jobs(&self, queue: Queue) -> &Jobs {
        self.shared.jobs.get(queue.0).unwrap_or_else(|| {
            panic!(
                "queue {} asked for, of {} (ServerOptions::queues)",
                queue.0,
                self.shared.jobs.len()
            )
        })
    }

    /// Calls `hook` (at once, if it already happened) when the server fails: `accept()`
    /// kept failing for `accept_failure_limit`. The server then drains as if stopped.
    pub fn on_failure(&self, hook: impl FnOnce() + Send + 'static) {
        let mut failure = self
            .shared
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if failure.error.is_some() {
            drop(failure);
            hook();
        } else {
            failure.hook = Some(Box::new(hook));
        }
    }

    /// The failure that stopped the server, if one did.
    pub fn failure(&self) -> Option<io::Error> {
        let failure = self
            .shared
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        failure
            .error
            .as_ref()
            .map(|(kind, message)| io::Error::new(*kind, message.clone()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.abort_connections();
        for handle in self.loops.drain(..) {
            let _ = handle.join();
        }
    }
}
