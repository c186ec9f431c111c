//! A request read in full handed to the application, a refusal answered, and a response
//! (whole or streamed a piece at a time) put on the connection's output.

use super::*;

impl EventLoop {
    /// A request has arrived in full: the application's `route` sees it here, and either
    /// answers it (its response comes back through the mailbox) or hands it back for a
    /// worker.
    pub(super) fn complete(&mut self, slot: usize, head: Head, body: request::Body) -> Step {
        self.lists.remove(slot);
        let token = self.token(slot);
        let c = &mut self.connections[slot];
        c.phase = Phase::Handling;
        c.close_after |= head.close || body.exceeds_limit;
        c.version = head.version.clone();
        c.head_only = head.method == crate::Method::Head;
        c.served += 1;
        let request = Request::new(
            head,
            body,
            c.remote,
            Responder::new(self.mailbox.clone(), token),
        );
        let shared = self.shared.clone();
        match catch_unwind(AssertUnwindSafe(|| (shared.route)(request))) {
            Ok(Some(request)) => match shared.jobs.get(request.queue().0) {
                Some(jobs) => {
                    self.connections[slot].queue = request.queue();
                    jobs.push_request(request);
                }
                // Dropped here, which answers it 500.
                None => log::error!(
                    "the application's route chose queue {} of {}; answered 500",
                    request.queue().0,
                    shared.jobs.len()
                ),
            },
            Ok(None) => {}
            // The request was dropped on the way out, which answered it 500.
            Err(_) => log::error!("the application's route panicked; answered 500"),
        }
        // An answer given on the spot is written now.
        self.read_mailbox();
        Step::Progress(1)
    }

    /// Answers a request that cannot be handed to the application, then closes.
    pub(super) fn reject(&mut self, slot: usize, refusal: Refusal) -> Step {
        let c = &mut self.connections[slot];
        c.unread_input = true;
        c.close_after = true;
        c.consume_input(usize::MAX);
        c.version = crate::HTTPVersion(1, 1);
        c.head_only = false;
        c.phase = Phase::Handling;
        self.start_response(slot, Response::json_error(refusal.status, refusal.message));
        Step::Progress(1)
    }

    pub(super) fn start_response(&mut self, slot: usize, response: Response) {
        let draining = self.draining;
        let date = self.date.now().to_owned();
        let c = &mut self.connections[slot];
        if !matches!(c.phase, Phase::Handling) {
            return;
        }
        let keep_alive = !c.close_after && !draining;
        let wire = response.into_wire(&c.version, c.head_only, keep_alive, &date);
        if !wire.keep_alive {
            c.close_after = true;
        }
        c.output.push(Segment::Owned(wire.head));
        match wire.body {
            WireBody::None => {}
            WireBody::Bytes(bytes, memory) => c.output.push(Segment::Held {
                bytes,
                _memory: memory,
            }),
            WireBody::Static(bytes) => c.output.push(Segment::Static(bytes)),
            WireBody::Stream {
                first,
                rest,
                chunked,
            } => {
                push_piece(c, first, chunked);
                c.streaming = Streaming::Ready(rest, chunked);
            }
        }
        c.phase = Phase::Responding;
        self.lists.put(slot, Class::Writing, Instant::now());
        self.drive_later(slot);
    }

    pub(super) fn streamed(&mut self, slot: usize, produced: Produced) {
        let c = &mut self.connections[slot];
        let chunked = c.streaming.chunked();
        match produced {
            Ok(Some((piece, rest))) => {
                push_piece(c, piece, chunked);
                c.streaming = Streaming::Ready(rest, chunked);
            }
            Ok(None) => {
                if chunked {
                    c.output.push(Segment::Static(framing::LAST_CHUNK));
                }
                c.streaming = Streaming::Ended;
            }
            Err(e) => {
                log::debug!("a streamed body failed, cutting the connection: {e}");
                self.close(slot, true);
                return;
            }
        }
        self.lists.put(slot, Class::Writing, Instant::now());
        self.drive_later(slot);
    }
}
