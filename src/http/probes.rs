//! Kubernetes probes and the metrics scrape. Liveness says only that this process answers
//! HTTP: restarting the pod cannot fix a database outage, so it never looks at MongoDB.
//! Readiness says whether this process has reached MongoDB with its credentials. Until it
//! has (a wrong password in the Secret, a MongoDB not up yet) the pod stays out of the
//! Service, so a rollout of a bad configuration halts with the old pods serving. Once it
//! has, it stays in through a MongoDB restart and answers for itself (`GET /` 200, `/data`
//! 503 with `Retry-After`): a readiness that followed MongoDB took every pod out of the
//! Service at once, and clients of the NodePort got refused connections instead.

use std::sync::atomic::Ordering;

use serde_json::json;

use super::reply::Body;
use super::{ApiError, Handler, Reply};
use crate::store::Session;

impl Handler {
    /// `GET /healthz`.
    pub(super) fn live(&self) -> Reply {
        Reply::json_value(200, &json!({ "status": "ok" }))
    }

    /// `GET /readyz`: until MongoDB has once answered a `ping` (bounded by the MongoDB
    /// timeout), that ping; from then on, ready.
    pub(super) fn ready(&self, session: &Session) -> Result<Reply, ApiError> {
        if !self.reached_mongodb.load(Ordering::Acquire) {
            self.store.ping(session).map_err(super::store_error)?;
            self.reached_mongodb.store(true, Ordering::Release);
        }
        Ok(Reply::json_value(200, &json!({ "status": "ready" })))
    }

    /// `GET /metrics`.
    pub(super) fn scrape(&self) -> Reply {
        let (body, content_type) = self.metrics.render();
        Reply::new(200, content_type, Body::Bytes(body, None))
    }
}
