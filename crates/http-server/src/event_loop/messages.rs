//! What other threads post to a loop (responses, pieces of streamed bodies, memory grants,
//! new connections, the drain), and the guard that keeps a panic to one connection.

use super::*;

impl EventLoop {
    pub(super) fn read_mailbox(&mut self) {
        let mut messages = std::mem::take(&mut self.messages);
        self.mailbox.take(&mut messages);
        for message in messages.drain(..) {
            self.apply(message);
        }
        self.messages = messages;
    }

    pub(super) fn apply(&mut self, message: Message) {
        match message {
            Message::Respond(token, response) => {
                if self.is_current(token) {
                    self.guarded(token.slot as usize, |l, slot| {
                        l.start_response(slot, response)
                    });
                }
            }
            Message::Streamed(token, produced) => {
                if self.is_current(token) {
                    self.guarded(token.slot as usize, |l, slot| l.streamed(slot, produced));
                }
            }
            Message::Granted(token, grant) => {
                if self.is_current(token) {
                    self.guarded(token.slot as usize, |l, slot| l.granted(slot, grant));
                }
            }
            Message::Adopt { socket, evict } => self.adopt(socket, evict),
            Message::Drain => self.drain(),
            Message::Abort => self.abort(),
            Message::Drained => self.drained = true,
        }
    }

    pub(super) fn drain(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        // Connections the kernel completed before the listener closes are served rather
        // than reset; their answers say `Connection: close`.
        if let Some(acceptor) = self.acceptor.take() {
            // Taken first and placed after the close: a client connecting between the last
            // accept and the close is reset by the kernel, so that moment is kept short.
            let mut waiting = Vec::new();
            while let Ok((socket, _)) = acceptor.listener.accept() {
                waiting.push(socket);
            }
            drop(acceptor);
            for socket in waiting {
                self.place(socket);
            }
            self.shared.stopped_accepting();
        }
        while let Some((slot, _)) = self.lists.front(Class::Idle) {
            self.close(slot, false);
        }
        let now = Instant::now();
        while let Some((slot, _)) = self.lists.front(Class::Fresh) {
            self.lists.put(slot, Class::Grace, now);
        }
    }

    pub(super) fn abort(&mut self) {
        self.drain();
        self.aborted = true;
        let slots: Vec<usize> = self.connections.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            self.close(slot, true);
        }
    }

    /// Runs `f` on a connection; a panic in it (a bug) closes that connection only.
    pub(super) fn guarded(&mut self, slot: usize, f: impl FnOnce(&mut Self, usize)) {
        if catch_unwind(AssertUnwindSafe(|| f(self, slot))).is_err() {
            log::error!("a connection's handling panicked; closing that connection");
            if self.connections.contains(slot) {
                self.close(slot, true);
            }
        }
    }
}
