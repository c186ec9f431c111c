//! One number that bounds the memory every request holds: a budget of bytes handed out
//! in grants that return themselves when dropped. The HTTP server takes what connections
//! buffer from it (partial heads, bodies, unsent output) and the application takes what
//! it builds (documents, listing batches, pages) from the same one, so a single
//! `REQUEST_MEMORY_MIB` bounds them all.
//!
//! New grants are handed out in the order they were asked for, so a large one (a 16 MiB
//! listing batch) is not starved by a stream of small ones. Work already admitted (a
//! grant that grows, the next batch of a listing whose status is sent) does not queue
//! behind new grants: finishing it is what frees memory for the queue.
//!
//! Two ways to wait: a thread may block for up to a deadline ([`Budget::acquire`]), and an
//! event loop, which must never block, may ask to be called back when its grant is
//! free ([`Budget::request`]) and give up on it later ([`Budget::cancel`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// A cloneable handle on one budget.
#[derive(Clone)]
pub struct Budget {
    inner: Arc<Inner>,
}

struct Inner {
    total: u64,
    state: Mutex<State>,
}

type Callback = Box<dyn FnOnce(Grant) + Send>;

/// How a waiter learns that its turn came.
enum Wake {
    /// A blocked thread, each with its own condition variable, so that a release wakes
    /// the one it granted, not all.
    Thread(Arc<Parked>),
    /// Called with the grant, outside the lock.
    Call(Callback),
}

/// A blocked thread's side of its wait. Its grant is taken for it when it fits (under the
/// lock, by whoever freed the memory), and it only learns so when it runs: left in the
/// queue until then, it made every grant that must not pass a waiter refuse, with room
/// for both (measured: an 8-byte body refused `503` with 31 MiB free, beside a listing's
/// woken 16 MiB fetch).
#[derive(Default)]
struct Parked {
    /// Set under the budget's lock.
    granted: AtomicBool,
    wake: Condvar,
}

/// What a change of the budget owes those waiting, done once the lock is released: a
/// thread woken under it would at once block on it again (a second context switch).
#[derive(Default)]
#[must_use]
struct Turns {
    threads: Vec<Arc<Parked>>,
    calls: Vec<(Callback, Grant)>,
}

impl Turns {
    fn run(self) {
        for thread in self.threads {
            thread.wake.notify_one();
        }
        for (call, grant) in self.calls {
            call(grant);
        }
    }
}

struct Waiter {
    ticket: u64,
    amount: u64,
    wake: Wake,
}

#[derive(Default)]
struct State {
    used: u64,
    /// New grants waiting, in the order asked; only the first may take.
    queue: VecDeque<Waiter>,
    /// Admitted work waiting: served before the queue, any that fits.
    admitted: VecDeque<Waiter>,
    next_ticket: u64,
}

/// Part of a budget, given back when dropped.
pub struct Grant {
    inner: Arc<Inner>,
    amount: u64,
}

/// What [`Budget::request`] got.
pub enum Requested {
    Granted(Grant),
    /// Queued: the callback will get the grant; [`Budget::cancel`] withdraws it.
    Waiting(Ticket),
    /// More than the whole budget: it can never be granted.
    Never,
}

/// A queued request, to withdraw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fits(&self, state: &State, amount: u64) -> bool {
        state.used + amount <= self.total
    }

    fn ticket(state: &mut State) -> u64 {
        state.next_ticket += 1;
        state.next_ticket
    }

    /// Hands out what fits now to those waiting: admitted work first (any that fits),
    /// then the queue in order. Who to wake and what to call is returned, to be done once
    /// the lock is released.
    fn serve(self: &Arc<Self>, state: &mut State) -> Turns {
        let mut turns = Turns::default();
        let mut i = 0;
        while i < state.admitted.len() {
            if self.fits(state, state.admitted[i].amount) {
                let waiter = state.admitted.remove(i).expect("index in range");
                self.hand_over(state, waiter, &mut turns);
            } else {
                i += 1;
            }
        }
        while let Some(first) = state.queue.front() {
            if !self.fits(state, first.amount) {
                break;
            }
            let waiter = state.queue.pop_front().expect("a first waiter");
            self.hand_over(state, waiter, &mut turns);
        }
        turns
    }

    /// Takes a waiter's amount for it.
    fn hand_over(self: &Arc<Self>, state: &mut State, waiter: Waiter, turns: &mut Turns) {
        state.used += waiter.amount;
        match waiter.wake {
            Wake::Thread(parked) => {
                parked.granted.store(true, Ordering::Relaxed);
                turns.threads.push(parked);
            }
            Wake::Call(call) => turns.calls.push((call, self.grant(waiter.amount))),
        }
    }

    fn grant(self: &Arc<Self>, amount: u64) -> Grant {
        Grant {
            inner: self.clone(),
            amount,
        }
    }

    fn give_back(self: &Arc<Self>, amount: u64) {
        if amount == 0 {
            return;
        }
        let turns = {
            let mut state = self.lock();
            state.used -= amount;
            self.serve(&mut state)
        };
        turns.run();
    }

    /// Takes `amount`, blocking until `deadline`: new grants in turn (`admitted` false),
    /// admitted work ahead of them.
    fn take_blocking(self: &Arc<Self>, amount: u64, deadline: Instant, admitted: bool) -> bool {
        if amount > self.total {
            return false;
        }
        let mut state = self.lock();
        // Admitted work takes any room there is; a new grant waits its turn.
        if (admitted || state.queue.is_empty()) && self.fits(&state, amount) {
            state.used += amount;
            return true;
        }
        let ticket = Self::ticket(&mut state);
        let parked = Arc::new(Parked::default());
        let waiter = Waiter {
            ticket,
            amount,
            wake: Wake::Thread(parked.clone()),
        };
        if admitted {
            state.admitted.push_back(waiter);
        } else {
            state.queue.push_back(waiter);
        }
        loop {
            if parked.granted.load(Ordering::Relaxed) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                remove(&mut state, ticket);
                // Whoever waited behind it may take now.
                let turns = self.serve(&mut state);
                drop(state);
                turns.run();
                return false;
            }
            state = parked
                .wake
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn request(self: &Arc<Self>, amount: u64, admitted: bool, call: Callback) -> Requested {
        if amount > self.total {
            return Requested::Never;
        }
        let mut state = self.lock();
        let nobody_ahead = state.admitted.is_empty() && (admitted || state.queue.is_empty());
        if nobody_ahead && self.fits(&state, amount) {
            state.used += amount;
            return Requested::Granted(self.grant(amount));
        }
        let ticket = Self::ticket(&mut state);
        let waiter = Waiter {
            ticket,
            amount,
            wake: Wake::Call(call),
        };
        if admitted {
            state.admitted.push_back(waiter);
        } else {
            state.queue.push_back(waiter);
        }
        Requested::Waiting(Ticket(ticket))
    }
}

fn remove(state: &mut State, ticket: u64) -> bool {
    let before = state.queue.len() + state.admitted.len();
    state.queue.retain(|w| w.ticket != ticket);
    state.admitted.retain(|w| w.ticket != ticket);
    before != state.queue.len() + state.admitted.len()
}

impl Budget {
    pub fn new(total: u64) -> Budget {
        Budget {
            inner: Arc::new(Inner {
                total,
                state: Mutex::new(State::default()),
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

    /// A grant of `amount`, waiting in turn up to `wait` for it; `None` if it cannot be
    /// had in that time (never, if `amount` exceeds the whole budget).
    pub fn acquire(&self, amount: u64, wait: Duration) -> Option<Grant> {
        self.inner
            .take_blocking(amount, Instant::now() + wait, false)
            .then(|| self.inner.grant(amount))
    }

    /// Like [`Budget::acquire`], for work already admitted (a second grant of a request
    /// that holds one, the next batch of a listing whose status is sent): ahead of new
    /// grants, since finishing admitted work is what frees memory for them.
    pub fn acquire_admitted(&self, amount: u64, wait: Duration) -> Option<Grant> {
        self.inner
            .take_blocking(amount, Instant::now() + wait, true)
            .then(|| self.inner.grant(amount))
    }

    /// A grant of `amount` now if it fits and nobody waits ahead; never waits.
    pub fn try_acquire(&self, amount: u64) -> Option<Grant> {
        match self.inner.request(amount, false, Box::new(|_| {})) {
            Requested::Granted(grant) => Some(grant),
            Requested::Waiting(ticket) => {
                self.cancel(ticket);
                None
            }
            Requested::Never => None,
        }
    }

    /// Like [`Budget::try_acquire`], for admitted work: only the admitted waiters (never
    /// new grants in the queue) go first.
    pub fn try_acquire_admitted(&self, amount: u64) -> Option<Grant> {
        let mut state = self.inner.lock();
        if state.admitted.is_empty() && self.inner.fits(&state, amount) {
            state.used += amount;
            Some(self.inner.grant(amount))
        } else {
            None
        }
    }

    /// A grant of `amount` for a caller that must not block: granted at once if it may
    /// be, else queued in turn and handed to `on_grant` (on the thread that frees the
    /// memory, outside any lock) when it comes.
    pub fn request(&self, amount: u64, on_grant: impl FnOnce(Grant) + Send + 'static) -> Requested {
        self.inner.request(amount, false, Box::new(on_grant))
    }

    /// Like [`Budget::request`], for admitted work (see [`Budget::acquire_admitted`]).
    pub fn request_admitted(
        &self,
        amount: u64,
        on_grant: impl FnOnce(Grant) + Send + 'static,
    ) -> Requested {
        self.inner.request(amount, true, Box::new(on_grant))
    }

    /// Withdraws a queued request. `false`: it was already granted, and its callback has
    /// the grant (or is about to).
    pub fn cancel(&self, ticket: Ticket) -> bool {
        let (removed, turns) = {
            let mut state = self.inner.lock();
            let removed = remove(&mut state, ticket.0);
            // Those queued behind it may take now.
            (removed, self.inner.serve(&mut state))
        };
        turns.run();
        removed
    }
}

impl Grant {
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// Grows the grant by `more`, waiting up to `wait` (ahead of new grants); `false`
    /// (and unchanged) if the budget has no room in that time.
    pub fn grow(&mut self, more: u64, wait: Duration) -> bool {
        let grown = self.inner.take_blocking(more, Instant::now() + wait, true);
        if grown {
            self.amount += more;
        }
        grown
    }

    /// Grows the grant by `more` only if that fits now and no admitted work waits.
    pub fn try_grow(&mut self, more: u64) -> bool {
        let mut state = self.inner.lock();
        if state.admitted.is_empty() && self.inner.fits(&state, more) {
            state.used += more;
            self.amount += more;
            true
        } else {
            false
        }
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
            let freed = self.amount - amount;
            self.amount = amount;
            self.inner.give_back(freed);
        }
    }

    /// Takes over what `other` holds (from the same budget).
    pub fn absorb(&mut self, mut other: Grant) {
        debug_assert!(Arc::ptr_eq(&self.inner, &other.inner), "one budget");
        self.amount += other.amount;
        other.amount = 0;
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.inner.give_back(self.amount);
    }
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Grant({})", self.amount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_grant_with_room_beside_a_woken_waiter_is_not_refused() {
        let budget = Budget::new(100);
        let mut held = budget.try_acquire(60).unwrap();
        let (done, finished_wait) = mpsc::channel::<()>();
        std::thread::scope(|scope| {
            let shared = &budget;
            let waiter = scope.spawn(move || {
                let budget = shared;
                let grant = budget.acquire_admitted(50, Duration::from_secs(10));
                finished_wait.recv().unwrap();
                grant.is_some()
            });
            while budget.inner.lock().admitted.is_empty() {
                std::thread::sleep(Duration::from_millis(1));
            }
            // Room for it now: it is granted, whether or not its thread has run yet.
            held.shrink_to(30);
            let small = budget.try_acquire_admitted(10);
            assert!(small.is_some(), "room for both: 30 + 50 + 10 of 100");
            assert!(
                budget.try_acquire_admitted(15).is_none(),
                "it would take from the waiter: 40 + 50 + 15 of 100"
            );
            assert!(budget.try_acquire(15).is_none());
            let mut grant = small.unwrap();
            assert!(grant.try_grow(10), "30 + 20 + 50 of 100");
            assert!(!grant.try_grow(1));
            done.send(()).unwrap();
            assert!(waiter.join().unwrap(), "the waiter got its 50");
        });
    }

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
        let b = budget.try_acquire(8).unwrap();
        a.absorb(b);
        assert_eq!((a.amount(), budget.in_use()), (10, 10));
        assert!(!a.try_grow(1));
        drop(a);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn new_grants_come_in_the_order_asked_and_admitted_work_does_not_queue() {
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
        assert!(budget.try_acquire(1).is_none());
        // Admitted work is not queued behind it.
        assert!(budget.acquire_admitted(1, Duration::ZERO).is_some());
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

    #[test]
    fn a_request_that_cannot_wait_is_called_back_in_its_turn() {
        let budget = Budget::new(10);
        let held = budget.acquire(8, Duration::ZERO).unwrap();
        let (tx, rx) = mpsc::channel();
        let first = {
            let tx = tx.clone();
            match budget.request(5, move |g| tx.send((1, g)).unwrap()) {
                Requested::Waiting(t) => t,
                _ => panic!("it does not fit yet"),
            }
        };
        // Asked after it: waits its turn though it would fit.
        let second = match budget.request(2, move |g| tx.send((2, g)).unwrap()) {
            Requested::Waiting(t) => t,
            _ => panic!("a new grant waits its turn"),
        };
        assert_ne!(first, second);
        assert!(rx.try_recv().is_err());
        drop(held);
        let (n, a) = rx.recv().unwrap();
        let (m, b) = rx.recv().unwrap();
        assert_eq!((n, a.amount(), m, b.amount()), (1, 5, 2, 2));
        assert_eq!(budget.in_use(), 7);
        // Granted already: too late to withdraw.
        assert!(!budget.cancel(first));
        assert!(matches!(budget.request(11, |_| {}), Requested::Never));
    }

    #[test]
    fn a_withdrawn_request_lets_those_behind_it_take() {
        let budget = Budget::new(10);
        let held = budget.acquire(6, Duration::ZERO).unwrap();
        let (tx, rx) = mpsc::channel();
        let big = match budget.request(8, |_| panic!("withdrawn")) {
            Requested::Waiting(t) => t,
            _ => panic!("does not fit"),
        };
        assert!(matches!(
            budget.request(3, move |g| tx.send(g).unwrap()),
            Requested::Waiting(_)
        ));
        assert!(budget.cancel(big));
        assert_eq!(rx.recv().unwrap().amount(), 3);
        drop(held);
    }

    #[test]
    fn admitted_requests_are_served_before_the_queue() {
        let budget = Budget::new(10);
        let held = budget.acquire(10, Duration::ZERO).unwrap();
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        assert!(matches!(
            budget.request(10, move |g| tx.send(("new", g)).unwrap()),
            Requested::Waiting(_)
        ));
        assert!(matches!(
            budget.request_admitted(4, move |g| tx2.send(("admitted", g)).unwrap()),
            Requested::Waiting(_)
        ));
        drop(held);
        let (who, grant) = rx.recv().unwrap();
        assert_eq!(who, "admitted");
        drop(grant);
        assert_eq!(rx.recv().unwrap().0, "new");
    }
}
