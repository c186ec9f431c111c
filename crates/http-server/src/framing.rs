//! HTTP/1.1 request framing, without sockets: bytes in, a parsed head or a refusal out,
//! and the chunked body decoder. Everything that decides where one request ends and the
//! next begins lives here, so it can be unit-tested and fuzzed on its own.
//!
//! Strict the way hyper and nginx are, because two parties that frame the same bytes
//! differently is how requests get smuggled: heads are parsed by `httparse` (hyper's
//! parser), which refuses obs-fold, whitespace or control characters in names, empty
//! names and control characters other than HTAB in values; on top of it, the framing
//! rules of RFC 9112 are applied (§6: `Transfer-Encoding` only `chunked` and never with
//! `Content-Length`, never on HTTP/1.0; §3.2: exactly one `Host` on HTTP/1.1; §7.1:
//! chunk lines end in CRLF).

use crate::common::{HTTPVersion, Header, Method};

/// Most header fields in one request (`431` beyond).
pub const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (size plus extensions) or trailer line accepted.
const MAX_CHUNK_LINE: usize = 1024;
/// Most trailer fields accepted after the last chunk.
const MAX_TRAILERS: usize = 32;

/// A request that cannot be served: answer with this status and message, then close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: &'static str,
}

const fn refuse(status: u16, message: &'static str) -> Refusal {
    Refusal { status, message }
}

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    Empty,
    Length(u64),
    Chunked,
}

/// A request head that passed every framing rule.
#[derive(Debug)]
pub struct Head {
    pub method: Method,
    /// The request target as sent: path and query string.
    pub target: String,
    pub version: HTTPVersion,
    pub headers: Vec<Header>,
    pub body: BodyFraming,
    /// The client asked for the connection to end after this request.
    pub close: bool,
    /// `Expect: 100-continue`.
    pub expects_continue: bool,
}

/// Parses the head at the start of `input`. `Ok(None)`: not complete yet, read more (the
/// caller stops at `max_head_bytes`, see [`head_too_large`]). `Ok(Some((head, n)))`: the
/// head is the first `n` bytes; what follows is the body, then the next request.
pub fn parse_head(input: &[u8]) -> Result<Option<(Head, usize)>, Refusal> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut slots);
    let length = match request.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refuse(431, "too many request headers"))
        }
        Err(httparse::Error::Version) if names_newer_http(input) => {
            return Err(refuse(505, "only HTTP/1.0 and HTTP/1.1 are supported"))
        }
        Err(httparse::Error::HeaderName | httparse::Error::HeaderValue) => {
            return Err(refuse(400, "malformed request header"))
        }
        Err(_) => return Err(refuse(400, "malformed request line")),
    };
    let (Some(method), Some(target), Some(minor)) = (request.method, request.path, request.version)
    else {
        return Err(refuse(400, "malformed request line"));
    };
    let method: Method = method
        .parse()
        .map_err(|()| refuse(400, "malformed request line"))?;
    if target.is_empty() || !target.is_ascii() {
        return Err(refuse(400, "malformed request line"));
    }
    let version = HTTPVersion(1, minor);
    let headers = request
        .headers
        .iter()
        .map(|h| {
            Header::from_bytes(h.name.as_bytes(), h.value)
                .map_err(|()| refuse(400, "request header values must be ASCII"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let head = Head {
        close: wants_close(&headers, &version),
        body: body_framing(&headers, &version)?,
        expects_continue: expects_continue(&headers)?,
        method,
        target: target.to_owned(),
        version,
        headers,
    };
    check_host(&head)?;
    Ok(Some((head, length)))
}

/// The refusal for a head still incomplete after `max_head_bytes`: `414` while the
/// request line itself has not ended, else `431`.
pub fn head_too_large(input: &[u8]) -> Refusal {
    let request_line = input
        .iter()
        .skip_while(|&&b| b == b'\r' || b == b'\n')
        .any(|&b| b == b'\n');
    if request_line {
        refuse(431, "request headers too large")
    } else {
        refuse(414, "request line too long")
    }
}

/// Whether a head that `httparse` refused for its version names a later HTTP (`505`)
/// rather than being garbage (`400`).
fn names_newer_http(input: &[u8]) -> bool {
    let line = input
        .split(|&b| b == b'\n')
        .find(|l| !l.is_empty() && *l != b"\r")
        .unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    match version.strip_prefix(b"HTTP/") {
        Some([major, rest @ ..]) => {
            major.is_ascii_digit()
                && *major >= b'2'
                && (rest.is_empty() || matches!(rest, [b'.', minor] if minor.is_ascii_digit()))
        }
        _ => false,
    }
}

fn values<'a>(headers: &'a [Header], name: &'static str) -> impl Iterator<Item = &'a str> {
    headers
        .iter()
        .filter(move |h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

/// How the body is delimited. Ambiguous framing is refused rather than guessed.
fn body_framing(headers: &[Header], version: &HTTPVersion) -> Result<BodyFraming, Refusal> {
    let encodings: Vec<&str> = values(headers, "Transfer-Encoding").collect();
    let lengths: Vec<&str> = values(headers, "Content-Length").collect();
    if !encodings.is_empty() {
        if !lengths.is_empty() {
            return Err(refuse(
                400,
                "Content-Length and Transfer-Encoding must not both be sent",
            ));
        }
        if *version < (1, 1) {
            return Err(refuse(400, "Transfer-Encoding is not allowed in HTTP/1.0"));
        }
        // httparse has already trimmed SP and HTAB around the value and refused any
        // other control character, so this is the token `chunked` and nothing else.
        if encodings.len() != 1 || !encodings[0].eq_ignore_ascii_case("chunked") {
            return Err(refuse(501, "only Transfer-Encoding: chunked is supported"));
        }
        return Ok(BodyFraming::Chunked);
    }
    let Some(first) = lengths.first() else {
        return Ok(BodyFraming::Empty);
    };
    let valid = |v: &str| !v.is_empty() && v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit());
    if !lengths.iter().all(|v| v == first) || !valid(first) {
        return Err(refuse(400, "invalid Content-Length"));
    }
    first
        .parse()
        .map(BodyFraming::Length)
        .map_err(|_| refuse(400, "invalid Content-Length"))
}

fn expects_continue(headers: &[Header]) -> Result<bool, Refusal> {
    let mut expects = values(headers, "Expect");
    match (expects.next(), expects.next()) {
        (None, _) => Ok(false),
        (Some(v), None) if v.eq_ignore_ascii_case("100-continue") => Ok(true),
        _ => Err(refuse(417, "only Expect: 100-continue is supported")),
    }
}

/// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one `Host`.
fn check_host(head: &Head) -> Result<(), Refusal> {
    let hosts = values(&head.headers, "Host").count();
    match hosts {
        0 if head.version >= (1, 1) => Err(refuse(400, "HTTP/1.1 requests must send Host")),
        0 | 1 => Ok(()),
        _ => Err(refuse(400, "more than one Host header")),
    }
}

/// Whether the client asked for the connection to end after this request.
fn wants_close(headers: &[Header], version: &HTTPVersion) -> bool {
    let mut close = false;
    let mut keep_alive = false;
    for token in values(headers, "Connection").flat_map(|v| v.split(',')) {
        let token = token.trim();
        close |= token.eq_ignore_ascii_case("close") || token.eq_ignore_ascii_case("upgrade");
        keep_alive |= token.eq_ignore_ascii_case("keep-alive");
    }
    close || (*version == (1, 0) && !keep_alive)
}

/// Why a chunked body cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

#[derive(Debug, Clone, Copy)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailers(usize),
    Done,
}

/// Decodes a chunked request body from bytes as they arrive, in pieces of any size: what
/// it was given is decoded or kept (a partial line, at most [`MAX_CHUNK_LINE`] bytes), so
/// the caller never needs to hold back input. A malformed body is an error; a body that
/// stops early is simply not done, never a short body taken for complete.
pub struct ChunkedDecoder {
    state: State,
    /// A chunk-size or trailer line, or the CRLF after data, not yet ended.
    line: Vec<u8>,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::new()
    }
}

/// What one call to [`ChunkedDecoder::decode`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Input bytes used; the rest (after the end of the body) belongs to the next request.
    pub consumed: usize,
    /// The last chunk and the trailers have been read.
    pub done: bool,
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size,
            line: Vec::new(),
        }
    }

    /// Whether the last chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Decodes from `input`, appending body bytes to `out` but never more than `room` of
    /// them (the caller's memory allowance; it asks again with more room), and returns how
    /// much input it used and whether the body is complete.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        mut room: usize,
    ) -> Result<Decoded, Malformed> {
        let mut at = 0;
        loop {
            match self.state {
                State::Done => break,
                State::Data(remaining) => {
                    let n = (input.len() - at)
                        .min(room)
                        .min(remaining.min(usize::MAX as u64) as usize);
                    if n == 0 {
                        break;
                    }
                    out.extend_from_slice(&input[at..at + n]);
                    at += n;
                    room -= n;
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                }
                State::Size | State::DataEnd | State::Trailers(_) => {
                    let Some(line) = self.take_line(input, &mut at)? else {
                        break;
                    };
                    self.state = match self.state {
                        State::Size => match parse_size(&line)? {
                            0 => State::Trailers(0),
                            size => State::Data(size),
                        },
                        State::DataEnd if line.is_empty() => State::Size,
                        State::DataEnd => {
                            return Err(Malformed("chunk longer than its declared size"))
                        }
                        State::Trailers(_) if line.is_empty() => State::Done,
                        State::Trailers(count) => {
                            check_trailer(line)?;
                            if count == MAX_TRAILERS {
                                return Err(Malformed("too many trailer fields"));
                            }
                            State::Trailers(count + 1)
                        }
                        State::Data(_) | State::Done => unreachable!("not a line state"),
                    };
                }
            }
        }
        Ok(Decoded {
            consumed: at,
            done: self.is_done(),
        })
    }

    /// The next whole line (without its CRLF), taking input from `at`; `None` while it has
    /// not ended (what arrived is kept).
    fn take_line(&mut self, input: &[u8], at: &mut usize) -> Result<Option<Vec<u8>>, Malformed> {
        let rest = &input[*at..];
        let end = rest.iter().position(|&b| b == b'\n');
        let piece = &rest[..end.map_or(rest.len(), |e| e + 1)];
        if self.line.len() + piece.len() > MAX_CHUNK_LINE + 2 {
            return Err(Malformed("chunk line too long"));
        }
        self.line.extend_from_slice(piece);
        *at += piece.len();
        if end.is_none() {
            return Ok(None);
        }
        let mut line = std::mem::take(&mut self.line);
        line.pop();
        if line.pop() != Some(b'\r') {
            return Err(Malformed("chunk line not ended by CRLF"));
        }
        if line.contains(&b'\r') {
            return Err(Malformed("CR inside a chunk line"));
        }
        Ok(Some(line))
    }
}

/// `chunk-size [ BWS ";" chunk-ext ]`: 1 to 15 hex digits (hyper's and httparse's bound),
/// optional SP/HTAB, then extensions, which are ignored but may not hold control
/// characters other than HTAB.
fn parse_size(line: &[u8]) -> Result<u64, Malformed> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return Err(Malformed("invalid chunk size"));
    }
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()..];
    match rest.first() {
        None => {}
        Some(b';') if rest.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)) => {}
        Some(_) => return Err(Malformed("invalid chunk size line")),
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| Malformed("invalid chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| Malformed("invalid chunk size"))
}

/// A trailer field is read and dropped; it must be a well-formed header line.
fn check_trailer(mut line: Vec<u8>) -> Result<(), Malformed> {
    line.extend_from_slice(b"\r\n\r\n");
    let mut slot = [httparse::EMPTY_HEADER; 1];
    match httparse::parse_headers(&line, &mut slot) {
        Ok(httparse::Status::Complete(_)) => Ok(()),
        _ => Err(Malformed("malformed trailer field")),
    }
}

/// The line that starts a chunk of `length` bytes (the CRLF after its data is
/// [`CHUNK_END`]).
pub fn chunk_header(length: usize) -> Vec<u8> {
    format!("{length:X}\r\n").into_bytes()
}

/// What follows a chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";
/// The last chunk, with no trailers: the body is complete.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Head, Refusal> {
        let bytes = text.as_bytes();
        let (head, length) = parse_head(bytes)?.expect("a complete head");
        assert_eq!(length, bytes.len(), "the head is the whole input");
        Ok(head)
    }

    fn status(text: &str) -> u16 {
        match head(text) {
            Ok(_) => 200,
            Err(refusal) => refusal.status,
        }
    }

    #[test]
    fn parses_a_plain_request() {
        let h = head("POST /data?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert_eq!(h.method, Method::Post);
        assert_eq!(h.target, "/data?x=1");
        assert_eq!(h.version, HTTPVersion(1, 1));
        assert_eq!(h.body, BodyFraming::Length(5));
        assert!(!h.close && !h.expects_continue);
        assert_eq!(h.headers.len(), 2);
    }

    #[test]
    fn an_incomplete_head_asks_for_more_and_the_rest_is_left() {
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost: a\r\n")
            .unwrap()
            .is_none());
        let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next";
        let (_, length) = parse_head(input).unwrap().unwrap();
        assert_eq!(&input[length..], b"GET /next");
    }

    #[test]
    fn obs_fold_whitespace_and_control_characters_are_refused() {
        for bad in [
            // obs-fold: a line starting with SP, HTAB, VT or FF
            "POST / HTTP/1.1\r\nHost: a\r\nX: y\r\n Content-Length: 31\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nX: y\r\n\tContent-Length: 31\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nX: y\r\n\x0bContent-Length: 31\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nX: y\r\n\x0cContent-Length: 31\r\n\r\n",
            // whitespace or controls in names, empty names
            "GET / HTTP/1.1\r\nHost: a\r\nX Y: z\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX : z\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX\x01: v\r\n\r\n",
            // CR, NUL or other controls inside values
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0cchunked\r\n\r\n",
        ] {
            assert_eq!(status(bad), 400, "{bad:?}");
        }
        // HTAB inside a value is fine, and surrounding SP/HTAB is not part of it.
        let h = head("GET / HTTP/1.1\r\nHost: a\r\nX: \ta\tb \r\n\r\n").unwrap();
        assert_eq!(h.headers[1].value.as_str(), "a\tb");
    }

    #[test]
    fn transfer_encoding_must_be_exactly_chunked() {
        let ok = head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \t Chunked \r\n\r\n");
        assert_eq!(ok.unwrap().body, BodyFraming::Chunked);
        for (bad, expected) in [
            ("Transfer-Encoding: gzip, chunked", 501),
            ("Transfer-Encoding: chunked, chunked", 501),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
                501,
            ),
            ("Transfer-Encoding: xchunked", 501),
            ("Transfer-Encoding: chunked\r\nContent-Length: 3", 400),
        ] {
            let text = format!("POST / HTTP/1.1\r\nHost: a\r\n{bad}\r\n\r\n");
            assert_eq!(status(&text), expected, "{bad:?}");
        }
        assert_eq!(
            status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
    }

    #[test]
    fn content_length_must_be_one_unambiguous_number() {
        for bad in ["-1", "+5", "5 5", "0x5", "99999999999999999999", ""] {
            let text = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(status(&text), 400, "{bad:?}");
        }
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            400
        );
        let same =
            head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(same.unwrap().body, BodyFraming::Length(5));
    }

    #[test]
    fn http11_needs_exactly_one_host() {
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.0\r\n\r\n"), 200);
        assert_eq!(status("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
    }

    #[test]
    fn request_lines_and_versions() {
        assert_eq!(status("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("qsd qsd qsd\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
        assert_eq!(status("GET / HTTP/3\r\nHost: a\r\n\r\n"), 505);
        assert_eq!(status("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("GET / FTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("GET /\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    }

    #[test]
    fn expect_and_connection() {
        let h = head("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n\r\n").unwrap();
        assert!(h.expects_continue);
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: a\r\nExpect: later\r\n\r\n"),
            417
        );
        assert!(head("GET / HTTP/1.0\r\n\r\n").unwrap().close);
        assert!(
            !head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .unwrap()
                .close
        );
        assert!(
            head("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n")
                .unwrap()
                .close
        );
        assert!(!head("GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().close);
    }

    #[test]
    fn too_many_headers_and_oversized_heads() {
        let many = "X: y\r\n".repeat(MAX_HEADERS + 1);
        assert_eq!(
            status(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")),
            431
        );
        assert_eq!(head_too_large(b"GET /aaaaaaaa").status, 414);
        assert_eq!(head_too_large(b"GET / HTTP/1.1\r\nX: aaaa").status, 431);
    }

    /// Decodes `input` whole, and again fed one byte at a time: both must agree.
    fn decode(input: &[u8]) -> Result<Vec<u8>, Malformed> {
        let mut whole = ChunkedDecoder::new();
        let mut out = Vec::new();
        let decoded = whole.decode(input, &mut out, usize::MAX);
        let mut bytewise = ChunkedDecoder::new();
        let mut out_bytewise = Vec::new();
        let mut result = Ok(());
        for byte in input {
            if let Err(e) =
                bytewise.decode(std::slice::from_ref(byte), &mut out_bytewise, usize::MAX)
            {
                result = Err(e);
                break;
            }
        }
        match decoded {
            Err(e) => {
                assert_eq!(result, Err(e), "fed bytewise");
                Err(e)
            }
            Ok(d) if !d.done => {
                assert!(result.is_ok() && !bytewise.is_done());
                Err(Malformed("incomplete"))
            }
            Ok(d) => {
                assert_eq!(d.consumed, input.len());
                assert!(bytewise.is_done());
                assert_eq!(out, out_bytewise);
                Ok(out)
            }
        }
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let body =
            decode(b"5;ext=1\r\nhello\r\n1 ; a=\"b\"\r\n!\r\n0\r\nX-Trailer: y\r\n\r\n").unwrap();
        assert_eq!(body, b"hello!");
    }

    #[test]
    fn a_body_that_stops_early_is_not_done_and_what_follows_is_left() {
        assert_eq!(decode(b"5\r\nhel"), Err(Malformed("incomplete")));
        assert_eq!(decode(b"5\r\nhello\r\n"), Err(Malformed("incomplete")));
        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        let input = b"2\r\nab\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let d = decoder.decode(input, &mut out, usize::MAX).unwrap();
        assert!(d.done);
        assert_eq!(&input[d.consumed..], b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn room_bounds_what_is_decoded_and_the_rest_comes_later() {
        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        let input = b"6\r\nabcdef\r\n0\r\n\r\n";
        let d = decoder.decode(input, &mut out, 4).unwrap();
        assert_eq!((out.as_slice(), d.done), (&b"abcd"[..], false));
        let d2 = decoder.decode(&input[d.consumed..], &mut out, 4).unwrap();
        assert!(d2.done);
        assert_eq!(out, b"abcdef");
    }

    #[test]
    fn chunk_lines_end_in_crlf_and_sizes_are_hex_digits() {
        for bad in [
            &b"2;\nxx\r\n0\r\n\r\n"[..],
            b"2\nxx\r\n0\r\n\r\n",
            b"2\r\nxx\n0\r\n\r\n",
            b"2\r\nxx\r\n0\r\n\n",
            b"2\r\r\nxx\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b";x\r\n\r\n",
            b"zz\r\n",
            b"5\r\nhelloEXTRA\r\n0\r\n\r\n",
            b"1234567890abcdef\r\n",
            b"2;a\x01b\r\nxx\r\n0\r\n\r\n",
            b"0\r\nbad trailer\r\n\r\n",
        ] {
            let result = decode(bad);
            assert!(
                matches!(result, Err(e) if e != Malformed("incomplete")),
                "{:?}: {result:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"1".repeat(2000), b"\r\n".to_vec()].concat();
        assert_eq!(decode(&long), Err(Malformed("chunk line too long")));
        let trailers = format!("0\r\n{}\r\n", "X: y\r\n".repeat(MAX_TRAILERS + 1));
        assert_eq!(
            decode(trailers.as_bytes()),
            Err(Malformed("too many trailer fields"))
        );
    }

    #[test]
    fn framing_helpers_make_what_the_decoder_reads() {
        let mut wire = chunk_header(11);
        wire.extend_from_slice(b"hello world");
        wire.extend_from_slice(CHUNK_END);
        wire.extend_from_slice(LAST_CHUNK);
        assert_eq!(decode(&wire).unwrap(), b"hello world");
    }
}
