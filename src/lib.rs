//! A JSON API over MongoDB: `GET /` (a welcome with the time), `GET /data` (every
//! document), `POST /data` (insert one), plus probes and metrics.
//!
//! [`app::run`] is the whole service; `main` only reads the configuration, binds the
//! port and calls it, and the integration tests start it the same way on `127.0.0.1:0`.
//!
//! No `unsafe` but in `memcpy`, which must be: it replaces C's `memcpy` and `memmove` in
//! the static musl binary, and is not part of the library's API.

#![deny(unsafe_code)]

pub mod app;
pub mod cgroup;
pub mod http;
pub mod logging;
#[cfg(any(target_env = "musl", test))]
mod memcpy;
pub mod metrics;
pub mod settings;
pub mod shutdown;
pub mod store;
pub mod workers;
