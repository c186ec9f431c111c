//! Logs: one JSON object per line on stdout, the format log collectors read without
//! configuration.

use std::io::{BufWriter, Stdout};

use tracing::level_filters::LevelFilter;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};

/// Installs the JSON logger. Log records from libraries using the `log` crate (the HTTP
/// server among them) are captured too.
///
/// Lines are handed to a thread of their own, which writes whatever has queued up with
/// one system call: a request's thread never waits for stdout. None is ever dropped: when
/// the queue is full, the request's thread waits instead. Keep the guard until the end:
/// dropping it writes what is left.
pub fn init(level: LevelFilter) -> Option<WorkerGuard> {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("log")
        .finish(BufWriter::<Stdout>::new(std::io::stdout()));
    // A second call (several servers in one test process) keeps the first logger.
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_max_level(level)
        .with_writer(writer)
        .try_init()
        .ok()
        .map(|()| guard)
}
