//! Everything that talks to MongoDB: one shared client, the `data` collection, and the
//! mapping of driver errors to what the HTTP layer needs to know.

mod batch;

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{doc, Bson, Document, RawDocument, RawDocumentBuf};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{Acknowledgment, ClientOptions, Credential, ServerAddress, WriteConcern};
use mongodb::sync::{Client, Collection, Cursor, Database};

use crate::config::{Config, ConfigError, MongoTarget};
use crate::metrics::Metrics;

const COLLECTION: &str = "data";
/// Documents per batch fetched while listing: bounds memory per request (a batch is
/// held while it is written out) and keeps round trips few.
const BATCH_SIZE: u32 = 1000;

/// Why an operation failed, in the terms the HTTP layer answers with.
#[derive(Debug, Clone)]
pub enum StoreError {
    /// MongoDB could not be reached in time, refused our credentials, or went away.
    Unavailable(mongodb::error::Error),
    /// A document with the same `_id` exists.
    Duplicate,
    /// MongoDB refused the document; the message says why.
    Rejected(String),
    /// Anything else: a bug or a misconfiguration worth a log line.
    Internal(mongodb::error::Error),
    /// The code writing a batch panicked (a bug; logged where it happened).
    Panicked,
}

impl StoreError {
    /// A fixed word for the metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Duplicate => "duplicate_key",
            StoreError::Rejected(_) => "rejected",
            StoreError::Internal(_) | StoreError::Panicked => "internal",
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(e) => write!(f, "MongoDB unavailable: {e}"),
            StoreError::Duplicate => f.write_str("duplicate _id"),
            StoreError::Rejected(m) => write!(f, "document rejected: {m}"),
            StoreError::Internal(e) => write!(f, "MongoDB error: {e}"),
            StoreError::Panicked => f.write_str("the write panicked"),
        }
    }
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
            ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::Authentication { .. }
            | ErrorKind::DnsResolve { .. }
            | ErrorKind::Shutdown
            | ErrorKind::Write(WriteFailure::WriteConcernError(_)) => StoreError::Unavailable(e),
            _ if e.contains_label("RetryableWriteError") || e.contains_label("NetworkError") => {
                StoreError::Unavailable(e)
            }
            _ => StoreError::Internal(e),
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

pub struct Store {
    client: Client,
    database: Database,
    documents: Collection<Document>,
    raw: Collection<RawDocumentBuf>,
    inserts: batch::Batcher<Document, Result<(), StoreError>>,
    metrics: Arc<Metrics>,
}

impl Store {
    /// Builds the client. No I/O happens here (except SRV lookups for a `mongodb+srv` URI):
    /// the driver connects in the background, so the service starts, and answers
    /// `/healthz`, even while MongoDB is down.
    pub fn connect(config: &Config, metrics: Arc<Metrics>) -> Result<Store, ConfigError> {
        let options = client_options(config)?;
        let client = Client::with_options(options)
            .map_err(|e| ConfigError(format!("MongoDB client: {}", e.kind)))?;
        let database = client.database(&config.database());
        let documents = database.collection::<Document>(COLLECTION);
        let raw = documents.clone_with_type::<RawDocumentBuf>();
        Ok(Store {
            client,
            database,
            documents,
            raw,
            inserts: batch::Batcher::default(),
            metrics,
        })
    }

    /// Stores a document as given; the driver adds an ObjectId `_id` if it has none.
    /// Concurrent inserts are written together (see `batch`); each gets its own outcome.
    pub fn insert(&self, document: Document) -> Result<(), StoreError> {
        self.inserts.submit(
            document,
            |batch| self.insert_batch(batch),
            // MongoDB unreachable: those queued meanwhile get the 503 now rather than after
            // a second timeout of their own, so a write fails within MONGO_TIMEOUT_MS.
            |results| {
                results
                    .iter()
                    .find(|r| matches!(r, Err(StoreError::Unavailable(_))))
                    .cloned()
            },
        )
    }

    /// Writes a batch unordered, so that one refused document does not stop the others,
    /// and maps the outcome back to each document.
    fn insert_batch(&self, batch: Vec<Document>) -> Vec<Result<(), StoreError>> {
        let count = batch.len();
        self.metrics.insert_batch(count);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if count == 1 {
                let document = batch.into_iter().next().expect("one document");
                return vec![self
                    .documents
                    .insert_one(document)
                    .run()
                    .map(drop)
                    .map_err(StoreError::from)];
            }
            match self.documents.insert_many(&batch).ordered(false).run() {
                Ok(_) => vec![Ok(()); count],
                Err(e) => self.batch_failure(batch, e),
            }
        }));
        outcome.unwrap_or_else(|_| {
            tracing::error!("inserting a batch panicked");
            vec![Err(StoreError::Panicked); count]
        })
    }

    fn batch_failure(
        &self,
        batch: Vec<Document>,
        error: mongodb::error::Error,
    ) -> Vec<Result<(), StoreError>> {
        match error.kind.as_ref() {
            ErrorKind::InsertMany(failure) => {
                // Write concern not met: every document without its own error was written
                // on the primary, but not durably as asked.
                let rest = match &failure.write_concern_error {
                    Some(_) => Err(StoreError::Unavailable(error.clone())),
                    None => Ok(()),
                };
                let mut results = vec![rest; batch.len()];
                for w in failure.write_errors.iter().flatten() {
                    if let Some(slot) = results.get_mut(w.index) {
                        *slot = Err(if w.code == 11000 {
                            StoreError::Duplicate
                        } else {
                            StoreError::Rejected(w.message.clone())
                        });
                    }
                }
                results
            }
            // Refused before anything was sent (a document the driver cannot encode):
            // write them one by one, so that only the culprit fails.
            ErrorKind::BsonSerialization(_) | ErrorKind::InvalidArgument { .. } => batch
                .into_iter()
                .map(|d| {
                    self.documents
                        .insert_one(d)
                        .run()
                        .map(drop)
                        .map_err(StoreError::from)
                })
                .collect(),
            // Anything else (the server went away...) may or may not have stored them;
            // retrying could store one twice, so all get the error.
            _ => vec![Err(StoreError::from(error)); batch.len()],
        }
    }

    /// Documents in ascending `_id` order, fetched in batches as the cursor is read.
    pub fn list(&self, query: &ListQuery) -> Result<DocumentStream, StoreError> {
        // `$gt` outside `$expr` only matches values of the same BSON type, so paging would
        // stop at the first page boundary between, say, integer and ObjectId `_id`s; the
        // aggregation comparison uses the same cross-type order as the sort.
        let filter = match &query.after {
            Some(after) => doc! { "$expr": { "$gt": ["$_id", { "$literal": after.clone() }] } },
            None => doc! {},
        };
        let mut find = self
            .raw
            .find(filter)
            .sort(doc! { "_id": 1 })
            .batch_size(BATCH_SIZE);
        if !query.with_id {
            find = find.projection(doc! { "_id": 0 });
        }
        if let Some(limit) = query.limit {
            find = find.limit(i64::from(limit));
        }
        Ok(DocumentStream(find.run()?))
    }

    /// Round trip to the server: does MongoDB answer, with our credentials?
    pub fn ping(&self) -> Result<(), StoreError> {
        self.database.run_command(doc! { "ping": 1 }).run()?;
        Ok(())
    }

    /// Closes the driver's connections.
    pub fn shutdown(&self) {
        // The client is a handle on shared state: closing a clone closes it.
        self.client.clone().shutdown().immediate(true).run();
    }
}

/// Documents as the driver fetches them, batch by batch.
pub struct DocumentStream(Cursor<RawDocumentBuf>);

impl DocumentStream {
    /// The next document, borrowed from the driver's current batch (no copy is made);
    /// `None` once the query is exhausted.
    pub fn next_document(&mut self) -> Result<Option<&RawDocument>, StoreError> {
        if self.0.advance()? {
            Ok(Some(self.0.current()))
        } else {
            Ok(None)
        }
    }
}

fn client_options(config: &Config) -> Result<ClientOptions, ConfigError> {
    let mut options = match config.mongo_target() {
        MongoTarget::Uri(uri) => ClientOptions::parse(uri.expose())
            .run()
            .map_err(|e| ConfigError(format!("MONGODB_URI: {}", e.kind)))?,
        MongoTarget::Host {
            host,
            port,
            credential,
        } => {
            let mut options = ClientOptions::default();
            options.hosts = vec![ServerAddress::Tcp {
                host,
                port: Some(port),
            }];
            // One named server, like the reference app's single-host URI: talk to it
            // directly rather than discovering a replica set from it.
            options.direct_connection = Some(true);
            // Handing the driver the credential as values, not pasted into a URI, means
            // no character of the password needs escaping.
            options.credential = credential.map(|(user, password, source)| {
                Credential::builder()
                    .username(user)
                    .password(password.expose().to_owned())
                    .source(source)
                    .build()
            });
            options
        }
    };
    let timeout = config.mongo_timeout();
    options.app_name = Some("mongo-api".into());
    options.server_selection_timeout = Some(timeout);
    options.connect_timeout = Some(timeout);
    // Every MongoDB operation runs on a worker thread and a worker runs one at a time, so
    // a pool as large as the worker count means no worker ever waits for a connection,
    // and a pod never opens more than that many.
    options.max_pool_size = Some(u32::from(config.workers));
    options.max_idle_time = Some(Duration::from_secs(300));
    // Acknowledged means journaled (and replicated to a majority on a replica set): a
    // write answered 201 survives a MongoDB restart. The write waits at most the
    // configured timeout for the majority.
    if options.write_concern.is_none() {
        options.write_concern = Some(
            WriteConcern::builder()
                .w(Acknowledgment::Majority)
                .journal(true)
                .w_timeout(timeout)
                .build(),
        );
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_kind_is_a_label_the_metrics_export_from_the_start() {
        let error = || mongodb::error::Error::custom("test");
        for e in [
            StoreError::Unavailable(error()),
            StoreError::Duplicate,
            StoreError::Rejected("x".into()),
            StoreError::Internal(error()),
            StoreError::Panicked,
        ] {
            assert!(
                crate::metrics::MONGO_ERROR_KINDS.contains(&e.kind()),
                "{}",
                e.kind()
            );
        }
    }
}
