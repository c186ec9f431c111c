//! The API's errors and, in one place, the status and message each one answers with.

use serde_json::json;

use super::reply::Reply;

#[derive(Debug)]
pub enum ApiError {
    NotFound,
    MethodNotAllowed {
        allow: &'static str,
    },
    BadRequest(String),
    PayloadTooLarge {
        limit: u64,
    },
    UnsupportedMediaType,
    Conflict,
    /// MongoDB cannot be reached, or refuses our credentials.
    Unavailable,
    /// The request waited too long for a worker.
    Overloaded,
    /// Details are logged where the error happened, never sent.
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

    fn message(&self) -> String {
        match self {
            ApiError::NotFound => "not found".into(),
            ApiError::MethodNotAllowed { allow } => format!("method not allowed; use {allow}"),
            ApiError::BadRequest(reason) => reason.clone(),
            ApiError::PayloadTooLarge { limit } => {
                format!("request body larger than the {limit}-byte limit")
            }
            ApiError::UnsupportedMediaType => {
                "Content-Type must be application/json (charset utf-8, if given)".into()
            }
            ApiError::Conflict => "a document with this _id already exists".into(),
            ApiError::Unavailable => "database unavailable, try again later".into(),
            ApiError::Overloaded => "server overloaded, try again later".into(),
            ApiError::Internal => "internal server error".into(),
        }
    }

    pub fn into_reply(self) -> Reply {
        let reply = Reply::json_value(self.status(), &json!({ "error": self.message() }));
        match self {
            ApiError::MethodNotAllowed { allow } => reply.with_header("Allow", allow),
            ApiError::Unavailable | ApiError::Overloaded => reply.with_header("Retry-After", "1"),
            _ => reply,
        }
    }
}
