//! Logs: one JSON object per line on stdout, the format log collectors read without
//! configuration.

use tracing::level_filters::LevelFilter;

/// Installs the JSON logger. Log records from libraries using the `log` crate (the HTTP
/// server among them) are captured too.
pub fn init(level: LevelFilter) {
    // A second call (several servers in one test process) keeps the first logger.
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_max_level(level)
        .with_writer(std::io::stdout)
        .try_init();
}
