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

use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasher, RandomState};

use mongodb::bson::{Bson, RawArray, RawBsonRef, RawDocument, RawDocumentBuf};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// MongoDB refuses documents nested deeper than this.
pub const MAX_DEPTH: usize = 100;

/// Why a request body is not a document we can store.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum BodyError {
    #[error("request body is empty; send a JSON object")]
    Empty,
    #[error("request body is not valid UTF-8 (first invalid byte at offset {valid_up_to})")]
    InvalidUtf8 { valid_up_to: usize },
    #[error("invalid JSON document: {0}")]
    Invalid(String),
    /// The memory the conversion needed was not granted.
    #[error("no memory left to convert the document")]
    NoMemory,
}

/// The capacity a buffer of `capacity` grows to when it needs `needed`: doubling, so that
/// many small appends cost little copying, but never more than 1 MiB beyond what is
/// needed, since everything asked for is counted against the memory budget.
fn grown(capacity: usize, needed: usize) -> usize {
    needed.max((capacity * 2).min(needed + 1024 * 1024))
}

/// Spare room left at the end of every converted document, so that an `_id` element
/// (type, name, ObjectId: 17 bytes) can be put in front without growing the buffer.
pub const ID_ROOM: usize = 17;

/// Parses a request body that must be one JSON object into a BSON document.
///
/// `hold` is asked, before the converter's memory grows, for the total it is about to
/// hold (its output plus its bookkeeping); when it answers `false` the conversion stops
/// with [`BodyError::NoMemory`]. It is also told when that total shrinks.
pub fn parse_document(
    body: &[u8],
    hold: &mut dyn FnMut(usize) -> bool,
) -> Result<RawDocumentBuf, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError::Empty);
    }
    let text = std::str::from_utf8(body).map_err(|e| BodyError::InvalidUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    let mut writer = Writer::new(hold);
    // Most documents are about as large in BSON as in JSON.
    writer.reserve(text.len() + ID_ROOM)?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let parsed = Root(&mut writer)
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end());
    if writer.out_of_memory {
        return Err(BodyError::NoMemory);
    }
    parsed.map_err(|e| BodyError::Invalid(e.to_string()))?;
    if let Some(literal) = oversized_integer(text) {
        return Err(BodyError::Invalid(format!(
            "integer {literal} is outside the 64-bit range MongoDB stores"
        )));
    }
    RawDocumentBuf::from_bytes(writer.out).map_err(|e| BodyError::Invalid(e.to_string()))
}

/// The BSON being written, and what it holds of the memory it was granted.
struct Writer<'h> {
    out: Vec<u8>,
    hold: &'h mut dyn FnMut(usize) -> bool,
    /// Bytes held by the duplicate-key sets of the objects being parsed.
    key_sets: usize,
    out_of_memory: bool,
    /// The name of the value about to be written (an object's key).
    key: String,
    hasher: RandomState,
}

/// About what one entry of a key-hash set costs, table overhead included.
const KEY_SET_ENTRY: usize = 16;

impl<'h> Writer<'h> {
    fn new(hold: &'h mut dyn FnMut(usize) -> bool) -> Self {
        Writer {
            out: Vec::new(),
            hold,
            key_sets: 0,
            out_of_memory: false,
            key: String::new(),
            hasher: RandomState::new(),
        }
    }

    fn held(&self) -> usize {
        self.out.capacity() + self.key_sets
    }

    /// Asks to hold `total` bytes; remembers a refusal, so that the error the parser
    /// reports can be told apart from invalid JSON.
    fn ask(&mut self, total: usize) -> bool {
        let granted = (self.hold)(total);
        self.out_of_memory |= !granted;
        granted
    }

    /// Makes room for `additional` more bytes of output.
    fn reserve(&mut self, additional: usize) -> Result<(), BodyError> {
        let needed = self.out.len() + additional;
        if needed <= self.out.capacity() {
            return Ok(());
        }
        let capacity = grown(self.out.capacity(), needed).max(64);
        if !self.ask(capacity + self.key_sets) {
            return Err(BodyError::NoMemory);
        }
        self.out.reserve_exact(capacity - self.out.len());
        Ok(())
    }

    fn put<E: de::Error>(&mut self, bytes: &[u8]) -> Result<(), E> {
        self.reserve(bytes.len() + ID_ROOM)
            .map_err(|_| E::custom("out of memory"))?;
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    /// The type byte and name of an element; the value follows.
    fn header<E: de::Error>(&mut self, kind: u8, name: &Name) -> Result<(), E> {
        self.put(&[kind])?;
        match name {
            Name::Key => {
                let key = std::mem::take(&mut self.key);
                let written = self.put(key.as_bytes());
                self.key = key;
                written?;
            }
            Name::Index(i) => self.put(itoa::Buffer::new().format(*i).as_bytes())?,
        }
        self.put(&[0])
    }

    /// Starts a document (or array) body; returns where its length goes.
    fn open<E: de::Error>(&mut self) -> Result<usize, E> {
        let start = self.out.len();
        self.put(&[0; 4])?;
        Ok(start)
    }

    fn close<E: de::Error>(&mut self, start: usize) -> Result<(), E> {
        self.put(&[0])?;
        let length =
            i32::try_from(self.out.len() - start).map_err(|_| E::custom("document too large"))?;
        self.out[start..start + 4].copy_from_slice(&length.to_le_bytes());
        Ok(())
    }
}

/// The name of the value being written: the pending object key, or an array index.
enum Name {
    Key,
    Index(usize),
}

/// The top level: only an object is accepted.
struct Root<'w, 'h>(&'w mut Writer<'h>);

impl<'de> DeserializeSeed<'de> for Root<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(RootVisitor(self.0))
    }
}

struct RootVisitor<'w, 'h>(&'w mut Writer<'h>);

impl<'de> Visitor<'de> for RootVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        convert_object(self.0, map, 1)
    }
}

/// Reads an object key into the writer's pending name.
struct KeySeed<'w, 'h>(&'w mut Writer<'h>);

impl<'de> DeserializeSeed<'de> for KeySeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<(), E> {
        if key.contains('\0') {
            return Err(E::custom("field names cannot contain NUL characters"));
        }
        self.0.key.clear();
        self.0.key.push_str(key);
        Ok(())
    }
}

fn convert_object<'de, A: MapAccess<'de>>(
    w: &mut Writer<'_>,
    mut map: A,
    depth: usize,
) -> Result<(), A::Error> {
    let start = w.open()?;
    let mut seen: HashSet<u64> = HashSet::new();
    let mut accounted = 0;
    let mut result = Ok(());
    while let Some(()) = map.next_key_seed(KeySeed(w))? {
        if seen.len() == seen.capacity() {
            let grown = (seen.capacity() * 2).max(4) * KEY_SET_ENTRY;
            w.key_sets += grown - accounted;
            accounted = grown;
            if !w.ask(w.held()) {
                result = Err(de::Error::custom("out of memory"));
                break;
            }
        }
        let hash = w.hasher.hash_one(&w.key);
        // A repeated hash is almost always a repeated key; the bytes written decide.
        if !seen.insert(hash) && has_key(&w.out[start + 4..], &w.key) {
            result = Err(de::Error::custom(format_args!("duplicate key {:?}", w.key)));
            break;
        }
        map.next_value_seed(ValueSeed {
            w,
            name: Name::Key,
            depth,
        })?;
    }
    w.key_sets -= accounted;
    result?;
    w.close(start)
}

/// Whether the elements in `elements` (written by this converter, so well formed) include
/// one named `key`.
fn has_key(elements: &[u8], key: &str) -> bool {
    let mut at = 0;
    while at < elements.len() {
        let kind = elements[at];
        let name_end = at + 1 + elements[at + 1..].iter().position(|&b| b == 0).unwrap_or(0);
        if &elements[at + 1..name_end] == key.as_bytes() {
            return true;
        }
        let value = name_end + 1;
        let length = |i: usize| {
            i32::from_le_bytes(elements[i..i + 4].try_into().unwrap_or_default()) as usize
        };
        at = value
            + match kind {
                0x01 | 0x12 => 8,
                0x02 => 4 + length(value),
                0x03 | 0x04 => length(value),
                0x08 => 1,
                0x10 => 4,
                _ => 0,
            };
    }
    false
}

/// One value, named `name`, at a given nesting depth (the root object is depth 1).
struct ValueSeed<'w, 'h> {
    w: &'w mut Writer<'h>,
    name: Name,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

fn nested<E: de::Error>(depth: usize) -> Result<usize, E> {
    if depth >= MAX_DEPTH {
        return Err(E::custom(format_args!(
            "nested deeper than {MAX_DEPTH} levels, MongoDB's limit"
        )));
    }
    Ok(depth + 1)
}

impl ValueSeed<'_, '_> {
    fn integer<E: de::Error>(self, value: i64) -> Result<(), E> {
        match i32::try_from(value) {
            Ok(small) => {
                self.w.header(0x10, &self.name)?;
                self.w.put(&small.to_le_bytes())
            }
            Err(_) => {
                self.w.header(0x12, &self.name)?;
                self.w.put(&value.to_le_bytes())
            }
        }
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.w.header(0x08, &self.name)?;
        self.w.put(&[u8::from(v)])
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.integer(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        match i64::try_from(v) {
            Ok(v) => self.integer(v),
            Err(_) => Err(E::custom(format_args!(
                "integer {v} is outside the 64-bit range MongoDB stores"
            ))),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.w.header(0x01, &self.name)?;
        self.w.put(&v.to_le_bytes())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        let length = i32::try_from(v.len() + 1).map_err(|_| E::custom("string too long"))?;
        self.w.header(0x02, &self.name)?;
        self.w.put(&length.to_le_bytes())?;
        self.w.put(v.as_bytes())?;
        self.w.put(&[0])
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.w.header(0x0A, &self.name)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = nested(self.depth)?;
        self.w.header(0x04, &self.name)?;
        let start = self.w.open()?;
        let mut index = 0;
        while let Some(()) = seq.next_element_seed(ValueSeed {
            w: self.w,
            name: Name::Index(index),
            depth,
        })? {
            index += 1;
        }
        self.w.close(start)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let depth = nested(self.depth)?;
        self.w.header(0x03, &self.name)?;
        convert_object(self.w, map, depth)
    }
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

/// Why a stored document was not written as JSON.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("stored document cannot be encoded as JSON: {0}")]
    Corrupt(#[from] mongodb::bson::raw::Error),
    /// The memory the JSON needed was not granted.
    #[error("no memory left to encode a stored document")]
    NoMemory,
}

/// JSON being written, growing only with the consent of `room`, which is asked for the
/// buffer's next capacity before it grows.
pub struct JsonOut<'o, 'r> {
    out: &'o mut Vec<u8>,
    room: &'r mut dyn FnMut(usize) -> bool,
}

impl<'o, 'r> JsonOut<'o, 'r> {
    pub fn new(out: &'o mut Vec<u8>, room: &'r mut dyn FnMut(usize) -> bool) -> Self {
        JsonOut { out, room }
    }

    /// Makes room for `additional` more bytes.
    fn reserve(&mut self, additional: usize) -> Result<(), EncodeError> {
        let needed = self.out.len() + additional;
        if needed <= self.out.capacity() {
            return Ok(());
        }
        let capacity = grown(self.out.capacity(), needed);
        if !(self.room)(capacity) {
            return Err(EncodeError::NoMemory);
        }
        self.out.reserve_exact(capacity - self.out.len());
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    pub fn push(&mut self, byte: u8) -> Result<(), EncodeError> {
        self.reserve(1)?;
        self.out.push(byte);
        Ok(())
    }

    fn extend(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        self.reserve(bytes.len())?;
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    fn string(&mut self, value: &str) -> Result<(), EncodeError> {
        // At most: quotes, two bytes per escaped quote or backslash, six per control
        // character (`\u00XX`).
        let escapes: usize = value
            .bytes()
            .map(|b| match b {
                b'"' | b'\\' => 1,
                0..=0x1f => 5,
                _ => 0,
            })
            .sum();
        self.reserve(value.len() + escapes + 2)?;
        serde_json::to_writer(&mut *self.out, value).expect("writing to a Vec cannot fail");
        Ok(())
    }
}

/// Documents written as the elements of one JSON array, across as many buffers as the
/// caller likes (a page is one, a streamed listing many).
pub struct JsonArray {
    items: usize,
    skip_id: bool,
    opened: bool,
    closed: bool,
}

impl JsonArray {
    /// An array whose documents are written without `_id` when `skip_id` is set.
    pub fn new(skip_id: bool) -> JsonArray {
        JsonArray {
            items: 0,
            skip_id,
            opened: false,
            closed: false,
        }
    }

    /// Documents written so far.
    pub fn items(&self) -> usize {
        self.items
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn open(&mut self, out: &mut JsonOut<'_, '_>) -> Result<(), EncodeError> {
        if !self.opened {
            out.push(b'[')?;
            self.opened = true;
        }
        Ok(())
    }

    pub fn push(
        &mut self,
        document: &RawDocument,
        out: &mut JsonOut<'_, '_>,
    ) -> Result<(), EncodeError> {
        self.open(out)?;
        if self.items > 0 {
            out.push(b',')?;
        }
        write_document(document, out, self.skip_id)?;
        self.items += 1;
        Ok(())
    }

    pub fn close(&mut self, out: &mut JsonOut<'_, '_>) -> Result<(), EncodeError> {
        self.open(out)?;
        out.push(b']')?;
        self.closed = true;
        Ok(())
    }
}

/// Appends `document` as JSON, leaving out `_id` when `skip_id` is set.
///
/// Written straight from the raw BSON the driver received, without building an
/// intermediate document. Types JSON has no literal for (ObjectId, dates, binary,
/// Decimal128, non-finite doubles...) are written in MongoDB's relaxed Extended JSON,
/// e.g. `{"$oid": "..."}`; documents inserted through this API never contain them.
pub fn write_document(
    document: &RawDocument,
    out: &mut JsonOut<'_, '_>,
    skip_id: bool,
) -> Result<(), EncodeError> {
    write_object(document, out, skip_id)
}

fn write_object(
    document: &RawDocument,
    out: &mut JsonOut<'_, '_>,
    skip_id: bool,
) -> Result<(), EncodeError> {
    out.push(b'{')?;
    let mut first = true;
    for element in document {
        let (key, value) = element?;
        if skip_id && key == "_id" {
            continue;
        }
        if !first {
            out.push(b',')?;
        }
        first = false;
        out.string(key)?;
        out.push(b':')?;
        write_value(value, out)?;
    }
    out.push(b'}')
}

fn write_array(array: &RawArray, out: &mut JsonOut<'_, '_>) -> Result<(), EncodeError> {
    out.push(b'[')?;
    for (i, value) in array.into_iter().enumerate() {
        if i > 0 {
            out.push(b',')?;
        }
        write_value(value?, out)?;
    }
    out.push(b']')
}

/// The longest text a number takes (`-1.7976931348623157e+308`, `-9223372036854775808`).
const NUMBER_TEXT: usize = 24;

fn write_value(value: RawBsonRef<'_>, out: &mut JsonOut<'_, '_>) -> Result<(), EncodeError> {
    match value {
        RawBsonRef::Document(d) => write_object(d, out, false),
        RawBsonRef::Array(a) => write_array(a, out),
        RawBsonRef::String(s) => out.string(s),
        RawBsonRef::Int32(i) => out.extend(itoa::Buffer::new().format(i).as_bytes()),
        RawBsonRef::Int64(i) => out.extend(itoa::Buffer::new().format(i).as_bytes()),
        // serde_json writes the shortest representation that reads back to the same f64,
        // always with a fraction or exponent, so 1.0 stays a float.
        RawBsonRef::Double(d) if d.is_finite() => {
            out.reserve(NUMBER_TEXT)?;
            serde_json::to_writer(&mut *out.out, &d).expect("writing to a Vec cannot fail");
            Ok(())
        }
        RawBsonRef::Boolean(b) => out.extend(if b { b"true" } else { b"false" }),
        RawBsonRef::Null => out.extend(b"null"),
        other => {
            // Rare types go through an owned value and its Extended JSON: copies, and
            // text at most a few times the value's size (base64, escapes), asked first.
            out.reserve(6 * rare_size(other) + 256)?;
            let owned = Bson::try_from(other.to_raw_bson())?;
            serde_json::to_writer(&mut *out.out, &owned.into_relaxed_extjson())
                .expect("writing to a Vec cannot fail");
            Ok(())
        }
    }
}

/// The variable part of a value of a type JSON lacks; the rest is a few dozen bytes.
fn rare_size(value: RawBsonRef<'_>) -> usize {
    match value {
        RawBsonRef::Binary(b) => b.bytes.len(),
        RawBsonRef::JavaScriptCode(s) | RawBsonRef::Symbol(s) => s.len(),
        RawBsonRef::RegularExpression(r) => r.pattern.len() + r.options.len(),
        RawBsonRef::JavaScriptCodeWithScope(c) => c.code.len() + c.scope.as_bytes().len(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{doc, Document};

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
            "_id": mongodb::bson::oid::ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap(),
            "nan": f64::NAN,
            "when": mongodb::bson::DateTime::from_millis(0),
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
