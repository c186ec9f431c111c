//! One connection's thread: reads a request (head and body, within deadlines and size
//! limits), hands it to the application, writes the response the application hands
//! back, and repeats until the connection closes.
//!
//! The application never touches the socket. A worker that answers a request only
//! passes the response to this thread, so a client that does not read holds this
//! thread (until the response deadline) and nothing else.

use std::io::{self, BufRead, BufWriter, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::framing::{self, BodyFraming, ChunkedDecoder, Head, Refusal};
use crate::request::{Body, Request, Responder};
use crate::response::{Response, ResponseBox};
use crate::slots::{Activity, Slot};
use crate::util::{DeadlineStream, Input};
use crate::{Grant, Route, Shared};

/// After refusing a request whose body was not read, how long to keep discarding what the
/// client still sends, and how much of it at most.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 4 * 1024 * 1024;
const WRITE_BUFFER: usize = 4096;
/// A chunked body is reserved from the memory budget this much at a time.
const CHUNKED_STEP: u64 = 64 * 1024;
const NO_MEMORY: Refusal = Refusal {
    status: 503,
    message: "server busy: no memory for the request body now, try again",
};

/// What a connection and the request it is serving share.
pub(crate) struct ConnectionControl {
    socket: Arc<TcpStream>,
    close: AtomicBool,
}

impl ConnectionControl {
    fn close_after_response(&self) {
        self.close.store(true, Ordering::Release);
    }

    fn closing(&self) -> bool {
        self.close.load(Ordering::Acquire)
    }

    /// Cuts the connection at once, in both directions.
    pub(crate) fn abort(&self) {
        self.close_after_response();
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

enum ReadError {
    /// Nothing to answer: the client closed or stayed silent, or the server closed the
    /// connection (evicted, or idle while draining).
    Closed,
    /// Answer with this refusal, then close.
    Refused(Refusal),
}

fn io_failure(e: io::Error) -> ReadError {
    if e.kind() == ErrorKind::TimedOut {
        ReadError::Refused(Refusal {
            status: 408,
            message: "the request did not arrive in time",
        })
    } else {
        ReadError::Closed
    }
}

pub(crate) struct Connection {
    input: Input,
    output: BufWriter<DeadlineStream>,
    control: Arc<ConnectionControl>,
    shared: Arc<Shared>,
    slot: Slot,
    remote_addr: Option<SocketAddr>,
    /// Set when the client may still be sending bytes we will not read.
    unread_input: bool,
    responses: mpsc::Receiver<ResponseBox>,
    responder: mpsc::Sender<ResponseBox>,
}

impl Connection {
    pub(crate) fn new(
        socket: Arc<TcpStream>,
        slot: Slot,
        shared: Arc<Shared>,
    ) -> io::Result<Connection> {
        // Responses are written in one piece when they fit the buffer; a streamed body is
        // written piece by piece and must not wait for Nagle's algorithm.
        socket.set_nodelay(true)?;
        let remote_addr = socket.peer_addr().ok();
        let now = Instant::now();
        let (responder, responses) = mpsc::channel();
        Ok(Connection {
            input: Input::new(DeadlineStream::new(socket.clone(), now)),
            output: BufWriter::with_capacity(
                WRITE_BUFFER,
                DeadlineStream::new(socket.clone(), now),
            ),
            control: Arc::new(ConnectionControl {
                socket,
                close: AtomicBool::new(false),
            }),
            shared,
            slot,
            remote_addr,
            unread_input: false,
            responses,
            responder,
        })
    }

    /// Serves requests until the connection closes. Each request goes to `route`, which
    /// answers it at once or hands it back to be queued for the application's workers;
    /// either way its response comes back here to be written.
    pub(crate) fn serve(mut self, route: &Route, queue: impl Fn(Request)) {
        while !self.control.closing() {
            let request = match self.read_request() {
                Ok(request) => request,
                Err(ReadError::Closed) => break,
                Err(ReadError::Refused(refusal)) => {
                    self.reject(refusal);
                    break;
                }
            };
            let version = request.http_version().clone();
            let head_only = request.method() == &crate::Method::Head;
            if let Some(request) = route(request) {
                queue(request);
            }
            // Every request sends exactly one response, even when dropped unanswered.
            let Ok(response) = self.responses.recv() else {
                break;
            };
            if !self.write_response(response, &version, head_only) {
                break;
            }
        }
        self.close();
    }

    fn options(&self) -> &crate::ServerOptions {
        &self.shared.options
    }

    /// The next request, read in full: head, then body unless it is over the limit.
    fn read_request(&mut self) -> Result<Request, ReadError> {
        self.wait_for_request()?;
        if !self.slot.set(Activity::Reading) {
            return Err(ReadError::Closed);
        }
        let deadline = Instant::now() + self.options().request_timeout;
        self.input.stream_mut().set_deadline(deadline);
        let head = self.read_head()?;
        let body = self.read_body(&head)?;
        self.input.shrink();
        if !self.slot.set(Activity::Busy) {
            return Err(ReadError::Closed);
        }
        if head.close || body.exceeds_limit {
            self.control.close_after_response();
        }
        let responder = Responder::new(
            self.responder.clone(),
            self.control.clone(),
            self.options().stream_stall_timeout,
        );
        Ok(Request::new(head, body, self.remote_addr, responder))
    }

    /// Waits up to the keep-alive timeout for the first byte of the next request. Closing
    /// an idle connection is silent; the server closes idle connections itself when it
    /// drains or needs the slot.
    fn wait_for_request(&mut self) -> Result<(), ReadError> {
        if !self.slot.set(Activity::Idle) {
            return Err(ReadError::Closed);
        }
        if !self.input.buffered().is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + self.options().keep_alive_timeout;
        self.input.stream_mut().set_deadline(deadline);
        match self.input.read_more(self.options().max_head_bytes) {
            Ok(0) | Err(_) => Err(ReadError::Closed),
            Ok(_) => Ok(()),
        }
    }

    fn read_head(&mut self) -> Result<Head, ReadError> {
        let limit = self.options().max_head_bytes;
        // Parse only once the end of a head may have arrived, so that a client sending a
        // byte at a time does not make each byte cost a parse of everything before it.
        let mut scanned = 0;
        loop {
            let buffered = self.input.buffered();
            if ends_head(buffered, scanned) {
                if let Some((head, length)) =
                    framing::parse_head(buffered).map_err(ReadError::Refused)?
                {
                    self.input.consume(length);
                    return Ok(head);
                }
            }
            scanned = buffered.len();
            if buffered.len() >= limit {
                return Err(ReadError::Refused(framing::head_too_large(buffered)));
            }
            match self.input.read_more(limit) {
                Ok(0) => return Err(ReadError::Closed),
                Ok(_) => {}
                Err(e) => return Err(io_failure(e)),
            }
        }
    }

    /// Reads the whole body, unless it is larger than the limit: then nothing more is
    /// read, the request is marked, and the connection will close after its response.
    /// Every byte read is first reserved from the memory budget, if there is one; a body
    /// that cannot get its share in time is refused with `503` without being read.
    fn read_body(&mut self, head: &Head) -> Result<Body, ReadError> {
        let max = self.options().max_body_bytes as u64;
        match head.body {
            BodyFraming::Empty | BodyFraming::Length(0) => Ok(Body::default()),
            BodyFraming::Length(n) if n > max => Ok(self.give_up_on_body()),
            BodyFraming::Length(n) => {
                let memory = self.reserve(n)?;
                self.send_continue(head)?;
                // Grown as bytes arrive: a declared length alone allocates nothing large.
                let mut bytes = Vec::with_capacity(n.min(64 * 1024) as usize);
                (&mut self.input)
                    .take(n)
                    .read_to_end(&mut bytes)
                    .map_err(io_failure)?;
                if (bytes.len() as u64) < n {
                    return Err(ReadError::Closed);
                }
                Ok(Body {
                    bytes,
                    memory,
                    exceeds_limit: false,
                })
            }
            BodyFraming::Chunked => {
                let mut memory = self.reserve(0)?;
                self.send_continue(head)?;
                let mut bytes = Vec::new();
                let mut decoder = ChunkedDecoder::new(&mut self.input);
                while !decoder.is_done() {
                    if bytes.len() as u64 > max {
                        return Ok(self.give_up_on_body());
                    }
                    // The next step is reserved before it is read.
                    let step = CHUNKED_STEP.min(max + 1 - bytes.len() as u64);
                    if let Some(grant) = memory.as_mut() {
                        if !grant.resize(bytes.len() as u64 + step, self.shared.options.memory_wait)
                        {
                            return Err(ReadError::Refused(NO_MEMORY));
                        }
                    }
                    (&mut decoder)
                        .take(step)
                        .read_to_end(&mut bytes)
                        .map_err(|e| match e.kind() {
                            ErrorKind::InvalidData => ReadError::Refused(Refusal {
                                status: 400,
                                message: "malformed chunked request body",
                            }),
                            _ => io_failure(e),
                        })?;
                }
                if bytes.len() as u64 > max {
                    return Ok(self.give_up_on_body());
                }
                if let Some(grant) = memory.as_mut() {
                    grant.shrink_to(bytes.len() as u64);
                }
                Ok(Body {
                    bytes,
                    memory,
                    exceeds_limit: false,
                })
            }
        }
    }

    /// Reserves `amount` bytes of the memory budget for a body, if there is a budget.
    fn reserve(&self, amount: u64) -> Result<Option<Grant>, ReadError> {
        match &self.shared.options.memory {
            None => Ok(None),
            Some(budget) => budget
                .acquire(amount, self.shared.options.memory_wait)
                .map(Some)
                .ok_or(ReadError::Refused(NO_MEMORY)),
        }
    }

    fn give_up_on_body(&mut self) -> Body {
        self.unread_input = true;
        Body {
            exceeds_limit: true,
            ..Body::default()
        }
    }

    fn send_continue(&mut self, head: &Head) -> Result<(), ReadError> {
        if !head.expects_continue || head.version < (1, 1) {
            return Ok(());
        }
        let deadline = Instant::now() + self.options().response_timeout;
        self.output.get_mut().set_deadline(deadline);
        self.output
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .and_then(|()| self.output.flush())
            .map_err(|_| ReadError::Closed)
    }

    /// Writes a response; returns whether the connection may serve another request.
    fn write_response(
        &mut self,
        response: ResponseBox,
        version: &crate::HTTPVersion,
        head_only: bool,
    ) -> bool {
        let deadline = Instant::now() + self.options().response_timeout;
        self.output.get_mut().set_deadline(deadline);
        let keep_alive = !self.control.closing() && !self.shared.draining();
        let result = response
            .raw_print(&mut self.output, version, head_only, keep_alive)
            .and_then(|kept| self.output.flush().map(|()| kept));
        match result {
            Ok(kept) => kept,
            Err(e) => {
                // Part of the response may be on the wire: only closing the connection
                // tells the client it is incomplete.
                log::debug!("response not completed, closing the connection: {}", e);
                self.control.abort();
                false
            }
        }
    }

    /// Answers a request that cannot be handed to the application.
    fn reject(&mut self, refusal: Refusal) {
        self.unread_input = true;
        self.control.close_after_response();
        let deadline = Instant::now() + self.options().response_timeout;
        self.output.get_mut().set_deadline(deadline);
        let version = crate::HTTPVersion(1, 1);
        let _ = Response::json_error(refusal.status, refusal.message)
            .raw_print(&mut self.output, &version, false, false)
            .and_then(|_| self.output.flush());
    }

    /// Closes after the last response has been written. If the client may still be sending
    /// (a body we refused to read), the rest is read and discarded for a moment first:
    /// closing a socket with unread input makes the kernel send a reset, which can destroy
    /// the response before the client reads it.
    fn close(mut self) {
        let _ = self.output.flush();
        self.output.get_ref().shutdown(Shutdown::Write);
        if !self.unread_input {
            return;
        }
        self.input
            .stream_mut()
            .set_deadline(Instant::now() + LINGER_TIME);
        let _ = io::copy(&mut (&mut self.input).take(LINGER_BYTES), &mut io::sink());
    }
}

/// Whether `buffered` may hold a complete head: it has an empty line that `scanned`
/// bytes, already looked at, did not have.
fn ends_head(buffered: &[u8], scanned: usize) -> bool {
    let from = scanned.saturating_sub(3);
    let window = &buffered[from..];
    window.windows(2).any(|w| w == b"\n\n") || window.windows(3).any(|w| w == b"\n\r\n")
}

/// Answers a connection that gets no slot with a `503`, without reading from it.
pub(crate) fn refuse(stream: &TcpStream) {
    const BODY: &str = "{\"error\":\"server busy: too many connections\"}";
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{}",
        BODY.len(),
        BODY
    );
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = (&*stream).write_all(response.as_bytes());
    let _ = stream.shutdown(Shutdown::Write);
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
}
