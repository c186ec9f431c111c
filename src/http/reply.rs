//! What a handler answers with, and how it reaches the client.

use std::io::{self, Cursor, Read};

use tiny_http::{BodyWriter, Grant, Header, Request, Response, StatusCode};

pub const JSON: &str = "application/json";

/// One piece of a streamed body, with the memory it holds until it has been sent.
pub struct Piece {
    pub bytes: Vec<u8>,
    pub memory: Grant,
    /// Nothing follows.
    pub last: bool,
}

/// A body produced piece by piece by the worker while the connection sends it.
pub trait Chunks {
    fn next_chunk(&mut self) -> io::Result<Piece>;
}

pub enum Body {
    Bytes(Vec<u8>),
    Static(&'static [u8]),
    /// A body of unknown length (sent chunked), e.g. a whole collection: its first piece,
    /// made before the status is sent, and the rest.
    Stream {
        first: Piece,
        rest: Box<dyn Chunks>,
    },
}

pub struct Reply {
    pub status: u16,
    content_type: String,
    body: Body,
    headers: Vec<(&'static str, String)>,
    /// Memory the body holds until it has been sent.
    memory: Option<Grant>,
}

/// About the size of each piece of a streamed body.
pub const STREAM_CHUNK: usize = 64 * 1024;

impl Reply {
    pub fn new(status: u16, content_type: impl Into<String>, body: Body) -> Reply {
        Reply {
            status,
            content_type: content_type.into(),
            body,
            headers: Vec::new(),
            memory: None,
        }
    }

    /// Keeps `memory` reserved until the body has been sent.
    pub fn holding(mut self, memory: Grant) -> Reply {
        self.memory = Some(memory);
        self
    }

    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply::new(status, JSON, Body::Bytes(body.into()))
    }

    pub fn json_value(status: u16, value: &serde_json::Value) -> Reply {
        Reply::json(status, value.to_string())
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    /// Answers `rq`. The connection's thread writes the response; a streamed body is
    /// produced here, piece by piece, as the connection takes the pieces.
    pub fn send(self, rq: Request, request_id: &str) -> io::Result<()> {
        let mut headers = Vec::with_capacity(self.headers.len() + 3);
        headers.push(header("Content-Type", &self.content_type));
        headers.push(header("X-Content-Type-Options", "nosniff"));
        headers.push(header("X-Request-Id", request_id));
        headers.extend(self.headers.iter().map(|(name, value)| header(name, value)));
        let status = StatusCode(self.status);
        match self.body {
            Body::Bytes(bytes) => {
                let length = bytes.len();
                let body = Holding {
                    body: Cursor::new(bytes),
                    _memory: self.memory,
                };
                rq.respond(Response::new(status, headers, body, Some(length)));
                Ok(())
            }
            Body::Static(bytes) => {
                rq.respond(Response::new(status, headers, bytes, Some(bytes.len())));
                Ok(())
            }
            Body::Stream { first, rest } => {
                let (writer, reader) = rq.body_pipe();
                rq.respond(Response::new(status, headers, reader, None));
                pump(first, rest, writer)
            }
        }
    }
}

/// Feeds a streamed body to its connection until it ends; on an error the writer is
/// dropped unfinished, which cuts the connection.
fn pump(first: Piece, mut rest: Box<dyn Chunks>, mut writer: BodyWriter) -> io::Result<()> {
    let mut piece = first;
    loop {
        let last = piece.last;
        writer.send(piece.bytes, Some(piece.memory))?;
        if last {
            return writer.finish();
        }
        piece = rest.next_chunk()?;
    }
}

/// A body that keeps its memory reserved until the connection has sent it.
struct Holding<R> {
    body: R,
    _memory: Option<Grant>,
}

impl<R: Read> Read for Holding<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.body.read(out)
    }
}

/// Builds a header from values this service produced (ASCII by construction).
fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .unwrap_or_else(|()| panic!("header {name} has a non-ASCII value"))
}
