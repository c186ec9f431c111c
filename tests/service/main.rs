//! The service's integration tests, in one binary with a module per area (zero2prod's
//! layout): every test runs the real service (through `app::run` on `127.0.0.1:0`, or as
//! the real binary) against a real MongoDB-speaking server with authentication on.
//!
//! - `api`: the HTTP contract;
//! - `hardening`: hostile clients against the HTTP server;
//! - `memory`: the release binary inside the pod's memory cgroup, under the worst inputs;
//! - `process`: the binary as a process: configuration, logs, signals;
//! - `reliability`: MongoDB going away, overload, restarts, running out of descriptors.
//!
//! Tests share one MongoDB process (`Mongo::shared`), each with a database of its own;
//! those that stop, hang or step down MongoDB start their own (`Mongo::start`).

mod api;
mod hardening;
mod memory;
mod process;
mod reliability;
mod support;
