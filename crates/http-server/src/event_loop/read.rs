//! Reading a request: its head (parsed by `framing`), its body (reserved from the memory
//! budget before it is read, length-delimited or chunked), and what is still sent after a
//! refusal (lingering).

use super::*;

impl EventLoop {
    pub(super) fn read_step(&mut self, slot: usize, quota: usize) -> Step {
        let c = &self.connections[slot];
        if !c.phase.reads() {
            return Step::Idle;
        }
        // What the client sent ahead is used before anything more is read.
        if matches!(c.phase, Phase::Waiting) && !c.input.is_empty() {
            self.begin_request(slot);
            return self.parse_head(slot, None);
        }
        if !c.readable {
            return Step::Idle;
        }
        match self.connections[slot].phase {
            Phase::Waiting | Phase::Head { .. } => self.read_head(slot),
            Phase::Body(_) => self.read_body(slot, quota),
            Phase::Lingering { .. } => self.linger(slot),
            _ => Step::Idle,
        }
    }

    /// Reads from the socket into `buf`; `None` when it would block (and readiness is
    /// used up).
    pub(super) fn read_socket(c: &mut Connection, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match c.socket.read(buf) {
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    c.readable = false;
                    return Ok(None);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub(super) fn begin_request(&mut self, slot: usize) {
        let now = Instant::now();
        let c = &mut self.connections[slot];
        c.phase = Phase::Head { scanned: 0 };
        c.request_started = now;
        c.rate_since = now;
        c.received = c.input.len() as u64;
        self.lists.put(slot, Class::Unproven, now);
    }

    pub(super) fn read_head(&mut self, slot: usize) -> Step {
        let limit = self.shared.options.max_head_bytes;
        let c = &mut self.connections[slot];
        let want = limit.saturating_sub(c.input.len()).clamp(1, SCRATCH);
        let n = match Self::read_socket(c, &mut self.scratch[..want]) {
            Ok(Some(0)) | Err(_) => {
                // The client closed or failed: nothing to answer.
                self.close(slot, false);
                return Step::Closed;
            }
            Ok(None) => return Step::Idle,
            Ok(Some(n)) => n,
        };
        if matches!(self.connections[slot].phase, Phase::Waiting) {
            self.begin_request(slot);
        }
        self.connections[slot].received += n as u64;
        match self.parse_head(slot, Some(n)) {
            Step::Idle => Step::Progress(n),
            other => other,
        }
    }

    /// Looks for a complete head in the buffered input, plus `fresh` bytes just read into
    /// the scratch buffer; what cannot be used yet is kept (with its memory).
    pub(super) fn parse_head(&mut self, slot: usize, fresh: Option<usize>) -> Step {
        let limit = self.shared.options.max_head_bytes;
        let budget = self.shared.options.memory.as_ref();
        let c = &mut self.connections[slot];
        let Phase::Head { scanned } = c.phase else {
            return Step::Idle;
        };
        // Parse the scratch buffer in place when nothing was buffered before (the usual
        // case: a whole request in one read), else add to what was.
        let in_place = c.input.is_empty() && fresh.is_some();
        if let (false, Some(n)) = (in_place, fresh) {
            if !c.keep_input(budget, &self.scratch[..n]) {
                return self.reject(slot, NO_MEMORY);
            }
        }
        let data: &[u8] = if in_place {
            &self.scratch[..fresh.unwrap_or(0)]
        } else {
            &c.input
        };
        let length = data.len();
        // Parse only once the end of a head may have arrived, so that a client sending a
        // byte at a time does not make each byte cost a parse of everything before it.
        let parsed = if ends_head(data, scanned) {
            framing::parse_head(data)
        } else {
            Ok(None)
        };
        let parsed = match parsed {
            Ok(None) if length >= limit => Err(framing::head_too_large(data)),
            other => other,
        };
        match parsed {
            Err(refusal) => self.reject(slot, refusal),
            Ok(Some((head, used))) => {
                if !in_place {
                    c.consume_input(used);
                } else if used < length && !c.keep_input(budget, &self.scratch[used..length]) {
                    // The rest is body, or what the client sent ahead.
                    return self.reject(slot, NO_MEMORY);
                }
                self.start_body(slot, head)
            }
            Ok(None) => {
                if in_place && !c.keep_input(budget, &self.scratch[..length]) {
                    return self.reject(slot, NO_MEMORY);
                }
                c.phase = Phase::Head { scanned: length };
                Step::Idle
            }
        }
    }

    /// The head is complete: read the body it announces, within the limits.
    pub(super) fn start_body(&mut self, slot: usize, head: Head) -> Step {
        let max = self.shared.options.max_body_bytes as u64;
        let c = &mut self.connections[slot];
        match head.body {
            framing::BodyFraming::Empty | framing::BodyFraming::Length(0) => {
                self.complete(slot, head, request::Body::default())
            }
            framing::BodyFraming::Length(n) if n > max => {
                c.unread_input = true;
                self.complete(slot, head, over_limit())
            }
            framing::BodyFraming::Length(n) => {
                let framing = BodyFraming::Length {
                    remaining: n,
                    total: n,
                };
                self.ask_memory(slot, BodyRead::new(head, framing), n)
            }
            framing::BodyFraming::Chunked => {
                let framing = BodyFraming::Chunked(ChunkedDecoder::new());
                self.ask_memory(
                    slot,
                    BodyRead::new(head, framing),
                    CHUNKED_STEP.min(max + 1),
                )
            }
        }
    }

    /// Reserves `amount` more for the body before reading it: at once, or by waiting for
    /// a grant (reading nothing meanwhile).
    pub(super) fn ask_memory(&mut self, slot: usize, mut body: BodyRead, amount: u64) -> Step {
        let Some(budget) = self.shared.options.memory.clone() else {
            return self.receive_body(slot, body);
        };
        let token = self.token(slot);
        let mailbox = self.mailbox.clone();
        let call = move |grant| mailbox.post(Message::Granted(token, grant));
        // The first share of a body waits its turn among new requests; the next steps of a
        // chunked one are admitted work.
        let requested = match &mut body.memory {
            None => budget.request(amount, call),
            Some(grant) => {
                if grant.try_grow(amount) {
                    return self.receive_body(slot, body);
                }
                budget.request_admitted(amount, call)
            }
        };
        match requested {
            Requested::Granted(grant) => {
                absorb(&mut body.memory, grant);
                self.receive_body(slot, body)
            }
            Requested::Waiting(ticket) => {
                self.connections[slot].phase = Phase::Memory {
                    body: Some(body),
                    ticket: Some(ticket),
                };
                self.lists.put(slot, Class::Memory, Instant::now());
                Step::Idle
            }
            Requested::Never => self.reject(slot, NO_MEMORY),
        }
    }

    pub(super) fn granted(&mut self, slot: usize, grant: Grant) {
        let c = &mut self.connections[slot];
        let Phase::Memory { body, .. } = &mut c.phase else {
            return;
        };
        let Some(mut body) = body.take() else {
            return;
        };
        absorb(&mut body.memory, grant);
        // The time spent waiting for memory is the server's, not the client's.
        let now = Instant::now();
        c.rate_since = now;
        c.received = 0;
        self.lists.put(slot, Class::Unproven, now);
        self.receive_body(slot, body);
        self.drive_later(slot);
    }

    /// Memory is reserved: tell a client that waits for it to send, use what it sent
    /// already, then read.
    pub(super) fn receive_body(&mut self, slot: usize, mut body: BodyRead) -> Step {
        let c = &mut self.connections[slot];
        if !body.invited {
            c.output.push(Segment::Static(CONTINUE));
            body.invited = true;
        }
        // Body bytes that came with the head (or before a memory wait).
        let buffered = std::mem::take(&mut c.input);
        let buffered_memory = c.input_memory.take();
        let used = match Self::decode_into(&mut body, &buffered) {
            Ok(used) => used,
            Err(refusal) => return self.reject(slot, refusal),
        };
        let c = &mut self.connections[slot];
        if used < buffered.len() {
            // The rest is what the client sent ahead; it stays, with its memory.
            c.input = buffered[used..].to_vec();
            c.input_memory = buffered_memory;
        }
        self.body_progress(slot, body)
    }

    /// Feeds `bytes` to the body, within the memory it holds; returns how many it used.
    pub(super) fn decode_into(body: &mut BodyRead, bytes: &[u8]) -> Result<usize, Refusal> {
        let room = body.memory.as_ref().map_or(usize::MAX, |g| {
            (g.amount() as usize).saturating_sub(body.bytes.len())
        });
        match &mut body.framing {
            BodyFraming::Length { remaining, .. } => {
                let n = bytes.len().min(*remaining as usize);
                body.bytes.extend_from_slice(&bytes[..n]);
                *remaining -= n as u64;
                Ok(n)
            }
            BodyFraming::Chunked(decoder) => decoder
                .decode(bytes, &mut body.bytes, room)
                .map(|d| d.consumed)
                .map_err(|_| Refusal {
                    status: 400,
                    message: "malformed chunked request body",
                }),
        }
    }

    /// Hands a whole body, and the memory it holds, to its request.
    fn complete_body(
        &mut self,
        slot: usize,
        head: Head,
        bytes: Vec<u8>,
        memory: Option<Grant>,
    ) -> Step {
        let body = request::Body {
            bytes,
            memory,
            exceeds_limit: false,
        };
        self.complete(slot, head, body)
    }

    /// After body bytes arrived: complete, or ask for the next step of memory, or read on.
    pub(super) fn body_progress(&mut self, slot: usize, body: BodyRead) -> Step {
        let max = self.shared.options.max_body_bytes as u64;
        match &body.framing {
            BodyFraming::Length { remaining: 0, .. } => {
                self.complete_body(slot, body.head, body.bytes, body.memory)
            }
            BodyFraming::Chunked(decoder) if decoder.is_done() => {
                let BodyRead {
                    head,
                    bytes,
                    mut memory,
                    ..
                } = body;
                if let Some(grant) = memory.as_mut() {
                    grant.shrink_to(bytes.len() as u64);
                }
                self.complete_body(slot, head, bytes, memory)
            }
            BodyFraming::Chunked(_) if body.bytes.len() as u64 > max => {
                self.connections[slot].unread_input = true;
                self.complete(slot, body.head, over_limit())
            }
            BodyFraming::Chunked(_)
                if body
                    .memory
                    .as_ref()
                    .is_some_and(|g| body.bytes.len() as u64 >= g.amount()) =>
            {
                let step = CHUNKED_STEP.min(max + 1 - body.bytes.len() as u64);
                self.ask_memory(slot, body, step)
            }
            _ => {
                self.connections[slot].phase = Phase::Body(body);
                Step::Progress(1)
            }
        }
    }

    pub(super) fn read_body(&mut self, slot: usize, quota: usize) -> Step {
        let c = &mut self.connections[slot];
        let Phase::Body(mut body) = std::mem::replace(&mut c.phase, Phase::Handling) else {
            return Step::Idle;
        };
        let read = match body.framing {
            BodyFraming::Length { remaining, total } => {
                Self::read_length_body(c, &mut body, remaining, total, quota)
            }
            BodyFraming::Chunked(_) => Self::read_socket(c, &mut self.scratch),
        };
        let n = match read {
            Ok(Some(0)) | Err(_) => {
                // The client went away mid-body: nothing to answer.
                self.close(slot, false);
                return Step::Closed;
            }
            Ok(None) => {
                self.connections[slot].phase = Phase::Body(body);
                return Step::Idle;
            }
            Ok(Some(n)) => n,
        };
        self.connections[slot].received += n as u64;
        if matches!(body.framing, BodyFraming::Chunked(_)) {
            if let Err(refusal) = self.decode_chunks(slot, &mut body, n) {
                return self.reject(slot, refusal);
            }
        }
        match self.body_progress(slot, body) {
            Step::Idle => Step::Progress(n),
            other => other,
        }
    }

    /// Reads at most `quota` bytes of a body of known length straight into it: no copy.
    pub(super) fn read_length_body(
        c: &mut Connection,
        body: &mut BodyRead,
        remaining: u64,
        total: u64,
        quota: usize,
    ) -> io::Result<Option<usize>> {
        let want = (remaining as usize).min(SCRATCH).min(quota.max(1));
        body.reserve(want, total as usize);
        let start = body.bytes.len();
        body.bytes.resize(start + want, 0);
        let read = Self::read_socket(c, &mut body.bytes[start..]);
        let got = match &read {
            Ok(Some(n)) => *n,
            _ => 0,
        };
        body.bytes.truncate(start + got);
        body.framing = BodyFraming::Length {
            remaining: remaining - got as u64,
            total,
        };
        read
    }

    /// Decodes the `n` bytes of a chunked body just read into the scratch buffer. What
    /// lies past the body's end (the client's next request) or past the memory granted so
    /// far is kept on the connection for later.
    pub(super) fn decode_chunks(
        &mut self,
        slot: usize,
        body: &mut BodyRead,
        n: usize,
    ) -> Result<(), Refusal> {
        let used = Self::decode_into(body, &self.scratch[..n])?;
        let budget = self.shared.options.memory.as_ref();
        let c = &mut self.connections[slot];
        if used < n && !c.keep_input(budget, &self.scratch[used..n]) {
            return Err(NO_MEMORY);
        }
        Ok(())
    }

    pub(super) fn linger(&mut self, slot: usize) -> Step {
        let c = &mut self.connections[slot];
        let Phase::Lingering { discarded, since } = &mut c.phase else {
            return Step::Idle;
        };
        let read = loop {
            match c.socket.read(&mut self.scratch) {
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        match read {
            Ok(n)
                if n > 0
                    && *discarded + (n as u64) < LINGER_BYTES
                    && since.elapsed() < LINGER_MAX_TIME =>
            {
                *discarded += n as u64;
                // Still coming: the wait for the next bytes starts again.
                self.lists.put(slot, Class::Lingering, Instant::now());
                Step::Progress(n)
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                c.readable = false;
                Step::Idle
            }
            _ => {
                self.close(slot, false);
                Step::Closed
            }
        }
    }
}
