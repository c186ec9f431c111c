//! What a handler answers with, and how it reaches the client.

use tiny_http::{Grant, Header, Request, Response, StatusCode};

/// The server's own: bytes with the memory they hold until written, a static body, or a
/// stream (a whole collection: its first piece, made before the status is sent, and the
/// producer of the rest, which the server calls on a worker each time the connection has
/// written the previous piece).
pub use tiny_http::{Body, Piece};

pub const JSON: &str = "application/json";

pub struct Reply {
    pub status: u16,
    content_type: &'static str,
    body: Body,
    headers: Vec<(&'static str, String)>,
    /// Set only where a cache may keep the answer; everything else is live (the time, the
    /// collection as of now, a probe) and a cache must not store it.
    etag: Option<&'static str>,
}

impl Reply {
    pub fn new(status: u16, content_type: &'static str, body: Body) -> Reply {
        Reply {
            status,
            content_type,
            body,
            headers: Vec::new(),
            etag: None,
        }
    }

    /// Lets caches store the answer, asking the server each time whether `etag` is still
    /// current (`Cache-Control: no-cache`), which costs a `304` instead of the body.
    pub fn validated_by(mut self, etag: &'static str) -> Reply {
        self.etag = Some(etag);
        self
    }

    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply::new(status, JSON, Body::Bytes(body.into(), None))
    }

    /// A JSON body that keeps `memory` reserved until it has been sent.
    pub fn json_holding(status: u16, body: Vec<u8>, memory: Grant) -> Reply {
        Reply::new(status, JSON, Body::Bytes(body, Some(memory)))
    }

    pub fn json_value(status: u16, value: &serde_json::Value) -> Reply {
        Reply::json(status, value.to_string())
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    /// Answers `rq`: the connection's event loop writes the response (and calls a
    /// stream's producer for each further piece).
    pub fn send(self, rq: Request, request_id: &str) {
        let mut headers = Vec::with_capacity(self.headers.len() + 5);
        headers.push(header("Content-Type", self.content_type));
        headers.push(header("X-Content-Type-Options", "nosniff"));
        match self.etag {
            Some(etag) => {
                headers.push(header("Cache-Control", "no-cache"));
                headers.push(header("ETag", etag));
            }
            None => headers.push(header("Cache-Control", "no-store")),
        }
        headers.push(header("X-Request-Id", request_id));
        headers.extend(self.headers.iter().map(|(name, value)| header(name, value)));
        rq.respond(Response::new(StatusCode(self.status), headers, self.body));
    }
}

/// Builds a header from values this service produced (ASCII by construction).
fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .unwrap_or_else(|()| panic!("header {name} has a non-ASCII value"))
}
