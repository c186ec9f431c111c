//! The worker pool (a fixed number of threads taking complete requests from the HTTP
//! server's queue) and the graceful stop.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tiny_http::Server;

use crate::http::Handler;
use crate::shutdown::Shutdown;

/// How often the drain checks whether the last connection has gone.
const DRAIN_POLL: Duration = Duration::from_millis(10);

struct Pool {
    server: Arc<Server>,
    handler: Arc<Handler>,
    stop: Arc<AtomicBool>,
    /// Set by a worker when the server reports it can no longer accept connections.
    fatal: Arc<Mutex<Option<io::Error>>>,
    threads: Vec<JoinHandle<()>>,
}

/// Serves until `shutdown` triggers, then drains: no new connections, every request
/// already received is answered, and the pool stops once no connection is left or
/// `grace` has passed. Returns an error if the server failed rather than being stopped.
pub fn serve(
    server: Server,
    handler: Handler,
    workers: u16,
    grace: Duration,
    shutdown: &Shutdown,
) -> io::Result<()> {
    let mut pool = Pool {
        server: Arc::new(server),
        handler: Arc::new(handler),
        stop: Arc::new(AtomicBool::new(false)),
        fatal: Arc::new(Mutex::new(None)),
        threads: Vec::with_capacity(usize::from(workers)),
    };
    for n in 0..workers {
        let spawned = pool.spawn_worker(n, shutdown.clone());
        if let Err(e) = spawned {
            // Without its workers the server would accept and never answer.
            let _ = pool.stop(Instant::now());
            return Err(e);
        }
    }

    shutdown.wait();
    let deadline = Instant::now() + grace;
    pool.server.stop_accepting();
    while pool.server.num_connections() > 0 && Instant::now() < deadline {
        thread::sleep(DRAIN_POLL);
    }
    let left = pool.server.num_connections();
    if left > 0 {
        tracing::warn!(
            connections = left,
            "grace period over, exiting with connections open"
        );
    } else {
        tracing::debug!("all connections closed");
    }
    pool.stop(deadline)
}

impl Pool {
    fn spawn_worker(&mut self, n: u16, shutdown: Shutdown) -> io::Result<()> {
        let server = self.server.clone();
        let handler = self.handler.clone();
        let stop = self.stop.clone();
        let fatal = self.fatal.clone();
        let thread = thread::Builder::new()
            .name(format!("worker-{n}"))
            .spawn(move || loop {
                match server.recv() {
                    Ok(rq) => {
                        // The request is answered 500 when it is dropped by the unwinding.
                        if catch_unwind(AssertUnwindSafe(|| handler.handle(rq))).is_err() {
                            tracing::error!("request handler panicked");
                        }
                    }
                    Err(_) if stop.load(Ordering::Acquire) => return,
                    Err(e) => {
                        tracing::error!(error = %e, "the server can no longer accept connections");
                        *fatal.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
                        shutdown.trigger();
                        return;
                    }
                }
            })?;
        self.threads.push(thread);
        Ok(())
    }

    /// Stops the workers, waiting for them until `deadline` (at least briefly, so idle
    /// ones can leave), then closes the MongoDB client if every worker is done.
    fn stop(self, deadline: Instant) -> io::Result<()> {
        self.stop.store(true, Ordering::Release);
        for _ in &self.threads {
            self.server.unblock();
        }
        let deadline = deadline.max(Instant::now() + Duration::from_millis(200));
        while !self.threads.iter().all(JoinHandle::is_finished) && Instant::now() < deadline {
            thread::sleep(DRAIN_POLL);
        }
        let finished = self.threads.iter().all(JoinHandle::is_finished);
        if let Some(e) = self
            .fatal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return Err(e);
        }
        if finished {
            tracing::debug!("workers stopped");
            drop(self.threads);
            if let Ok(handler) = Arc::try_unwrap(self.handler) {
                handler.into_store().shutdown();
            }
        }
        Ok(())
    }
}
