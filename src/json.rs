//! JSON request bodies to BSON documents, and stored BSON documents back to JSON.
//!
//! A body becomes a document exactly as sent: key order kept, integers stored as 32-bit
//! integers when they fit and 64-bit integers otherwise, numbers with a fraction or an
//! exponent as doubles, so that every value reads back with the type it was written
//! with. What BSON cannot hold faithfully is refused instead of silently changed: integers
//! outside the 64-bit range, duplicate keys (which one would win?), keys containing NUL,
//! and nesting deeper than MongoDB's limit of 100 levels.

use std::fmt;

use mongodb::bson::{Bson, Document, RawArray, RawBsonRef, RawDocument};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// MongoDB refuses documents nested deeper than this.
pub const MAX_DEPTH: usize = 100;

/// Why a request body is not a document we can store.
#[derive(Debug, PartialEq)]
pub enum BodyError {
    Empty,
    InvalidUtf8 { valid_up_to: usize },
    Invalid(String),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Empty => f.write_str("request body is empty; send a JSON object"),
            BodyError::InvalidUtf8 { valid_up_to } => write!(
                f,
                "request body is not valid UTF-8 (first invalid byte at offset {valid_up_to})"
            ),
            BodyError::Invalid(reason) => write!(f, "invalid JSON document: {reason}"),
        }
    }
}

/// Parses a request body that must be one JSON object.
pub fn parse_document(body: &[u8]) -> Result<Document, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError::Empty);
    }
    let text = std::str::from_utf8(body).map_err(|e| BodyError::InvalidUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    let invalid = |e: serde_json::Error| BodyError::Invalid(e.to_string());
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let document = RootSeed.deserialize(&mut deserializer).map_err(invalid)?;
    deserializer.end().map_err(invalid)?;
    if let Some(literal) = oversized_integer(text) {
        return Err(BodyError::Invalid(format!(
            "integer {literal} is outside the 64-bit range MongoDB stores"
        )));
    }
    Ok(document)
}

/// The first integer literal (no fraction, no exponent) that does not fit in an i64.
///
/// serde_json hands integers too large for a u64 to visitors as f64, indistinguishable from
/// a float literal, so they are found in the text instead. Only called on text that has
/// already parsed as JSON, so tokens outside strings are well formed.
fn oversized_integer(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                let is_integer = !matches!(bytes.get(i), Some(b'.' | b'e' | b'E'));
                let literal = &text[start..i];
                if is_integer && literal.parse::<i64>().is_err() {
                    return Some(literal);
                }
                while i < bytes.len()
                    && matches!(bytes[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// The top level: only an object is accepted.
struct RootSeed;

impl<'de> DeserializeSeed<'de> for RootSeed {
    type Value = Document;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Document, D::Error> {
        deserializer.deserialize_any(RootVisitor)
    }
}

struct RootVisitor;

impl<'de> Visitor<'de> for RootVisitor {
    type Value = Document;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Document, A::Error> {
        read_object(map, 1)
    }
}

/// One value at a given nesting depth (the root object is depth 1).
struct ValueSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Bson;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Bson, D::Error> {
        deserializer.deserialize_any(ValueVisitor { depth: self.depth })
    }
}

struct ValueVisitor {
    depth: usize,
}

fn integer<E: de::Error>(value: i64) -> Result<Bson, E> {
    Ok(match i32::try_from(value) {
        Ok(small) => Bson::Int32(small),
        Err(_) => Bson::Int64(value),
    })
}

fn nested<E: de::Error>(depth: usize) -> Result<usize, E> {
    if depth >= MAX_DEPTH {
        return Err(E::custom(format_args!(
            "nested deeper than {MAX_DEPTH} levels, MongoDB's limit"
        )));
    }
    Ok(depth + 1)
}

fn read_object<'de, A: MapAccess<'de>>(mut map: A, depth: usize) -> Result<Document, A::Error> {
    let mut document = Document::new();
    while let Some(key) = map.next_key::<String>()? {
        if key.contains('\0') {
            return Err(de::Error::custom(
                "field names cannot contain NUL characters",
            ));
        }
        if document.contains_key(&key) {
            return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
        }
        let value = map.next_value_seed(ValueSeed { depth })?;
        document.insert(key, value);
    }
    Ok(document)
}

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Bson;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Bson, E> {
        Ok(Bson::Boolean(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Bson, E> {
        integer(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Bson, E> {
        match i64::try_from(v) {
            Ok(v) => integer(v),
            Err(_) => Err(E::custom(format_args!(
                "integer {v} is outside the 64-bit range MongoDB stores"
            ))),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Bson, E> {
        Ok(Bson::Double(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Bson, E> {
        Ok(Bson::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Bson, E> {
        Ok(Bson::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Bson, E> {
        Ok(Bson::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bson, A::Error> {
        let depth = nested(self.depth)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(ValueSeed { depth })? {
            items.push(item);
        }
        Ok(Bson::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Bson, A::Error> {
        let depth = nested(self.depth)?;
        read_object(map, depth).map(Bson::Document)
    }
}

/// A stored document that cannot be written as JSON (corrupt BSON).
#[derive(Debug)]
pub struct EncodeError(String);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stored document cannot be encoded as JSON: {}", self.0)
    }
}

impl std::error::Error for EncodeError {}

impl From<mongodb::bson::raw::Error> for EncodeError {
    fn from(e: mongodb::bson::raw::Error) -> Self {
        EncodeError(e.to_string())
    }
}

/// Appends `document` as JSON to `out`, leaving out `_id` when `skip_id` is set.
///
/// Written straight from the raw BSON the driver received, without building an
/// intermediate document. Types JSON has no literal for (ObjectId, dates, binary,
/// Decimal128, non-finite doubles...) are written in MongoDB's relaxed Extended JSON,
/// e.g. `{"$oid": "..."}`; documents inserted through this API never contain them.
pub fn write_document(
    document: &RawDocument,
    out: &mut Vec<u8>,
    skip_id: bool,
) -> Result<(), EncodeError> {
    write_object(document, out, skip_id)
}

fn write_object(
    document: &RawDocument,
    out: &mut Vec<u8>,
    skip_id: bool,
) -> Result<(), EncodeError> {
    out.push(b'{');
    let mut first = true;
    for element in document {
        let (key, value) = element?;
        if skip_id && key == "_id" {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_string(key, out);
        out.push(b':');
        write_value(value, out)?;
    }
    out.push(b'}');
    Ok(())
}

fn write_array(array: &RawArray, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.push(b'[');
    for (i, value) in array.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_value(value?, out)?;
    }
    out.push(b']');
    Ok(())
}

fn write_string(value: &str, out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, value).expect("writing to a Vec cannot fail");
}

fn write_value(value: RawBsonRef<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match value {
        RawBsonRef::Document(d) => write_object(d, out, false)?,
        RawBsonRef::Array(a) => write_array(a, out)?,
        RawBsonRef::String(s) => write_string(s, out),
        RawBsonRef::Int32(i) => out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes()),
        RawBsonRef::Int64(i) => out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes()),
        // serde_json writes the shortest representation that reads back to the same f64,
        // always with a fraction or exponent, so 1.0 stays a float.
        RawBsonRef::Double(d) if d.is_finite() => {
            serde_json::to_writer(&mut *out, &d).expect("writing to a Vec cannot fail")
        }
        RawBsonRef::Boolean(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        RawBsonRef::Null => out.extend_from_slice(b"null"),
        other => {
            let owned = Bson::try_from(other.to_raw_bson())?;
            serde_json::to_writer(&mut *out, &owned.into_relaxed_extjson())
                .expect("writing to a Vec cannot fail");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{doc, RawDocumentBuf};

    fn round_trip(json: &str) -> String {
        let document = parse_document(json.as_bytes()).unwrap();
        let raw = RawDocumentBuf::from_document(&document).unwrap();
        let mut out = Vec::new();
        write_document(&raw, &mut out, false).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn values_keep_their_types_and_order() {
        let json = r#"{"z":1,"a":-2147483649,"f":1.0,"g":1.5e+300,"h":-0.0,"s":"é\u0000\"","n":null,"t":true,"o":{"b":[1,2.5,"x",[],{}]}}"#;
        assert_eq!(round_trip(json), json);
        let document = parse_document(json.as_bytes()).unwrap();
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
            let document = parse_document(format!(r#"{{"n":{text}}}"#).as_bytes()).unwrap();
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
            let err = parse_document(format!(r#"{{"n":{too_big}}}"#).as_bytes()).unwrap_err();
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
            let err = parse_document(body).unwrap_err().to_string();
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
        assert!(parse_document(ok.as_bytes()).is_ok());
        let too_deep = format!(
            "{}{}",
            "{\"a\":".repeat(MAX_DEPTH) + "{",
            "}".repeat(MAX_DEPTH + 1)
        );
        assert!(parse_document(too_deep.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("100 levels"));
        let hostile = "[".repeat(100_000);
        assert!(parse_document(format!("{{\"a\":{hostile}").as_bytes()).is_err());
    }

    #[test]
    fn skips_id_and_writes_other_types_as_extended_json() {
        let raw = RawDocumentBuf::from_document(&doc! {
            "_id": mongodb::bson::oid::ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap(),
            "nan": f64::NAN,
            "when": mongodb::bson::DateTime::from_millis(0),
        })
        .unwrap();
        let mut out = Vec::new();
        write_document(&raw, &mut out, true).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"nan":{"$numberDouble":"NaN"},"when":{"$date":"1970-01-01T00:00:00Z"}}"#
        );
        let mut out = Vec::new();
        write_document(&raw, &mut out, false).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .starts_with(r#"{"_id":{"$oid":"65a1b2c3d4e5f60718293a4b"}"#));
    }
}
