//! A stop signal shared by the signal handler, the server and tests.

use std::io;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Cloneable handle: `trigger` once, and everyone waiting wakes up.
#[derive(Clone, Default)]
pub struct Shutdown {
    state: Arc<(Mutex<bool>, Condvar)>,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trigger(&self) {
        let (flag, wake) = &*self.state;
        *flag.lock().unwrap_or_else(PoisonError::into_inner) = true;
        wake.notify_all();
    }

    pub fn is_triggered(&self) -> bool {
        *self.state.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Blocks until triggered.
    pub fn wait(&self) {
        let (flag, wake) = &*self.state;
        let mut triggered = flag.lock().unwrap_or_else(PoisonError::into_inner);
        while !*triggered {
            triggered = wake.wait(triggered).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Blocks until triggered or until `timeout` passes; true if triggered.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (flag, wake) = &*self.state;
        let mut triggered = flag.lock().unwrap_or_else(PoisonError::into_inner);
        while !*triggered {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            triggered = wake
                .wait_timeout(triggered, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Triggers on SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C).
    pub fn on_signals(&self) -> io::Result<()> {
        let mut signals = Signals::new([SIGTERM, SIGINT])?;
        let shutdown = self.clone();
        thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    tracing::info!(signal, "stop requested, draining");
                    shutdown.trigger();
                }
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_wakes_waiters() {
        let shutdown = Shutdown::new();
        assert!(!shutdown.wait_timeout(Duration::from_millis(10)));
        let waiter = {
            let s = shutdown.clone();
            thread::spawn(move || s.wait())
        };
        shutdown.trigger();
        waiter.join().unwrap();
        assert!(shutdown.is_triggered());
        assert!(shutdown.wait_timeout(Duration::ZERO));
    }
}
