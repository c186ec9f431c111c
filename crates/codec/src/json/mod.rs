//! JSON request bodies to BSON documents, and stored BSON documents back to JSON.
//!
//! A body becomes a document exactly as sent: key order kept, integers stored as 32-bit
//! integers when they fit and 64-bit integers otherwise, numbers with a fraction or an
//! exponent as doubles, so that every value reads back with the type it was written
//! with. What BSON cannot hold faithfully is refused instead of silently changed: integers
//! outside the 64-bit range, duplicate keys (which one would win?), keys containing NUL,
//! and nesting deeper than MongoDB's limit of 100 levels.
//!
//! The body is converted straight into BSON bytes as it is parsed, with no tree of values
//! in between, so a document costs its BSON size once (plus a small set of key hashes per
//! object while it is parsed). That size can still be several times the JSON's (an array
//! of small numbers grows about sixfold: BSON stores every index as a key), so the
//! converter asks before it grows (see [`parse_document`]).

mod decode;
mod encode;

pub use decode::{parse_document, BodyError, MAX_DEPTH};
pub use encode::{write_document, EncodeError, JsonArray, JsonOut};

/// Spare room left at the end of every converted document, so that an `_id` element
/// (type, name, ObjectId: 17 bytes) can be put in front without growing the buffer.
pub const ID_ROOM: usize = 17;

/// Makes room in `out` for `additional` more bytes, once `hold` has granted the total
/// it would then hold: the grown capacity plus `beside` (other memory of the caller's).
/// The capacity doubles, so that many small appends cost little copying, but never grows
/// more than 1 MiB beyond what is needed, since everything asked for is counted against
/// the memory budget. Returns false, with `out` unchanged, when refused.
fn grow(
    out: &mut Vec<u8>,
    additional: usize,
    beside: usize,
    hold: &mut dyn FnMut(usize) -> bool,
) -> bool {
    let needed = out.len() + additional;
    if needed <= out.capacity() {
        return true;
    }
    let capacity = needed
        .max((out.capacity() * 2).min(needed + 1024 * 1024))
        .max(64);
    if !hold(capacity + beside) {
        return false;
    }
    out.reserve_exact(capacity - out.len());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, Bson, Document, RawDocumentBuf};

    fn parse(body: &[u8]) -> Result<Document, BodyError> {
        parse_document(body, &mut |_| true).map(|raw| raw.to_document().expect("valid BSON"))
    }

    fn round_trip(json: &str) -> String {
        let raw = parse_document(json.as_bytes(), &mut |_| true).unwrap();
        let mut out = Vec::new();
        write_document(&raw, &mut JsonOut::new(&mut out, &mut |_| true), false).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn values_keep_their_types_and_order() {
        let json = r#"{"z":1,"a":-2147483649,"f":1.0,"g":1.5e+300,"h":-0.0,"s":"é\u0000\"","n":null,"t":true,"o":{"b":[1,2.5,"x",[],{}]}}"#;
        assert_eq!(round_trip(json), json);
        let document = parse(json.as_bytes()).unwrap();
        assert_eq!(document.get("z"), Some(&Bson::Int32(1)));
        assert_eq!(document.get("a"), Some(&Bson::Int64(-2147483649)));
        assert_eq!(document.get("f"), Some(&Bson::Double(1.0)));
    }

    #[test]
    fn long_decimals_are_stored_as_the_double_they_denote() {
        // Found by the fuzzer: without correctly rounded parsing this came back 1 ULP off.
        for text in [
            "184.64774473709551615",
            "0.30000000000000004441",
            "2.2250738585072011e-308",
        ] {
            let document = parse(format!(r#"{{"n":{text}}}"#).as_bytes()).unwrap();
            assert_eq!(
                document.get("n"),
                Some(&Bson::Double(text.parse::<f64>().unwrap())),
                "{text}"
            );
        }
    }

    #[test]
    fn i64_limits_are_kept_and_beyond_refused() {
        let json = r#"{"max":9223372036854775807,"min":-9223372036854775808}"#;
        assert_eq!(round_trip(json), json);
        for too_big in [
            "9223372036854775808",
            "-9223372036854775809",
            "123456789012345678901234567890",
        ] {
            let err = parse(format!(r#"{{"n":{too_big}}}"#).as_bytes()).unwrap_err();
            assert!(err.to_string().contains("64-bit"), "{too_big}: {err}");
        }
        // Large numbers written as floats are floats, and integer-looking text inside
        // strings is not a number.
        assert_eq!(
            round_trip(r#"{"f":1e300,"s":"99999999999999999999999"}"#),
            r#"{"f":1e+300,"s":"99999999999999999999999"}"#
        );
    }

    #[test]
    fn refuses_what_cannot_be_stored_faithfully() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"  \n", "empty"),
            (b"{\"a\":\"\xff\"}", "UTF-8"),
            (b"[1,2]", "JSON object"),
            (b"\"text\"", "JSON object"),
            (b"42", "JSON object"),
            (b"null", "JSON object"),
            (b"{\"a\":1,\"a\":2}", "duplicate key"),
            (b"{\"a\":1", "EOF"),
            (b"{\"a\":1} x", "trailing"),
            (b"{\"a\":NaN}", "expected value"),
            (b"{\"a\":Infinity}", "expected value"),
            (b"{\"a\":1e400}", "out of range"),
            (br#"{"a":"\ud800"}"#, "escape"),
            (br#"{"a":"\udc00x"}"#, "surrogate"),
            (b"{\"a\\u0000b\":1}", "NUL"),
        ];
        for (body, expected) in cases {
            let err = parse(body).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{:?}: {err}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn nesting_is_limited_to_mongodb_depth() {
        let ok = format!(
            "{}{}",
            "{\"a\":".repeat(MAX_DEPTH - 1) + "{",
            "}".repeat(MAX_DEPTH)
        );
        assert!(parse(ok.as_bytes()).is_ok());
        let too_deep = format!(
            "{}{}",
            "{\"a\":".repeat(MAX_DEPTH) + "{",
            "}".repeat(MAX_DEPTH + 1)
        );
        assert!(parse(too_deep.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("100 levels"));
        let hostile = "[".repeat(100_000);
        assert!(parse(format!("{{\"a\":{hostile}").as_bytes()).is_err());
    }

    #[test]
    fn the_conversion_holds_about_the_bson_size_and_stops_when_refused() {
        // An array of small numbers: BSON stores every index as a key, about 6x the JSON.
        let body = format!("{{\"a\":[{}0]}}", "0,".repeat(100_000));
        let mut peak = 0;
        let raw = parse_document(body.as_bytes(), &mut |total| {
            peak = peak.max(total);
            true
        })
        .unwrap();
        let bson = raw.as_bytes().len();
        assert!(bson > 5 * body.len(), "{bson} vs {}", body.len());
        assert!(
            peak < 2 * bson + 64 * 1024,
            "held {peak} for {bson} bytes of BSON"
        );
        // The same body with a ceiling below what it needs.
        let refused = parse_document(body.as_bytes(), &mut |total| total < bson / 2);
        assert_eq!(refused.unwrap_err(), BodyError::NoMemory);
        // Many keys: the duplicate check's sets are counted too.
        let body = format!(
            "{{{}\"last\":0}}",
            (0..50_000)
                .map(|i| format!("\"k{i}\":0,"))
                .collect::<String>()
        );
        let mut peak = 0;
        let raw = parse_document(body.as_bytes(), &mut |total| {
            peak = peak.max(total);
            true
        })
        .unwrap();
        assert!(peak > raw.as_bytes().len() + 50_000 * 8, "{peak}");
        // A key repeated at the end of 50,000 is still found.
        let repeated = format!("{{{}\"k7\":1}}", &body[1..body.len() - 9]);
        let err = parse(repeated.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("duplicate key \"k7\""), "{err}");
    }

    #[test]
    fn skips_id_and_writes_other_types_as_extended_json() {
        let raw = RawDocumentBuf::from_document(&doc! {
            "_id": bson::oid::ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap(),
            "nan": f64::NAN,
            "when": bson::DateTime::from_millis(0),
        })
        .unwrap();
        let mut out = Vec::new();
        write_document(&raw, &mut JsonOut::new(&mut out, &mut |_| true), true).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"nan":{"$numberDouble":"NaN"},"when":{"$date":"1970-01-01T00:00:00Z"}}"#
        );
        let mut out = Vec::new();
        write_document(&raw, &mut JsonOut::new(&mut out, &mut |_| true), false).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .starts_with(r#"{"_id":{"$oid":"65a1b2c3d4e5f60718293a4b"}"#));
    }
}
