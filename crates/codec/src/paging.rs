//! Resume cursors for `GET /data?limit=N&after=CURSOR`.
//!
//! Documents are listed in ascending `_id` order. A cursor names the last `_id` of a page;
//! the next page starts strictly after it. It is opaque to clients: base64url (no padding)
//! of a one-field BSON document holding that `_id`, so any `_id` type round-trips exactly.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bson::{Bson, RawBsonRef, RawDocumentBuf};

/// The longest `_id` (its BSON value) the service stores: its cursor then takes at most
/// about 1.4 KiB of a `Link` header and of the next request line, far inside the 16 KiB
/// the server reads of a request head. MongoDB itself stored no longer `_id` before 4.2
/// (index keys were limited to 1,024 bytes), so no client of older servers relied on one.
pub const MAX_ID_BYTES: usize = 1024;

/// Cursors longer than this are refused before decoding. Larger than any cursor of an
/// `_id` this service stores, so that documents other clients wrote with longer `_id`s
/// can be paged past too, as long as the request fits in a request head.
const MAX_CURSOR_LEN: usize = 12 * 1024;

/// Whether an `_id` is longer than the service stores (see [`MAX_ID_BYTES`]).
pub fn id_too_long(id: RawBsonRef<'_>) -> bool {
    let mut document = RawDocumentBuf::new();
    document.append_ref("", id);
    // The one-element document: length (4), type (1), empty name (1), value, end (1).
    document.as_bytes().len() - 7 > MAX_ID_BYTES
}

pub fn encode(last_id: RawBsonRef<'_>) -> String {
    let mut document = RawDocumentBuf::new();
    document.append_ref("", last_id);
    URL_SAFE_NO_PAD.encode(document.as_bytes())
}

/// The `_id` a cursor names, or `None` if it is not one this server issued.
pub fn decode(cursor: &str) -> Option<Bson> {
    if cursor.len() > MAX_CURSOR_LEN {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let document = RawDocumentBuf::from_bytes(bytes).ok()?;
    let mut elements = document.iter();
    let (key, value) = elements.next()?.ok()?;
    if !key.is_empty() || elements.next().is_some() {
        return None;
    }
    Bson::try_from(value.to_raw_bson()).ok()
}

/// The query string of `GET /data`: `limit` and `after`, each at most once, nothing else.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Params {
    /// Page size, lowered to the configured maximum; `None`: the whole collection.
    pub limit: Option<u32>,
    /// Start after the document with this `_id`.
    pub after: Option<Bson>,
}

impl Params {
    /// Parses a raw (percent-encoded) query string; the error says what is wrong.
    pub fn parse(query: &str, limit_max: u32) -> Result<Params, String> {
        let mut params = Params::default();
        let mut seen_after = false;
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let duplicate = || format!("query parameter {name:?} given twice");
            match name.as_ref() {
                "limit" => {
                    if params.limit.is_some() {
                        return Err(duplicate());
                    }
                    let limit: u32 = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        format!("limit must be a whole number from 1 to {limit_max}, got {value:?}")
                    })?;
                    params.limit = Some(limit.min(limit_max));
                }
                "after" => {
                    if seen_after {
                        return Err(duplicate());
                    }
                    seen_after = true;
                    params.after = Some(decode(&value).ok_or_else(|| {
                        "after must be a cursor taken from a Link header of this API".to_owned()
                    })?);
                }
                _ => {
                    return Err(format!(
                        "unknown query parameter {name:?}; GET /data takes limit and after"
                    ))
                }
            }
        }
        Ok(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::oid::ObjectId;

    #[test]
    fn round_trips_any_id_type() {
        for id in [
            Bson::ObjectId(ObjectId::new()),
            Bson::Int32(7),
            Bson::Double(2.5),
            Bson::String("a/b+c".into()),
            Bson::Document(bson::doc! {"k": 1}),
        ] {
            let raw = bson::RawBson::try_from(id.clone()).unwrap();
            let token = encode(raw.as_raw_bson_ref());
            assert!(token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(decode(&token), Some(id));
        }
    }

    #[test]
    fn query_parameters() {
        let parse = |q: &str| Params::parse(q, 100);
        assert_eq!(parse(""), Ok(Params::default()));
        assert_eq!(parse("limit=5").unwrap().limit, Some(5));
        assert_eq!(parse("limit=5000").unwrap().limit, Some(100));
        for bad in [
            "limit=0",
            "limit=-1",
            "limit=abc",
            "limit=",
            "limit=1&limit=2",
            "after=xyz",
            "foo=1",
            "limit=99999999999",
            "after=&after=",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let cursor = encode(RawBsonRef::Int32(3));
        assert_eq!(
            parse(&format!("after={cursor}")).unwrap().after,
            Some(Bson::Int32(3))
        );
    }

    #[test]
    fn rejects_foreign_tokens() {
        assert_eq!(decode(""), None);
        assert_eq!(decode("not base64!"), None);
        assert_eq!(
            decode(&URL_SAFE_NO_PAD.encode(b"\x05\x00\x00\x00\x00")),
            None
        );
        assert_eq!(decode(&"A".repeat(13_000)), None);
    }

    #[test]
    fn every_id_the_service_stores_has_a_cursor_it_accepts() {
        // The longest string `_id` stored: 1,024 bytes of BSON value (length, text, NUL).
        let longest = "x".repeat(MAX_ID_BYTES - 5);
        assert!(!id_too_long(RawBsonRef::String(&longest)));
        assert!(id_too_long(RawBsonRef::String(&format!("{longest}x"))));
        let cursor = encode(RawBsonRef::String(&longest));
        assert_eq!(decode(&cursor), Some(Bson::String(longest)));
        // Longer ones other clients wrote still page, up to what a request head holds.
        let foreign = "y".repeat(8_000);
        assert_eq!(
            decode(&encode(RawBsonRef::String(&foreign))),
            Some(Bson::String(foreign))
        );
    }
}
