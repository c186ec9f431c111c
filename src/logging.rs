//! Logs: one JSON object per line on stdout, the format log collectors read without
//! configuration.
//!
//! Lines are written by a thread of their own, in batches: the event loops log from
//! inside their turn and must never wait for stdout. A line goes into a shared buffer
//! (one short lock); the first line into an empty buffer wakes the writer, which lets
//! lines gather for a moment and then writes them all with one system call. So a busy
//! server wakes its writer some twenty times a second, not once a line (tracing-appender,
//! used before, woke its worker for nearly every line: a context switch per request). If
//! stdout stops taking lines and the buffer is full, lines are dropped and counted
//! (`log_lines_dropped_total` in `/metrics`) rather than block a request.
//!
//! Each line is formatted by [`JsonLine`]: the same JSON that tracing-subscriber's `json()`
//! format writes with its event fields flattened, built in one buffer with the timestamp's
//! date and time formatted once a second. The generic formatter (serde through a `fmt`
//! adaptor, the timestamp formatted field by field) took a third of the CPU of a `GET /`.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer as FmtWriter};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// How long lines gather before the writer writes them.
const GATHER: Duration = Duration::from_millis(50);
/// Lines held at most (about 10,000): beyond it they are dropped.
const MAX_BUFFERED: usize = 2 * 1024 * 1024;

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Log lines dropped because stdout did not keep up.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    closed: bool,
}

#[derive(Default)]
struct Lines {
    pending: Mutex<Pending>,
    arrived: Condvar,
}

impl Lines {
    fn push(&self, line: &[u8]) {
        let first = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if pending.lines.len() + line.len() > MAX_BUFFERED {
                DROPPED.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let first = pending.lines.is_empty();
            pending.lines.extend_from_slice(line);
            first
        };
        if first {
            self.arrived.notify_one();
        }
    }

    /// The writer thread: waits for a line, lets more gather, writes them all.
    fn write_out(&self, mut out: impl Write) {
        let mut batch = Vec::new();
        loop {
            {
                let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                while pending.lines.is_empty() && !pending.closed {
                    pending = self
                        .arrived
                        .wait(pending)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                if pending.lines.is_empty() {
                    return;
                }
                if !pending.closed {
                    drop(pending);
                    thread::sleep(GATHER);
                    pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                }
                std::mem::swap(&mut pending.lines, &mut batch);
            }
            // Nothing to report a failed write to but the log itself.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
            batch.shrink_to(64 * 1024);
        }
    }

    fn close(&self) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
        self.arrived.notify_one();
    }
}

/// What `tracing` writes each event through: one line per write.
#[derive(Clone)]
struct Writer(Arc<Lines>);

impl Write for Writer {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.0.push(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Writer {
    type Writer = Writer;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// One JSON object per event: `timestamp` (RFC 3339, microseconds, UTC), `level`, then the
/// event's fields in the order they were recorded (`message` among them).
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: FmtWriter<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let normalized = event.normalized_metadata();
        let level = normalized
            .as_ref()
            .map_or_else(|| *event.metadata().level(), |m| *m.level());
        LINE.with_borrow_mut(|line| {
            line.clear();
            line.push_str("{\"timestamp\":\"");
            push_timestamp(line);
            line.push_str("\",\"level\":\"");
            line.push_str(level.as_str());
            line.push('"');
            event.record(&mut Fields(line));
            line.push_str("}\n");
            writer.write_str(line)
        })
    }
}

thread_local! {
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
    /// The second last formatted, and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
}

fn push_timestamp(line: &mut String) {
    let now = chrono::Utc::now();
    let second = now.timestamp();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            *cached = second;
            text.clear();
            let _ = write!(text, "{}", now.format("%Y-%m-%dT%H:%M:%S"));
        }
        line.push_str(text);
    });
    let micros = now.timestamp_subsec_micros();
    let _ = write!(line, ".{micros:06}Z");
}

/// Appends each field as `,"name":value`.
struct Fields<'a>(&'a mut String);

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        self.0.push(',');
        push_json_string(self.0, field.name());
        self.0.push(':');
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_json_string(self.0, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        self.0.push_str(itoa::Buffer::new().format(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        self.0.push_str(itoa::Buffer::new().format(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.0.push_str(if value { "true" } else { "false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        match serde_json::Number::from_f64(value) {
            Some(number) => {
                let _ = write!(self.0, "{number}");
            }
            None => self.0.push_str("null"),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `log` records' own fields (`log.target` and so on) are folded in by tracing-log.
        self.key(field);
        push_json_string(self.0, &format!("{value:?}"));
    }
}

/// A JSON string literal (RFC 8259 escapes).
fn push_json_string(line: &mut String, text: &str) {
    line.push('"');
    let mut plain = 0;
    for (i, c) in text.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        line.push_str(&text[plain..i]);
        if escape.is_empty() {
            let _ = write!(line, "\\u{:04x}", c as u32);
        } else {
            line.push_str(escape);
        }
        plain = i + c.len_utf8();
    }
    line.push_str(&text[plain..]);
    line.push('"');
}

/// Keeps the writer thread; dropping it writes what is left and ends the thread.
pub struct Guard {
    lines: Arc<Lines>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.lines.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Installs the JSON logger. Log records from libraries using the `log` crate (the HTTP
/// server among them) are captured too. Keep the guard until the end.
pub fn init(level: LevelFilter) -> Option<Guard> {
    let lines = Arc::new(Lines::default());
    let writer = Writer(lines.clone());
    // A second call (several servers in one test process) keeps the first logger.
    tracing_subscriber::fmt()
        .event_format(JsonLine)
        .with_max_level(level)
        .with_writer(writer)
        .try_init()
        .ok()?;
    let thread = {
        let lines = lines.clone();
        thread::Builder::new()
            .name("log".into())
            .spawn(move || lines.write_out(std::io::stdout().lock()))
            .ok()?
    };
    Some(Guard {
        lines,
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_gather_and_are_written_in_order_and_none_is_lost_below_the_cap() {
        let lines = Arc::new(Lines::default());
        let out = Arc::new(Mutex::new(Vec::new()));
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let writer = {
            let (lines, out) = (lines.clone(), out.clone());
            thread::spawn(move || lines.write_out(Shared(out)))
        };
        for n in 0..1000 {
            lines.push(format!("{n}\n").as_bytes());
        }
        lines.close();
        writer.join().unwrap();
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let numbers: Vec<usize> = text.lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(numbers, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn strings_are_escaped_as_json_says() {
        let mut line = String::new();
        push_json_string(&mut line, "a\"b\\c\nd\u{1}é");
        assert_eq!(line, r#""a\"b\\c\nd\u0001é""#);
        let parsed: String = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed, "a\"b\\c\nd\u{1}é");
    }

    #[test]
    fn a_full_buffer_drops_and_counts_instead_of_waiting() {
        let lines = Lines::default();
        let before = dropped_lines();
        let line = vec![b'x'; 1024 * 1024];
        lines.push(&line);
        lines.push(&line);
        lines.push(&line);
        assert_eq!(dropped_lines() - before, 1);
    }
}
