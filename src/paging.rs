//! Resume cursors for `GET /data?limit=N&after=CURSOR`.
//!
//! Documents are listed in ascending `_id` order. A cursor names the last `_id` of a page;
//! the next page starts strictly after it. It is opaque to clients: base64url (no padding)
//! of a one-field BSON document holding that `_id`, so any `_id` type round-trips exactly.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use mongodb::bson::{Bson, RawBsonRef, RawDocumentBuf};

/// Cursors longer than this are refused before decoding.
const MAX_CURSOR_LEN: usize = 2048;

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

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::oid::ObjectId;

    #[test]
    fn round_trips_any_id_type() {
        for id in [
            Bson::ObjectId(ObjectId::new()),
            Bson::Int32(7),
            Bson::Double(2.5),
            Bson::String("a/b+c".into()),
            Bson::Document(mongodb::bson::doc! {"k": 1}),
        ] {
            let raw = mongodb::bson::RawBson::try_from(id.clone()).unwrap();
            let token = encode(raw.as_raw_bson_ref());
            assert!(token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(decode(&token), Some(id));
        }
    }

    #[test]
    fn rejects_foreign_tokens() {
        assert_eq!(decode(""), None);
        assert_eq!(decode("not base64!"), None);
        assert_eq!(
            decode(&URL_SAFE_NO_PAD.encode(b"\x05\x00\x00\x00\x00")),
            None
        );
        assert_eq!(decode(&"A".repeat(5000)), None);
    }
}
