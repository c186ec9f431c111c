//! Driving a connection: each turn writes what it has to send, then reads, within a quota
//! so that no client starves the others.

use super::*;

impl EventLoop {
    pub(super) fn drive(&mut self, slot: usize) {
        self.guarded(slot, |l, slot| l.drive_unguarded(slot));
    }

    pub(super) fn drive_unguarded(&mut self, slot: usize) {
        let token = self.token(slot);
        let served = self.connections[slot].served;
        let mut spent = 0;
        loop {
            // A message handled on the way (an abort) may have closed it.
            if !self.is_current(token) {
                return;
            }
            if spent >= TURN_QUOTA || self.connections[slot].served - served >= REQUESTS_PER_TURN {
                self.drive_later(slot);
                return;
            }
            let wrote = match self.write_step(slot, TURN_QUOTA - spent) {
                Step::Closed => return,
                other => other,
            };
            if !self.is_current(token) {
                return;
            }
            let read = match self.read_step(slot, TURN_QUOTA - spent) {
                Step::Closed => return,
                other => other,
            };
            match (wrote, read) {
                (Step::Idle, Step::Idle) => return,
                (w, r) => spent += amount(&w) + amount(&r),
            }
        }
    }

    pub(super) fn write_step(&mut self, slot: usize, quota: usize) -> Step {
        let c = &mut self.connections[slot];
        if c.output.is_empty() {
            return self.output_drained(slot);
        }
        if !c.writable {
            return Step::Idle;
        }
        match c.output.write_to(&mut c.socket, quota) {
            Ok((wrote, n)) => {
                if matches!(wrote, Wrote::Blocked) {
                    c.writable = false;
                }
                if n > 0 && self.lists.class_of(slot) == Some(Class::Writing) {
                    // Progress renews the response's deadline.
                    self.lists.put(slot, Class::Writing, Instant::now());
                }
                if n > 0 || matches!(wrote, Wrote::All) {
                    Step::Progress(n.max(1))
                } else {
                    Step::Idle
                }
            }
            Err(e) => {
                // Part of the response may be on the wire: only closing the connection
                // tells the client it is incomplete.
                log::debug!("response not completed, closing the connection: {e}");
                self.close(slot, true);
                Step::Closed
            }
        }
    }

    /// The output is empty: queue the next piece of a stream, or finish the response.
    pub(super) fn output_drained(&mut self, slot: usize) -> Step {
        if !matches!(self.connections[slot].phase, Phase::Responding) {
            return Step::Idle;
        }
        let streaming = std::mem::replace(&mut self.connections[slot].streaming, Streaming::None);
        match streaming {
            Streaming::Ready(rest, chunked) => {
                let cancelled = Arc::new(AtomicBool::new(false));
                self.connections[slot].streaming = Streaming::Producing(cancelled.clone(), chunked);
                // The worker takes its time; the client is not at fault meanwhile.
                self.lists.remove(slot);
                self.shared.jobs[self.connections[slot].queue.0].push_turn(Turn {
                    rest,
                    token: self.token(slot),
                    mailbox: self.mailbox.clone(),
                    cancelled,
                });
                Step::Idle
            }
            producing @ Streaming::Producing(..) => {
                self.connections[slot].streaming = producing;
                Step::Idle
            }
            Streaming::None | Streaming::Ended => self.finish_response(slot),
        }
    }

    pub(super) fn finish_response(&mut self, slot: usize) -> Step {
        let c = &mut self.connections[slot];
        if c.close_after || self.draining {
            return self.close_gracefully(slot);
        }
        c.phase = Phase::Waiting;
        self.lists.put(slot, Class::Idle, Instant::now());
        Step::Progress(1)
    }

    /// Closes after the last response: at once, or, when the client may still be sending
    /// (a body that was not read), after discarding what it sends for a moment, since
    /// closing with unread input makes the kernel reset the connection, which can destroy
    /// the response before the client reads it.
    pub(super) fn close_gracefully(&mut self, slot: usize) -> Step {
        let c = &mut self.connections[slot];
        let _ = c.socket.shutdown(Shutdown::Write);
        if !c.unread_input {
            self.close(slot, false);
            return Step::Closed;
        }
        c.phase = Phase::Lingering {
            discarded: 0,
            since: Instant::now(),
        };
        c.consume_input(usize::MAX);
        self.lists.put(slot, Class::Lingering, Instant::now());
        Step::Progress(1)
    }
}
