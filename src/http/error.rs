//! The API's errors and, in one place, the status and message each one answers with.

use serde_json::json;

use super::reply::Reply;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("not found")]
    NotFound,
    #[error("method not allowed; use {allow}")]
    MethodNotAllowed { allow: &'static str },
    #[error("{0}")]
    BadRequest(String),
    #[error("request body larger than the {limit}-byte limit")]
    PayloadTooLarge { limit: u64 },
    #[error("Content-Type must be application/json (charset utf-8, if given)")]
    UnsupportedMediaType,
    #[error("a document with this _id already exists")]
    Conflict,
    /// MongoDB cannot be reached, does not answer in time, or refuses our credentials.
    #[error("database unavailable, try again later")]
    Unavailable,
    /// The request waited too long for a worker or for its share of memory.
    #[error("server overloaded, try again later")]
    Overloaded,
    /// Details are logged where the error happened, never sent.
    #[error("internal server error")]
    Internal,
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::NotFound => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::BadRequest(_) => 400,
            ApiError::PayloadTooLarge { .. } => 413,
            ApiError::UnsupportedMediaType => 415,
            ApiError::Conflict => 409,
            ApiError::Unavailable | ApiError::Overloaded => 503,
            ApiError::Internal => 500,
        }
    }

    pub fn into_reply(self) -> Reply {
        let reply = Reply::json_value(self.status(), &json!({ "error": self.to_string() }));
        match self {
            ApiError::MethodNotAllowed { allow } => reply.with_header("Allow", allow),
            ApiError::Unavailable | ApiError::Overloaded => reply.with_header("Retry-After", "1"),
            _ => reply,
        }
    }
}
