//! `GET /data` and `POST /data`.

use std::cell::Cell;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use budget::{Budget, Grant};
use mongodb::bson::{Bson, RawDocumentBuf};
use tiny_http::Request;

use super::reply::Piece;
use super::{store_error, ApiError, Body, Exchange, Handler, Reply};
use crate::store::{
    self, ListQuery, Session, Store, StoreError, BATCH_SIZE, INSERT_COPIES, MIDWAY_MEMORY_WAIT,
};
use codec::json::{self, EncodeError, JsonArray, JsonOut};
use codec::paging;

/// A page stops growing once its JSON passes this size, even short of `limit`.
const PAGE_MAX_BYTES: usize = 4 * 1024 * 1024;
/// What a page reserves up front; it grows (with the budget's consent) as it fills.
const PAGE_RESERVE: u64 = 64 * 1024;
/// What each piece of a streamed listing reserves up front (it grows the same way).
const PIECE_RESERVE: u64 = 64 * 1024;

const INSERTED: &[u8] = br#"{"status":"Data inserted"}"#;

impl Handler {
    /// `POST /data`: stores one JSON object as a document, and answers once it is
    /// written, maybe on the worker that writes it.
    pub(super) fn insert_document(&self, session: &Session, mut rq: Request, exchange: Exchange) {
        match self.document(&mut rq) {
            Ok((document, memory)) => {
                self.store
                    .insert(session, document, memory, move |outcome| {
                        let result = outcome
                            .map(|()| Reply::json(201, INSERTED))
                            .map_err(store_error);
                        exchange.finish(rq, result);
                    })
            }
            Err(error) => exchange.finish(rq, Err(error)),
        }
    }

    /// The document a `POST` carries, with the memory its write will hold.
    ///
    /// Memory: the body arrives with its share of the budget; the conversion grows that
    /// share as its BSON grows, and the write keeps what the driver's copies take
    /// (`INSERT_COPIES`) until MongoDB has answered.
    fn document(&self, rq: &mut Request) -> Result<(RawDocumentBuf, Grant), ApiError> {
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
        Ok((document, memory))
    }

    /// `GET /data`: every document, or one page of them, without `_id`, in `_id` order.
    /// `HEAD` of the whole collection answers with the headers `GET` sends for one that
    /// does not fit one piece, without reading it.
    pub(super) fn list_documents(
        &self,
        session: &Session,
        params: paging::Params,
        head: bool,
    ) -> Result<Reply, ApiError> {
        match params.limit {
            None if head => Ok(Reply::new(
                200,
                super::reply::JSON,
                Body::Stream {
                    first: Piece {
                        bytes: Vec::new(),
                        memory: None,
                    },
                    rest: Box::new(Nothing),
                },
            )),
            None => self.listing(session, params.after),
            Some(limit) => self.page(session, params.after, limit),
        }
    }

    /// The whole collection. The first piece is made here, before the status is sent, so
    /// that what stops it (MongoDB, memory) still gets its own error status; a listing
    /// that fits in it is sent as it is, with its length. The rest is made a batch per
    /// worker turn, each when the connection has written the previous one.
    fn listing(&self, session: &Session, after: Option<Bson>) -> Result<Reply, ApiError> {
        let query = ListQuery {
            after: after.clone(),
            limit: BATCH_SIZE,
        };
        let first = self.store.fetch(session, &query).map_err(store_error)?;
        let mut listing = Listing {
            store: self.store.clone(),
            memory: self.limits.memory.clone(),
            wait: self.limits.queue_timeout,
            after,
            continuation: store::Continuation::default(),
            array: JsonArray::new(true),
            started: false,
            current: Some(Current {
                // Fewer than asked, and nothing left on the server.
                last: first.is_complete() && first.len() < BATCH_SIZE as usize,
                batch: first,
                next: 0,
            }),
        };
        let (bytes, memory) = listing.piece().map_err(|e| match e {
            ListingError::Store(e) => store_error(e),
            ListingError::Encode(e) => encode_error(e),
        })?;
        if listing.array.is_closed() {
            return Ok(Reply::json_holding(200, bytes, memory));
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
                rest: Box::new(listing),
            },
        ))
    }

    /// One page, built in memory (bounded by `limit` and `PAGE_MAX_BYTES`, and reserved
    /// from the budget) so that the `Link` header to the next page can be sent before the
    /// body.
    fn page(&self, session: &Session, after: Option<Bson>, limit: u32) -> Result<Reply, ApiError> {
        let wait = self.limits.queue_timeout;
        // One more than asked for tells whether another page follows.
        let query = ListQuery {
            after,
            limit: limit + 1,
        };
        let batch = self.store.fetch(session, &query).map_err(store_error)?;
        // A second grant of a request that holds one: it does not queue behind new ones.
        let mut memory = self
            .limits
            .memory
            .acquire_admitted(PAGE_RESERVE, wait)
            .ok_or(ApiError::Overloaded)?;
        let mut body = Vec::with_capacity(PAGE_RESERVE as usize);
        let mut last_id = None;
        // A reply cut short by its 16 MiB leaves documents after it.
        let mut more = !batch.is_complete();
        {
            // A stored document may be large (up to 16 MiB): the page grows only with the
            // budget's consent.
            let mut room = |capacity: usize| memory.resize(capacity as u64, wait);
            let mut out = JsonOut::new(&mut body, &mut room);
            let mut array = JsonArray::new(true);
            for document in batch.documents() {
                let document = document.map_err(store_error)?;
                if array.items() == limit as usize || out.len() >= PAGE_MAX_BYTES {
                    more = true;
                    break;
                }
                array.push(document, &mut out).map_err(encode_error)?;
                last_id = Some(store::id_of(document).map_err(store_error)?);
            }
            array.close(&mut out).map_err(encode_error)?;
        }
        drop(batch);
        let reply = Reply::json_holding(200, body, memory);
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
        .header_values("Content-Type")
        .next()
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

/// The whole collection as one JSON array, a batch at a time. Each piece is one batch
/// (up to `BATCH_SIZE` documents, at most one 16 MiB reply), or the part of one that the
/// memory budget grants without waiting (see [`Listing::piece`]): the first fetched by the
/// request's worker, the rest through a cursor opened strictly after the first batch's
/// last `_id` and advanced by whichever listing worker takes the turn, once the
/// connection has written the previous piece. A slow reader holds its connection, one
/// piece of memory and an idle cursor on the server, never a worker. Every document that existed when
/// the listing began is listed exactly once, in `_id` order (the `_id` index is walked
/// forward and an `_id` never changes); one inserted meanwhile is listed if its `_id`
/// sorts after the cursor's position then (a new ObjectId does), and never twice.
struct Listing {
    store: Arc<Store>,
    memory: Budget,
    /// How long the first piece waits for memory (the queue timeout); later
    /// pieces, whose status is sent, wait longer.
    wait: Duration,
    after: Option<Bson>,
    continuation: store::Continuation,
    array: JsonArray,
    /// The first piece is made: the status is sent.
    started: bool,
    /// The batch being sent, while some of it is not yet encoded.
    current: Option<Current>,
}

/// A fetched batch and how far its encoding has got.
struct Current {
    batch: store::Batch,
    /// The next document to encode.
    next: usize,
    /// The last batch of the listing: nothing follows it on the server.
    last: bool,
}

impl Listing {
    /// The next piece, with the memory it holds until written: the rest of the current
    /// batch as JSON, or of the next one.
    ///
    /// A piece that has a document in it grows only as far as the budget grants at once;
    /// past that it is sent as it is, and the batch goes on in the next piece, once this
    /// one is written and its memory is back. Only an empty piece waits for memory. Two
    /// listings that each held a batch and a half-grown piece while waiting for the other
    /// to give memory back would otherwise wait out `MIDWAY_MEMORY_WAIT` and one be cut.
    fn piece(&mut self) -> Result<(Vec<u8>, Grant), ListingError> {
        let wait = if self.started {
            MIDWAY_MEMORY_WAIT
        } else {
            self.wait
        };
        let mut current = match self.current.take() {
            Some(current) => current,
            None => self.fetch()?,
        };
        // A second grant of a listing that holds one: it does not queue behind new ones.
        let mut memory = self
            .memory
            .acquire_admitted(PIECE_RESERVE, wait)
            .ok_or(EncodeError::NoMemory)?;
        let mut bytes = Vec::with_capacity(PIECE_RESERVE as usize);
        let encoded = Cell::new(0usize);
        {
            let mut hold = |capacity: usize| {
                let capacity = capacity as u64;
                if encoded.get() == 0 {
                    memory.resize(capacity, wait)
                } else {
                    capacity <= memory.amount() || memory.try_grow(capacity - memory.amount())
                }
            };
            let mut out = JsonOut::new(&mut bytes, &mut hold);
            let mut last = None;
            for document in current.batch.documents().skip(current.next) {
                let document = document?;
                let mark = out.len();
                match self.array.push(document, &mut out) {
                    Ok(()) => {}
                    Err(EncodeError::NoMemory) if encoded.get() > 0 => {
                        out.truncate(mark);
                        break;
                    }
                    Err(error) => return Err(error.into()),
                }
                encoded.set(encoded.get() + 1);
                current.next += 1;
                last = Some(document);
            }
            if let Some(last) = last {
                let id = store::id_of(last)?;
                self.after =
                    Some(Bson::try_from(id).map_err(|e| StoreError::Internal(e.to_string()))?);
            }
            let done = current.next == current.batch.len();
            let closed = done
                && current.last
                && match self.array.close(&mut out) {
                    Ok(()) => true,
                    Err(EncodeError::NoMemory) if encoded.get() > 0 => false,
                    Err(error) => return Err(error.into()),
                };
            if !done || (current.last && !closed) {
                self.current = Some(current);
            }
        }
        self.started = true;
        Ok((bytes, memory))
    }

    /// The batch after those sent, through the listing's cursor (the first batch came
    /// with the request's own query, on its worker's session).
    fn fetch(&mut self) -> Result<Current, StoreError> {
        let batch = self
            .store
            .fetch_more(&mut self.continuation, self.after.as_ref())?;
        Ok(Current {
            // The cursor has nothing left.
            last: batch.is_complete(),
            batch,
            next: 0,
        })
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

impl tiny_http::Stream for Listing {
    /// The pieces after the first: an error now cuts the connection instead of ending the
    /// chunked body, so the client sees a truncated response.
    fn next_piece(&mut self) -> io::Result<Option<Piece>> {
        if self.array.is_closed() {
            return Ok(None);
        }
        match self.piece() {
            Ok((bytes, memory)) => Ok(Some(Piece {
                bytes,
                memory: Some(memory),
            })),
            Err(error) => {
                tracing::warn!(%error, "a listing was cut");
                Err(io::Error::other(error))
            }
        }
    }
}

/// The body of a `HEAD`: never produced.
struct Nothing;

impl tiny_http::Stream for Nothing {
    fn next_piece(&mut self) -> io::Result<Option<Piece>> {
        Ok(None)
    }
}
