//! An event loop: one thread, one `epoll` instance (through `mio`, edge-triggered), and
//! every connection placed on it. Each turn it handles the ready sockets (several per
//! `epoll_wait`), then its mailbox (responses from workers, pieces of streamed bodies,
//! memory grants, new connections), then the timers, and sleeps until the earliest
//! deadline. Nothing here blocks: a connection that must wait (for memory, for a worker,
//! for the client) simply is not driven until its message or readiness comes.
//!
//! The first loop also accepts, and places each newcomer on the least loaded loop (see
//! `admission`).

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use budget::Requested;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll};
use slab::Slab;

use crate::admission::Placement;
use crate::connection::{BodyFraming, BodyRead, Connection, Phase, Segment, Streaming, Wrote};
use crate::framing::{self, ChunkedDecoder, Head, Refusal};
use crate::jobs::Turn;
use crate::lists::{Class, Lists};
use crate::mailbox::{Mailbox, Message, Produced, Token};
use crate::request::{self, Request, Responder};
use crate::response::{self, Response, WireBody};
use crate::{Grant, Shared};

pub(crate) const WAKER: mio::Token = mio::Token(usize::MAX - 1);
const LISTENER: mio::Token = mio::Token(usize::MAX - 2);

/// Bytes a connection may read plus write in one turn before the others get theirs, and
/// requests it may have answered: neither a fast reader of a large listing nor a client
/// pipelining hundreds of requests can starve the rest.
const TURN_QUOTA: usize = 256 * 1024;
const REQUESTS_PER_TURN: u32 = 4;
/// The per-loop read buffer: input lands here and only what must wait is copied out.
const SCRATCH: usize = 64 * 1024;
/// Connections accepted per turn before the loop serves the ones it has.
const ACCEPTS_PER_TURN: usize = 256;
/// A chunked body is reserved from the memory budget this much at a time.
const CHUNKED_STEP: u64 = 64 * 1024;
/// How often a request being received is checked against its deadline and the minimum
/// rate.
const CHECKPOINT: Duration = Duration::from_secs(1);
/// After answering a request whose body was not read (a refusal), what the client still
/// sends is discarded while it keeps coming: until it stops for `LINGER_TIME`, or after
/// `LINGER_MAX_TIME` or `LINGER_BYTES` in all (nginx's `lingering_timeout` and
/// `lingering_time` are 5 and 30 s). A client uploading a body that was refused for want
/// of memory is mostly still sending it, slowly on a poor link, and would otherwise get a
/// reset instead of its answer.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_MAX_TIME: Duration = Duration::from_secs(30);
const LINGER_BYTES: u64 = 16 * 1024 * 1024;
/// When the server begins to drain, a connection that has sent nothing yet gets this long
/// to send its first request: a client that has just connected has almost always sent it
/// already (it is in flight), and closing the connection under it would fail a request
/// that was never refused. Two seconds covers any sane round trip and keeps well inside
/// the shutdown grace.
const FRESH_GRACE: Duration = Duration::from_secs(2);
const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(5);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_millis(500);

const NO_MEMORY: Refusal = Refusal {
    status: 503,
    message: "server busy: no memory for the request now, try again",
};
const TOO_SLOW: Refusal = Refusal {
    status: 408,
    message: "the request did not arrive in time",
};
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
Content-Length: 45\r\nRetry-After: 1\r\nConnection: close\r\n\r\n\
{\"error\":\"server busy: too many connections\"}";

/// The listener, on the first loop.
struct Acceptor {
    listener: TcpListener,
    failing_since: Option<Instant>,
    backoff: Duration,
    /// Accepting paused after an error until then.
    retry_at: Option<Instant>,
    /// More connections may be waiting (the turn's quota ran out).
    more: bool,
}

/// The `Date` header, formatted once a second.
struct Date {
    second: u64,
    text: String,
}

impl Date {
    fn now(&mut self) -> &str {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = httpdate::fmt_http_date(now);
        }
        &self.text
    }
}

/// What a step of a connection did.
enum Step {
    /// Something changed: try again.
    Progress(usize),
    /// Nothing more to do until an event or a message comes.
    Idle,
    /// The connection is gone.
    Closed,
}

pub(crate) struct EventLoop {
    index: usize,
    poll: Poll,
    shared: Arc<Shared>,
    mailbox: Arc<Mailbox>,
    acceptor: Option<Acceptor>,
    connections: Slab<Connection>,
    lists: Lists,
    scratch: Vec<u8>,
    date: Date,
    /// Connections to drive again this turn or the next (a message came, or their quota
    /// ran out).
    again: VecDeque<Token>,
    messages: Vec<Message>,
    generation: u32,
    draining: bool,
    aborted: bool,
    drained: bool,
}

impl EventLoop {
    pub(crate) fn new(
        index: usize,
        poll: Poll,
        shared: Arc<Shared>,
        listener: Option<TcpListener>,
    ) -> io::Result<EventLoop> {
        let acceptor = match listener {
            Some(mut listener) => {
                poll.registry()
                    .register(&mut listener, LISTENER, Interest::READABLE)?;
                Some(Acceptor {
                    listener,
                    failing_since: None,
                    backoff: MIN_ACCEPT_BACKOFF,
                    retry_at: None,
                    more: false,
                })
            }
            None => None,
        };
        Ok(EventLoop {
            index,
            poll,
            mailbox: shared.mailboxes[index].clone(),
            shared,
            acceptor,
            connections: Slab::new(),
            lists: Lists::new(),
            scratch: vec![0; SCRATCH],
            date: Date {
                second: 0,
                text: String::new(),
            },
            again: VecDeque::new(),
            messages: Vec::new(),
            generation: 0,
            draining: false,
            aborted: false,
            drained: false,
        })
    }

    pub(crate) fn run(mut self) {
        self.mailbox.set_owner();
        let mut events = Events::with_capacity(1024);
        while !self.drained {
            let timeout = self.sleep_for(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != ErrorKind::Interrupted {
                    log::error!("epoll_wait failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => {
                        if let Some(acceptor) = &mut self.acceptor {
                            acceptor.more = true;
                        }
                    }
                    WAKER => {}
                    token => {
                        let slot = token.0;
                        if let Some(c) = self.connections.get_mut(slot) {
                            let failed = event.is_error();
                            c.readable |= event.is_readable() || event.is_read_closed() || failed;
                            c.writable |= event.is_writable() || event.is_write_closed() || failed;
                            self.drive(slot);
                        }
                    }
                }
            }
            self.accept();
            self.turn();
        }
        log::debug!("event loop {} stopped", self.index);
    }

    /// Everything but the ready sockets: the mailbox and the connections it concerns,
    /// leftovers of spent quotas, timers.
    fn turn(&mut self) {
        self.read_mailbox();
        // Those waiting now, once each: what they leave goes to the next turn, after the
        // sockets and newcomers have had theirs.
        for _ in 0..self.again.len() {
            let Some(token) = self.again.pop_front() else {
                break;
            };
            if self.is_current(token) {
                self.connections[token.slot as usize].queued = false;
                self.drive(token.slot as usize);
            }
        }
        self.expire(Instant::now());
        self.publish_load();
    }

    /// How long `epoll_wait` may sleep: until the earliest deadline, not at all if work
    /// is left.
    fn sleep_for(&self, now: Instant) -> Option<Duration> {
        let accept_more = self
            .acceptor
            .as_ref()
            .is_some_and(|a| a.more && a.retry_at.is_none());
        if !self.again.is_empty() || accept_more || self.mailbox.has_messages() {
            return Some(Duration::ZERO);
        }
        let mut earliest = self.acceptor.as_ref().and_then(|a| a.retry_at);
        for class in TIMED {
            if let Some((_, since)) = self.lists.front(class) {
                let at = since + self.duration(class);
                earliest = Some(earliest.map_or(at, |e: Instant| e.min(at)));
            }
        }
        earliest.map(|at| at.saturating_duration_since(now) + Duration::from_millis(1))
    }

    fn duration(&self, class: Class) -> Duration {
        let options = &self.shared.options;
        match class {
            Class::Fresh | Class::Idle => options.keep_alive_timeout,
            Class::Steady | Class::Slow | Class::Unproven => CHECKPOINT,
            Class::Memory => options.memory_wait,
            Class::Writing => options.response_timeout,
            Class::Lingering => LINGER_TIME,
            Class::Grace => FRESH_GRACE,
        }
    }

    /// Drives the connection again this turn or the next (once, however often asked).
    fn drive_later(&mut self, slot: usize) {
        let token = self.token(slot);
        let c = &mut self.connections[slot];
        if !c.queued {
            c.queued = true;
            self.again.push_back(token);
        }
    }

    fn is_current(&self, token: Token) -> bool {
        self.connections
            .get(token.slot as usize)
            .is_some_and(|c| c.generation == token.generation)
    }

    fn token(&self, slot: usize) -> Token {
        Token {
            slot: slot as u32,
            generation: self.connections[slot].generation,
        }
    }

    // ---- accepting and placing connections ----

    fn accept(&mut self) {
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
    fn accept_failed(&mut self, error: io::Error) {
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

    fn place(&mut self, socket: TcpStream) {
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
    fn adopt(&mut self, mut socket: TcpStream, evict: bool) {
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
    fn evict_one(&mut self) -> bool {
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

    fn publish_load(&self) {
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

    // ---- messages ----

    fn read_mailbox(&mut self) {
        let mut messages = std::mem::take(&mut self.messages);
        self.mailbox.take(&mut messages);
        for message in messages.drain(..) {
            self.apply(message);
        }
        self.messages = messages;
    }

    fn apply(&mut self, message: Message) {
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

    fn drain(&mut self) {
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

    fn abort(&mut self) {
        self.drain();
        self.aborted = true;
        let slots: Vec<usize> = self.connections.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            self.close(slot, true);
        }
    }

    /// Runs `f` on a connection; a panic in it (a bug) closes that connection only.
    fn guarded(&mut self, slot: usize, f: impl FnOnce(&mut Self, usize)) {
        if catch_unwind(AssertUnwindSafe(|| f(self, slot))).is_err() {
            log::error!("a connection's handling panicked; closing that connection");
            if self.connections.contains(slot) {
                self.close(slot, true);
            }
        }
    }

    // ---- driving a connection ----

    fn drive(&mut self, slot: usize) {
        self.guarded(slot, |l, slot| l.drive_unguarded(slot));
    }

    fn drive_unguarded(&mut self, slot: usize) {
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

    fn write_step(&mut self, slot: usize, quota: usize) -> Step {
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
    fn output_drained(&mut self, slot: usize) -> Step {
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

    fn finish_response(&mut self, slot: usize) -> Step {
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
    fn close_gracefully(&mut self, slot: usize) -> Step {
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

    fn read_step(&mut self, slot: usize, quota: usize) -> Step {
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
    fn read_socket(c: &mut Connection, buf: &mut [u8]) -> io::Result<Option<usize>> {
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

    fn begin_request(&mut self, slot: usize) {
        let now = Instant::now();
        let c = &mut self.connections[slot];
        c.phase = Phase::Head { scanned: 0 };
        c.request_started = now;
        c.rate_since = now;
        c.received = c.input.len() as u64;
        self.lists.put(slot, Class::Unproven, now);
    }

    fn read_head(&mut self, slot: usize) -> Step {
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
    fn parse_head(&mut self, slot: usize, fresh: Option<usize>) -> Step {
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
    fn start_body(&mut self, slot: usize, head: Head) -> Step {
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
    fn ask_memory(&mut self, slot: usize, mut body: BodyRead, amount: u64) -> Step {
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

    fn granted(&mut self, slot: usize, grant: Grant) {
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
    fn receive_body(&mut self, slot: usize, mut body: BodyRead) -> Step {
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
    fn decode_into(body: &mut BodyRead, bytes: &[u8]) -> Result<usize, Refusal> {
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

    /// After body bytes arrived: complete, or ask for the next step of memory, or read on.
    fn body_progress(&mut self, slot: usize, body: BodyRead) -> Step {
        let max = self.shared.options.max_body_bytes as u64;
        match &body.framing {
            BodyFraming::Length { remaining: 0, .. } => {
                let BodyRead {
                    head,
                    bytes,
                    memory,
                    ..
                } = body;
                self.complete(
                    slot,
                    head,
                    request::Body {
                        bytes,
                        memory,
                        exceeds_limit: false,
                    },
                )
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
                self.complete(
                    slot,
                    head,
                    request::Body {
                        bytes,
                        memory,
                        exceeds_limit: false,
                    },
                )
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

    fn read_body(&mut self, slot: usize, quota: usize) -> Step {
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
    fn read_length_body(
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
    fn decode_chunks(&mut self, slot: usize, body: &mut BodyRead, n: usize) -> Result<(), Refusal> {
        let used = Self::decode_into(body, &self.scratch[..n])?;
        let budget = self.shared.options.memory.as_ref();
        let c = &mut self.connections[slot];
        if used < n && !c.keep_input(budget, &self.scratch[used..n]) {
            return Err(NO_MEMORY);
        }
        Ok(())
    }

    fn linger(&mut self, slot: usize) -> Step {
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

    // ---- requests and responses ----

    /// A request has arrived in full: the application's `route` sees it here, and either
    /// answers it (its response comes back through the mailbox) or hands it back for a
    /// worker.
    fn complete(&mut self, slot: usize, head: Head, body: request::Body) -> Step {
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
    fn reject(&mut self, slot: usize, refusal: Refusal) -> Step {
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

    fn start_response(&mut self, slot: usize, response: Response) {
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

    fn streamed(&mut self, slot: usize, produced: Produced) {
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

    // ---- timers ----

    fn expire(&mut self, now: Instant) {
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

    fn expired(&mut self, slot: usize, class: Class, at: Instant) {
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
    fn checkpoint(&mut self, slot: usize, at: Instant) {
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

    // ---- closing ----

    /// Removes a connection. `abort` cuts it in both directions at once (a reset if the
    /// client still sends).
    fn close(&mut self, slot: usize, abort: bool) {
        self.lists.remove(slot);
        let c = self.connections.remove(slot);
        if abort {
            let _ = c.socket.shutdown(Shutdown::Both);
        }
        if let Phase::Memory {
            ticket: Some(ticket),
            ..
        } = c.phase
        {
            if let Some(budget) = &self.shared.options.memory {
                budget.cancel(ticket);
            }
        }
        if let Streaming::Producing(cancelled, _) = &c.streaming {
            cancelled.store(true, Ordering::Release);
        }
        drop(c);
        self.connection_gone();
    }

    fn connection_gone(&mut self) {
        // Whether or not this loop has seen the drain yet: the last connection of the
        // server may close here after the listener has closed elsewhere.
        if self.shared.admission.closed() == 0 {
            self.shared.check_drained();
        }
    }
}

/// The classes that have a timer, in the order they are checked.
const TIMED: [Class; 9] = [
    Class::Fresh,
    Class::Idle,
    Class::Steady,
    Class::Slow,
    Class::Unproven,
    Class::Memory,
    Class::Writing,
    Class::Lingering,
    Class::Grace,
];

fn amount(step: &Step) -> usize {
    match step {
        Step::Progress(n) => *n,
        _ => 0,
    }
}

fn absorb(memory: &mut Option<Grant>, grant: Grant) {
    match memory {
        Some(held) => held.absorb(grant),
        None => *memory = Some(grant),
    }
}

fn over_limit() -> request::Body {
    request::Body {
        exceeds_limit: true,
        ..request::Body::default()
    }
}

fn push_piece(c: &mut Connection, piece: response::Piece, chunked: bool) {
    match response::frame_piece(&piece, chunked) {
        Some((header, end)) => {
            c.output.push(Segment::Owned(header));
            c.output.push(Segment::Held {
                bytes: piece.bytes,
                _memory: piece.memory,
            });
            c.output.push(Segment::Static(end));
        }
        None => c.output.push(Segment::Held {
            bytes: piece.bytes,
            _memory: piece.memory,
        }),
    }
}

/// Whether `buffered` may hold a complete head: it has an empty line that `scanned`
/// bytes, already looked at, did not have.
fn ends_head(buffered: &[u8], scanned: usize) -> bool {
    let from = scanned.saturating_sub(3);
    let window = &buffered[from..];
    window.windows(2).any(|w| w == b"\n\n") || window.windows(3).any(|w| w == b"\n\r\n")
}

/// Errors that concern only the connection being accepted, not the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
    )
}

/// Answers a connection that gets no slot with a `503`, without reading from it.
fn refuse(mut socket: TcpStream) {
    let _ = socket.write(TOO_MANY);
    let _ = socket.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_can_only_end_where_an_empty_line_arrived() {
        assert!(!ends_head(b"GET / HTTP/1.1\r\nHost: a\r\n", 0));
        assert!(ends_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0));
        assert!(ends_head(b"GET / HTTP/1.0\n\n", 0));
        // Bytes arriving one by one: the end is found when its last byte arrives.
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let found: Vec<usize> = (1..=head.len())
            .filter(|&n| ends_head(&head[..n], n - 1))
            .collect();
        assert_eq!(found, vec![head.len()]);
    }

    #[test]
    fn the_refusal_for_a_full_server_is_well_formed() {
        let text = std::str::from_utf8(TOO_MANY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(serde_json_like(body));
    }

    fn serde_json_like(body: &str) -> bool {
        body.starts_with("{\"error\":\"") && body.ends_with("\"}")
    }
}
