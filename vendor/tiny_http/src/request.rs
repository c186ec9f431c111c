use std::fmt;
use std::io::{self, ErrorKind, Read};
use std::net::SocketAddr;
use std::sync::mpsc::Sender;
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use crate::client::{ConnectionControl, Writer};
use crate::{HTTPVersion, Header, Method, Response};

/// A request whose head and body have been received in full.
///
/// It must be answered with [`Request::respond`]; a request dropped unanswered is
/// answered `500`. The connection it came from reads no further request until then.
pub struct Request {
    body: Vec<u8>,
    body_exceeds_limit: bool,
    // `None` once answered.
    writer: Option<Writer>,
    control: Arc<ConnectionControl>,
    remote_addr: Option<SocketAddr>,
    method: Method,
    path: String,
    http_version: HTTPVersion,
    headers: Vec<Header>,
    body_length: Option<usize>,
    received_at: Instant,
    notify_when_responded: Option<Sender<()>>,
}

/// The parts of a request the connection thread has read.
pub(crate) struct RequestHead {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) http_version: HTTPVersion,
    pub(crate) headers: Vec<Header>,
    pub(crate) body_length: Option<usize>,
}

impl Request {
    pub(crate) fn new(
        head: RequestHead,
        body: Vec<u8>,
        body_exceeds_limit: bool,
        remote_addr: Option<SocketAddr>,
        writer: Writer,
        control: Arc<ConnectionControl>,
        notify_when_responded: Sender<()>,
    ) -> Request {
        Request {
            body,
            body_exceeds_limit,
            writer: Some(writer),
            control,
            remote_addr,
            method: head.method,
            path: head.path,
            http_version: head.http_version,
            headers: head.headers,
            body_length: head.body_length,
            received_at: Instant::now(),
            notify_when_responded: Some(notify_when_responded),
        }
    }

    #[inline]
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The request target as sent: path and query string.
    #[inline]
    pub fn url(&self) -> &str {
        &self.path
    }

    #[inline]
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    #[inline]
    pub fn http_version(&self) -> &HTTPVersion {
        &self.http_version
    }

    /// The `Content-Length` the client declared, if any.
    #[inline]
    pub fn body_length(&self) -> Option<usize> {
        self.body_length
    }

    #[inline]
    pub fn remote_addr(&self) -> Option<&SocketAddr> {
        self.remote_addr.as_ref()
    }

    /// The whole body. Empty when [`Request::body_exceeds_limit`] is set.
    #[inline]
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// True when the body was larger than `ServerOptions::max_body_bytes`: it was not read
    /// (or only up to the limit, for a chunked body) and the connection closes after the
    /// response, which should be a `413`.
    #[inline]
    pub fn body_exceeds_limit(&self) -> bool {
        self.body_exceeds_limit
    }

    /// When the request had been received in full and was queued; the time since then is
    /// how long it waited for a worker.
    #[inline]
    pub fn received_at(&self) -> Instant {
        self.received_at
    }

    /// Sends the response. Errors from a client that went away are not reported.
    pub fn respond<R>(mut self, response: Response<R>) -> io::Result<()>
    where
        R: Read,
    {
        let res = self.respond_impl(response);
        self.notify_responded();
        res
    }

    fn respond_impl<R>(&mut self, response: Response<R>) -> io::Result<()>
    where
        R: Read,
    {
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        let mut writer = writer.lock().unwrap_or_else(PoisonError::into_inner);
        let timeout = self.control.shared.options.response_timeout;
        writer.get_mut().set_deadline(Instant::now() + timeout);

        let head_only = self.method == Method::Head;
        let result = response
            .raw_print(
                &mut *writer,
                &self.http_version,
                head_only,
                self.control.keep_alive(),
            )
            .and_then(|keep_alive| {
                io::Write::flush(&mut *writer)?;
                Ok(keep_alive)
            });

        match result {
            Ok(true) => Ok(()),
            Ok(false) => {
                // The connection thread may be waiting for a next request; the client
                // must see the end of this response now (for a body delimited by the
                // close, it is the end of the body).
                self.control.close_after_response();
                writer.get_ref().shutdown(std::net::Shutdown::Write);
                Ok(())
            }
            Err(err) => {
                // Part of the response may be on the wire: only closing the connection
                // tells the client it is incomplete.
                self.control.abort();
                match err.kind() {
                    ErrorKind::BrokenPipe
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::ConnectionRefused
                    | ErrorKind::ConnectionReset => Ok(()),
                    _ => Err(err),
                }
            }
        }
    }

    /// Drops the request without answering it (the connection is closing).
    pub(crate) fn discard(mut self) {
        self.writer = None;
    }

    fn notify_responded(&mut self) {
        if let Some(sender) = self.notify_when_responded.take() {
            let _ = sender.send(());
        }
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> Result<(), fmt::Error> {
        write!(
            formatter,
            "Request({} {} from {:?})",
            self.method, self.path, self.remote_addr
        )
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let response = Response::json_error(500, "internal server error");
            let _ = self.respond_impl(response);
        }
        self.notify_responded();
    }
}
