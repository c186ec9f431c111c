//! A shared allowance (bytes of memory, or slots of any kind) handed out in grants that
//! return it when dropped. The server takes request bodies from one before reading them,
//! and the application can take what else requests hold from the same one, so a single
//! number bounds them all.
//!
//! New grants are handed out in the order they were asked for, so a large one (a 16 MiB
//! listing batch) is not starved by a stream of small ones. Growing a grant that exists
//! does not queue: it finishes work already admitted, which frees memory for the queue.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// A cloneable handle on one allowance.
#[derive(Clone)]
pub struct Budget {
    inner: Arc<Inner>,
}

struct Inner {
    total: u64,
    state: Mutex<State>,
    /// Where growing grants wait (rarely anyone).
    freed: Condvar,
}

#[derive(Default)]
struct State {
    used: u64,
    /// The new grants waiting, in the order they asked; only the first may take.
    queue: VecDeque<Waiter>,
    next_ticket: u64,
    /// Grants waiting to grow.
    growers: usize,
}

struct Waiter {
    ticket: u64,
    /// Each waiter has its own, so that a release wakes the one who may take, not all.
    wake: Arc<Condvar>,
}

/// Part of a budget, returned when dropped.
pub struct Grant {
    inner: Arc<Inner>,
    amount: u64,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fits(&self, state: &State, amount: u64) -> bool {
        state.used + amount <= self.total
    }

    /// Takes `amount` more, waiting until `deadline` for it to be free, and, for a new
    /// grant (`queued`), for the grants asked before it.
    fn take(&self, amount: u64, deadline: Instant, queued: bool) -> bool {
        if amount > self.total {
            return false;
        }
        let mut state = self.lock();
        if (!queued || state.queue.is_empty()) && self.fits(&state, amount) {
            state.used += amount;
            return true;
        }
        if queued {
            self.wait_in_line(state, amount, deadline)
        } else {
            self.wait_to_grow(state, amount, deadline)
        }
    }

    fn wait_in_line(
        &self,
        mut state: MutexGuard<'_, State>,
        amount: u64,
        deadline: Instant,
    ) -> bool {
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        let wake = Arc::new(Condvar::new());
        state.queue.push_back(Waiter {
            ticket,
            wake: wake.clone(),
        });
        loop {
            let first = state.queue.front().map(|w| w.ticket) == Some(ticket);
            if first && self.fits(&state, amount) {
                state.used += amount;
                state.queue.pop_front();
                // The next in line may fit too.
                self.wake(&state);
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                state.queue.retain(|w| w.ticket != ticket);
                self.wake(&state);
                return false;
            }
            state = wake
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn wait_to_grow(
        &self,
        mut state: MutexGuard<'_, State>,
        amount: u64,
        deadline: Instant,
    ) -> bool {
        state.growers += 1;
        let grown = loop {
            if self.fits(&state, amount) {
                state.used += amount;
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            state = self
                .freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        state.growers -= 1;
        grown
    }

    /// Wakes whoever may take now: the first in line, and any grant waiting to grow.
    fn wake(&self, state: &State) {
        if let Some(first) = state.queue.front() {
            first.wake.notify_one();
        }
        if state.growers > 0 {
            self.freed.notify_all();
        }
    }

    fn give_back(&self, amount: u64) {
        if amount > 0 {
            let mut state = self.lock();
            state.used -= amount;
            self.wake(&state);
        }
    }
}

impl Budget {
    pub fn new(total: u64) -> Budget {
        Budget {
            inner: Arc::new(Inner {
                total,
                state: Mutex::new(State::default()),
                freed: Condvar::new(),
            }),
        }
    }

    pub fn total(&self) -> u64 {
        self.inner.total
    }

    /// How much is granted now.
    pub fn in_use(&self) -> u64 {
        self.inner.lock().used
    }

    /// A grant of `amount`, waiting up to `wait` for it to be free; `None` if it cannot be
    /// had in that time (never, if `amount` exceeds the whole budget).
    pub fn acquire(&self, amount: u64, wait: Duration) -> Option<Grant> {
        self.inner
            .take(amount, Instant::now() + wait, true)
            .then(|| Grant {
                inner: self.inner.clone(),
                amount,
            })
    }
}

impl Budget {
    /// Like [`Budget::acquire`], for work already under way (the next batch of a listing
    /// whose status is sent): it does not queue behind new grants, as growing a grant
    /// does not, since finishing admitted work is what frees memory for the queue.
    pub fn acquire_admitted(&self, amount: u64, wait: Duration) -> Option<Grant> {
        self.inner
            .take(amount, Instant::now() + wait, false)
            .then(|| Grant {
                inner: self.inner.clone(),
                amount,
            })
    }
}

impl Grant {
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// Grows the grant by `more`, waiting up to `wait`; `false` (and unchanged) if the
    /// budget has no room in that time.
    pub fn grow(&mut self, more: u64, wait: Duration) -> bool {
        let grown = self.inner.take(more, Instant::now() + wait, false);
        if grown {
            self.amount += more;
        }
        grown
    }

    /// Makes the grant exactly `amount`, growing it (waiting up to `wait`) or shrinking it;
    /// `false` (and unchanged) if it cannot grow in that time.
    pub fn resize(&mut self, amount: u64, wait: Duration) -> bool {
        if amount > self.amount {
            self.grow(amount - self.amount, wait)
        } else {
            self.shrink_to(amount);
            true
        }
    }

    /// Returns what the grant holds beyond `amount`.
    pub fn shrink_to(&mut self, amount: u64) {
        if amount < self.amount {
            self.inner.give_back(self.amount - amount);
            self.amount = amount;
        }
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.inner.give_back(self.amount);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_are_bounded_by_the_total_and_return_it_when_dropped() {
        let budget = Budget::new(10);
        let mut a = budget.acquire(6, Duration::ZERO).unwrap();
        assert!(budget.acquire(5, Duration::from_millis(10)).is_none());
        assert!(
            budget.acquire(11, Duration::from_secs(60)).is_none(),
            "never fits"
        );
        assert!(!a.grow(5, Duration::ZERO));
        assert!(a.grow(4, Duration::ZERO));
        assert_eq!((a.amount(), budget.in_use()), (10, 10));
        a.shrink_to(3);
        assert_eq!(budget.in_use(), 3);
        assert!(a.resize(7, Duration::ZERO) && a.resize(2, Duration::ZERO));
        assert!(!a.resize(11, Duration::ZERO));
        assert_eq!((a.amount(), budget.in_use()), (2, 2));
        drop(a);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn new_grants_come_in_the_order_asked_and_growth_does_not_queue() {
        let budget = Budget::new(10);
        let mut held = budget.acquire(8, Duration::ZERO).unwrap();
        // A large request waits for room; a small one asked after it waits its turn,
        // though it would fit now.
        let large = {
            let budget = budget.clone();
            std::thread::spawn(move || budget.acquire(9, Duration::from_secs(10)).is_some())
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(budget.acquire(1, Duration::from_millis(50)).is_none());
        // Growth is not queued behind it.
        assert!(held.grow(2, Duration::ZERO));
        drop(held);
        assert!(large.join().unwrap());
    }

    #[test]
    fn a_waiter_gets_what_another_grant_returns() {
        let budget = Budget::new(4);
        let held = budget.acquire(4, Duration::ZERO).unwrap();
        let waiter = {
            let budget = budget.clone();
            std::thread::spawn(move || budget.acquire(3, Duration::from_secs(10)).is_some())
        };
        std::thread::sleep(Duration::from_millis(20));
        drop(held);
        assert!(waiter.join().unwrap());
    }
}
