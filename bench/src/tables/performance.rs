//! The suite's tables: throughput per scenario and server, the cost of a request, the
//! footprint, the mixed run and the load generator's ceiling.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::report::thousands;

/// One wrk run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Wrk {
    pub requests_per_second: f64,
    pub requests: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Non-2xx answers, and socket errors (connect, read, write, timeout).
    pub errors: u64,
}

/// One scenario of the suite, every server.
#[derive(Serialize, Deserialize)]
pub struct Row {
    pub scenario: String,
    pub service: Wrk,
    pub axum: Wrk,
    pub floor: Option<(String, f64)>,
    pub flask: Wrk,
    pub gunicorn: Vec<(usize, Wrk)>,
    /// CPU time per request, over every round, in microseconds.
    pub service_cpu_us: f64,
    pub axum_cpu_us: f64,
    /// Context switches per request (every thread of the process), over every round.
    pub service_switches: f64,
    pub axum_switches: f64,
}

impl Row {
    pub fn best_flask(&self) -> f64 {
        self.gunicorn
            .iter()
            .map(|(_, r)| r.requests_per_second)
            .fold(self.flask.requests_per_second, f64::max)
    }

    fn errors(&self) -> u64 {
        self.service.errors
            + self.axum.errors
            + self.flask.errors
            + self.gunicorn.iter().map(|(_, r)| r.errors).sum::<u64>()
    }
}

#[derive(Serialize, Deserialize)]
pub struct Footprint {
    pub service_idle_rss_mib: f64,
    pub service_peak_rss_mib: f64,
    pub axum_peak_rss_mib: f64,
    pub start_to_ready_ms: f64,
    pub image_bytes: Option<u64>,
}

/// How the suite ran: wrk's connections and seconds, the rounds per server, the mixed
/// run's fixed request count.
#[derive(Serialize, Deserialize)]
pub struct Settings {
    pub connections: usize,
    pub duration_s: u64,
    pub rounds: usize,
    pub mixed_requests: u64,
}

/// Everything one `bench suite` measured, as `bench/results/bench.json` holds it.
#[derive(Serialize, Deserialize)]
pub struct Results {
    pub machine: String,
    pub settings: Settings,
    pub rows: Vec<Row>,
    /// The mixed run per server: name, requests per second, errors.
    pub mixed: Vec<(String, f64, u64)>,
    /// `bench run`'s rate against the trivial server, and wrk's.
    pub load_generator_ceiling: (f64, f64),
    pub footprint: Footprint,
}

impl Results {
    pub fn read(json: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(json).map_err(|e| format!("{}: {e}", json.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json.display()))
    }
}

/// The suite's tables in Markdown: throughput per scenario and server, the cost of a
/// request, the footprint, the mixed run and the load generator's ceiling.
pub fn render(results: &Results) -> String {
    let mut out = String::new();
    let s = &results.settings;
    out.push_str(&format!(
        "`wrk -t2 -c{} -d{}s`, {} rounds of the service and the axum peer alternating (medians); {}; SecantusDB with `--auth --sync-on-commit`.\n\n",
        s.connections, s.duration_s, s.rounds, results.machine
    ));
    out.push_str(&throughput(results));
    out.push('\n');
    out.push_str(&costs(results));
    out.push('\n');
    out.push_str(&mixed(results));
    let (ours, theirs) = results.load_generator_ceiling;
    out.push_str(&format!(
        "\n`bench run`'s own ceiling: {} req/s against the trivial server, where wrk makes {} ({:.0} %).\n",
        thousands(ours.round() as u64),
        thousands(theirs.round() as u64),
        ours / theirs.max(1e-9) * 100.0
    ));
    out
}

fn throughput(results: &Results) -> String {
    let workers: Vec<usize> = results
        .rows
        .first()
        .map(|row| row.gunicorn.iter().map(|(w, _)| *w).collect())
        .unwrap_or_default();
    let heads: String = workers
        .iter()
        .map(|w| format!(" gunicorn -w{w} |"))
        .collect();
    let rule: String = workers.iter().map(|_| "---:|").collect();
    let mut out = format!("| Scenario | mongo-api req/s | axum peer req/s | × axum | p99 ms (ours / axum) | floor req/s | flask run |{heads} × best Flask | errors |\n");
    out.push_str(&format!(
        "|---|---:|---:|---:|---:|---:|---:|{rule}---:|---:|\n"
    ));
    for row in &results.rows {
        let gunicorn: String = row
            .gunicorn
            .iter()
            .map(|(_, r)| format!(" {} |", thousands(r.requests_per_second.round() as u64)))
            .collect();
        let floor = row.floor.as_ref().map_or("–".into(), |(what, rate)| {
            format!("{} ({what})", thousands(rate.round() as u64))
        });
        out.push_str(&format!(
            "| {} | {} | {} | **{:.2}** | {} / {} | {floor} | {} |{gunicorn} {:.1} | {} |\n",
            scenario(&row.scenario),
            thousands(row.service.requests_per_second.round() as u64),
            thousands(row.axum.requests_per_second.round() as u64),
            row.service.requests_per_second / row.axum.requests_per_second.max(1e-9),
            milliseconds(row.service.p99_ms),
            milliseconds(row.axum.p99_ms),
            thousands(row.flask.requests_per_second.round() as u64),
            row.service.requests_per_second / row.best_flask().max(1e-9),
            row.errors(),
        ));
    }
    out
}

/// One measure of a row: ours, then the peer's.
type Cells = fn(&Row) -> [String; 2];

fn costs(results: &Results) -> String {
    let mut out = String::from("| | mongo-api | axum peer |\n|---|---:|---:|\n");
    // Each measure over every scenario, ours beside the peer's.
    let measures: [(&str, Cells); 2] = [
        ("CPU per request", |r| {
            [cpu(r.service_cpu_us), cpu(r.axum_cpu_us)]
        }),
        ("Context switches per request", |r| {
            [switches(r.service_switches), switches(r.axum_switches)]
        }),
    ];
    for (measure, cells) in measures {
        for row in &results.rows {
            let [ours, peer] = cells(row);
            let scenario = scenario(&row.scenario);
            out.push_str(&format!("| {measure}, {scenario} | {ours} | {peer} |\n"));
        }
    }
    let f = &results.footprint;
    out.push_str(&format!(
        "| Peak RSS over the whole suite | {:.1} MiB | {:.1} MiB |\n",
        f.service_peak_rss_mib, f.axum_peak_rss_mib
    ));
    out.push_str(&format!(
        "| RSS idle (1 s after ready) | {:.1} MiB | |\n",
        f.service_idle_rss_mib
    ));
    out.push_str(&format!(
        "| Start to `/readyz` = 200 | {:.0} ms | |\n",
        f.start_to_ready_ms
    ));
    if let Some(bytes) = f.image_bytes {
        out.push_str(&format!(
            "| Image size | {:.2} MB | |\n",
            bytes as f64 / 1_000_000.0
        ));
    }
    out
}

fn mixed(results: &Results) -> String {
    let mut out = format!(
        "| `GET /data` + 10 % `POST` (`bench run`, {} requests from 100 documents) | req/s | errors |\n|---|---:|---:|\n",
        thousands(results.settings.mixed_requests)
    );
    for (name, rate, errors) in &results.mixed {
        out.push_str(&format!(
            "| {name} | {} | {errors} |\n",
            thousands(rate.round() as u64)
        ));
    }
    out
}

/// A scenario's name with its request as code: "`GET /data`, 100 documents".
fn scenario(name: &str) -> String {
    match name.split_once(", ") {
        Some((request, rest)) => format!("`{request}`, {rest}"),
        None => format!("`{name}`"),
    }
}

fn milliseconds(ms: f64) -> String {
    if ms >= 100.0 {
        thousands(ms.round() as u64)
    } else {
        format!("{ms:.1}")
    }
}

fn cpu(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

fn switches(n: f64) -> String {
    if n >= 100.0 {
        format!("{n:.0}")
    } else {
        format!("{n:.2}")
    }
}
