//! JSON request bodies to BSON documents (see the module above for the rules).

use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasher, RandomState};

use bson::RawDocumentBuf;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{grow, ID_ROOM};

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
    pub(super) fn reserve(&mut self, additional: usize) -> Result<(), BodyError> {
        if grow(&mut self.out, additional, self.key_sets, self.hold) {
            Ok(())
        } else {
            self.out_of_memory = true;
            Err(BodyError::NoMemory)
        }
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
