//! What the application answers with, and how it becomes bytes on the wire.
//!
//! A body is never a blocking reader: the event loop that writes it must not wait. It is
//! bytes (with the memory they hold), a static slice, or a stream: a first piece, and a
//! producer the server calls on a worker thread for each further piece once the client
//! has taken the previous one, so that a slow reader holds its connection and one piece
//! of memory, never a thread.

use std::io;

use budget::Grant;

use crate::common::{HTTPVersion, Header, StatusCode};
use crate::framing;

/// One piece of a streamed body, with the memory it holds until it has been written.
pub struct Piece {
    pub bytes: Vec<u8>,
    pub memory: Option<Grant>,
}

/// The rest of a streamed body. `next_piece` runs on one of the application's worker
/// threads (inside [`crate::Server::recv`]), each time the connection has written the
/// previous piece.
pub trait Stream: Send {
    /// The next piece; `None` at the end. An error cuts the connection, so the client
    /// sees a truncated body, never a complete-looking one.
    fn next_piece(&mut self) -> io::Result<Option<Piece>>;
}

pub enum Body {
    Empty,
    /// Bytes, and the memory they hold until written.
    Bytes(Vec<u8>, Option<Grant>),
    Static(&'static [u8]),
    /// A body of unknown length: chunked for HTTP/1.1, delimited by closing for HTTP/1.0.
    Stream {
        first: Piece,
        rest: Box<dyn Stream>,
    },
}

impl Body {
    /// The length, when known before sending.
    pub fn length(&self) -> Option<usize> {
        match self {
            Body::Empty => Some(0),
            Body::Bytes(bytes, _) => Some(bytes.len()),
            Body::Static(bytes) => Some(bytes.len()),
            Body::Stream { .. } => None,
        }
    }
}

/// An HTTP response: a status, headers and a body.
pub struct Response {
    status_code: StatusCode,
    headers: Vec<Header>,
    body: Body,
}

fn header(field: &'static str, value: &str) -> Header {
    Header::from_bytes(field.as_bytes(), value.as_bytes()).expect("static header is ASCII")
}

impl Response {
    pub fn new(status_code: impl Into<StatusCode>, headers: Vec<Header>, body: Body) -> Response {
        let mut response = Response {
            status_code: status_code.into(),
            headers: Vec::with_capacity(headers.len() + 3),
            body,
        };
        for h in headers {
            response.add_header(h);
        }
        response
    }

    /// A `200` response with these bytes as its body.
    pub fn from_data(data: impl Into<Vec<u8>>) -> Response {
        Response::new(200, Vec::new(), Body::Bytes(data.into(), None))
    }

    /// A `200` response with this text as a `text/plain; charset=UTF-8` body.
    pub fn from_string(text: impl Into<String>) -> Response {
        Response::from_data(text.into().into_bytes())
            .with_header(header("Content-Type", "text/plain; charset=UTF-8"))
    }

    /// A response with this status and no body.
    pub fn empty(status_code: impl Into<StatusCode>) -> Response {
        Response::new(status_code, Vec::new(), Body::Empty)
    }

    /// A JSON error body `{"error": message}` with this status (`Retry-After: 1` on a
    /// `503`: a refusal for lack of room now). Never stored by a cache: it is about one
    /// request, and some of these statuses (414) caches may otherwise keep.
    pub fn json_error(status: u16, message: &str) -> Response {
        let mut body = String::from("{\"error\":\"");
        for c in message.chars() {
            match c {
                '"' => body.push_str("\\\""),
                '\\' => body.push_str("\\\\"),
                c if (c as u32) < 0x20 => body.push(' '),
                c => body.push(c),
            }
        }
        body.push_str("\"}");
        let response = Response::from_data(body)
            .with_status_code(status)
            .with_header(header("Content-Type", "application/json"))
            .with_header(header("Cache-Control", "no-store"));
        if status == 503 {
            response.with_header(header("Retry-After", "1"))
        } else {
            response
        }
    }

    /// Adds a header. Framing headers (`Connection`, `Content-Length`,
    /// `Transfer-Encoding`, `Trailer`, `Upgrade`) are the server's to set and are ignored;
    /// a second `Content-Type` replaces the first.
    pub fn add_header(&mut self, header: impl Into<Header>) {
        let header = header.into();
        if [
            "Connection",
            "Content-Length",
            "Trailer",
            "Transfer-Encoding",
            "Upgrade",
        ]
        .iter()
        .any(|name| header.field.equiv(name))
        {
            return;
        }
        if header.field.equiv("Content-Type") {
            if let Some(existing) = self
                .headers
                .iter_mut()
                .find(|h| h.field.equiv("Content-Type"))
            {
                existing.value = header.value;
                return;
            }
        }
        self.headers.push(header);
    }

    pub fn with_header(mut self, header: impl Into<Header>) -> Response {
        self.add_header(header);
        self
    }

    pub fn with_status_code(mut self, code: impl Into<StatusCode>) -> Response {
        self.status_code = code.into();
        self
    }

    pub fn status_code(&self) -> StatusCode {
        self.status_code
    }

    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// The body's length, when known before sending.
    pub fn data_length(&self) -> Option<usize> {
        self.body.length()
    }

    /// The bytes to send: the head, and the body as the connection writes it. `keep_alive`
    /// says whether the connection may serve another request afterwards; the result says
    /// whether it still may (a body of unknown length to an HTTP/1.0 client can only be
    /// ended by closing), and the head says `Connection: close` when it may not.
    pub(crate) fn into_wire(
        self,
        version: &HTTPVersion,
        head_only: bool,
        keep_alive: bool,
        date: &str,
    ) -> Wire {
        let status = self.status_code.0;
        let no_body_allowed = matches!(status, 100..=199 | 204 | 304);
        let length = self.body.length();
        let chunked = length.is_none() && *version >= (1, 1) && !no_body_allowed;
        let keep_alive = keep_alive && (length.is_some() || chunked || no_body_allowed);

        let mut head = Vec::with_capacity(160 + 40 * self.headers.len());
        head.extend_from_slice(b"HTTP/1.");
        head.push(if version.1 == 0 { b'0' } else { b'1' });
        head.push(b' ');
        head.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
        head.push(b' ');
        head.extend_from_slice(self.status_code.default_reason_phrase().as_bytes());
        head.extend_from_slice(b"\r\n");
        if !self.headers.iter().any(|h| h.field.equiv("Date")) {
            push_header(&mut head, "Date", date);
        }
        for h in &self.headers {
            push_header(&mut head, h.field.as_str().as_str(), h.value.as_str());
        }
        if !keep_alive {
            push_header(&mut head, "Connection", "close");
        } else if *version == (1, 0) {
            push_header(&mut head, "Connection", "keep-alive");
        }
        if chunked {
            push_header(&mut head, "Transfer-Encoding", "chunked");
        } else if let (Some(length), false) = (length, no_body_allowed) {
            push_header(
                &mut head,
                "Content-Length",
                itoa::Buffer::new().format(length),
            );
        }
        head.extend_from_slice(b"\r\n");

        let body = if head_only || no_body_allowed {
            WireBody::None
        } else {
            match self.body {
                Body::Empty => WireBody::None,
                Body::Bytes(bytes, memory) => WireBody::Bytes(bytes, memory),
                Body::Static(bytes) => WireBody::Static(bytes),
                Body::Stream { first, rest } => WireBody::Stream {
                    first,
                    rest,
                    chunked,
                },
            }
        };
        Wire {
            head,
            body,
            keep_alive,
        }
    }
}

fn push_header(head: &mut Vec<u8>, name: &str, value: &str) {
    head.extend_from_slice(name.as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(value.as_bytes());
    head.extend_from_slice(b"\r\n");
}

/// A response as the connection sends it.
pub(crate) struct Wire {
    pub(crate) head: Vec<u8>,
    pub(crate) body: WireBody,
    pub(crate) keep_alive: bool,
}

pub(crate) enum WireBody {
    None,
    Bytes(Vec<u8>, Option<Grant>),
    Static(&'static [u8]),
    Stream {
        first: Piece,
        rest: Box<dyn Stream>,
        chunked: bool,
    },
}

/// How a streamed piece is framed: inside a chunk for HTTP/1.1, as it is for HTTP/1.0.
pub(crate) fn frame_piece(piece: &Piece, chunked: bool) -> Option<(Vec<u8>, &'static [u8])> {
    (chunked && !piece.bytes.is_empty())
        .then(|| (framing::chunk_header(piece.bytes.len()), framing::CHUNK_END))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(wire: &Wire) -> String {
        let mut out = wire.head.clone();
        match &wire.body {
            WireBody::Bytes(b, _) => out.extend_from_slice(b),
            WireBody::Static(b) => out.extend_from_slice(b),
            WireBody::Stream { first, .. } => out.extend_from_slice(&first.bytes),
            WireBody::None => {}
        }
        String::from_utf8(out).unwrap()
    }

    struct Nothing;
    impl Stream for Nothing {
        fn next_piece(&mut self) -> io::Result<Option<Piece>> {
            Ok(None)
        }
    }

    fn stream() -> Response {
        let first = Piece {
            bytes: b"abc".to_vec(),
            memory: None,
        };
        Response::new(
            200,
            vec![],
            Body::Stream {
                first,
                rest: Box::new(Nothing),
            },
        )
    }

    #[test]
    fn unknown_length_is_chunked_for_http11() {
        let wire = stream().into_wire(&HTTPVersion(1, 1), false, true, "d");
        assert!(wire.keep_alive);
        let text = text(&wire);
        assert!(text.contains("Transfer-Encoding: chunked\r\n"), "{text}");
        assert!(matches!(wire.body, WireBody::Stream { chunked: true, .. }));
    }

    #[test]
    fn unknown_length_to_http10_streams_and_closes() {
        let wire = stream().into_wire(&HTTPVersion(1, 0), false, true, "d");
        assert!(!wire.keep_alive);
        let text = text(&wire);
        assert!(text.starts_with("HTTP/1.0 200 OK\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(!text.contains("Content-Length") && !text.contains("Transfer-Encoding"));
        assert!(text.ends_with("\r\n\r\nabc"));
    }

    #[test]
    fn closing_responses_say_so_and_lengths_are_the_servers() {
        let response = Response::from_string("hi").with_header(header("Content-Length", "99"));
        let wire = response.into_wire(
            &HTTPVersion(1, 1),
            false,
            false,
            "Tue, 01 Dec 2026 09:00:00 GMT",
        );
        let text = text(&wire);
        assert!(!wire.keep_alive);
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.contains("Content-Length: 2\r\n") && !text.contains("99"));
        assert!(text.contains("Date: Tue, 01 Dec 2026 09:00:00 GMT\r\n"));
    }

    #[test]
    fn head_answers_carry_the_headers_and_no_body() {
        let wire = Response::from_string("hello").into_wire(&HTTPVersion(1, 1), true, true, "d");
        assert!(text(&wire).contains("Content-Length: 5\r\n"));
        assert!(matches!(wire.body, WireBody::None));
        let wire = Response::empty(204).into_wire(&HTTPVersion(1, 1), false, true, "d");
        assert!(!text(&wire).contains("Content-Length"));
    }

    #[test]
    fn json_error_escapes_the_message() {
        let wire = Response::json_error(400, "bad \"x\"\n").into_wire(
            &HTTPVersion(1, 1),
            false,
            true,
            "d",
        );
        let text = text(&wire);
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(text.ends_with(r#"{"error":"bad \"x\" "}"#));
        assert!(text.contains("Cache-Control: no-store\r\n"));
        let busy =
            Response::json_error(503, "busy").into_wire(&HTTPVersion(1, 1), false, true, "d");
        assert!(super::tests::text(&busy).contains("Retry-After: 1\r\n"));
    }
}
