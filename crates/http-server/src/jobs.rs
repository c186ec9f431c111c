//! The work handed to the application's worker threads: requests the application's
//! `route` handed back, and turns of streamed bodies (the next piece, once a connection
//! has written the previous one). Turns come first: they finish work already admitted
//! (its status is sent), which is what frees its memory and connection.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::mailbox::{Mailbox, Message, Token};
use crate::request::Request;
use crate::response::Stream;

/// A streamed body's next turn.
pub(crate) struct Turn {
    pub(crate) rest: Box<dyn Stream>,
    pub(crate) token: Token,
    pub(crate) mailbox: Arc<Mailbox>,
    /// Set when the connection is gone: the turn is dropped unrun.
    pub(crate) cancelled: Arc<AtomicBool>,
}

impl Turn {
    /// Makes the next piece and hands it (or the end, or the failure) to the connection.
    fn run(mut self) {
        if self.cancelled.load(Ordering::Acquire) {
            return;
        }
        let produced = match catch_unwind(AssertUnwindSafe(|| self.rest.next_piece())) {
            Ok(Ok(Some(piece))) => Ok(Some((piece, self.rest))),
            Ok(Ok(None)) => Ok(None),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                log::error!("a streamed body's producer panicked; cutting its connection");
                Err(std::io::Error::other("the producer panicked"))
            }
        };
        self.mailbox.post(Message::Streamed(self.token, produced));
    }
}

#[derive(Default)]
struct State {
    turns: VecDeque<Turn>,
    requests: VecDeque<Request>,
    closed: bool,
}

#[derive(Default)]
pub(crate) struct Jobs {
    state: Mutex<State>,
    ready: Condvar,
}

impl Jobs {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn push_request(&self, request: Request) {
        self.lock().requests.push_back(request);
        self.ready.notify_one();
    }

    pub(crate) fn push_turn(&self, turn: Turn) {
        self.lock().turns.push_back(turn);
        self.ready.notify_one();
    }

    /// No request can come any more: every worker gets `None` once the queue is empty.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// The next request, running the turns of streamed bodies that come first; `None`
    /// once closed and empty.
    pub(crate) fn next_request(&self) -> Option<Request> {
        let mut state = self.lock();
        loop {
            if let Some(turn) = state.turns.pop_front() {
                drop(state);
                turn.run();
                state = self.lock();
                continue;
            }
            if let Some(request) = state.requests.pop_front() {
                return Some(request);
            }
            if state.closed {
                return None;
            }
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}
