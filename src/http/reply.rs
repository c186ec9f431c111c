//! What a handler answers with, before it becomes a tiny_http response.

use std::io::{Cursor, Read};

use tiny_http::{Header, Response, ResponseBox, StatusCode};

pub const JSON: &str = "application/json";

pub enum Body {
    Bytes(Vec<u8>),
    Static(&'static [u8]),
    /// A body produced while it is sent (chunked), e.g. a whole collection.
    Stream(Box<dyn Read + Send>),
}

pub struct Reply {
    pub status: u16,
    content_type: String,
    body: Body,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn new(status: u16, content_type: impl Into<String>, body: Body) -> Reply {
        Reply {
            status,
            content_type: content_type.into(),
            body,
            headers: Vec::new(),
        }
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

    pub fn into_response(self, request_id: &str) -> ResponseBox {
        let (reader, length): (Box<dyn Read + Send>, Option<usize>) = match self.body {
            Body::Bytes(bytes) => {
                let len = bytes.len();
                (Box::new(Cursor::new(bytes)), Some(len))
            }
            Body::Static(bytes) => (Box::new(bytes), Some(bytes.len())),
            Body::Stream(reader) => (reader, None),
        };
        let mut headers = Vec::with_capacity(self.headers.len() + 3);
        headers.push(header("Content-Type", &self.content_type));
        headers.push(header("X-Content-Type-Options", "nosniff"));
        headers.push(header("X-Request-Id", request_id));
        headers.extend(self.headers.iter().map(|(name, value)| header(name, value)));
        Response::new(StatusCode(self.status), headers, reader, length)
    }
}

/// Builds a header from values this service produced (ASCII by construction).
fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .unwrap_or_else(|()| panic!("header {name} has a non-ASCII value"))
}
