//! Kubernetes probes. Liveness says only that this process answers HTTP: restarting the
//! pod cannot fix a database outage, so it never looks at MongoDB. Readiness says whether
//! MongoDB answers, so that traffic goes to pods that can serve it.

use serde_json::json;

use crate::http::Reply;
use crate::store::{Store, StoreError};

/// `GET /healthz`.
pub fn live() -> Reply {
    Reply::json_value(200, &json!({ "status": "ok" }))
}

/// `GET /readyz`: a `ping`, bounded by the MongoDB timeout.
pub fn ready(store: &Store) -> Result<(), StoreError> {
    store.ping()
}
