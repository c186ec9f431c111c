//! How other threads reach an event loop: messages in a locked list, and a `mio::Waker`
//! (an eventfd) to wake the loop from `epoll_wait`. A message is posted with one lock and
//! at most one wake-up: only the first message into an empty mailbox wakes the loop,
//! since the loop takes every message at once, and the loop's own posts (a response
//! answered inline) wake nothing, since it empties its mailbox before it sleeps.

use std::io;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread::{self, ThreadId};

use budget::Grant;

use crate::response::{Piece, Response, Stream};

/// A connection of a loop: its slot, and the generation that tells a message for a
/// connection that has closed (whose slot may have been reused) from one for the current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

/// What a stream's producer made of its turn.
pub(crate) type Produced = io::Result<Option<(Piece, Box<dyn Stream>)>>;

pub(crate) enum Message {
    /// A request's response, from a worker or the loop itself.
    Respond(Token, Response),
    /// The next piece of a streamed body (or its end, or its failure), from a worker.
    Streamed(Token, Produced),
    /// Memory a connection waited for, from whoever freed it.
    Granted(Token, Grant),
    /// A new connection to serve, from the accepting loop; `evict` when the server is at
    /// its limit and this loop is to make room by closing one of its own.
    Adopt {
        socket: mio::net::TcpStream,
        evict: bool,
    },
    /// Stop accepting; close idle connections; finish the rest.
    Drain,
    /// Close every connection now.
    Abort,
    /// The server has drained: the loop may end.
    Drained,
}

pub(crate) struct Mailbox {
    messages: Mutex<Vec<Message>>,
    waker: mio::Waker,
    owner: OnceLock<ThreadId>,
}

impl Mailbox {
    pub(crate) fn new(waker: mio::Waker) -> Mailbox {
        Mailbox {
            messages: Mutex::new(Vec::new()),
            waker,
            owner: OnceLock::new(),
        }
    }

    /// Called once by the loop's thread, so that its own posts do not wake it.
    pub(crate) fn set_owner(&self) {
        let _ = self.owner.set(thread::current().id());
    }

    pub(crate) fn post(&self, message: Message) {
        let first = {
            let mut messages = self.messages.lock().unwrap_or_else(PoisonError::into_inner);
            messages.push(message);
            messages.len() == 1
        };
        if first && self.owner.get() != Some(&thread::current().id()) {
            if let Err(e) = self.waker.wake() {
                log::error!("cannot wake an event loop: {e}");
            }
        }
    }

    /// Whether anything waits (the loop's own posts while it handled others, which woke
    /// nothing).
    pub(crate) fn has_messages(&self) -> bool {
        !self
            .messages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Every message posted so far, in order.
    pub(crate) fn take(&self, into: &mut Vec<Message>) {
        let mut messages = self.messages.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *messages, into);
    }
}
