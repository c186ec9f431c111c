//! What crosses mongo-api's HTTP API, as pure functions of bytes (no sockets, no
//! MongoDB), which is what lets them be fuzzed on their own (`fuzz/`):
//!
//! - [`json`]: a `POST /data` body to the BSON document stored, and stored documents
//!   back to the JSON of `GET /data`;
//! - [`paging`]: the query of `GET /data` (`limit`, `after`) and its page cursors.

pub mod json;
pub mod paging;
