use crate::common::{HTTPVersion, Header, StatusCode};
use crate::framing::write_chunked;
use httpdate::HttpDate;
use std::io::{self, Cursor, Read, Write};
use std::time::SystemTime;

/// An HTTP response: a status, headers and a body read from `R`.
///
/// A body of known length is sent with `Content-Length`; one of unknown length is sent
/// chunked to HTTP/1.1 clients and, to HTTP/1.0 clients, delimited by closing the
/// connection (never buffered whole in memory).
pub struct Response<R> {
    reader: R,
    status_code: StatusCode,
    headers: Vec<Header>,
    data_length: Option<usize>,
}

/// A response whose body type is erased.
pub type ResponseBox = Response<Box<dyn Read + Send>>;

fn header(field: &'static str, value: &str) -> Header {
    Header::from_bytes(field.as_bytes(), value.as_bytes()).expect("static header is ASCII")
}

fn write_head<W: Write>(
    writer: &mut W,
    http_version: &HTTPVersion,
    status_code: StatusCode,
    headers: &[Header],
) -> io::Result<()> {
    write!(
        writer,
        "HTTP/{}.{} {} {}\r\n",
        http_version.0,
        http_version.1,
        status_code.0,
        status_code.default_reason_phrase()
    )?;
    for header in headers {
        writer.write_all(header.field.as_str().as_bytes())?;
        writer.write_all(b": ")?;
        writer.write_all(header.value.as_str().as_bytes())?;
        writer.write_all(b"\r\n")?;
    }
    writer.write_all(b"\r\n")
}

impl<R> Response<R>
where
    R: Read,
{
    /// Builds a response; `data_length` is the exact body length when known.
    pub fn new(
        status_code: StatusCode,
        headers: Vec<Header>,
        data: R,
        data_length: Option<usize>,
    ) -> Response<R> {
        let mut response = Response {
            reader: data,
            status_code,
            headers: Vec::with_capacity(headers.len() + 4),
            data_length,
        };
        for h in headers {
            response.add_header(h)
        }
        response
    }

    /// Adds a header. Framing headers (`Connection`, `Transfer-Encoding`, `Trailer`,
    /// `Upgrade`) are the server's to set and are ignored; `Content-Length` sets the body
    /// length; a second `Content-Type` replaces the first.
    pub fn add_header<H>(&mut self, header: H)
    where
        H: Into<Header>,
    {
        let header = header.into();

        if header.field.equiv("Connection")
            || header.field.equiv("Trailer")
            || header.field.equiv("Transfer-Encoding")
            || header.field.equiv("Upgrade")
        {
            return;
        }

        if header.field.equiv("Content-Length") {
            if let Ok(val) = header.value.as_str().parse() {
                self.data_length = Some(val)
            }
            return;
        }

        if header.field.equiv("Content-Type") {
            if let Some(existing) = self
                .headers
                .iter_mut()
                .find(|h| h.field.equiv("Content-Type"))
            {
                existing.value = header.value;
                return;
            }
        }

        self.headers.push(header);
    }

    #[inline]
    pub fn with_header<H>(mut self, header: H) -> Response<R>
    where
        H: Into<Header>,
    {
        self.add_header(header.into());
        self
    }

    #[inline]
    pub fn with_status_code<S>(mut self, code: S) -> Response<R>
    where
        S: Into<StatusCode>,
    {
        self.status_code = code.into();
        self
    }

    pub fn status_code(&self) -> StatusCode {
        self.status_code
    }

    pub fn data_length(&self) -> Option<usize> {
        self.data_length
    }

    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// Writes the response. `keep_alive` says whether the connection may serve another
    /// request afterwards; the return value says whether it still may (a body of unknown
    /// length to an HTTP/1.0 client can only be ended by closing the connection). When it
    /// may not, the response carries `Connection: close`.
    ///
    /// Does not flush the writer.
    pub(crate) fn raw_print<W: Write>(
        mut self,
        writer: &mut W,
        http_version: &HTTPVersion,
        head_only: bool,
        keep_alive: bool,
    ) -> io::Result<bool> {
        let no_body_allowed = matches!(self.status_code.0, 100..=199 | 204 | 304);
        let chunked = self.data_length.is_none() && *http_version >= (1, 1) && !no_body_allowed;
        let keep_alive = keep_alive && (self.data_length.is_some() || chunked || no_body_allowed);

        if !self.headers.iter().any(|h| h.field.equiv("Date")) {
            let date = HttpDate::from(SystemTime::now()).to_string();
            self.headers.insert(0, header("Date", &date));
        }
        if !keep_alive {
            self.headers.push(header("Connection", "close"));
        } else if *http_version == (1, 0) {
            self.headers.push(header("Connection", "keep-alive"));
        }
        if chunked {
            self.headers.push(header("Transfer-Encoding", "chunked"));
        } else if let (Some(len), false) = (self.data_length, no_body_allowed) {
            self.headers
                .push(header("Content-Length", &len.to_string()));
        }

        write_head(writer, http_version, self.status_code, &self.headers)?;

        if head_only || no_body_allowed {
            return Ok(keep_alive);
        }
        if chunked {
            write_chunked(&mut self.reader, writer)?;
        } else if let Some(len) = self.data_length {
            let copied = io::copy(&mut (&mut self.reader).take(len as u64), writer)?;
            if copied != len as u64 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "response body shorter than its Content-Length",
                ));
            }
        } else {
            io::copy(&mut self.reader, writer)?;
        }
        Ok(keep_alive)
    }
}

impl<R> Response<R>
where
    R: Read + Send + 'static,
{
    /// Erases the body type.
    pub fn boxed(self) -> ResponseBox {
        Response {
            reader: Box::new(self.reader) as Box<dyn Read + Send>,
            status_code: self.status_code,
            headers: self.headers,
            data_length: self.data_length,
        }
    }
}

impl Response<Cursor<Vec<u8>>> {
    /// A `200` response with these bytes as its body.
    pub fn from_data<D>(data: D) -> Response<Cursor<Vec<u8>>>
    where
        D: Into<Vec<u8>>,
    {
        let data = data.into();
        let data_len = data.len();
        Response::new(
            StatusCode(200),
            Vec::new(),
            Cursor::new(data),
            Some(data_len),
        )
    }

    /// A `200` response with this text as a `text/plain; charset=UTF-8` body.
    pub fn from_string<S>(data: S) -> Response<Cursor<Vec<u8>>>
    where
        S: Into<String>,
    {
        Response::from_data(data.into().into_bytes())
            .with_header(header("Content-Type", "text/plain; charset=UTF-8"))
    }

    /// A JSON error body `{"error": message}` with this status.
    pub(crate) fn json_error(status: u16, message: &str) -> Response<Cursor<Vec<u8>>> {
        let mut body = String::from("{\"error\":\"");
        for c in message.chars() {
            match c {
                '"' => body.push_str("\\\""),
                '\\' => body.push_str("\\\\"),
                c if (c as u32) < 0x20 => body.push(' '),
                c => body.push(c),
            }
        }
        body.push_str("\"}");
        let response = Response::from_data(body.into_bytes())
            .with_status_code(status)
            .with_header(header("Content-Type", "application/json"));
        // A refusal for lack of room now: come back in a second.
        if status == 503 {
            response.with_header(header("Retry-After", "1"))
        } else {
            response
        }
    }
}

impl Response<io::Empty> {
    /// A response with this status and no body.
    pub fn empty<S>(status_code: S) -> Response<io::Empty>
    where
        S: Into<StatusCode>,
    {
        Response::new(status_code.into(), Vec::new(), io::empty(), Some(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn print(response: Response<impl Read>, version: (u8, u8), keep_alive: bool) -> (String, bool) {
        let mut out = Vec::new();
        let kept = response
            .raw_print(&mut out, &HTTPVersion::from(version), false, keep_alive)
            .unwrap();
        (String::from_utf8(out).unwrap(), kept)
    }

    #[test]
    fn unknown_length_is_chunked_for_http11() {
        let response = Response::new(StatusCode(200), vec![], &b"abc"[..], None);
        let (text, kept) = print(response, (1, 1), true);
        assert!(kept);
        assert!(text.contains("Transfer-Encoding: chunked\r\n"));
        assert!(text.ends_with("\r\n\r\n3\r\nabc\r\n0\r\n\r\n"));
    }

    #[test]
    fn unknown_length_to_http10_streams_and_closes() {
        let response = Response::new(StatusCode(200), vec![], &b"abc"[..], None);
        let (text, kept) = print(response, (1, 0), true);
        assert!(!kept);
        assert!(text.contains("Connection: close\r\n"));
        assert!(!text.contains("Content-Length"));
        assert!(text.ends_with("\r\n\r\nabc"));
    }

    #[test]
    fn closing_responses_say_so() {
        let (text, kept) = print(Response::from_string("hi"), (1, 1), false);
        assert!(!kept);
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.contains("Content-Length: 2\r\n"));
    }

    #[test]
    fn json_error_escapes_the_message() {
        let (text, _) = print(Response::json_error(400, "bad \"x\"\n"), (1, 1), true);
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(text.ends_with(r#"{"error":"bad \"x\" "}"#));
    }
}
