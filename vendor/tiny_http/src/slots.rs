//! Connection slots: how many connections are open, what each is doing, and the levers
//! the server pulls on them (evict one for a newcomer, close the idle ones when draining,
//! cut them all when the grace period is over).

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// What a connection is doing, as far as evicting and draining are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activity {
    /// Waiting for the first byte of a request.
    Idle,
    /// Receiving a request (head or body) that has not arrived in full.
    Reading,
    /// A complete request is being answered.
    Busy,
}

struct Entry {
    socket: Arc<TcpStream>,
    activity: Activity,
    since: Instant,
}

#[derive(Default)]
struct State {
    entries: HashMap<u64, Entry>,
    next_id: u64,
    draining: bool,
}

/// Every open connection of one server.
pub(crate) struct Slots {
    limit: usize,
    state: Mutex<State>,
    emptied: Condvar,
    /// Called once the server drains and the last connection has gone.
    on_drained: Box<dyn Fn() + Send + Sync>,
}

/// A connection's slot; dropping it frees the slot.
pub(crate) struct Slot {
    slots: Arc<Slots>,
    id: u64,
}

/// Why a connection got no slot.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Every slot is answering a complete request.
    Full,
    Draining,
}

impl Slots {
    pub(crate) fn new(limit: usize, on_drained: Box<dyn Fn() + Send + Sync>) -> Slots {
        Slots {
            limit,
            state: Mutex::new(State::default()),
            emptied: Condvar::new(),
            on_drained,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a new connection. At the limit, the connection that has waited longest
    /// for a request to arrive in full (idle, or sending one slowly) is cut to make room:
    /// clients that send a complete request promptly keep being served while slow ones
    /// are reaped, and only when every slot is answering a request is the newcomer refused.
    pub(crate) fn admit(self: &Arc<Self>, socket: Arc<TcpStream>) -> Result<Slot, Refused> {
        let mut state = self.lock();
        if state.draining {
            return Err(Refused::Draining);
        }
        if state.entries.len() >= self.limit {
            let oldest = state
                .entries
                .iter()
                .filter(|(_, e)| e.activity != Activity::Busy)
                .min_by_key(|(_, e)| e.since)
                .map(|(id, _)| *id)
                .ok_or(Refused::Full)?;
            if let Some(evicted) = state.entries.remove(&oldest) {
                log::debug!("connection limit reached; closing the oldest idle or slow one");
                let _ = evicted.socket.shutdown(Shutdown::Both);
            }
        }
        let id = state.next_id;
        state.next_id += 1;
        state.entries.insert(
            id,
            Entry {
                socket,
                activity: Activity::Idle,
                since: Instant::now(),
            },
        );
        Ok(Slot {
            slots: self.clone(),
            id,
        })
    }

    pub(crate) fn count(&self) -> usize {
        self.lock().entries.len()
    }

    /// Stops admitting connections and closes the idle ones; connections receiving or
    /// answering a request finish it. Returns whether this call started the drain.
    pub(crate) fn drain(&self) -> bool {
        let mut state = self.lock();
        if state.draining {
            return false;
        }
        state.draining = true;
        state.entries.retain(|_, entry| {
            let idle = entry.activity == Activity::Idle;
            if idle {
                let _ = entry.socket.shutdown(Shutdown::Both);
            }
            !idle
        });
        self.after_removal(&state);
        true
    }

    /// Waits until no connection is left or `deadline` passes; returns whether none is.
    pub(crate) fn wait_empty(&self, deadline: Instant) -> bool {
        let mut state = self.lock();
        while !state.entries.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .emptied
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Cuts every connection at once.
    pub(crate) fn abort_all(&self) {
        let mut state = self.lock();
        for entry in state.entries.values() {
            let _ = entry.socket.shutdown(Shutdown::Both);
        }
        state.entries.clear();
        self.after_removal(&state);
    }

    fn after_removal(&self, state: &State) {
        if state.entries.is_empty() {
            self.emptied.notify_all();
            if state.draining {
                (self.on_drained)();
            }
        }
    }
}

impl Slot {
    /// Records what the connection does now. `false`: the connection has been closed
    /// from outside (evicted, or idle while the server drains) and must end.
    pub(crate) fn set(&self, activity: Activity) -> bool {
        let mut state = self.slots.lock();
        let draining = state.draining;
        match state.entries.get_mut(&self.id) {
            // A connection that goes idle while the server drains is done.
            Some(_) if draining && activity == Activity::Idle => {
                state.entries.remove(&self.id);
                self.slots.after_removal(&state);
                false
            }
            Some(entry) => {
                if entry.activity != activity {
                    entry.activity = activity;
                    entry.since = Instant::now();
                }
                true
            }
            None => false,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.slots.lock();
        if state.entries.remove(&self.id).is_some() {
            self.slots.after_removal(&state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn sockets(n: usize) -> (TcpListener, Vec<Arc<TcpStream>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sockets = (0..n)
            .map(|_| Arc::new(TcpStream::connect(addr).unwrap()))
            .collect();
        (listener, sockets)
    }

    #[test]
    fn at_the_limit_the_oldest_waiting_connection_makes_room_but_busy_ones_stay() {
        let slots = Arc::new(Slots::new(2, Box::new(|| {})));
        let (_l, s) = sockets(4);
        let first = slots.admit(s[0].clone()).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let second = slots.admit(s[1].clone()).unwrap();
        let third = slots.admit(s[2].clone()).unwrap();
        assert_eq!(slots.count(), 2);
        assert!(!first.set(Activity::Reading), "the oldest was evicted");
        assert!(second.set(Activity::Busy) && third.set(Activity::Busy));
        assert_eq!(slots.admit(s[3].clone()).err(), Some(Refused::Full));
        drop(second);
        assert!(slots.admit(s[3].clone()).is_ok());
    }

    #[test]
    fn draining_closes_idle_connections_and_reports_when_the_last_is_gone() {
        let drained = Arc::new(AtomicUsize::new(0));
        let counter = drained.clone();
        let slots = Arc::new(Slots::new(
            8,
            Box::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
        ));
        let (_l, s) = sockets(2);
        let idle = slots.admit(s[0].clone()).unwrap();
        let busy = slots.admit(s[1].clone()).unwrap();
        assert!(busy.set(Activity::Busy));
        assert!(slots.drain());
        assert!(!idle.set(Activity::Reading), "idle connections close");
        assert_eq!(slots.count(), 1);
        assert!(!slots.wait_empty(Instant::now() + Duration::from_millis(20)));
        assert!(
            !busy.set(Activity::Idle),
            "done once its response is written"
        );
        assert!(slots.wait_empty(Instant::now()));
        assert_eq!(drained.load(Ordering::SeqCst), 1);
        assert_eq!(slots.admit(s[0].clone()).err(), Some(Refused::Draining));
    }
}
