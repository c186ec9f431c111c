//! Shared by the integration tests: a real MongoDB-speaking server process with
//! authentication on, the service started in-process through `app::run` or as the real
//! binary, and a plain HTTP client. Every process started here is stopped by its PID when
//! its guard drops, whether the test passed or panicked.

pub mod http;
pub mod mongo;
pub mod pod;
pub mod release;
pub mod results;
pub mod service;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A database name no other test uses.
pub fn unique_db(name: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "t_{}_{}_{}",
        name,
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `check` every 50 ms until it returns `Some`, panicking after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lets this test process hold many thousand sockets (a child inherits the limit).
pub fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
}
