//! Everything that talks to MongoDB: a session (runtime and client) per worker thread,
//! the `data` collection, and the mapping of driver errors to what the HTTP layer needs
//! to know.
//!
//! Calls block the worker thread that makes them, as the design wants, but each one runs
//! the official driver's async API under a deadline (`MONGO_TIMEOUT_MS`). The driver's
//! sync API cannot bound an operation against a server that accepts connections and
//! never answers: the Rust driver has no socket timeout and no client-side operation
//! timeout, and its monitor only interrupts operations after a heartbeat times out (10 s
//! by default). Dropping an operation at its deadline is safe: the driver closes a
//! connection returned in the middle of a command instead of reusing it. The async API
//! also gives listings whole raw batches (no per-document copy).
//!
//! Each worker thread has a [`Session`] of its own: a single-threaded tokio runtime that
//! only that thread drives, and a `Client` (with one pooled connection and one monitoring
//! connection per server) created on it. An operation then runs on the worker itself:
//! it sends, sleeps in `epoll_wait` on its own runtime, and wakes when the reply comes, one
//! context switch, where a shared multi-threaded runtime would cross to its threads and
//! back, a dozen switches (docs/performance.md). A worker waiting for work
//! waits inside its runtime ([`Session::wait_for`]), so the driver's monitor and pool keep
//! running. A session is a value the worker owns and lends to each operation, so only
//! code running on a worker can reach MongoDB. The price is a client per worker (the `WORKERS`, the listing workers and the
//! two readiness workers), each with one operation connection and one monitoring
//! connection per server.

mod batch;

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use budget::{Budget, Grant};
use futures_util::StreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{doc, Bson, RawBson, RawBsonRef, RawDocument, RawDocumentBuf};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, ServerMonitoringMode};
use mongodb::raw_batch_cursor::{RawBatch, RawBatchCursor};
use mongodb::{Client, Collection, Database};
use tokio::runtime::Runtime;

use crate::metrics::Metrics;
use crate::settings::MongoSettings;

const COLLECTION: &str = "data";
/// Documents per batch fetched while listing: keeps round trips few.
pub const BATCH_SIZE: u32 = 1000;
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

/// Which documents to fetch: those whose `_id` sorts after `after` (all, without it),
/// in `_id` order, at most `limit` of them (and at most what one 16 MiB reply holds).
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub after: Option<Bson>,
    pub limit: u32,
}

/// A document waiting to be inserted, with the memory it holds.
struct Pending {
    document: RawDocumentBuf,
    memory: Grant,
}

/// What every worker's client is made from, and what every operation is held to.
pub struct Store {
    options: ClientOptions,
    database: String,
    /// Listings longer than a batch go on with a cursor of their own, which any worker
    /// may advance: on a client whose runtime runs on its own thread.
    continuations: Continuations,
    inserts: batch::Batcher<Pending, Result<(), StoreError>>,
    metrics: Arc<Metrics>,
    timeout: Duration,
    memory: Budget,
    memory_wait: Duration,
}

/// The client that listings continue on once their first batch is sent.
struct Continuations {
    runtime: Runtime,
    documents: Collection<RawDocumentBuf>,
}

/// Where a listing longer than one batch goes on: a cursor opened strictly after the
/// last `_id` of its first batch, kept from turn to turn. One `getMore` per batch, not a
/// new query per batch: a resumed query has to find its place in the index again, and
/// a server that does not use index bounds for it scans from the start each time (the
/// stand-in, measured: 60,000 documents listed in 0.36 s by one cursor, 6.9 s by
/// resumed queries). The cursor is closed when the listing ends, or is cut; MongoDB
/// closes one left idle for 10 minutes (`cursorTimeoutMillis`), which then ends a
/// listing whose client took that long between two batches.
#[derive(Default)]
pub struct Continuation {
    cursor: Option<RawBatchCursor>,
}

/// One worker's MongoDB: a runtime only its thread drives, and a client living on it.
/// Dropping it closes the client's connections.
pub struct Session {
    runtime: Runtime,
    client: Client,
    database: Database,
    documents: Collection<RawDocumentBuf>,
    timeout: Duration,
}

impl Session {
    /// Waits for `until` inside this session's runtime, so that its client's monitor and
    /// pool go on meanwhile.
    pub fn wait_for<F: Future>(&self, until: F) -> F::Output {
        self.runtime.block_on(until)
    }

    /// Runs one operation on this session's runtime to completion, or gives up at the
    /// deadline.
    fn run<T>(
        &self,
        operation: impl Future<Output = mongodb::error::Result<T>>,
    ) -> Result<T, StoreError> {
        run_on(&self.runtime, self.timeout, operation)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let client = self.client.clone();
        let closed = self.runtime.block_on(async {
            tokio::time::timeout(self.timeout, client.shutdown().immediate(true)).await
        });
        if closed.is_err() {
            tracing::warn!("MongoDB connections not closed in time");
        }
    }
}

impl Store {
    /// Prepares the clients' options and the listings' client. Nothing waits for MongoDB
    /// here (except SRV lookups for a `mongodb+srv` URI): each client connects in the
    /// background, a worker's once it opens its session, so the service starts, and
    /// answers `/healthz`, while MongoDB is down. Listings take their batches from
    /// `memory`, waiting at most `memory_wait`.
    pub fn new(
        settings: &MongoSettings,
        listings: u16,
        metrics: Arc<Metrics>,
        memory: Budget,
        memory_wait: Duration,
    ) -> Result<Store, ConnectError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut options = runtime
            .block_on(settings.client_options(1))
            .map_err(|e| ConnectError::Client(e.kind.to_string()))?;
        let continuations = {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("mongodb")
                .enable_all()
                .build()?;
            let mut options = options.clone();
            // As many as may fetch at once, and one to spare.
            options.max_pool_size = Some(u32::from(listings) + 1);
            let client = {
                let _inside = runtime.enter();
                Client::with_options(options)
                    .map_err(|e| ConnectError::Client(e.kind.to_string()))?
            };
            let documents = client
                .database(&settings.database())
                .collection::<RawDocumentBuf>(COLLECTION);
            Continuations { runtime, documents }
        };
        // Polling (one connection per server, one `hello` every heartbeat) rather than
        // streaming (two): a worker's runtime runs only while the worker is in it.
        options.server_monitoring_mode = Some(ServerMonitoringMode::Poll);
        Ok(Store {
            options,
            database: settings.database(),
            continuations,
            inserts: batch::Batcher::default(),
            metrics,
            timeout: settings.timeout(),
            memory,
            memory_wait,
        })
    }

    /// A session for a worker: a runtime and a client of its own, for as long as the
    /// worker keeps it.
    pub fn open_session(&self) -> Result<Session, ConnectError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // Created inside the runtime, so that the driver's background tasks run on it.
        let client = {
            let _inside = runtime.enter();
            Client::with_options(self.options.clone())
                .map_err(|e| ConnectError::Client(e.kind.to_string()))?
        };
        let database = client.database(&self.database);
        let documents = database.collection::<RawDocumentBuf>(COLLECTION);
        Ok(Session {
            runtime,
            client,
            database,
            documents,
            timeout: self.timeout,
        })
    }

    /// Stores a document as given (an ObjectId `_id` is put in front if it has none) and
    /// hands `answer` the outcome. `memory` is what the caller reserved for it (see
    /// [`INSERT_COPIES`]); it is held until the write is done. Concurrent inserts are
    /// written together (see `batch`): while another worker writes, the document is
    /// queued and this returns at once, and that worker calls `answer` once its write of
    /// the document is done.
    pub fn insert(
        &self,
        session: &Session,
        document: RawDocumentBuf,
        memory: Grant,
        answer: impl FnOnce(Result<(), StoreError>) + Send + 'static,
    ) {
        let document = with_id(document);
        if document.as_bytes().len() > MAX_DOCUMENT_BYTES {
            return answer(Err(StoreError::Rejected(
                "the document is larger than MongoDB's 16 MiB limit".into(),
            )));
        }
        let pending = Pending { document, memory };
        let metrics = self.metrics.clone();
        self.inserts.submit(
            pending,
            Box::new(move |outcome| answer(counted(&metrics, outcome))),
            |batch| self.insert_batch(session, batch),
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
    }

    /// Writes a batch unordered, so that one refused document does not stop the others,
    /// and maps the outcome back to each document.
    fn insert_batch(&self, session: &Session, batch: Vec<Pending>) -> Vec<Result<(), StoreError>> {
        let count = batch.len();
        self.metrics.insert_batch(count);
        let (documents, memory): (Vec<RawDocumentBuf>, Vec<Grant>) =
            batch.into_iter().map(|p| (p.document, p.memory)).unzip();
        // The driver's own error, which says document by document what failed; the
        // memory stays reserved until MongoDB has answered.
        let written = session.run(async {
            Ok(session
                .documents
                .insert_many(documents.iter())
                .ordered(false)
                .await)
        });
        drop(memory);
        match written {
            Ok(Ok(_)) => vec![Ok(()); count],
            Ok(Err(error)) => batch_failure(count, error),
            Err(error) => vec![Err(error); count],
        }
    }

    /// Up to `query.limit` documents in ascending `_id` order, fetched in one round trip,
    /// with the memory their reply takes (`MAX_BATCH_BYTES` reserved first, waiting at
    /// most `memory_wait`, in line with new requests).
    pub fn fetch(&self, session: &Session, query: &ListQuery) -> Result<Batch, StoreError> {
        let memory = self
            .memory
            .acquire(MAX_BATCH_BYTES, self.memory_wait)
            .ok_or(StoreError::Busy)?;
        counted(&self.metrics, self.fetch_with(session, query, memory))
    }

    /// The next batch of a listing whose first batch (`fetch`) was full: strictly after
    /// `after` the first time, then where its cursor is. Work already under way: its
    /// memory does not queue behind new requests.
    pub fn fetch_more(
        &self,
        continuation: &mut Continuation,
        after: Option<&Bson>,
    ) -> Result<Batch, StoreError> {
        let memory = self
            .memory
            .acquire_admitted(MAX_BATCH_BYTES, MIDWAY_MEMORY_WAIT)
            .ok_or(StoreError::Busy)?;
        let fetched = self.continue_with(continuation, after, memory);
        counted(&self.metrics, fetched)
    }

    fn continue_with(
        &self,
        continuation: &mut Continuation,
        after: Option<&Bson>,
        memory: Grant,
    ) -> Result<Batch, StoreError> {
        let documents = &self.continuations.documents;
        let next = run_on(&self.continuations.runtime, self.timeout, async {
            if continuation.cursor.is_none() {
                let cursor = documents
                    .find(after_filter(after))
                    .sort(doc! { "_id": 1 })
                    .batch_size(BATCH_SIZE)
                    .batch()
                    .await?;
                continuation.cursor = Some(cursor);
            }
            match continuation.cursor.as_mut() {
                Some(cursor) => cursor.next().await.transpose(),
                None => Ok(None),
            }
        })?;
        match next {
            Some(reply) => Batch::new(reply, memory),
            None => Ok(Batch::empty(memory)),
        }
    }

    fn fetch_with(
        &self,
        session: &Session,
        query: &ListQuery,
        memory: Grant,
    ) -> Result<Batch, StoreError> {
        let filter = after_filter(query.after.as_ref());
        let limit = query.limit.max(1);
        let reply = session.run(async {
            let mut cursor = session
                .documents
                .find(filter)
                .sort(doc! { "_id": 1 })
                .limit(i64::from(limit))
                .batch_size(limit)
                .batch()
                .await?;
            // One reply: the limit ends the cursor on the server, unless 16 MiB ended the
            // batch first; then dropping the cursor kills it, and the next fetch resumes
            // after the last document of this one.
            cursor.next().await.transpose()
        })?;
        match reply {
            Some(reply) => Batch::new(reply, memory),
            None => Ok(Batch::empty(memory)),
        }
    }

    /// Round trip to the server: does MongoDB answer, with our credentials?
    pub fn ping(&self, session: &Session) -> Result<(), StoreError> {
        let pinged = session.run(async { session.database.run_command(doc! { "ping": 1 }).await });
        counted(&self.metrics, pinged.map(drop))
    }
}

/// Documents whose `_id` sorts after `after` (all, without it). `$gt` outside `$expr`
/// only matches values of the same BSON type, so paging would stop at the first page
/// boundary between, say, integer and ObjectId `_id`s; the aggregation comparison uses
/// the same cross-type order as the sort.
fn after_filter(after: Option<&Bson>) -> mongodb::bson::Document {
    match after {
        Some(after) => doc! { "$expr": { "$gt": ["$_id", { "$literal": after.clone() }] } },
        None => doc! {},
    }
}

const TIMED_OUT: &str = "no answer within";

fn timed_out(timeout: Duration) -> StoreError {
    StoreError::Unavailable(format!("{TIMED_OUT} {} ms", timeout.as_millis()))
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

/// Runs one operation on `runtime` to completion, or gives up at the deadline.
fn run_on<T>(
    runtime: &Runtime,
    timeout: Duration,
    operation: impl Future<Output = mongodb::error::Result<T>>,
) -> Result<T, StoreError> {
    match runtime.block_on(async { tokio::time::timeout(timeout, operation).await }) {
        Ok(result) => result.map_err(StoreError::from),
        Err(_) => Err(timed_out(timeout)),
    }
}

/// One reply's documents, borrowed from the raw reply (no copy), with the memory the
/// reply takes.
pub struct Batch {
    reply: Option<RawBatch>,
    documents: Vec<Range<usize>>,
    /// The server has nothing more for this query (its cursor is closed).
    complete: bool,
    _memory: Grant,
}

impl Batch {
    fn empty(mut memory: Grant) -> Batch {
        memory.shrink_to(0);
        Batch {
            reply: None,
            documents: Vec::new(),
            complete: true,
            _memory: memory,
        }
    }

    fn new(reply: RawBatch, mut memory: Grant) -> Result<Batch, StoreError> {
        let base = reply.as_raw_document().as_bytes();
        memory.shrink_to(base.len() as u64);
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
        let complete = reply
            .as_raw_document()
            .get_document("cursor")
            .and_then(|cursor| cursor.get_i64("id"))
            .is_ok_and(|id| id == 0);
        Ok(Batch {
            reply: Some(reply),
            documents,
            complete,
            _memory: memory,
        })
    }

    /// Whether the server has nothing more for this query: a batch that is not was cut
    /// short by the 16 MiB a reply may hold.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    pub fn len(&self) -> usize {
        self.documents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }

    /// The documents, in `_id` order.
    pub fn documents(&self) -> impl Iterator<Item = Result<&RawDocument, StoreError>> {
        let base = self
            .reply
            .as_ref()
            .map_or(&[][..], |r| r.as_raw_document().as_bytes());
        self.documents.iter().map(move |range| {
            RawDocument::from_bytes(&base[range.clone()])
                .map_err(|e| StoreError::Internal(e.to_string()))
        })
    }
}

/// The `_id` of a listed document (every stored document has one).
pub fn id_of(document: &RawDocument) -> Result<RawBson, StoreError> {
    document
        .get("_id")
        .ok()
        .flatten()
        .map(|id| id.to_raw_bson())
        .ok_or_else(|| StoreError::Internal("a listed document has no _id".into()))
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
