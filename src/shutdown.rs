//! A stop signal shared by the signal handler, the server and tests.

use std::io;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;

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

    /// Blocks until triggered.
    pub fn wait(&self) {
        let (flag, wake) = &*self.state;
        let mut triggered = flag.lock().unwrap_or_else(PoisonError::into_inner);
        while !*triggered {
            triggered = wake.wait(triggered).unwrap_or_else(PoisonError::into_inner);
        }
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
    fn trigger_wakes_every_waiter() {
        let shutdown = Shutdown::new();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let s = shutdown.clone();
                thread::spawn(move || s.wait())
            })
            .collect();
        shutdown.trigger();
        for waiter in waiters {
            waiter.join().unwrap();
        }
        // Once triggered, waiting returns at once.
        shutdown.wait();
    }
}
