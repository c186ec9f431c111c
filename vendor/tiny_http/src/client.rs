//! One connection: reads requests (head and body, within deadlines and size limits), hands
//! each to the application, waits for its response, and closes the connection cleanly.

use std::io::{self, BufRead, BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::common::{HTTPVersion, Header, Method};
use crate::request::RequestHead;
use crate::util::{ChunkedDecoder, DeadlineStream};
use crate::{Request, Response, Shared};

/// The write half of a connection, shared with the request being answered.
pub(crate) type Writer = Arc<Mutex<BufWriter<DeadlineStream>>>;

/// How often a connection waiting for its next request checks whether the server drains.
const DRAIN_POLL: Duration = Duration::from_millis(500);
/// After refusing a request whose body was not read, how long to keep discarding what the
/// client still sends, and how much of it at most.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 4 * 1024 * 1024;
/// Most header fields in one request.
const MAX_HEADERS: usize = 100;
const READ_BUFFER: usize = 4096;
const WRITE_BUFFER: usize = 4096;

/// What a connection and the request it is serving share.
pub(crate) struct ConnectionControl {
    pub(crate) shared: Arc<Shared>,
    socket: Arc<TcpStream>,
    close: AtomicBool,
}

impl ConnectionControl {
    /// Whether the connection may serve another request after the current one.
    pub(crate) fn keep_alive(&self) -> bool {
        !self.close.load(Ordering::Acquire) && !self.shared.draining()
    }

    /// Whether the connection is to close after the current response (the server
    /// draining alone does not say so: a request already on its way is still served).
    fn closing(&self) -> bool {
        self.close.load(Ordering::Acquire)
    }

    pub(crate) fn close_after_response(&self) {
        self.close.store(true, Ordering::Release);
    }

    /// Cuts the connection at once, in both directions.
    pub(crate) fn abort(&self) {
        self.close_after_response();
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

enum ReadError {
    /// Nothing to answer: the client closed or stayed silent, or the server drains.
    Closed,
    /// Answer with this status and message, then close.
    Reject(u16, &'static str),
}

fn io_failure(e: io::Error) -> ReadError {
    if e.kind() == ErrorKind::TimedOut {
        ReadError::Reject(408, "the request did not arrive in time")
    } else {
        ReadError::Closed
    }
}

pub(crate) struct ClientConnection {
    reader: BufReader<DeadlineStream>,
    writer: Writer,
    control: Arc<ConnectionControl>,
    remote_addr: Option<SocketAddr>,
    /// Set when the client may still be sending bytes we will not read.
    unread_input: bool,
    /// Each request signals here once it has been answered.
    responded: mpsc::Sender<()>,
    response_done: mpsc::Receiver<()>,
    /// A request has been handed over and not answered yet.
    outstanding: bool,
}

impl ClientConnection {
    pub(crate) fn new(stream: TcpStream, shared: Arc<Shared>) -> io::Result<ClientConnection> {
        // Responses are written in one piece when they fit the buffer; a streamed body is
        // written chunk by chunk and must not wait for Nagle's algorithm.
        stream.set_nodelay(true)?;
        let remote_addr = stream.peer_addr().ok();
        let socket = Arc::new(stream);
        let now = Instant::now();
        let reader =
            BufReader::with_capacity(READ_BUFFER, DeadlineStream::new(socket.clone(), now));
        let writer =
            BufWriter::with_capacity(WRITE_BUFFER, DeadlineStream::new(socket.clone(), now));
        let (responded, response_done) = mpsc::channel();
        Ok(ClientConnection {
            reader,
            writer: Arc::new(Mutex::new(writer)),
            control: Arc::new(ConnectionControl {
                shared,
                socket,
                close: AtomicBool::new(false),
            }),
            remote_addr,
            unread_input: false,
            responded,
            response_done,
            outstanding: false,
        })
    }

    /// Serves requests until the connection closes. Each request goes to `deliver`. While
    /// it is being answered this thread already waits for the next one, but hands it over
    /// only once the previous response is written: a connection never has more than one
    /// request queued, and in the usual case (the client waits for each response) the
    /// next request finds the previous one answered, so no thread has to be woken for it.
    pub(crate) fn serve(mut self, mut deliver: impl FnMut(Request)) {
        while !self.control.closing() {
            let result = self.read_request();
            if !self.finish_previous() {
                break;
            }
            match result {
                // A response that closed the connection voids a pipelined request.
                Ok((rq, _)) if self.control.closing() => {
                    rq.discard();
                    break;
                }
                Ok((rq, close_after)) => {
                    // Set before the request is handed over: its response must say so.
                    if close_after {
                        self.control.close_after_response();
                    }
                    deliver(rq);
                    self.outstanding = true;
                }
                Err(ReadError::Closed) => break,
                Err(ReadError::Reject(status, message)) => {
                    self.reject(status, message);
                    break;
                }
            }
        }
        self.finish_previous();
        self.close();
    }

    /// Waits until the request handed over last, if any, has been answered.
    fn finish_previous(&mut self) -> bool {
        if !self.outstanding {
            return true;
        }
        self.outstanding = false;
        self.response_done.recv().is_ok()
    }

    fn options(&self) -> &crate::ServerOptions {
        &self.control.shared.options
    }

    /// The next request, and whether the connection must close after answering it (the
    /// client asked so, or its body was too large to read).
    fn read_request(&mut self) -> Result<(Request, bool), ReadError> {
        self.wait_for_request()?;
        let deadline = Instant::now() + self.options().request_timeout;
        self.reader.get_mut().set_deadline(deadline);

        let mut budget = self.options().max_head_bytes;
        let line = self
            .read_head_line(&mut budget)?
            .ok_or(ReadError::Reject(414, "request line too long"))?;
        let (method, path, http_version) = parse_request_line(&line)?;
        if http_version > (1, 1) {
            return Err(ReadError::Reject(
                505,
                "only HTTP/1.0 and HTTP/1.1 are supported",
            ));
        }
        let headers = self.read_headers(&mut budget)?;

        let close_after = wants_close(&headers, &http_version);
        let framing = body_framing(&headers)?;
        let expects_continue = expects_continue(&headers)?;
        let (body, body_exceeds_limit) =
            self.read_body(&framing, expects_continue, &http_version)?;

        let head = RequestHead {
            method,
            path,
            http_version,
            headers,
            body_length: match framing {
                Framing::Length(n) => usize::try_from(n).ok(),
                _ => None,
            },
        };
        let request = Request::new(
            head,
            body,
            body_exceeds_limit,
            self.remote_addr,
            self.writer.clone(),
            self.control.clone(),
            self.responded.clone(),
        );
        Ok((request, close_after || body_exceeds_limit))
    }

    /// Waits for the first byte of the next request, up to the keep-alive timeout after
    /// the previous response, giving up early (within `DRAIN_POLL`) if the server drains
    /// or the connection is to close. A request already on its way is still read while
    /// draining. Closing an idle connection is silent.
    fn wait_for_request(&mut self) -> Result<(), ReadError> {
        let keep_alive = self.options().keep_alive_timeout;
        let mut idle_deadline = Instant::now() + keep_alive;
        loop {
            let now = Instant::now();
            self.reader
                .get_mut()
                .set_deadline((now + DRAIN_POLL).min(idle_deadline));
            match self.reader.fill_buf() {
                Ok([]) => return Err(ReadError::Closed),
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::TimedOut => {
                    if self.outstanding {
                        // The connection is idle only from the end of its last response.
                        match self.response_done.try_recv() {
                            Ok(()) => {
                                self.outstanding = false;
                                idle_deadline = Instant::now() + keep_alive;
                            }
                            Err(mpsc::TryRecvError::Empty) => {
                                idle_deadline = Instant::now() + keep_alive;
                            }
                            Err(mpsc::TryRecvError::Disconnected) => return Err(ReadError::Closed),
                        }
                    }
                    if self.control.shared.draining()
                        || self.control.closing()
                        || Instant::now() >= idle_deadline
                    {
                        return Err(ReadError::Closed);
                    }
                }
                Err(_) => return Err(ReadError::Closed),
            }
        }
    }

    /// Reads one line of the head, charging it to `budget`. `None` when the budget ran out.
    fn read_head_line(&mut self, budget: &mut usize) -> Result<Option<String>, ReadError> {
        let mut line = Vec::new();
        self.reader
            .by_ref()
            .take(*budget as u64)
            .read_until(b'\n', &mut line)
            .map_err(io_failure)?;
        *budget -= line.len();
        if line.last() != Some(&b'\n') {
            return if *budget == 0 {
                Ok(None)
            } else {
                Err(ReadError::Closed)
            };
        }
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        String::from_utf8(line)
            .ok()
            .filter(|l| l.is_ascii())
            .map(Some)
            .ok_or(ReadError::Reject(400, "the request head is not ASCII"))
    }

    fn read_headers(&mut self, budget: &mut usize) -> Result<Vec<Header>, ReadError> {
        let mut headers = Vec::new();
        loop {
            let line = self
                .read_head_line(budget)?
                .ok_or(ReadError::Reject(431, "request headers too large"))?;
            if line.is_empty() {
                return Ok(headers);
            }
            if headers.len() == MAX_HEADERS {
                return Err(ReadError::Reject(431, "too many request headers"));
            }
            let header = Header::from_str(line.trim())
                .map_err(|_| ReadError::Reject(400, "malformed request header"))?;
            headers.push(header);
        }
    }

    /// Reads the whole body, unless it is larger than the limit: then nothing more is read,
    /// the request is marked, and the connection will close after its response.
    fn read_body(
        &mut self,
        framing: &Framing,
        expects_continue: bool,
        version: &HTTPVersion,
    ) -> Result<(Vec<u8>, bool), ReadError> {
        let max = self.options().max_body_bytes as u64;
        match *framing {
            Framing::Empty | Framing::Length(0) => Ok((Vec::new(), false)),
            Framing::Length(n) if n > max => Ok(self.give_up_on_body()),
            Framing::Length(n) => {
                self.send_continue(expects_continue, version)?;
                // Grown as bytes arrive: a declared length alone allocates nothing large.
                let mut body = Vec::with_capacity(n.min(64 * 1024) as usize);
                self.reader
                    .by_ref()
                    .take(n)
                    .read_to_end(&mut body)
                    .map_err(io_failure)?;
                if (body.len() as u64) < n {
                    return Err(ReadError::Closed);
                }
                Ok((body, false))
            }
            Framing::Chunked => {
                self.send_continue(expects_continue, version)?;
                let mut body = Vec::new();
                ChunkedDecoder::new(self.reader.by_ref())
                    .take(max + 1)
                    .read_to_end(&mut body)
                    .map_err(|e| match e.kind() {
                        ErrorKind::InvalidData => {
                            ReadError::Reject(400, "malformed chunked request body")
                        }
                        _ => io_failure(e),
                    })?;
                if body.len() as u64 > max {
                    return Ok(self.give_up_on_body());
                }
                Ok((body, false))
            }
        }
    }

    fn give_up_on_body(&mut self) -> (Vec<u8>, bool) {
        self.unread_input = true;
        (Vec::new(), true)
    }

    fn send_continue(&mut self, expects: bool, version: &HTTPVersion) -> Result<(), ReadError> {
        if !expects || *version < (1, 1) {
            return Ok(());
        }
        // Nothing may be written before the previous response is complete.
        if !self.finish_previous() {
            return Err(ReadError::Closed);
        }
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        writer
            .get_mut()
            .set_deadline(Instant::now() + self.control.shared.options.response_timeout);
        writer
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .and_then(|()| writer.flush())
            .map_err(|_| ReadError::Closed)
    }

    /// Answers a request that cannot be handed to the application.
    fn reject(&mut self, status: u16, message: &str) {
        self.unread_input = true;
        self.control.close_after_response();
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        writer
            .get_mut()
            .set_deadline(Instant::now() + self.control.shared.options.response_timeout);
        let version = HTTPVersion(1, 1);
        let _ = Response::json_error(status, message)
            .raw_print(&mut *writer, &version, false, false)
            .and_then(|_| writer.flush());
    }

    /// Closes after the last response has been written. If the client may still be sending
    /// (a body we refused to read), the rest is read and discarded for a moment first:
    /// closing a socket with unread input makes the kernel send a reset, which can destroy
    /// the response before the client reads it.
    fn close(mut self) {
        self.writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_ref()
            .shutdown(Shutdown::Write);
        if !self.unread_input {
            return;
        }
        self.reader
            .get_mut()
            .set_deadline(Instant::now() + LINGER_TIME);
        let _ = io::copy(
            &mut self.reader.by_ref().take(LINGER_BYTES),
            &mut io::sink(),
        );
    }
}

/// Answers a connection over the limit with a `503` without reading from it.
pub(crate) fn refuse(stream: TcpStream) {
    const BODY: &str = "{\"error\":\"server busy: too many connections\"}";
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{}",
        BODY.len(),
        BODY
    );
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = (&stream).write_all(response.as_bytes());
    let _ = stream.shutdown(Shutdown::Write);
}

enum Framing {
    Empty,
    Length(u64),
    Chunked,
}

fn header_values<'a>(headers: &'a [Header], name: &'static str) -> impl Iterator<Item = &'a str> {
    headers
        .iter()
        .filter(move |h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

/// How the body is delimited. Ambiguous framing is refused rather than guessed, since two
/// parties guessing differently is how requests get smuggled.
fn body_framing(headers: &[Header]) -> Result<Framing, ReadError> {
    let encodings: Vec<&str> = header_values(headers, "Transfer-Encoding").collect();
    let lengths: Vec<&str> = header_values(headers, "Content-Length").collect();
    if !encodings.is_empty() {
        if !lengths.is_empty() {
            return Err(ReadError::Reject(
                400,
                "Content-Length and Transfer-Encoding must not both be sent",
            ));
        }
        if encodings.len() != 1 || !encodings[0].trim().eq_ignore_ascii_case("chunked") {
            return Err(ReadError::Reject(
                400,
                "only Transfer-Encoding: chunked is supported",
            ));
        }
        return Ok(Framing::Chunked);
    }
    let Some(first) = lengths.first() else {
        return Ok(Framing::Empty);
    };
    let valid = |v: &str| !v.is_empty() && v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit());
    if !lengths.iter().all(|v| *v == *first) || !valid(first) {
        return Err(ReadError::Reject(400, "invalid Content-Length"));
    }
    first
        .parse()
        .map(Framing::Length)
        .map_err(|_| ReadError::Reject(400, "invalid Content-Length"))
}

fn expects_continue(headers: &[Header]) -> Result<bool, ReadError> {
    match header_values(headers, "Expect").next() {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("100-continue") => Ok(true),
        Some(_) => Err(ReadError::Reject(
            417,
            "only Expect: 100-continue is supported",
        )),
    }
}

/// Whether the client asked for the connection to end after this request.
fn wants_close(headers: &[Header], version: &HTTPVersion) -> bool {
    let tokens: Vec<String> = header_values(headers, "Connection")
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let has = |t: &str| tokens.iter().any(|x| x == t);
    has("close") || has("upgrade") || (*version == (1, 0) && !has("keep-alive"))
}

fn parse_http_version(version: &str) -> Option<HTTPVersion> {
    match version {
        "HTTP/1.0" => Some(HTTPVersion(1, 0)),
        "HTTP/1.1" => Some(HTTPVersion(1, 1)),
        "HTTP/2.0" | "HTTP/2" => Some(HTTPVersion(2, 0)),
        "HTTP/3.0" | "HTTP/3" => Some(HTTPVersion(3, 0)),
        _ => None,
    }
}

fn parse_request_line(line: &str) -> Result<(Method, String, HTTPVersion), ReadError> {
    const BAD: ReadError = ReadError::Reject(400, "malformed request line");
    let mut parts = line.split(' ');
    let (Some(method), Some(path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BAD);
    };
    let method = method.parse().map_err(|_| BAD)?;
    let version = parse_http_version(version).ok_or(BAD)?;
    if path.is_empty() {
        return Err(BAD);
    }
    Ok((method, path.to_owned(), version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[&str]) -> Vec<Header> {
        lines.iter().map(|l| l.parse().unwrap()).collect()
    }

    #[test]
    fn request_line() {
        let (method, path, version) = parse_request_line("GET /hello HTTP/1.1").ok().unwrap();
        assert_eq!(method, Method::Get);
        assert_eq!(path, "/hello");
        assert_eq!(version, HTTPVersion(1, 1));
        assert!(parse_request_line("GET /hello").is_err());
        assert!(parse_request_line("GET /a b HTTP/1.1").is_err());
        assert!(parse_request_line("qsd qsd qsd").is_err());
    }

    #[test]
    fn framing_refuses_ambiguity() {
        assert!(matches!(
            body_framing(&headers(&["Content-Length: 5"])),
            Ok(Framing::Length(5))
        ));
        assert!(matches!(
            body_framing(&headers(&["Transfer-Encoding: chunked"])),
            Ok(Framing::Chunked)
        ));
        assert!(matches!(body_framing(&[]), Ok(Framing::Empty)));
        for bad in [
            &["Content-Length: 5", "Transfer-Encoding: chunked"][..],
            &["Content-Length: 5", "Content-Length: 6"],
            &["Content-Length: -1"],
            &["Content-Length: +5"],
            &["Content-Length: 99999999999999999999"],
            &["Transfer-Encoding: gzip"],
        ] {
            assert!(body_framing(&headers(bad)).is_err(), "{:?}", bad);
        }
    }

    #[test]
    fn connection_close_rules() {
        let v11 = HTTPVersion(1, 1);
        let v10 = HTTPVersion(1, 0);
        assert!(!wants_close(&[], &v11));
        assert!(wants_close(&[], &v10));
        assert!(!wants_close(&headers(&["Connection: Keep-Alive"]), &v10));
        assert!(wants_close(
            &headers(&["Connection: keep-alive, close"]),
            &v11
        ));
    }
}
