//! One connection as its event loop holds it: the socket, where it is in the
//! request-response cycle, what it has buffered (each buffer charged to the memory
//! budget), and the queue of bytes still to write.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use budget::{Grant, Ticket};
use mio::net::TcpStream;

use crate::common::HTTPVersion;
use crate::framing::{ChunkedDecoder, Head};
use crate::request::Queue;
use crate::response::Stream;

/// Where a connection is in its request-response cycle.
pub(crate) enum Phase {
    /// Waiting for the first byte of a request.
    Waiting,
    /// Receiving a head; `scanned` bytes of the buffered input are known not to end it.
    Head { scanned: usize },
    /// Waiting for the memory its body needs (or, for a chunked body, its next step);
    /// nothing is read meanwhile.
    Memory {
        body: Option<BodyRead>,
        ticket: Option<Ticket>,
    },
    /// Receiving a body.
    Body(BodyRead),
    /// The request is with the application.
    Handling,
    /// Writing a response (or waiting for the next piece of a streamed one).
    Responding,
    /// The response is written and the write side shut; discarding what the client still
    /// sends, for as long as it keeps sending (within bounds), so that closing does not
    /// reset the connection under the response before the client has read it.
    Lingering { discarded: u64, since: Instant },
}

impl Phase {
    /// Whether the connection reads from its socket in this phase.
    pub(crate) fn reads(&self) -> bool {
        matches!(
            self,
            Phase::Waiting | Phase::Head { .. } | Phase::Body(_) | Phase::Lingering { .. }
        )
    }
}

/// A body being received.
pub(crate) struct BodyRead {
    pub(crate) head: Head,
    pub(crate) bytes: Vec<u8>,
    pub(crate) memory: Option<Grant>,
    pub(crate) framing: BodyFraming,
    /// The client has been told to send (`100 Continue`), or needs no telling.
    pub(crate) invited: bool,
}

pub(crate) enum BodyFraming {
    Length { remaining: u64, total: u64 },
    Chunked(ChunkedDecoder),
}

impl BodyRead {
    pub(crate) fn new(head: Head, framing: BodyFraming) -> BodyRead {
        let invited = !(head.expects_continue && head.version >= (1, 1));
        BodyRead {
            head,
            bytes: Vec::new(),
            memory: None,
            framing,
            invited,
        }
    }

    /// Makes room for `want` more bytes of a body of `total`: capacity doubles as bytes
    /// arrive, but never past the declared length, so a declared length alone allocates
    /// nothing large.
    pub(crate) fn reserve(&mut self, want: usize, total: usize) {
        let needed = self.bytes.len() + want;
        if self.bytes.capacity() < needed {
            let target = needed.max((self.bytes.capacity() * 2).min(total));
            self.bytes.reserve_exact(target - self.bytes.len());
        }
    }
}

/// A streamed response's producer, between turns.
pub(crate) enum Streaming {
    None,
    /// The next turn is to be queued once the output has drained.
    Ready(Box<dyn Stream>, bool),
    /// A worker is making the next piece; set the flag to drop it unrun.
    Producing(Arc<AtomicBool>, bool),
    /// The last piece (and the last chunk) is in the output.
    Ended,
}

impl Streaming {
    pub(crate) fn chunked(&self) -> bool {
        matches!(
            self,
            Streaming::Ready(_, true) | Streaming::Producing(_, true)
        )
    }
}

/// Bytes queued for the socket.
pub(crate) enum Segment {
    Owned(Vec<u8>),
    /// A body, and the memory it holds until it has been written.
    Held {
        bytes: Vec<u8>,
        _memory: Option<Grant>,
    },
    Static(&'static [u8]),
}

impl Segment {
    fn bytes(&self) -> &[u8] {
        match self {
            Segment::Owned(b) | Segment::Held { bytes: b, .. } => b,
            Segment::Static(b) => b,
        }
    }
}

#[derive(Default)]
pub(crate) struct Output {
    segments: VecDeque<Segment>,
    /// Bytes of the first segment already written.
    offset: usize,
}

/// What one attempt to write did.
pub(crate) enum Wrote {
    /// Everything queued is written.
    All,
    /// The socket takes no more now.
    Blocked,
    /// This many bytes went out and more remain (the caller's quota ran out).
    Some,
}

impl Output {
    pub(crate) fn push(&mut self, segment: Segment) {
        if !segment.bytes().is_empty() {
            self.segments.push_back(segment);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Writes up to `quota` bytes; returns what happened and how many bytes went out.
    pub(crate) fn write_to(
        &mut self,
        socket: &mut TcpStream,
        quota: usize,
    ) -> io::Result<(Wrote, usize)> {
        let mut written = 0;
        while !self.segments.is_empty() {
            if written >= quota {
                return Ok((Wrote::Some, written));
            }
            let mut slices = [IoSlice::new(&[]); 16];
            let mut count = 0;
            for (i, segment) in self.segments.iter().take(slices.len()).enumerate() {
                let bytes = segment.bytes();
                slices[i] = IoSlice::new(if i == 0 { &bytes[self.offset..] } else { bytes });
                count += 1;
            }
            match socket.write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written += n;
                    self.advance(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok((Wrote::Blocked, written))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok((Wrote::All, written))
    }

    /// Drops what has been written (and the memory it held).
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let left = self.segments[0].bytes().len() - self.offset;
            if n < left {
                self.offset += n;
                return;
            }
            n -= left;
            self.offset = 0;
            self.segments.pop_front();
        }
    }
}

pub(crate) struct Connection {
    pub(crate) socket: TcpStream,
    pub(crate) generation: u32,
    pub(crate) remote: Option<SocketAddr>,
    pub(crate) phase: Phase,
    /// Requests answered on this connection.
    pub(crate) served: u32,
    /// Input not yet used: a partial head, or what the client sent ahead (pipelined), with
    /// the memory it holds.
    pub(crate) input: Vec<u8>,
    pub(crate) input_memory: Option<Grant>,
    pub(crate) output: Output,
    pub(crate) streaming: Streaming,
    /// Waiting in the loop's queue to be driven again.
    pub(crate) queued: bool,
    /// Edge-triggered readiness not used up yet.
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    /// Close once the current response is written.
    pub(crate) close_after: bool,
    /// The client may still be sending bytes that will not be read (linger before close).
    pub(crate) unread_input: bool,
    /// The request being received: when its rate is measured from, and bytes so far.
    pub(crate) rate_since: Instant,
    pub(crate) request_started: Instant,
    pub(crate) received: u64,
    /// The request being answered: its version, and whether it is a `HEAD`.
    pub(crate) version: HTTPVersion,
    pub(crate) head_only: bool,
    /// The job queue it was handed to, where its streamed body's turns go too.
    pub(crate) queue: Queue,
}

impl Connection {
    pub(crate) fn new(socket: TcpStream, generation: u32, now: Instant) -> Connection {
        let remote = socket.peer_addr().ok();
        Connection {
            socket,
            generation,
            remote,
            phase: Phase::Waiting,
            served: 0,
            input: Vec::new(),
            input_memory: None,
            output: Output::default(),
            streaming: Streaming::None,
            queued: false,
            readable: false,
            writable: false,
            close_after: false,
            unread_input: false,
            rate_since: now,
            request_started: now,
            received: 0,
            version: HTTPVersion(1, 1),
            head_only: false,
            queue: Queue::FIRST,
        }
    }

    /// Appends to the buffered input, charging its memory to `budget`; `false` if the
    /// budget has no room now. (Buffered input is not queued behind new requests for
    /// memory: it is small, at most a head, and already on the connection.)
    pub(crate) fn keep_input(&mut self, budget: Option<&budget::Budget>, bytes: &[u8]) -> bool {
        self.input.extend_from_slice(bytes);
        let Some(budget) = budget else {
            return true;
        };
        let needed = self.input.capacity() as u64;
        match &mut self.input_memory {
            Some(grant) if grant.amount() >= needed => true,
            Some(grant) => grant.try_grow(needed - grant.amount()),
            None => match budget.try_acquire_admitted(needed) {
                Some(grant) => {
                    self.input_memory = Some(grant);
                    true
                }
                None => false,
            },
        }
    }

    /// Drops the first `n` bytes of buffered input; the buffer and its memory go once it
    /// is empty.
    pub(crate) fn consume_input(&mut self, n: usize) {
        if n >= self.input.len() {
            self.input = Vec::new();
            self.input_memory = None;
        } else {
            self.input.drain(..n);
        }
    }
}
