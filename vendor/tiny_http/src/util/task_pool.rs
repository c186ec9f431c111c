use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

type Task = Box<dyn FnOnce() + Send>;

/// Threads for connections: an idle thread takes the next connection, otherwise a new
/// thread is started. Threads beyond `MIN_THREADS` exit after `IDLE_EXIT` without work,
/// so the thread count returns to its resting level after a burst.
///
/// Upstream decided whether to start a thread from a count of waiting threads that was
/// only updated once a woken thread ran, so a burst of connections could be queued
/// behind busy threads and wait for a whole connection to finish. Here the decision and
/// the bookkeeping happen under one lock: a task is queued only if an idle thread is
/// left for it.
pub(crate) struct TaskPool {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    todo: VecDeque<Task>,
    idle: usize,
    threads: usize,
    closing: bool,
}

const MIN_THREADS: usize = 4;
const IDLE_EXIT: Duration = Duration::from_secs(5);
/// A connection thread only parses heads and copies bodies: a small stack keeps a
/// thousand open connections cheap.
const CONNECTION_STACK: usize = 256 * 1024;

impl TaskPool {
    pub(crate) fn new() -> TaskPool {
        let pool = TaskPool {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
            }),
        };
        for _ in 0..MIN_THREADS {
            if let Err(e) = pool.start_thread(None) {
                log::warn!("could not pre-start a connection thread: {}", e);
            }
        }
        pool
    }

    /// Runs `task` on an idle thread, or on a new one. Fails only if no thread can be
    /// created; the task is then dropped, which closes its connection.
    pub(crate) fn spawn(&self, task: Task) -> io::Result<()> {
        let mut state = self.shared.lock();
        if state.idle > state.todo.len() {
            state.todo.push_back(task);
            self.shared.wake.notify_one();
            return Ok(());
        }
        drop(state);
        self.start_thread(Some(task))
    }

    fn start_thread(&self, first: Option<Task>) -> io::Result<()> {
        self.shared.lock().threads += 1;
        let shared = self.shared.clone();
        // `thread::spawn` would panic on failure and take the accept loop down with it.
        let started = thread::Builder::new()
            .name("http-conn".into())
            .stack_size(CONNECTION_STACK)
            .spawn(move || {
                if let Some(task) = first {
                    task();
                }
                shared.run();
            });
        if started.is_err() {
            self.shared.lock().threads -= 1;
        }
        started.map(drop)
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self) {
        let mut state = self.lock();
        loop {
            if let Some(task) = state.todo.pop_front() {
                drop(state);
                task();
                state = self.lock();
                continue;
            }
            if state.closing {
                break;
            }
            state.idle += 1;
            let (next, wait) = self
                .wake
                .wait_timeout(state, IDLE_EXIT)
                .unwrap_or_else(PoisonError::into_inner);
            state = next;
            state.idle -= 1;
            if wait.timed_out() && state.todo.is_empty() && state.threads > MIN_THREADS {
                break;
            }
        }
        state.threads -= 1;
    }
}

impl Drop for TaskPool {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    #[test]
    fn a_burst_of_long_tasks_runs_at_once() {
        let pool = TaskPool::new();
        let (started, seen) = mpsc::channel();
        let release = Arc::new((Mutex::new(false), Condvar::new()));
        for _ in 0..20 {
            let started = started.clone();
            let release = release.clone();
            pool.spawn(Box::new(move || {
                started.send(()).unwrap();
                let (flag, cv) = &*release;
                let mut go = flag.lock().unwrap();
                while !*go {
                    go = cv.wait(go).unwrap();
                }
            }))
            .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for n in 0..20 {
            let left = deadline.saturating_duration_since(Instant::now());
            seen.recv_timeout(left)
                .unwrap_or_else(|_| panic!("only {n} of 20 tasks started"));
        }
        *release.0.lock().unwrap() = true;
        release.1.notify_all();
    }
}
