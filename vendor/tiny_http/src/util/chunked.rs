//! `Transfer-Encoding: chunked` in both directions, with every line length bounded and a
//! premature end of stream reported as an error rather than as the end of the body.

use std::io::{self, BufRead, Read, Write};

/// Longest chunk-size line (size plus extensions) or trailer line accepted.
const MAX_LINE: usize = 1024;
/// Most trailer lines accepted after the last chunk.
const MAX_TRAILERS: usize = 32;

enum State {
    Size,
    Data(u64),
    DataEnd,
    Done,
}

/// Decodes a chunked request body.
pub(crate) struct ChunkedDecoder<R> {
    source: R,
    state: State,
}

impl<R: BufRead> ChunkedDecoder<R> {
    pub(crate) fn new(source: R) -> Self {
        ChunkedDecoder {
            source,
            state: State::Size,
        }
    }
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Reads one CRLF- (or LF-) terminated line, without its terminator.
fn read_line(source: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    source
        .take(MAX_LINE as u64 + 2)
        .read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Err(if line.len() > MAX_LINE {
            invalid("chunk line too long")
        } else {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "body ended inside a chunk line",
            )
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(line)
}

fn parse_size(line: &[u8]) -> io::Result<u64> {
    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
    let digits = digits.trim_ascii();
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(invalid("invalid chunk size"));
    }
    let text = std::str::from_utf8(digits).map_err(|_| invalid("invalid chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| invalid("invalid chunk size"))
}

impl<R: BufRead> Read for ChunkedDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.state {
                State::Done => return Ok(0),
                State::Size => {
                    let size = parse_size(&read_line(&mut self.source)?)?;
                    if size == 0 {
                        self.skip_trailers()?;
                        self.state = State::Done;
                    } else {
                        self.state = State::Data(size);
                    }
                }
                State::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(0);
                    }
                    let want = buf.len().min(remaining.min(usize::MAX as u64) as usize);
                    let n = self.source.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "body ended inside a chunk",
                        ));
                    }
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(n);
                }
                State::DataEnd => {
                    if !read_line(&mut self.source)?.is_empty() {
                        return Err(invalid("chunk longer than its declared size"));
                    }
                    self.state = State::Size;
                }
            }
        }
    }
}

impl<R: BufRead> ChunkedDecoder<R> {
    fn skip_trailers(&mut self) -> io::Result<()> {
        for _ in 0..MAX_TRAILERS {
            if read_line(&mut self.source)?.is_empty() {
                return Ok(());
            }
        }
        Err(invalid("too many trailer fields"))
    }
}

/// Copies `reader` to `writer` as chunks. If the reader fails, the error is returned
/// before the terminating chunk is written, so the client can tell a truncated body
/// from a complete one.
pub(crate) fn write_chunked(reader: &mut dyn Read, writer: &mut dyn Write) -> io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        write!(writer, "{:X}\r\n", n)?;
        writer.write_all(&buf[..n])?;
        writer.write_all(b"\r\n")?;
    }
    writer.write_all(b"0\r\n\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        ChunkedDecoder::new(input).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let body = decode(b"5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nX-Trailer: y\r\n\r\n").unwrap();
        assert_eq!(body, b"hello!");
    }

    #[test]
    fn premature_end_is_an_error_not_a_short_body() {
        let err = decode(b"5\r\nhel").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(decode(b"5\r\nhello\r\n").is_err());
    }

    #[test]
    fn rejects_bad_sizes_and_long_lines() {
        assert!(decode(b"+5\r\nhello\r\n0\r\n\r\n").is_err());
        assert!(decode(b"zz\r\n").is_err());
        assert!(decode(b"5\r\nhelloEXTRA\r\n0\r\n\r\n").is_err());
        let long = [b"1".repeat(2000), b"\r\n".to_vec()].concat();
        assert_eq!(
            decode(&long).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn encoder_round_trips_and_stops_without_terminator_on_error() {
        let mut out = Vec::new();
        write_chunked(&mut &b"hello world"[..], &mut out).unwrap();
        assert_eq!(decode(&out).unwrap(), b"hello world");

        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("source failed"))
            }
        }
        let mut out = Vec::new();
        assert!(write_chunked(&mut Failing, &mut out).is_err());
        assert!(!out.ends_with(b"0\r\n\r\n"));
    }
}
