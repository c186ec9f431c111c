use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use budget::Grant;

use crate::framing::{BodyFraming, Head};
use crate::mailbox::{Mailbox, Message, Token};
use crate::response::Response;
use crate::{HTTPVersion, Header, Method};

/// Which of the server's job queues a request waits in, with the turns of its streamed
/// body (as nginx's named thread pools): each worker serves one queue, so the application
/// can give one kind of work a fixed number of workers of its own, neither more (they may
/// each hold much memory) nor fewer (the rest cannot take them). The application's route
/// chooses with [`crate::Request::set_queue`]; `ServerOptions::queues` says how many there
/// are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Queue(pub usize);

impl Queue {
    /// Where requests go unless the route says otherwise.
    pub const FIRST: Queue = Queue(0);
}

/// Where a request's response goes: its connection's event loop, which writes it.
pub(crate) struct Responder {
    mailbox: Arc<Mailbox>,
    token: Token,
}

impl Responder {
    pub(crate) fn new(mailbox: Arc<Mailbox>, token: Token) -> Responder {
        Responder { mailbox, token }
    }
}

/// A request body as read, with the memory it holds.
#[derive(Default)]
pub(crate) struct Body {
    pub(crate) bytes: Vec<u8>,
    /// What the body holds of the server's memory budget (if there is one).
    pub(crate) memory: Option<Grant>,
    /// Larger than the limit, so not read.
    pub(crate) exceeds_limit: bool,
}

/// A request whose head and body have been received in full.
///
/// It must be answered with [`Request::respond`], which hands the response to the
/// connection's event loop and returns at once; a request dropped unanswered is answered
/// `500`. The connection reads no further request until then.
pub struct Request {
    head: Head,
    body: Body,
    remote_addr: Option<SocketAddr>,
    received_at: Instant,
    queue: Queue,
    extensions: http::Extensions,
    // `None` once answered.
    responder: Option<Responder>,
}

impl Request {
    pub(crate) fn new(
        head: Head,
        body: Body,
        remote_addr: Option<SocketAddr>,
        responder: Responder,
    ) -> Request {
        Request {
            head,
            body,
            remote_addr,
            received_at: Instant::now(),
            queue: Queue::FIRST,
            extensions: http::Extensions::new(),
            responder: Some(responder),
        }
    }

    #[inline]
    pub fn method(&self) -> &Method {
        &self.head.method
    }

    /// The request target as sent: path and query string.
    #[inline]
    pub fn url(&self) -> &str {
        &self.head.target
    }

    #[inline]
    pub fn headers(&self) -> &[Header] {
        &self.head.headers
    }

    /// The values of every header named `name` (compared case-insensitively), in order.
    pub fn header_values(&self, name: &'static str) -> impl Iterator<Item = &str> {
        self.head
            .headers
            .iter()
            .filter(move |h| h.field.equiv(name))
            .map(|h| h.value.as_str())
    }

    #[inline]
    pub fn http_version(&self) -> &HTTPVersion {
        &self.head.version
    }

    /// The `Content-Length` the client declared, if any.
    #[inline]
    pub fn body_length(&self) -> Option<u64> {
        match self.head.body {
            BodyFraming::Length(n) => Some(n),
            _ => None,
        }
    }

    #[inline]
    pub fn remote_addr(&self) -> Option<&SocketAddr> {
        self.remote_addr.as_ref()
    }

    /// The whole body. Empty when [`Request::body_exceeds_limit`] is set.
    #[inline]
    pub fn body(&self) -> &[u8] {
        &self.body.bytes
    }

    /// Takes the body out of the request, with the part of the memory budget it holds
    /// (`None` without a budget); the request keeps an empty body.
    pub fn take_body(&mut self) -> (Vec<u8>, Option<Grant>) {
        let body = std::mem::take(&mut self.body.bytes);
        (body, self.body.memory.take())
    }

    /// True when the body was larger than `ServerOptions::max_body_bytes`: it was not read
    /// (or only up to the limit, for a chunked body) and the connection closes after the
    /// response, which should be a `413`.
    #[inline]
    pub fn body_exceeds_limit(&self) -> bool {
        self.body.exceeds_limit
    }

    /// When the request had been received in full; the time since then is how long it
    /// waited for a worker.
    #[inline]
    pub fn received_at(&self) -> Instant {
        self.received_at
    }

    /// Which job queue the request waits in if the route hands it to the workers (the
    /// first, unless [`Request::set_queue`] chose another).
    #[inline]
    pub fn queue(&self) -> Queue {
        self.queue
    }

    /// For the route: queue the request (and its streamed body's turns) in `queue`. A
    /// queue the server does not have is answered `500`.
    #[inline]
    pub fn set_queue(&mut self, queue: Queue) {
        self.queue = queue;
    }

    /// What the application attached to the request for whichever thread answers it (as
    /// hyper's requests carry `http::Extensions`): what the event loop decided, read by
    /// the worker. Empty, and not allocated, until something is inserted.
    #[inline]
    pub fn extensions(&self) -> &http::Extensions {
        &self.extensions
    }

    #[inline]
    pub fn extensions_mut(&mut self) -> &mut http::Extensions {
        &mut self.extensions
    }

    /// Hands the response to the connection's event loop, which writes it.
    pub fn respond(mut self, response: Response) {
        self.send(response);
    }

    fn send(&mut self, response: Response) {
        if let Some(responder) = self.responder.take() {
            responder
                .mailbox
                .post(Message::Respond(responder.token, response));
        }
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> Result<(), fmt::Error> {
        write!(
            formatter,
            "Request({} {} from {:?})",
            self.head.method, self.head.target, self.remote_addr
        )
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if self.responder.is_some() {
            self.send(Response::json_error(500, "internal server error"));
        }
    }
}
