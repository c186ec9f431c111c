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
    freed: Condvar,
}

#[derive(Default)]
struct State {
    used: u64,
    /// Tickets of the new grants waiting, in the order they asked.
    queue: VecDeque<u64>,
    next_ticket: u64,
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

    /// Takes `amount` more, waiting until `deadline` for it to be free, and, for a new
    /// grant (`queued`), for the grants asked before it.
    fn take(&self, amount: u64, deadline: Instant, queued: bool) -> bool {
        if amount > self.total {
            return false;
        }
        let mut state = self.lock();
        let ticket = state.next_ticket;
        if queued {
            state.next_ticket += 1;
            state.queue.push_back(ticket);
        }
        loop {
            let turn = !queued || state.queue.front() == Some(&ticket);
            if turn && state.used + amount <= self.total {
                state.used += amount;
                if queued {
                    state.queue.pop_front();
                    // The next in line may fit too.
                    self.freed.notify_all();
                }
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                if queued {
                    state.queue.retain(|t| *t != ticket);
                    self.freed.notify_all();
                }
                return false;
            }
            state = self
                .freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn give_back(&self, amount: u64) {
        if amount > 0 {
            self.lock().used -= amount;
            self.freed.notify_all();
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
