//! A JSON API over MongoDB: `GET /` (a welcome with the time), `GET /data` (every
//! document), `POST /data` (insert one), plus probes and metrics.
//!
//! [`app::run`] is the whole service; `main` only reads the configuration, binds the
//! port and calls it, and the integration tests start it the same way on `127.0.0.1:0`.

pub mod app;
pub mod cgroup;
pub mod http;
pub mod logging;
pub mod memcpy;
pub mod metrics;
pub mod settings;
pub mod shutdown;
pub mod store;
pub mod workers;
