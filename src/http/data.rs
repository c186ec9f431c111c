//! `GET /data` and `POST /data`.

use std::io;
use std::sync::Arc;

use mongodb::bson::Bson;
use tiny_http::{Grant, Request};

use super::reply::{Chunks, STREAM_CHUNK};
use super::{ApiError, Body, Handler, Reply};
use crate::json;
use crate::metrics::Metrics;
use crate::paging;
use crate::store::{DocumentStream, ListQuery, StoreError};

/// A page stops growing once its JSON passes this size, even short of `limit`.
const PAGE_MAX_BYTES: usize = 4 * 1024 * 1024;

const INSERTED: &[u8] = br#"{"status":"Data inserted"}"#;

impl Handler {
    /// `POST /data`: stores one JSON object as a document.
    pub(super) fn insert_document(&self, rq: &Request) -> Result<Reply, ApiError> {
        if rq.body_exceeds_limit() {
            return Err(ApiError::PayloadTooLarge {
                limit: self.limits.max_body_bytes,
            });
        }
        check_content_type(rq)?;
        let document =
            json::parse_document(rq.body()).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        self.store
            .insert(document)
            .map_err(|e| self.store_error(e))?;
        Ok(Reply::json(201, INSERTED))
    }

    /// `GET /data`: every document, or one page of them, without `_id`, in `_id` order.
    pub(super) fn list_documents(&self, query: &str) -> Result<Reply, ApiError> {
        let params = paging::Params::parse(query, self.limits.page_limit_max)
            .map_err(ApiError::BadRequest)?;
        match params.limit {
            None => {
                let slot = self
                    .limits
                    .listings
                    .acquire(1, self.limits.queue_timeout)
                    .ok_or(ApiError::Overloaded)?;
                let documents = self
                    .store
                    .list(&ListQuery {
                        after: params.after,
                        limit: None,
                        with_id: false,
                    })
                    .map_err(|e| self.store_error(e))?;
                let stream = JsonArrayStream::new(documents, self.metrics.clone(), slot);
                Ok(Reply::new(
                    200,
                    super::reply::JSON,
                    Body::Stream(Box::new(stream)),
                ))
            }
            Some(limit) => self.page(params.after, limit),
        }
    }

    /// One page, built in memory (bounded by `limit` and `PAGE_MAX_BYTES`) so that the
    /// `Link` header to the next page can be sent before the body.
    fn page(&self, after: Option<Bson>, limit: u32) -> Result<Reply, ApiError> {
        // One more than asked for tells whether another page follows.
        let mut documents = self
            .store
            .list(&ListQuery {
                after,
                limit: Some(limit + 1),
                with_id: true,
            })
            .map_err(|e| self.store_error(e))?;
        let mut body = vec![b'['];
        let mut last_id = None;
        let mut more = false;
        let mut count = 0;
        while let Some(document) = documents.next_document().map_err(|e| self.store_error(e))? {
            if count == limit || body.len() >= PAGE_MAX_BYTES {
                more = true;
                break;
            }
            if count > 0 {
                body.push(b',');
            }
            json::write_document(document, &mut body, true).map_err(|e| {
                tracing::error!(error = %e, "cannot encode a stored document");
                ApiError::Internal
            })?;
            let id = document.get("_id").ok().flatten().ok_or_else(|| {
                tracing::error!("a listed document has no _id");
                ApiError::Internal
            })?;
            last_id = Some(id.to_raw_bson());
            count += 1;
        }
        body.push(b']');
        let reply = Reply::json(200, body);
        Ok(match (more, last_id) {
            (true, Some(last)) => {
                let cursor = paging::encode(last.as_raw_bson_ref());
                reply.with_header(
                    "Link",
                    format!("</data?limit={limit}&after={cursor}>; rel=\"next\""),
                )
            }
            _ => reply,
        })
    }
}

/// Accepts `application/json` and `application/<anything>+json`, with an optional
/// UTF-8 charset: JSON is UTF-8 (RFC 8259).
fn check_content_type(rq: &Request) -> Result<(), ApiError> {
    let value = rq
        .headers()
        .iter()
        .find(|h| h.field.equiv("Content-Type"))
        .map(|h| h.value.as_str())
        .ok_or(ApiError::UnsupportedMediaType)?;
    let mut parts = value.split(';');
    let media_type = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let json_type = media_type == "application/json"
        || (media_type.starts_with("application/") && media_type.ends_with("+json"));
    let utf8 = parts.all(|param| match param.split_once('=') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
            let charset = value.trim().trim_matches('"');
            charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("utf8")
        }
        _ => true,
    });
    if json_type && utf8 {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

enum StreamState {
    Start,
    Documents { first: bool },
    Done,
}

/// The whole listing as a JSON array, encoded batch by batch while it is sent: memory
/// stays at one driver batch plus a few pieces, whatever the size of the collection.
struct JsonArrayStream {
    documents: DocumentStream,
    metrics: Arc<Metrics>,
    state: StreamState,
    /// One of the listing slots, held until the listing ends.
    _slot: Grant,
}

impl JsonArrayStream {
    fn new(documents: DocumentStream, metrics: Arc<Metrics>, slot: Grant) -> Self {
        JsonArrayStream {
            documents,
            metrics,
            state: StreamState::Start,
            _slot: slot,
        }
    }

    /// The listing cannot be finished: the error makes the server cut the connection
    /// instead of ending the chunked body, so the client sees a truncated response.
    fn failed(&mut self, error: StoreError) -> io::Error {
        self.metrics.mongo_error(error.kind());
        self.state = StreamState::Done;
        io::Error::other(error.to_string())
    }
}

impl Chunks for JsonArrayStream {
    fn next_chunk(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        if let StreamState::Start = self.state {
            out.push(b'[');
            self.state = StreamState::Documents { first: true };
        }
        while let StreamState::Documents { first } = self.state {
            if out.len() >= STREAM_CHUNK {
                break;
            }
            match self.documents.next_document() {
                Ok(None) => {
                    out.push(b']');
                    self.state = StreamState::Done;
                }
                Ok(Some(document)) => {
                    if !first {
                        out.push(b',');
                    }
                    self.state = StreamState::Documents { first: false };
                    json::write_document(document, out, false).map_err(io::Error::other)?;
                }
                Err(e) => return Err(self.failed(e)),
            }
        }
        Ok(!matches!(self.state, StreamState::Done))
    }
}
