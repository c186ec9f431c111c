//! An event loop: one thread, one `epoll` instance (through `mio`, edge-triggered), and
//! every connection placed on it. Each turn it handles the ready sockets (several per
//! `epoll_wait`), then its mailbox (responses from workers, pieces of streamed bodies,
//! memory grants, new connections), then the timers, and sleeps until the earliest
//! deadline. Nothing here blocks: a connection that must wait (for memory, for a worker,
//! for the client) simply is not driven until its message or readiness comes.
//!
//! The first loop also accepts, and places each newcomer on the least loaded loop (see
//! `admission`).

mod accept;
mod deadlines;
mod messages;
mod read;
mod requests;
mod write;

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
