//! The worker pool (a fixed number of threads taking queued requests from the HTTP
//! server) and the graceful stop.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tiny_http::Server;

use crate::http::Handler;
use crate::shutdown::Shutdown;

/// Serves until `shutdown` triggers, then drains: no new connections, every request
/// already received is answered, and the workers return once no connection is left, or
/// once `grace` has passed and the remaining connections have been cut.
pub fn serve(
    server: &Server,
    handler: &Arc<Handler>,
    workers: u16,
    grace: Duration,
    shutdown: &Shutdown,
) -> io::Result<()> {
    thread::scope(|scope| {
        for n in 0..workers {
            let spawned = thread::Builder::new()
                .name(format!("worker-{n}"))
                .spawn_scoped(scope, || work(server, handler));
            if let Err(e) = spawned {
                // Without its workers the server would accept and never answer.
                server.abort_connections();
                return Err(e);
            }
        }
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
        Ok(())
    })
}

fn work(server: &Server, handler: &Handler) {
    while let Some(rq) = server.recv() {
        // A panic drops the request, which answers it 500.
        if catch_unwind(AssertUnwindSafe(|| handler.handle(rq))).is_err() {
            tracing::error!("request handler panicked");
        }
    }
}
