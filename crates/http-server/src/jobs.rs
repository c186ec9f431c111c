//! The work handed to the application's worker threads: requests the application's
//! `route` handed back, and turns of streamed bodies (the next piece, once a connection
//! has written the previous one). Turns come first: they finish work already admitted
//! (its status is sent), which is what frees its memory and connection.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

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
    /// Workers waiting in a future (see [`Jobs::ready`]).
    wakers: VecDeque<Waker>,
}

impl State {
    fn has_work(&self) -> bool {
        !self.turns.is_empty() || !self.requests.is_empty() || self.closed
    }
}

/// Why [`Jobs::try_next`] has no request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRequest {
    /// Nothing to do now: wait with [`crate::Server::work_ready`].
    Empty,
    /// The server has drained: nothing will ever come.
    Closed,
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
        let mut state = self.lock();
        state.requests.push_back(request);
        self.wake_one(state);
    }

    pub(crate) fn push_turn(&self, turn: Turn) {
        let mut state = self.lock();
        state.turns.push_back(turn);
        self.wake_one(state);
    }

    /// Wakes one waiting worker: one waiting in a future if there is one, else one
    /// blocked in [`Jobs::next_request`].
    fn wake_one(&self, mut state: MutexGuard<'_, State>) {
        let waker = state.wakers.pop_front();
        drop(state);
        match waker {
            Some(waker) => waker.wake(),
            None => self.ready.notify_one(),
        }
    }

    /// No request can come any more: every worker gets `None` once the queue is empty.
    pub(crate) fn close(&self) {
        let wakers = {
            let mut state = self.lock();
            state.closed = true;
            std::mem::take(&mut state.wakers)
        };
        self.ready.notify_all();
        for waker in wakers {
            waker.wake();
        }
    }

    /// The next request if one is queued, running the turns of streamed bodies queued
    /// before it; never waits.
    pub(crate) fn try_next(&self) -> Result<Request, NoRequest> {
        self.take(self.lock()).1
    }

    /// Runs the queued turns, then takes the next request; hands the lock back with it.
    fn take<'j>(
        &'j self,
        mut state: MutexGuard<'j, State>,
    ) -> (MutexGuard<'j, State>, Result<Request, NoRequest>) {
        while let Some(turn) = state.turns.pop_front() {
            drop(state);
            turn.run();
            state = self.lock();
        }
        let next = match state.requests.pop_front() {
            Some(request) => Ok(request),
            None if state.closed => Err(NoRequest::Closed),
            None => Err(NoRequest::Empty),
        };
        (state, next)
    }

    /// A future that completes once there is work (or the queue has closed).
    pub(crate) fn ready(&self) -> Ready<'_> {
        Ready {
            jobs: self,
            registered: None,
        }
    }

    /// The next request, running the turns of streamed bodies that come first; `None`
    /// once closed and empty.
    pub(crate) fn next_request(&self) -> Option<Request> {
        let mut state = self.lock();
        loop {
            let (held, next) = self.take(state);
            match next {
                Ok(request) => return Some(request),
                Err(NoRequest::Closed) => return None,
                Err(NoRequest::Empty) => {
                    state = self
                        .ready
                        .wait(held)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }
}

/// See [`Jobs::ready`]. Its waker is withdrawn once it completes or is dropped, so that
/// a push never wakes a worker that has stopped waiting while another still waits.
pub struct Ready<'j> {
    jobs: &'j Jobs,
    registered: Option<Waker>,
}

impl Ready<'_> {
    fn withdraw(&mut self, state: &mut State) {
        if let Some(waker) = self.registered.take() {
            state.wakers.retain(|w| !w.will_wake(&waker));
        }
    }
}

impl Future for Ready<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let jobs = self.jobs;
        let mut state = jobs.lock();
        if state.has_work() {
            self.withdraw(&mut state);
            return Poll::Ready(());
        }
        let current = self.registered.as_ref().is_some_and(|w| {
            w.will_wake(cx.waker()) && state.wakers.iter().any(|q| q.will_wake(w))
        });
        if !current {
            self.withdraw(&mut state);
            state.wakers.push_back(cx.waker().clone());
            self.registered = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Ready<'_> {
    fn drop(&mut self) {
        if self.registered.is_some() {
            let jobs = self.jobs;
            let mut state = jobs.lock();
            self.withdraw(&mut state);
        }
    }
}
