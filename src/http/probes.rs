//! Kubernetes probes and the metrics scrape. Liveness says only that this process answers
//! HTTP: restarting the pod cannot fix a database outage, so it never looks at MongoDB.
//! Readiness says whether MongoDB answers, so that traffic goes to pods that can serve it.

use serde_json::json;

use super::reply::Body;
use super::{ApiError, Handler, Reply};

impl Handler {
    /// `GET /healthz`.
    pub(super) fn live(&self) -> Reply {
        Reply::json_value(200, &json!({ "status": "ok" }))
    }

    /// `GET /readyz`: a `ping`, bounded by the MongoDB timeout.
    pub(super) fn ready(&self) -> Result<Reply, ApiError> {
        self.store.ping().map_err(super::store_error)?;
        Ok(Reply::json_value(200, &json!({ "status": "ready" })))
    }

    /// `GET /metrics`.
    pub(super) fn scrape(&self) -> Reply {
        let (body, content_type) = self.metrics.render();
        Reply::new(200, content_type, Body::Bytes(body))
    }
}
