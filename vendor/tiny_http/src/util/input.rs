use std::io::{self, BufRead, Read};

use super::DeadlineStream;

/// What a connection has read from its socket and not consumed yet.
///
/// Like `BufReader`, but a request head must be seen whole for `httparse`, so the buffer
/// can grow past its resting size (up to the caller's limit) and shrinks back once the
/// large head has been consumed: a thousand idle connections keep 4 KiB each, not the
/// 16 KiB a head may take.
pub(crate) struct Input {
    stream: DeadlineStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

const RESTING: usize = 4096;

impl Input {
    pub(crate) fn new(stream: DeadlineStream) -> Input {
        Input {
            stream,
            buf: vec![0; RESTING],
            start: 0,
            end: 0,
        }
    }

    pub(crate) fn stream_mut(&mut self) -> &mut DeadlineStream {
        &mut self.stream
    }

    /// The bytes read and not consumed yet.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Reads once more from the socket, keeping what is buffered, which may grow to
    /// `limit` bytes. `Ok(0)`: the peer closed, or `limit` is reached.
    pub(crate) fn read_more(&mut self, limit: usize) -> io::Result<usize> {
        if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let grown = (self.buf.len() * 2).min(limit.max(RESTING));
            if grown <= self.buf.len() {
                return Ok(0);
            }
            self.buf.resize(grown, 0);
        }
        let room = limit
            .saturating_sub(self.end - self.start)
            .min(self.buf.len() - self.end);
        if room == 0 {
            return Ok(0);
        }
        let n = self.stream.read(&mut self.buf[self.end..self.end + room])?;
        self.end += n;
        Ok(n)
    }

    /// Returns to the resting size if a large head made the buffer grow and what is left
    /// fits.
    pub(crate) fn shrink(&mut self) {
        let len = self.end - self.start;
        if self.buf.len() > RESTING && len <= RESTING {
            self.buf.copy_within(self.start..self.end, 0);
            self.buf.truncate(RESTING);
            self.buf.shrink_to_fit();
            self.start = 0;
            self.end = len;
        }
    }
}

impl Read for Input {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        // A large read with nothing buffered goes straight to the caller's buffer.
        if self.start == self.end && out.len() >= self.buf.len() {
            return self.stream.read(out);
        }
        let n = {
            let available = self.fill_buf()?;
            let n = available.len().min(out.len());
            out[..n].copy_from_slice(&available[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Input {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.start == self.end {
            self.start = 0;
            self.end = self.stream.read(&mut self.buf)?;
        }
        Ok(&self.buf[self.start..self.end])
    }

    fn consume(&mut self, amount: usize) {
        self.start = (self.start + amount).min(self.end);
    }
}
