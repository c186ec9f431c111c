//! Everything that talks to MongoDB: one shared client, the `data` collection, and the
//! mapping of driver errors to what the HTTP layer needs to know.
//!
//! Calls block the worker thread that makes them, as the design wants, but each one runs
//! the official driver's async API on a small runtime the store owns, under a deadline
//! (`MONGO_TIMEOUT_MS`). The driver's sync API cannot bound an operation against a
//! server that accepts connections and never answers: the Rust driver has no socket
//! timeout and no client-side operation timeout, and its monitor only interrupts
//! operations after a heartbeat times out (10 s by default). Dropping an operation at
//! its deadline is safe: the driver closes a connection returned in the middle of a
//! command instead of reusing it. The async API also gives listings whole raw batches
//! (one hand-off per batch, not per document, and no per-document copy).

mod batch;

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{doc, Bson, RawBsonRef, RawDocument, RawDocumentBuf};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::raw_batch_cursor::{RawBatch, RawBatchCursor};
use mongodb::{Client, Collection, Database};
use tiny_http::{Budget, Grant};
use tokio::runtime::{Handle, Runtime};

use crate::metrics::Metrics;
use crate::settings::MongoSettings;

const COLLECTION: &str = "data";
/// Documents per batch fetched while listing: keeps round trips few.
const BATCH_SIZE: u32 = 1000;
/// What one reply batch may take, whatever the batch size: MongoDB fills a batch up to
/// 16 MiB (and always with at least one document, itself up to 16 MiB), plus the reply's
/// own fields. A listing reserves this before each fetch and keeps what the batch used.
pub const MAX_BATCH_BYTES: u64 = 16 * 1024 * 1024 + 64 * 1024;
/// A listing under way has sent its status line: failing it now can only cut the
/// connection. So it waits this long for the memory of its next batch (holding none
/// meanwhile) rather than the request's short queue wait.
pub const MIDWAY_MEMORY_WAIT: Duration = Duration::from_secs(10);
/// MongoDB's largest document.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;
/// Copies of a document alive while it is inserted: the driver serializes it into the
/// operation, again into the command's document sequence, then into the wire message.
pub const INSERT_COPIES: u64 = 3;

/// Why the client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot start the MongoDB runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("MongoDB client: {0}")]
    Client(String),
}

/// Why an operation failed, in the terms the HTTP layer answers with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// MongoDB could not be reached in time, refused our credentials, or went away.
    #[error("MongoDB unavailable: {0}")]
    Unavailable(String),
    /// A document with the same `_id` exists.
    #[error("duplicate _id")]
    Duplicate,
    /// MongoDB refused the document; the message says why.
    #[error("document rejected: {0}")]
    Rejected(String),
    /// The memory an operation needed could not be reserved in time.
    #[error("no memory for the operation now")]
    Busy,
    /// Anything else: a bug or a misconfiguration worth a log line.
    #[error("MongoDB error: {0}")]
    Internal(String),
}

impl StoreError {
    /// A fixed word for the `mongodb_errors_total` label; `None` for what MongoDB had no
    /// part in.
    pub fn kind(&self) -> Option<&'static str> {
        match self {
            StoreError::Unavailable(_) => Some("unavailable"),
            StoreError::Duplicate => Some("duplicate_key"),
            StoreError::Rejected(_) => Some("rejected"),
            StoreError::Busy => None,
            StoreError::Internal(_) => Some("internal"),
        }
    }
}

/// Counts a failed operation in the metrics on its way out.
fn counted<T>(metrics: &Metrics, result: Result<T, StoreError>) -> Result<T, StoreError> {
    if let Err(Some(kind)) = result.as_ref().map_err(StoreError::kind) {
        metrics.mongo_error(kind);
    }
    result
}

/// The member is not (or no longer) the primary, or is shutting down: nothing was
/// written, and the next primary will take the write. mongod labels these
/// RetryableWriteError (and the driver retries once), but not every server does, so the
/// code decides: 503, never 500.
fn is_state_change(code: i32) -> bool {
    matches!(
        code,
        91 // ShutdownInProgress
            | 189 // PrimarySteppedDown
            | 10058 // LegacyNotPrimary
            | 10107 // NotWritablePrimary
            | 11600 // InterruptedAtShutdown
            | 11602 // InterruptedDueToReplStateChange
            | 13435 // NotPrimaryNoSecondaryOk
            | 13436 // NotPrimaryOrSecondary
    )
}

/// Server error codes that mean "this document is not acceptable".
fn is_document_error(code: i32) -> bool {
    matches!(
        code,
        2 // BadValue
            | 14 // TypeMismatch
            | 15 // Overflow
            | 52 // DollarPrefixedFieldName
            | 53 // InvalidIdField
            | 55 // InvalidDBRef
            | 56 // EmptyFieldName
            | 57 // DottedFieldName
            | 121 // DocumentValidationFailure
            | 10334 // BSONObjectTooLarge
            | 17280 // KeyTooLong
    )
}

impl From<mongodb::error::Error> for StoreError {
    fn from(e: mongodb::error::Error) -> Self {
        match e.kind.as_ref() {
            ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == 11000 => {
                StoreError::Duplicate
            }
            ErrorKind::Write(WriteFailure::WriteError(w)) => {
                StoreError::Rejected(w.message.clone())
            }
            ErrorKind::Command(c) if is_document_error(c.code) => {
                StoreError::Rejected(c.message.clone())
            }
            ErrorKind::BsonSerialization(s) => StoreError::Rejected(s.to_string()),
            ErrorKind::Command(c) if is_state_change(c.code) => {
                StoreError::Unavailable(e.kind.to_string())
            }
            ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::Authentication { .. }
            | ErrorKind::DnsResolve { .. }
            | ErrorKind::Shutdown
            | ErrorKind::Write(WriteFailure::WriteConcernError(_)) => {
                StoreError::Unavailable(e.kind.to_string())
            }
            _ if e.contains_label("RetryableWriteError") || e.contains_label("NetworkError") => {
                StoreError::Unavailable(e.kind.to_string())
            }
            _ => StoreError::Internal(e.kind.to_string()),
        }
    }
}

/// Which documents to list.
#[derive(Debug, Default, Clone)]
pub struct ListQuery {
    /// Only documents whose `_id` sorts after this one.
    pub after: Option<Bson>,
    /// At most this many.
    pub limit: Option<u32>,
    /// Keep `_id` in the results (paging needs it for the next cursor).
    pub with_id: bool,
}

/// A document waiting to be inserted, with the memory it holds.
struct Pending {
    document: RawDocumentBuf,
    memory: Grant,
}

pub struct Store {
    runtime: Runtime,
    client: Client,
    database: Database,
    documents: Collection<RawDocumentBuf>,
    inserts: batch::Batcher<Pending, Result<(), StoreError>>,
    metrics: Arc<Metrics>,
    timeout: Duration,
    memory: Budget,
    memory_wait: Duration,
}

impl Store {
    /// Builds the client, with a pool of `pool_size` connections. No I/O happens here
    /// (except SRV lookups for a `mongodb+srv` URI): the driver connects in the background,
    /// so the service starts, and answers `/healthz`, even while MongoDB is down. Listings
    /// take their batches from `memory`, waiting at most `memory_wait`.
    pub fn connect(
        settings: &MongoSettings,
        pool_size: u32,
        metrics: Arc<Metrics>,
        memory: Budget,
        memory_wait: Duration,
    ) -> Result<Store, ConnectError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mongodb")
            .enable_all()
            .build()?;
        let options = runtime
            .block_on(settings.client_options(pool_size))
            .map_err(|e| ConnectError::Client(e.kind.to_string()))?;
        // Created inside the runtime, so that the driver's background tasks run on it.
        let client = {
            let _inside = runtime.enter();
            Client::with_options(options).map_err(|e| ConnectError::Client(e.kind.to_string()))?
        };
        let database = client.database(&settings.database());
        let documents = database.collection::<RawDocumentBuf>(COLLECTION);
        Ok(Store {
            runtime,
            client,
            database,
            documents,
            inserts: batch::Batcher::default(),
            metrics,
            timeout: settings.timeout(),
            memory,
            memory_wait,
        })
    }

    /// Runs one operation to completion, or gives up at the deadline.
    fn run<T>(
        &self,
        operation: impl Future<Output = mongodb::error::Result<T>>,
    ) -> Result<T, StoreError> {
        block_on(self.runtime.handle(), self.timeout, operation)
    }

    /// Stores a document as given (an ObjectId `_id` is put in front if it has none).
    /// `memory` is what the caller reserved for it (see [`INSERT_COPIES`]); it is held
    /// until the write is done. Concurrent inserts are written together (see `batch`);
    /// each gets its own outcome.
    pub fn insert(&self, document: RawDocumentBuf, memory: Grant) -> Result<(), StoreError> {
        let document = with_id(document);
        if document.as_bytes().len() > MAX_DOCUMENT_BYTES {
            return Err(StoreError::Rejected(
                "the document is larger than MongoDB's 16 MiB limit".into(),
            ));
        }
        let pending = Pending { document, memory };
        let outcome = self.inserts.submit(
            pending,
            |batch| self.insert_batch(batch),
            // MongoDB unreachable: those queued meanwhile get the 503 now rather than after
            // a second timeout of their own, so a write fails within MONGO_TIMEOUT_MS.
            |results| {
                results
                    .iter()
                    .find(|r| matches!(r, Err(StoreError::Unavailable(_))))
                    .cloned()
            },
            Err(StoreError::Internal("the batch's write panicked".into())),
        );
        counted(&self.metrics, outcome)
    }

    /// Writes a batch unordered, so that one refused document does not stop the others,
    /// and maps the outcome back to each document.
    fn insert_batch(&self, batch: Vec<Pending>) -> Vec<Result<(), StoreError>> {
        let count = batch.len();
        self.metrics.insert_batch(count);
        // The driver copies the documents when the operation is built; ours can go
        // (their memory stays reserved until the batch is answered).
        let insert = self
            .documents
            .insert_many(batch.iter().map(|p| &p.document))
            .ordered(false);
        let memory: Vec<Grant> = batch.into_iter().map(|p| p.memory).collect();
        let written = self
            .runtime
            .handle()
            .block_on(async { tokio::time::timeout(self.timeout, async { insert.await }).await });
        drop(memory);
        match written {
            Ok(Ok(_)) => vec![Ok(()); count],
            Ok(Err(error)) => batch_failure(count, error),
            Err(_) => vec![Err(timed_out(self.timeout)); count],
        }
    }

    /// Documents in ascending `_id` order, fetched in raw batches as they are read.
    pub fn list(&self, query: &ListQuery) -> Result<DocumentStream, StoreError> {
        counted(&self.metrics, self.open_listing(query))
    }

    fn open_listing(&self, query: &ListQuery) -> Result<DocumentStream, StoreError> {
        // `$gt` outside `$expr` only matches values of the same BSON type, so paging would
        // stop at the first page boundary between, say, integer and ObjectId `_id`s; the
        // aggregation comparison uses the same cross-type order as the sort.
        let filter = match &query.after {
            Some(after) => doc! { "$expr": { "$gt": ["$_id", { "$literal": after.clone() }] } },
            None => doc! {},
        };
        let mut find = self
            .documents
            .find(filter)
            .sort(doc! { "_id": 1 })
            .batch_size(BATCH_SIZE);
        if !query.with_id {
            find = find.projection(doc! { "_id": 0 });
        }
        if let Some(limit) = query.limit {
            find = find.limit(i64::from(limit));
        }
        let memory = self.reserve_batch()?;
        let cursor = self.run(async { find.batch().await })?;
        let mut stream = DocumentStream {
            handle: self.runtime.handle().clone(),
            timeout: self.timeout,
            budget: self.memory.clone(),
            memory_wait: MIDWAY_MEMORY_WAIT,
            cursor,
            batch: None,
            reserved: Some(memory),
            exhausted: false,
            metrics: self.metrics.clone(),
        };
        stream.fetch()?;
        Ok(stream)
    }

    fn reserve_batch(&self) -> Result<Grant, StoreError> {
        self.memory
            .acquire(MAX_BATCH_BYTES, self.memory_wait)
            .ok_or(StoreError::Busy)
    }

    /// Round trip to the server: does MongoDB answer, with our credentials?
    pub fn ping(&self) -> Result<(), StoreError> {
        let pinged = self.run(async { self.database.run_command(doc! { "ping": 1 }).await });
        counted(&self.metrics, pinged.map(drop))
    }

    /// Closes the driver's connections.
    pub fn shutdown(&self) {
        let client = self.client.clone();
        let closed = block_on(self.runtime.handle(), self.timeout, async {
            client.shutdown().immediate(true).await;
            Ok(())
        });
        if closed.is_err() {
            tracing::warn!("MongoDB connections not closed in time");
        }
    }
}

fn block_on<T>(
    handle: &Handle,
    timeout: Duration,
    operation: impl Future<Output = mongodb::error::Result<T>>,
) -> Result<T, StoreError> {
    match handle.block_on(async { tokio::time::timeout(timeout, operation).await }) {
        Ok(result) => result.map_err(StoreError::from),
        Err(_) => Err(timed_out(timeout)),
    }
}

fn timed_out(timeout: Duration) -> StoreError {
    StoreError::Unavailable(format!("no answer within {} ms", timeout.as_millis()))
}

/// What each document of a batch gets when `insert_many` failed.
fn batch_failure(count: usize, error: mongodb::error::Error) -> Vec<Result<(), StoreError>> {
    let ErrorKind::InsertMany(failure) = error.kind.as_ref() else {
        // The server went away, or never answered: the batch may or may not be stored;
        // retrying could store a document twice, so all get the error.
        return vec![Err(StoreError::from(error)); count];
    };
    // Write concern not met: every document without its own error was written on the
    // primary, but not durably as asked.
    let rest = match &failure.write_concern_error {
        Some(_) => Err(StoreError::Unavailable(error.kind.to_string())),
        None => Ok(()),
    };
    let mut results = vec![rest; count];
    for w in failure.write_errors.iter().flatten() {
        if let Some(slot) = results.get_mut(w.index) {
            *slot = Err(if w.code == 11000 {
                StoreError::Duplicate
            } else if is_state_change(w.code) {
                StoreError::Unavailable(w.message.clone())
            } else {
                StoreError::Rejected(w.message.clone())
            });
        }
    }
    results
}

/// Puts an ObjectId `_id` in front of a document that has none, in place: the converter
/// leaves room for it (`json::ID_ROOM`).
fn with_id(document: RawDocumentBuf) -> RawDocumentBuf {
    if matches!(document.get("_id"), Ok(Some(_))) {
        return document;
    }
    let mut element = RawDocumentBuf::new();
    element.append("_id", ObjectId::new());
    // A one-element document: 4 bytes of length, the element, a terminating 0.
    let element = &element.as_bytes()[4..element.as_bytes().len() - 1];
    let mut bytes = document.into_bytes();
    bytes.splice(4..4, element.iter().copied());
    let length = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
    bytes[..4].copy_from_slice(&length.to_le_bytes());
    RawDocumentBuf::from_bytes(bytes).expect("a document with an _id in front")
}

/// Documents as the driver fetches them, batch by batch. Each batch is held with the
/// memory it takes; the next one is reserved before it is asked for.
pub struct DocumentStream {
    handle: Handle,
    timeout: Duration,
    budget: Budget,
    memory_wait: Duration,
    cursor: RawBatchCursor,
    batch: Option<Batch>,
    /// Reserved for the next fetch.
    reserved: Option<Grant>,
    exhausted: bool,
    metrics: Arc<Metrics>,
}

struct Batch {
    reply: RawBatch,
    documents: Vec<Range<usize>>,
    next: usize,
    /// The server has no further batch (the cursor is closed).
    last: bool,
    _memory: Grant,
}

impl DocumentStream {
    /// The next document, borrowed from the current batch (no copy is made); `None`
    /// once the query is exhausted.
    pub fn next_document(&mut self) -> Result<Option<&RawDocument>, StoreError> {
        let exhausted = self
            .batch
            .as_ref()
            .is_none_or(|b| b.next == b.documents.len());
        if exhausted && !counted(&self.metrics.clone(), self.fetch())? {
            return Ok(None);
        }
        let Some(batch) = self.batch.as_mut() else {
            return Ok(None);
        };
        let range = batch.documents[batch.next].clone();
        batch.next += 1;
        let bytes = &batch.reply.as_raw_document().as_bytes()[range];
        RawDocument::from_bytes(bytes)
            .map(Some)
            .map_err(|e| StoreError::Internal(e.to_string()))
    }

    /// Fetches the next non-empty batch; `false` once there is none.
    fn fetch(&mut self) -> Result<bool, StoreError> {
        self.batch = None;
        loop {
            // The server said its last batch was the last (cursor id 0): nothing to fetch,
            // so nothing to reserve.
            if self.exhausted {
                return Ok(false);
            }
            let memory = match self.reserved.take() {
                Some(grant) => grant,
                None => self
                    .budget
                    .acquire_admitted(MAX_BATCH_BYTES, self.memory_wait)
                    .ok_or(StoreError::Busy)?,
            };
            let next = block_on(&self.handle, self.timeout, async {
                self.cursor.next().await.transpose()
            });
            let Some(reply) = next? else {
                return Ok(false);
            };
            let batch = Batch::new(reply, memory)?;
            self.exhausted = batch.last;
            if !batch.documents.is_empty() {
                self.batch = Some(batch);
                return Ok(true);
            }
        }
    }
}

impl Batch {
    fn new(reply: RawBatch, mut memory: Grant) -> Result<Batch, StoreError> {
        let base = reply.as_raw_document().as_bytes();
        memory.resize(base.len() as u64, Duration::ZERO);
        let array = reply
            .doc_slices()
            .map_err(|e| StoreError::Internal(e.kind.to_string()))?;
        let mut documents = Vec::new();
        for element in array {
            let element = element.map_err(|e| StoreError::Internal(e.to_string()))?;
            let RawBsonRef::Document(document) = element else {
                return Err(StoreError::Internal(
                    "a batch item is not a document".into(),
                ));
            };
            let bytes = document.as_bytes();
            let start = bytes.as_ptr() as usize - base.as_ptr() as usize;
            documents.push(start..start + bytes.len());
        }
        let last = reply
            .as_raw_document()
            .get_document("cursor")
            .and_then(|cursor| cursor.get_i64("id"))
            .is_ok_and(|id| id == 0);
        Ok(Batch {
            reply,
            documents,
            next: 0,
            last,
            _memory: memory,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_kind_is_a_label_the_metrics_export_from_the_start() {
        for e in [
            StoreError::Unavailable("x".into()),
            StoreError::Duplicate,
            StoreError::Rejected("x".into()),
            StoreError::Busy,
            StoreError::Internal("x".into()),
        ] {
            if let Some(kind) = e.kind() {
                assert!(crate::metrics::MONGO_ERROR_KINDS.contains(&kind), "{kind}");
            }
        }
    }

    #[test]
    fn an_id_goes_in_front_of_a_document_without_one() {
        let mut document = RawDocumentBuf::new();
        document.append("a", 1);
        let with = with_id(document);
        let keys: Vec<&str> = with.iter().map(|e| e.unwrap().0).collect();
        assert_eq!(keys, ["_id", "a"]);
        assert!(with.to_document().is_ok());
        let mut own = RawDocumentBuf::new();
        own.append("a", 1);
        own.append("_id", "mine");
        assert_eq!(with_id(own.clone()), own);
    }
}
