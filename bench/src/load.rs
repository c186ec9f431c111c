//! The load generator: `connections` workers on a rayon pool, each with its own client
//! (for HTTP, one kept-alive connection reused for every request), until a deadline or a
//! request budget. Latencies go into one HDR histogram per worker, merged at the end.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// One kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Root,
    Insert,
    List,
}

/// Which requests a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// GET /
    Root,
    /// POST /data with a small document
    Insert,
    /// GET /data (the whole collection)
    List,
    /// GET /data, with every tenth request a POST /data
    Mixed,
}

impl Scenario {
    /// The `n`th request of a worker.
    pub fn op(self, n: u64) -> Op {
        match self {
            Scenario::Root => Op::Root,
            Scenario::Insert => Op::Insert,
            Scenario::List => Op::List,
            Scenario::Mixed if n % 10 == 9 => Op::Insert,
            Scenario::Mixed => Op::List,
        }
    }
}

/// What one request came to.
pub enum Outcome {
    /// An HTTP status (or 200 for a driver call that succeeded) and the bytes received.
    Status(u16, u64),
    /// No response: connection refused or reset, timeout, driver error.
    Failed,
}

/// Something that can send requests; each worker gets its own `Client`.
pub trait Target: Sync {
    type Client: FnMut(Op, u64) -> Outcome;
    fn client(&self) -> Self::Client;
    fn describe(&self) -> String;
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub scenario: Scenario,
    pub connections: usize,
    /// Measured period (after the warm-up). With `requests`, whichever ends first.
    pub duration: Duration,
    pub requests: Option<u64>,
    pub warmup: Duration,
    /// Requests per second in total, spread evenly over the workers; `None`: as fast as
    /// the server answers.
    pub rate: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    pub scenario: Scenario,
    pub connections: usize,
    pub keep_alive: bool,
    pub seconds: f64,
    pub requests: u64,
    pub requests_per_second: f64,
    pub latency: Latency,
    /// Responses by status; `failed` counts requests that got none.
    pub statuses: BTreeMap<String, u64>,
    pub bytes_received: u64,
    pub target_rate: Option<f64>,
    /// Every request answered, warm-up and the tail after the deadline included: what
    /// the server's CPU time over the whole run was spent on.
    pub requests_total: u64,
}

impl Report {
    pub fn errors(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(status, _)| !status.starts_with('2'))
            .map(|(_, n)| n)
            .sum()
    }
}

struct Tally {
    histogram: Histogram<u64>,
    statuses: BTreeMap<String, u64>,
    bytes: u64,
    requests: u64,
    all: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            // 1 µs to 10 min, 3 significant digits.
            histogram: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"),
            statuses: BTreeMap::new(),
            bytes: 0,
            requests: 0,
            all: 0,
        }
    }

    fn merge(&mut self, other: Tally) {
        self.histogram.add(other.histogram).expect("same bounds");
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.bytes += other.bytes;
        self.requests += other.requests;
        self.all += other.all;
    }
}

/// Runs `spec` against `target`. A progress line goes to stderr when it is a terminal.
pub fn run<T: Target>(target: &T, spec: &Spec) -> Report {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(spec.connections)
        .thread_name(|i| format!("load-{i}"))
        .build()
        .expect("worker pool");
    let started = Instant::now();
    let measure_from = started + spec.warmup;
    let measure_until = measure_from + spec.duration;
    let counted = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let progress = progress_line(counted.clone(), done.clone(), measure_from);

    let tallies: Vec<Tally> = pool.install(|| {
        use rayon::prelude::*;
        (0..spec.connections)
            .into_par_iter()
            .map(|worker| drive(target, spec, worker, measure_from, measure_until, &counted))
            .collect()
    });
    let finished = Instant::now();
    done.store(true, Ordering::Release);
    if let Some(progress) = progress {
        let _ = progress.join();
    }

    let mut total = Tally::new();
    for tally in tallies {
        total.merge(tally);
    }
    let seconds = finished
        .min(measure_until)
        .duration_since(measure_from)
        .as_secs_f64();
    let ms = |v: u64| v as f64 / 1000.0;
    Report {
        target: target.describe(),
        scenario: spec.scenario,
        connections: spec.connections,
        keep_alive: true,
        seconds,
        requests: total.requests,
        requests_per_second: total.requests as f64 / seconds.max(1e-9),
        latency: Latency {
            p50_ms: ms(total.histogram.value_at_quantile(0.50)),
            p90_ms: ms(total.histogram.value_at_quantile(0.90)),
            p99_ms: ms(total.histogram.value_at_quantile(0.99)),
            max_ms: ms(total.histogram.max()),
        },
        statuses: total.statuses,
        bytes_received: total.bytes,
        target_rate: spec.rate,
        requests_total: total.all,
    }
}

/// One worker's loop. In rate mode each request has a scheduled start, and its latency
/// counts from then: a server that falls behind is charged for the wait it causes
/// instead of slowing the load down (no coordinated omission).
fn drive<T: Target>(
    target: &T,
    spec: &Spec,
    worker: usize,
    measure_from: Instant,
    measure_until: Instant,
    counted: &AtomicU64,
) -> Tally {
    let mut client = target.client();
    let mut tally = Tally::new();
    let interval = spec
        .rate
        .map(|rate| Duration::from_secs_f64(spec.connections as f64 / rate));
    // Spread the workers' schedules over one interval.
    let mut next =
        interval.map(|i| Instant::now() + i.mul_f64(worker as f64 / spec.connections as f64));
    for n in 0.. {
        if let (Some(at), Some(step)) = (next.as_mut(), interval) {
            let now = Instant::now();
            if *at > now {
                std::thread::sleep(*at - now);
            }
            *at += step;
        }
        let scheduled = next.map(|at| at - interval.unwrap_or_default());
        let sent = Instant::now();
        if sent >= measure_until {
            break;
        }
        let measured = sent >= measure_from;
        if measured {
            if let Some(budget) = spec.requests {
                if counted.fetch_add(1, Ordering::AcqRel) >= budget {
                    break;
                }
            } else {
                counted.fetch_add(1, Ordering::AcqRel);
            }
        }
        let outcome = client(spec.scenario.op(n), n);
        tally.all += 1;
        if !measured {
            continue;
        }
        let began = scheduled.unwrap_or(sent).min(sent);
        let micros = began.elapsed().as_micros().max(1) as u64;
        tally.histogram.saturating_record(micros);
        tally.requests += 1;
        let status = match outcome {
            Outcome::Status(code, bytes) => {
                tally.bytes += bytes;
                code.to_string()
            }
            Outcome::Failed => "failed".to_owned(),
        };
        *tally.statuses.entry(status).or_default() += 1;
    }
    tally
}

fn progress_line(
    counted: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    measure_from: Instant,
) -> Option<std::thread::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    Some(std::thread::spawn(move || {
        while !done.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(250));
            let now = Instant::now();
            if now < measure_from {
                eprint!("\r  warming up...                              ");
                continue;
            }
            let seconds = now.duration_since(measure_from).as_secs_f64();
            let n = counted.load(Ordering::Acquire);
            eprint!(
                "\r  {seconds:5.1} s  {n:>9} requests  {:>9.0} req/s   ",
                n as f64 / seconds.max(1e-9)
            );
        }
        eprint!("\r{:60}\r", "");
    }))
}
