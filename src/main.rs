use std::process::ExitCode;

use mongo_api::app::{self, Listeners};
use mongo_api::logging;
use mongo_api::settings::{Settings, SettingsError};
use mongo_api::shutdown::Shutdown;

#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read when it starts (docs/memory.md says how they were
/// measured): two arenas; per-thread caches kept small (the event loops, the workers and
/// the driver's threads each have one, and every cached byte is outside the budget); small
/// freed pages returned to the system after 200 ms, and allocations of
/// 256 KiB or more (bodies, documents, batches: what the request budget counts) at once,
/// so that resident memory follows the budget.
#[cfg(target_env = "musl")]
#[unsafe(no_mangle)]
pub static malloc_conf: &[u8] = b"narenas:2,tcache_max:256,tcache_nslots_small_max:20,\
dirty_decay_ms:200,muzzy_decay_ms:0,oversize_threshold:262144\0";

fn main() -> ExitCode {
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(SettingsError::Informational(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("mongo-api: {e}");
            return ExitCode::from(2);
        }
    };
    if settings.print_config {
        println!("{:#}", app::describe(&settings));
        return ExitCode::SUCCESS;
    }
    let _logs = logging::init(settings.log_level);
    std::panic::set_hook(Box::new(|info| tracing::error!(panic = %info, "panic")));
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open files"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }

    let http = &settings.http;
    let listeners = match Listeners::bind(http) {
        Ok(listeners) => listeners,
        Err(e) => {
            eprintln!("mongo-api: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = Shutdown::new();
    if let Err(e) = shutdown.on_signals() {
        eprintln!("mongo-api: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    match app::run(listeners, settings, shutdown) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "exiting");
            ExitCode::FAILURE
        }
    }
}
