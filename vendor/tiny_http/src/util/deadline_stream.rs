use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Instant;

/// One direction of a TCP connection with a deadline instead of a per-call timeout.
///
/// A socket timeout restarts with every successful read, so a client sending one byte
/// just before each timeout could hold the connection forever. Before every system call
/// the socket timeout is set to the time left until the deadline, which bounds the
/// whole exchange no matter how the bytes are spaced.
pub(crate) struct DeadlineStream {
    stream: Arc<TcpStream>,
    deadline: Instant,
}

impl DeadlineStream {
    pub(crate) fn new(stream: Arc<TcpStream>, deadline: Instant) -> Self {
        DeadlineStream { stream, deadline }
    }

    pub(crate) fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    pub(crate) fn shutdown(&self, how: Shutdown) {
        let _ = self.stream.shutdown(how);
    }

    fn time_left(&self) -> io::Result<std::time::Duration> {
        let now = Instant::now();
        if now >= self.deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
        }
        Ok(self.deadline - now)
    }
}

/// A timed-out socket call reports `WouldBlock` on Unix; callers want `TimedOut`.
fn timed_out(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, "deadline passed")
    } else {
        e
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.set_read_timeout(Some(self.time_left()?))?;
        (&*self.stream).read(buf).map_err(timed_out)
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.set_write_timeout(Some(self.time_left()?))?;
        (&*self.stream).write(buf).map_err(timed_out)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
