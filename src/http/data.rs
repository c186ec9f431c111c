//! `GET /data` and `POST /data`.

use std::io;
use std::time::Duration;

use budget::{Budget, Permit};
use mongodb::bson::{Bson, RawDocumentBuf};
use tiny_http::{Grant, Request};

use super::reply::{Piece, STREAM_CHUNK};
use super::{ApiError, Body, Handler, Reply};
use crate::json::{self, EncodeError, JsonArray, JsonOut};
use crate::paging;
use crate::store::{DocumentStream, ListQuery, StoreError, INSERT_COPIES, MIDWAY_MEMORY_WAIT};

/// A page stops growing once its JSON passes this size, even short of `limit`.
const PAGE_MAX_BYTES: usize = 4 * 1024 * 1024;
/// What a page reserves up front; it grows (with the budget's consent) as it fills.
const PAGE_RESERVE: u64 = 64 * 1024;
/// What each piece of a streamed listing reserves up front (it grows the same way).
const PIECE_RESERVE: u64 = STREAM_CHUNK as u64 + 4096;

const INSERTED: &[u8] = br#"{"status":"Data inserted"}"#;

impl Handler {
    /// `POST /data`: stores one JSON object as a document.
    ///
    /// Memory: the body arrives with its share of the budget; the conversion grows that
    /// share as its BSON grows, and the write keeps what the driver's copies take
    /// (`INSERT_COPIES`) until MongoDB has answered.
    pub(super) fn insert_document(&self, rq: &mut Request) -> Result<Reply, ApiError> {
        if rq.body_exceeds_limit() {
            return Err(ApiError::PayloadTooLarge {
                limit: self.limits.max_body_bytes,
            });
        }
        check_content_type(rq)?;
        let wait = self.limits.queue_timeout;
        let (body, grant) = rq.take_body();
        let mut memory = match grant {
            Some(grant) => grant,
            None => self
                .limits
                .memory
                .acquire(0, wait)
                .ok_or(ApiError::Overloaded)?,
        };
        let received = body.len() as u64;
        let document = json::parse_document(&body, &mut |held| {
            memory.resize(received + held as u64, wait)
        })
        .map_err(|e| match e {
            json::BodyError::NoMemory => ApiError::Overloaded,
            e => ApiError::BadRequest(e.to_string()),
        })?;
        drop(body);
        check_id(&document)?;
        let copies = INSERT_COPIES * (document.as_bytes().len() + json::ID_ROOM) as u64;
        if !memory.resize(copies, wait) {
            return Err(ApiError::Overloaded);
        }
        self.store
            .insert(document, memory)
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
                    .acquire(self.limits.queue_timeout)
                    .ok_or(ApiError::Overloaded)?;
                let documents = self
                    .store
                    .list(&ListQuery {
                        after: params.after,
                        limit: None,
                        with_id: false,
                    })
                    .map_err(|e| self.store_error(e))?;
                let mut stream = JsonArrayStream::new(
                    documents,
                    self.limits.memory.clone(),
                    self.limits.queue_timeout,
                    slot,
                );
                // The first piece is made before the status is sent, so that what stops
                // it (MongoDB, memory) still gets its own error status.
                let (bytes, memory) = stream.piece().map_err(|e| match e {
                    ListingError::Store(e) => self.store_error(e),
                    ListingError::Encode(e) => encode_error(e),
                })?;
                // A listing that fits in one piece is sent as it is, with its length: no
                // streaming, and the connection writes it in one go.
                if stream.array.is_closed() {
                    return Ok(Reply::json(200, bytes).holding(memory));
                }
                let first = Piece {
                    bytes,
                    memory: Some(memory),
                };
                Ok(Reply::new(
                    200,
                    super::reply::JSON,
                    Body::Stream {
                        first,
                        rest: Box::new(stream),
                    },
                ))
            }
            Some(limit) => self.page(params.after, limit),
        }
    }

    /// One page, built in memory (bounded by `limit` and `PAGE_MAX_BYTES`, and reserved
    /// from the budget) so that the `Link` header to the next page can be sent before the
    /// body.
    fn page(&self, after: Option<Bson>, limit: u32) -> Result<Reply, ApiError> {
        let mut memory = self
            .limits
            .memory
            .acquire(PAGE_RESERVE, self.limits.queue_timeout)
            .ok_or(ApiError::Overloaded)?;
        // One more than asked for tells whether another page follows.
        let mut documents = self
            .store
            .list(&ListQuery {
                after,
                limit: Some(limit + 1),
                with_id: true,
            })
            .map_err(|e| self.store_error(e))?;
        let wait = self.limits.queue_timeout;
        let mut body = Vec::with_capacity(PAGE_RESERVE as usize);
        let mut last_id = None;
        let mut more = false;
        {
            // A stored document may be large (up to 16 MiB): the page grows only with the
            // budget's consent.
            let mut room = |capacity: usize| memory.resize(capacity as u64, wait);
            let mut out = JsonOut::new(&mut body, &mut room);
            let mut array = JsonArray::new(true);
            while let Some(document) = documents.next_document().map_err(|e| self.store_error(e))? {
                if array.items() == limit as usize || out.len() >= PAGE_MAX_BYTES {
                    more = true;
                    break;
                }
                array.push(document, &mut out).map_err(encode_error)?;
                let id = document.get("_id").ok().flatten().ok_or_else(|| {
                    tracing::error!("a listed document has no _id");
                    ApiError::Internal
                })?;
                last_id = Some(id.to_raw_bson());
            }
            array.close(&mut out).map_err(encode_error)?;
        }
        drop(documents);
        let reply = Reply::json(200, body).holding(memory);
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

fn encode_error(error: EncodeError) -> ApiError {
    match error {
        EncodeError::NoMemory => ApiError::Overloaded,
        EncodeError::Corrupt(e) => {
            tracing::error!(error = %e, "cannot encode a stored document");
            ApiError::Internal
        }
    }
}

/// Refuses an `_id` too long to page past: a cursor names the last `_id` of a page, and
/// must fit in a request line (`paging::MAX_ID_BYTES` says why 1 KiB).
fn check_id(document: &RawDocumentBuf) -> Result<(), ApiError> {
    match document.get("_id") {
        Ok(Some(id)) if paging::id_too_long(id) => Err(ApiError::BadRequest(format!(
            "_id is longer than {} bytes (as BSON); such a document could not be paged past",
            paging::MAX_ID_BYTES
        ))),
        _ => Ok(()),
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

/// The whole listing as a JSON array, encoded batch by batch while it is sent: memory
/// stays at one driver batch plus a few pieces, whatever the size of the collection,
/// and every piece is reserved from the budget before it grows.
struct JsonArrayStream {
    documents: DocumentStream,
    array: JsonArray,
    memory: Budget,
    wait: Duration,
    /// A piece has been made: the status line is (about to be) sent.
    started: bool,
    /// One of the listing slots, held until the listing ends.
    _slot: Permit,
}

impl JsonArrayStream {
    fn new(documents: DocumentStream, memory: Budget, wait: Duration, slot: Permit) -> Self {
        JsonArrayStream {
            documents,
            array: JsonArray::new(false),
            memory,
            wait,
            started: false,
            _slot: slot,
        }
    }

    fn fill(&mut self, out: &mut JsonOut<'_, '_>) -> Result<(), ListingError> {
        while !self.array.is_closed() && out.len() < STREAM_CHUNK {
            match self.documents.next_document()? {
                None => self.array.close(out)?,
                Some(document) => self.array.push(document, out)?,
            }
        }
        Ok(())
    }

    /// The next piece of the array, with the memory it holds.
    fn piece(&mut self) -> Result<(Vec<u8>, Grant), ListingError> {
        // Once the first piece is out, failing can only cut the connection: wait longer,
        // and ahead of requests not yet admitted.
        let memory = if self.started {
            self.memory
                .acquire_admitted(PIECE_RESERVE, MIDWAY_MEMORY_WAIT)
        } else {
            self.memory.acquire(PIECE_RESERVE, self.wait)
        };
        let wait = if self.started {
            MIDWAY_MEMORY_WAIT
        } else {
            self.wait
        };
        self.started = true;
        let mut memory = memory.ok_or(EncodeError::NoMemory)?;
        let mut bytes = Vec::with_capacity(PIECE_RESERVE as usize);
        {
            let mut room = |capacity: usize| memory.resize(capacity as u64, wait);
            self.fill(&mut JsonOut::new(&mut bytes, &mut room))?;
        }
        Ok((bytes, memory))
    }
}

/// Why a listing could not go on.
#[derive(Debug, thiserror::Error)]
enum ListingError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl tiny_http::Stream for JsonArrayStream {
    /// The pieces after the first: an error now cuts the connection instead of ending the
    /// chunked body, so the client sees a truncated response.
    fn next_piece(&mut self) -> io::Result<Option<Piece>> {
        if self.array.is_closed() {
            return Ok(None);
        }
        let (bytes, memory) = self.piece().map_err(io::Error::other)?;
        Ok(Some(Piece {
            bytes,
            memory: Some(memory),
        }))
    }
}
