use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// The requests waiting for a worker. Closing it lets every waiting worker go once what
/// is queued has been taken.
pub(crate) struct MessagesQueue<T> {
    state: Mutex<State<T>>,
    condvar: Condvar,
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

impl<T> MessagesQueue<T> {
    pub(crate) fn new() -> MessagesQueue<T> {
        MessagesQueue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
            }),
            condvar: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn push(&self, value: T) {
        self.lock().items.push_back(value);
        self.condvar.notify_one();
    }

    /// No more items will come.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.condvar.notify_all();
    }

    /// The next item, waiting for one; `None` once the queue is closed and empty.
    pub(crate) fn pop(&self) -> Option<T> {
        let mut state = self.lock();
        loop {
            if let Some(item) = state.items.pop_front() {
                return Some(item);
            }
            if state.closed {
                return None;
            }
            state = self
                .condvar
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn closing_lets_waiters_go_after_what_is_queued() {
        let queue = Arc::new(MessagesQueue::new());
        let waiter = {
            let queue = queue.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Some(item) = queue.pop() {
                    got.push(item);
                }
                got
            })
        };
        queue.push(1);
        queue.push(2);
        queue.close();
        assert_eq!(waiter.join().unwrap(), vec![1, 2]);
        assert_eq!(queue.pop(), None);
    }
}
