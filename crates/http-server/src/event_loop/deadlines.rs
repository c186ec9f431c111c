//! Timers: each connection is in one deadline class at a time (`lists`), and what happens
//! when its deadline passes.

use super::*;

impl EventLoop {
    pub(super) fn expire(&mut self, now: Instant) {
        for class in TIMED {
            let duration = self.duration(class);
            while let Some((slot, since)) = self.lists.front(class) {
                if since + duration > now {
                    break;
                }
                self.guarded(slot, |l, slot| l.expired(slot, class, since + duration));
            }
        }
    }

    pub(super) fn expired(&mut self, slot: usize, class: Class, at: Instant) {
        match class {
            // Closing an idle connection is silent.
            Class::Fresh | Class::Idle | Class::Lingering | Class::Grace => self.close(slot, false),
            Class::Steady | Class::Slow | Class::Unproven => self.checkpoint(slot, at),
            Class::Memory => {
                let c = &mut self.connections[slot];
                if let Phase::Memory { ticket, .. } = &mut c.phase {
                    let withdrawn = match (ticket.take(), &self.shared.options.memory) {
                        (Some(ticket), Some(budget)) => budget.cancel(ticket),
                        _ => true,
                    };
                    if !withdrawn {
                        // Granted meanwhile: the grant is on its way.
                        self.lists.remove(slot);
                        return;
                    }
                }
                self.reject(slot, NO_MEMORY);
            }
            Class::Writing => {
                log::info!(
                    "a client took nothing of its response for {:?}; cutting the connection",
                    self.shared.options.response_timeout
                );
                self.close(slot, true);
            }
        }
    }

    /// Once a second while a request arrives: past its deadline, or past the grace and
    /// below the minimum rate, it gets `408`; else it is steady or slow until the next.
    pub(super) fn checkpoint(&mut self, slot: usize, at: Instant) {
        let options = &self.shared.options;
        let c = &self.connections[slot];
        if at >= c.request_started + options.request_timeout {
            self.reject(slot, TOO_SLOW);
            return;
        }
        let measured = at.saturating_duration_since(c.rate_since);
        let expected = (options.min_request_rate as f64 * measured.as_secs_f64()) as u64;
        let steady = c.received >= expected;
        if !steady && measured >= options.min_rate_grace {
            self.reject(slot, TOO_SLOW);
            return;
        }
        let class = if steady { Class::Steady } else { Class::Slow };
        self.lists.put(slot, class, at);
    }
}
