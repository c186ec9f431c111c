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

use std::io::{self, BufRead, Read, Write};

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

#[derive(Debug, Clone, Copy)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Done,
}

/// Decodes a chunked request body from `source`. Reads report [`io::ErrorKind::InvalidData`]
/// for a malformed body and [`io::ErrorKind::UnexpectedEof`] for one that ends early;
/// a short body is never returned as if complete.
pub struct ChunkedDecoder<R> {
    source: R,
    state: State,
}

impl<R: BufRead> ChunkedDecoder<R> {
    pub fn new(source: R) -> Self {
        ChunkedDecoder {
            source,
            state: State::Size,
        }
    }

    /// Whether the last chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }
}

fn invalid(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Reads one line, which must end in CRLF and hold no other CR or LF; returns it without
/// the CRLF.
fn read_line(source: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    source
        .take(MAX_CHUNK_LINE as u64 + 2)
        .read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Err(if line.len() > MAX_CHUNK_LINE {
            invalid("chunk line too long")
        } else {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "body ended inside a chunk line",
            )
        });
    }
    line.pop();
    if line.pop() != Some(b'\r') {
        return Err(invalid("chunk line not ended by CRLF"));
    }
    if line.contains(&b'\r') {
        return Err(invalid("CR inside a chunk line"));
    }
    Ok(line)
}

/// `chunk-size [ BWS ";" chunk-ext ]`: 1 to 15 hex digits (hyper's and httparse's bound),
/// optional SP/HTAB, then extensions, which are ignored but may not hold control
/// characters other than HTAB.
fn parse_size(line: &[u8]) -> io::Result<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return Err(invalid("invalid chunk size"));
    }
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()..];
    match rest.first() {
        None => {}
        Some(b';') if rest.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)) => {}
        Some(_) => return Err(invalid("invalid chunk size line")),
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| invalid("invalid chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| invalid("invalid chunk size"))
}

impl<R: BufRead> Read for ChunkedDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.state {
                State::Done => return Ok(0),
                State::Size => {
                    let size = parse_size(&read_line(&mut self.source)?)?;
                    if size == 0 {
                        self.skip_trailers()?;
                        self.state = State::Done;
                    } else {
                        self.state = State::Data(size);
                    }
                }
                State::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(0);
                    }
                    let want = buf.len().min(remaining.min(usize::MAX as u64) as usize);
                    let n = self.source.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "body ended inside a chunk",
                        ));
                    }
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(n);
                }
                State::DataEnd => {
                    if !read_line(&mut self.source)?.is_empty() {
                        return Err(invalid("chunk longer than its declared size"));
                    }
                    self.state = State::Size;
                }
            }
        }
    }
}

impl<R: BufRead> ChunkedDecoder<R> {
    /// Trailer fields are read and dropped; each must be a well-formed header line.
    fn skip_trailers(&mut self) -> io::Result<()> {
        for _ in 0..=MAX_TRAILERS {
            let mut line = read_line(&mut self.source)?;
            if line.is_empty() {
                return Ok(());
            }
            line.extend_from_slice(b"\r\n\r\n");
            let mut slot = [httparse::EMPTY_HEADER; 1];
            match httparse::parse_headers(&line, &mut slot) {
                Ok(httparse::Status::Complete(_)) => {}
                _ => return Err(invalid("malformed trailer field")),
            }
        }
        Err(invalid("too many trailer fields"))
    }
}

/// Copies `reader` to `writer` as chunks. If the reader fails, the error is returned
/// before the terminating chunk is written, so the client can tell a truncated body
/// from a complete one.
pub fn write_chunked(reader: &mut dyn Read, writer: &mut dyn Write) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        write_chunk(&buf[..n], writer)?;
    }
    writer.write_all(b"0\r\n\r\n")
}

/// Writes one non-empty chunk.
pub(crate) fn write_chunk(data: &[u8], writer: &mut dyn Write) -> io::Result<()> {
    write!(writer, "{:X}\r\n", data.len())?;
    writer.write_all(data)?;
    writer.write_all(b"\r\n")
}

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

    fn decode(input: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        ChunkedDecoder::new(input).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let body =
            decode(b"5;ext=1\r\nhello\r\n1 ; a=\"b\"\r\n!\r\n0\r\nX-Trailer: y\r\n\r\n").unwrap();
        assert_eq!(body, b"hello!");
    }

    #[test]
    fn premature_end_is_an_error_not_a_short_body() {
        let err = decode(b"5\r\nhel").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(decode(b"5\r\nhello\r\n").is_err());
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
            let err = decode(bad).unwrap_err();
            assert_eq!(
                err.kind(),
                io::ErrorKind::InvalidData,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"1".repeat(2000), b"\r\n".to_vec()].concat();
        assert_eq!(
            decode(&long).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn encoder_round_trips_and_stops_without_terminator_on_error() {
        let mut out = Vec::new();
        write_chunked(&mut &b"hello world"[..], &mut out).unwrap();
        assert_eq!(decode(&out).unwrap(), b"hello world");

        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("source failed"))
            }
        }
        let mut out = Vec::new();
        assert!(write_chunked(&mut Failing, &mut out).is_err());
        assert!(!out.ends_with(b"0\r\n\r\n"));
    }
}
