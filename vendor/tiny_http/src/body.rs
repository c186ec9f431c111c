//! Bodies produced while they are sent: the application's thread writes pieces into a
//! [`BodyWriter`], the connection's thread reads them from a [`BodyReader`] and sends them.
//!
//! The hand-off holds at most two pieces. A client that stops reading fills its socket
//! buffers, then the hand-off; the producer then waits at most `stall_timeout` for room
//! before the connection is cut. So a client that does not read costs the producer a
//! bounded wait, never an unbounded one, and memory stays at two pieces.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, SendTimeoutError, Sender};

use crate::connection::ConnectionControl;
use crate::Grant;

enum Piece {
    /// Bytes, and the memory they hold until they have been written.
    Data(Vec<u8>, Option<Grant>),
    End,
}

/// Pieces waiting between the producer and the connection.
const PIECES_IN_FLIGHT: usize = 2;

/// The producing end of a streamed body. Dropping it without [`BodyWriter::finish`]
/// cuts the connection: the client sees a truncated body, never a complete-looking one.
pub struct BodyWriter {
    pieces: Sender<Piece>,
    control: Arc<ConnectionControl>,
    stall_timeout: Duration,
    finished: bool,
}

/// The sending end of a streamed body, used as a response's reader.
pub struct BodyReader {
    pieces: Receiver<Piece>,
    current: Vec<u8>,
    current_memory: Option<Grant>,
    position: usize,
    ended: bool,
}

pub(crate) fn pipe(
    control: Arc<ConnectionControl>,
    stall_timeout: Duration,
) -> (BodyWriter, BodyReader) {
    let (sender, receiver) = crossbeam_channel::bounded(PIECES_IN_FLIGHT);
    (
        BodyWriter {
            pieces: sender,
            control,
            stall_timeout,
            finished: false,
        },
        BodyReader {
            pieces: receiver,
            current: Vec::new(),
            current_memory: None,
            position: 0,
            ended: false,
        },
    )
}

impl BodyWriter {
    /// Hands one piece to the connection, with the memory it holds (released once the
    /// piece is written). Fails, and cuts the connection, if the client has not made room
    /// for it within the stall timeout; fails at once if the connection is gone (the
    /// client closed, or the response was a `HEAD`'s).
    pub fn send(&mut self, piece: Vec<u8>, memory: Option<Grant>) -> io::Result<()> {
        if piece.is_empty() {
            return Ok(());
        }
        let piece = Piece::Data(piece, memory);
        match self.pieces.send_timeout(piece, self.stall_timeout) {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Timeout(_)) => {
                self.control.abort();
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client stopped reading the response",
                ))
            }
            Err(SendTimeoutError::Disconnected(_)) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the connection no longer takes the response",
            )),
        }
    }

    /// Ends the body properly.
    pub fn finish(mut self) -> io::Result<()> {
        self.finished = true;
        match self.pieces.send_timeout(Piece::End, self.stall_timeout) {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Timeout(_)) => {
                self.control.abort();
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client stopped reading the response",
                ))
            }
            Err(SendTimeoutError::Disconnected(_)) => Ok(()),
        }
    }
}

impl Drop for BodyWriter {
    fn drop(&mut self) {
        // The reader sees the channel close without an end marker and fails, so the
        // connection is cut rather than the body terminated.
        if !self.finished {
            log::debug!("a streamed body was abandoned; cutting the connection");
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.position == self.current.len() {
            if self.ended {
                return Ok(0);
            }
            match self.pieces.recv() {
                Ok(Piece::Data(data, memory)) => {
                    self.current = data;
                    self.current_memory = memory;
                    self.position = 0;
                }
                Ok(Piece::End) => self.ended = true,
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the body's producer stopped before its end",
                    ))
                }
            }
        }
        let available = &self.current[self.position..];
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.position += n;
        Ok(n)
    }
}
