//! The worker pools: a fixed number of threads that take the requests an HTTP server's
//! event loops queued (those that may block on MongoDB) and answer them, each with a
//! MongoDB session of its own; and the graceful stop of the API.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread::{self, Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use tiny_http::{NoRequest, Queue, Request, Server};

use crate::shutdown::Shutdown;
use crate::store::{Session, Store};

/// Starts `count` workers named `name-N` on `server`'s `queue`, each answering with
/// `answer` until the server has drained. If a thread cannot be started, the server's
/// connections are cut (without its workers it would accept and never answer).
pub fn spawn<'scope, 'env>(
    scope: &'scope Scope<'scope, 'env>,
    server: &'env Server,
    queue: Queue,
    store: &'env Store,
    count: u16,
    name: &str,
    answer: &'env (dyn Fn(Request, &Session) + Sync),
) -> io::Result<Vec<ScopedJoinHandle<'scope, ()>>> {
    (0..count)
        .map(|n| {
            thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn_scoped(scope, move || work(server, queue, store, answer))
                .inspect_err(|_| server.abort_connections())
        })
        .collect()
}

/// A worker: its own MongoDB session, then requests (and turns of streamed bodies) until
/// the server has drained. Between requests it waits inside its session's runtime, which
/// keeps the driver's monitor and pool going.
fn work(server: &Server, queue: Queue, store: &Store, answer: &(dyn Fn(Request, &Session) + Sync)) {
    let session = match store.open_session() {
        Ok(session) => session,
        Err(e) => {
            tracing::error!(error = %e, "a worker cannot start its MongoDB client");
            server.abort_connections();
            return;
        }
    };
    loop {
        match server.try_recv(queue) {
            Ok(rq) => {
                // A panic drops the request, which answers it 500.
                if catch_unwind(AssertUnwindSafe(|| answer(rq, &session))).is_err() {
                    tracing::error!("request handler panicked");
                }
            }
            Err(NoRequest::Empty) => session.wait_for(server.work_ready(queue)),
            Err(NoRequest::Closed) => return,
        }
    }
}

/// Waits for `shutdown`, then drains `server`: no new connections, every request already
/// received is answered, and its workers return once no connection is left, or once
/// `grace` has passed and the remaining connections have been cut.
pub fn drain_on(server: &Server, grace: Duration, shutdown: &Shutdown) {
    shutdown.wait();
    let deadline = Instant::now() + grace;
    server.stop_accepting();
    if server.wait_drained(deadline) {
        tracing::debug!("all connections closed");
    } else {
        tracing::warn!(
            connections = server.num_connections(),
            "grace period over, closing the connections left"
        );
        server.abort_connections();
    }
}
