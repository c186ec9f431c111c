//! Stored BSON documents back to JSON, written straight from the driver's raw bytes.

use bson::{Bson, RawArray, RawBsonRef, RawDocument};

use super::grow;

/// Why a stored document was not written as JSON.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("stored document cannot be encoded as JSON: {0}")]
    Corrupt(#[from] bson::raw::Error),
    /// The memory the JSON needed was not granted.
    #[error("no memory left to encode a stored document")]
    NoMemory,
}

/// JSON being written, growing only with the consent of `hold`, which is asked for the
/// buffer's next capacity before it grows.
pub struct JsonOut<'o, 'h> {
    out: &'o mut Vec<u8>,
    hold: &'h mut dyn FnMut(usize) -> bool,
}

impl<'o, 'h> JsonOut<'o, 'h> {
    pub fn new(out: &'o mut Vec<u8>, hold: &'h mut dyn FnMut(usize) -> bool) -> Self {
        JsonOut { out, hold }
    }

    /// Makes room for `additional` more bytes.
    fn reserve(&mut self, additional: usize) -> Result<(), EncodeError> {
        if grow(self.out, additional, 0, self.hold) {
            Ok(())
        } else {
            Err(EncodeError::NoMemory)
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// Drops what was written after the first `len` bytes (a document that did not fit).
    pub fn truncate(&mut self, len: usize) {
        self.out.truncate(len);
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
