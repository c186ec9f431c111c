//! Accepting connections on the first loop, and placing each on the least loaded loop
//! (see `admission`): adopted, evicting an idle or slow one to make room, or refused.

use super::*;

impl EventLoop {
    pub(super) fn accept(&mut self) {
        let Some(acceptor) = &mut self.acceptor else {
            return;
        };
        if let Some(at) = acceptor.retry_at {
            if Instant::now() < at {
                return;
            }
            acceptor.retry_at = None;
            acceptor.more = true;
        }
        if !acceptor.more {
            return;
        }
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(acceptor) = &mut self.acceptor else {
                return;
            };
            match acceptor.listener.accept() {
                Ok((socket, _)) => {
                    acceptor.failing_since = None;
                    acceptor.backoff = MIN_ACCEPT_BACKOFF;
                    self.place(socket);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    acceptor.more = false;
                    return;
                }
                Err(e) if is_per_connection(&e) => {}
                Err(e) => {
                    self.accept_failed(e);
                    return;
                }
            }
        }
    }

    /// `accept()` failed (no file descriptor left, say): the pending connection stays in
    /// the kernel's backlog; retry after a growing pause, and fail the server if it goes on
    /// for `accept_failure_limit`, so that the application can exit and be restarted
    /// rather than stay up without serving.
    pub(super) fn accept_failed(&mut self, error: io::Error) {
        let limit = self.shared.options.accept_failure_limit;
        let Some(acceptor) = &mut self.acceptor else {
            return;
        };
        let since = *acceptor.failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= limit {
            log::error!(
                "accept() has failed for {:?}, giving up: {error}",
                since.elapsed()
            );
            self.acceptor = None;
            self.shared.fail(error);
            self.shared.stopped_accepting();
            return;
        }
        log::warn!(
            "accept() failed, retrying in {:?}: {error}",
            acceptor.backoff
        );
        acceptor.retry_at = Some(Instant::now() + acceptor.backoff);
        acceptor.backoff = (acceptor.backoff * 2).min(MAX_ACCEPT_BACKOFF);
    }

    pub(super) fn place(&mut self, socket: TcpStream) {
        match self.shared.admission.place() {
            Placement::Open(i) if i == self.index => self.adopt(socket, false),
            Placement::Evict(i) if i == self.index => self.adopt(socket, true),
            Placement::Open(i) => self.shared.mailboxes[i].post(Message::Adopt {
                socket,
                evict: false,
            }),
            Placement::Evict(i) => self.shared.mailboxes[i].post(Message::Adopt {
                socket,
                evict: true,
            }),
            Placement::Full => {
                log::warn!("every connection slot is being served; refusing a connection");
                refuse(socket);
            }
        }
    }

    /// Takes a new connection: counted already, or (`evict`) once one of ours has made
    /// room for it.
    pub(super) fn adopt(&mut self, mut socket: TcpStream, evict: bool) {
        if evict {
            if self.aborted || !self.evict_one() {
                log::warn!("no connection could make room; refusing a connection");
                refuse(socket);
                return;
            }
            self.shared.admission.admitted();
        } else if self.aborted {
            drop(socket);
            self.connection_gone();
            return;
        }
        // Responses are written in one piece when they can be; a streamed body goes
        // piece by piece and must not wait for Nagle's algorithm.
        let _ = socket.set_nodelay(true);
        self.generation = self.generation.wrapping_add(1);
        let entry = self.connections.vacant_entry();
        let slot = entry.key();
        let registered = self.poll.registry().register(
            &mut socket,
            mio::Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        );
        if let Err(e) = registered {
            log::warn!("cannot watch a new connection, closing it: {e}");
            drop(socket);
            self.connection_gone();
            return;
        }
        let now = Instant::now();
        entry.insert(Connection::new(socket, self.generation, now));
        let class = if self.draining {
            Class::Grace
        } else {
            Class::Fresh
        };
        self.lists.put(slot, class, now);
    }

    /// Closes the connection that can best make room: the oldest idle one, else the
    /// oldest that has sent nothing, else one answered and discarding what its client
    /// still sends, else one found receiving below the minimum rate, else the oldest
    /// request in its first second. A request that has shown it arrives steadily is
    /// never closed for a newcomer.
    pub(super) fn evict_one(&mut self) -> bool {
        let victim = [
            Class::Idle,
            Class::Fresh,
            Class::Lingering,
            Class::Slow,
            Class::Unproven,
        ]
        .into_iter()
        .find_map(|class| self.lists.front(class));
        match victim {
            Some((slot, _)) => {
                log::debug!("connection limit reached; closing an idle or slow connection");
                self.close(slot, true);
                true
            }
            None => false,
        }
    }

    pub(super) fn publish_load(&self) {
        let idle = self.lists.len(Class::Idle)
            + self.lists.len(Class::Fresh)
            + self.lists.len(Class::Lingering);
        let oldest = [Class::Idle, Class::Fresh]
            .into_iter()
            .filter_map(|class| self.lists.front(class))
            .map(|(_, since)| since)
            .min()
            .map_or(0, |since| {
                since.duration_since(self.shared.epoch).as_millis() as u64
            });
        self.shared.admission.load(self.index).publish(
            self.connections.len(),
            idle,
            self.lists.len(Class::Slow) + self.lists.len(Class::Unproven),
            oldest,
        );
    }
}
