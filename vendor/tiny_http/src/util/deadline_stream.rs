use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How far past its deadline a blocking call may run before the socket timeout is
/// shortened; re-arming costs a system call, and most calls never block.
const SLACK: Duration = Duration::from_millis(100);
/// A socket timeout shorter than this (left over from a nearly spent deadline) is
/// lengthened, so that a later, longer deadline does not wake the thread needlessly.
const SHORTEST_USEFUL: Duration = Duration::from_millis(250);

/// One direction of a TCP connection with a deadline instead of a per-call timeout.
///
/// A socket timeout restarts with every successful read, so a client sending one byte
/// just before each timeout could hold the connection forever. Here the deadline is
/// checked before every call and the socket timeout is kept no longer than the time
/// left, so the whole exchange ends in time however its bytes are spaced.
pub(crate) struct DeadlineStream {
    stream: Arc<TcpStream>,
    deadline: Instant,
    armed: Option<Duration>,
}

enum Direction {
    Read,
    Write,
}

impl DeadlineStream {
    pub(crate) fn new(stream: Arc<TcpStream>, deadline: Instant) -> Self {
        DeadlineStream {
            stream,
            deadline,
            armed: None,
        }
    }

    pub(crate) fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    pub(crate) fn shutdown(&self, how: Shutdown) {
        let _ = self.stream.shutdown(how);
    }

    /// Makes sure the next blocking call cannot outlast the deadline (by more than
    /// `SLACK`); fails once the deadline has passed.
    fn arm(&mut self, direction: Direction) -> io::Result<()> {
        let now = Instant::now();
        if now >= self.deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
        }
        let left = self.deadline - now;
        let fits = |t: Duration| t <= left + SLACK && t >= left.min(SHORTEST_USEFUL);
        if self.armed.is_some_and(fits) {
            return Ok(());
        }
        match direction {
            Direction::Read => self.stream.set_read_timeout(Some(left))?,
            Direction::Write => self.stream.set_write_timeout(Some(left))?,
        }
        self.armed = Some(left);
        Ok(())
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.arm(Direction::Read)?;
            match (&*self.stream).read(buf) {
                // The socket timeout ran out before the deadline: wait on.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            self.arm(Direction::Write)?;
            match (&*self.stream).write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
