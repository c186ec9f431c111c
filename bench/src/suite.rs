//! `just bench`: every scenario against the service, the axum peer, the floors and the
//! Flask reference, on one MongoDB stand-in, one after the other on this machine; then
//! the table and the plot.
//!
//! Throughput is measured by `wrk` (a C load generator on epoll, which a Rust service
//! cannot outrun on the same machine), the service and the axum peer alternating round
//! after round, the median counting. What wrk cannot do stays with this crate's own load
//! generator (`bench run`): the mixed read/write scenario, the driver floors, a steady
//! rate; its ceiling (its rate against a trivial server, next to wrk's) is reported too.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::load::{self, Scenario, Spec};
use crate::plot;
use crate::procs::{free_port, wait_for_200, wait_for_port, Proc};
use crate::tables::performance::{self, Footprint, Results, Row, Settings, Wrk};
use crate::targets::{preload, Driver, Http};

#[derive(clap::Args)]
pub struct SuiteArgs {
    /// Measured seconds per run
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Concurrent connections (and driver threads for the floors)
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Runs of the service and of the axum peer per scenario (alternating; the median counts)
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Requests in the mixed scenario (a fixed count, so every server ends with the same
    /// collection size)
    #[arg(long, default_value_t = 5000)]
    mixed_requests: u64,
    /// The service binary to measure
    #[arg(
        long,
        default_value = "target/x86_64-unknown-linux-musl/release/mongo-api"
    )]
    service: PathBuf,
    /// The axum peer's binary (bench/peers/axum)
    #[arg(long, default_value = "bench/peers/axum/target/release/axum-peer")]
    axum: PathBuf,
    /// Python with Flask, pymongo and gunicorn installed
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Directory of the Flask reference app
    #[arg(long, default_value = "bench/flask_ref")]
    flask_dir: PathBuf,
    /// gunicorn worker counts to measure
    #[arg(long, value_delimiter = ',', default_value = "2,4")]
    gunicorn_workers: Vec<usize>,
    /// Image whose size to report, if Docker can see it
    #[arg(long)]
    image: Option<String>,
    /// Write every measurement as JSON to this file
    #[arg(long, default_value = "target/bench.json")]
    json: PathBuf,
    /// Write the plot (SVG) to this file
    #[arg(long, default_value = "target/bench.svg")]
    svg: PathBuf,
}

struct Server {
    name: String,
    url: String,
    process: Proc,
}

const DB: &str = "bench";
const USER: &str = "bench";
const POST_SCRIPT: &str = r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, '{"name":"bench","n":' .. n .. ',"tags":["a","b"],"ok":true}')
end
"#;

/// The scenarios wrk measures: name, path, documents in the collection (`None`: emptied
/// and left to grow), POST or not.
const SCENARIOS: [(&str, &str, Option<u64>, bool); 4] = [
    ("GET /", "/", None, false),
    ("GET /data, 100 documents", "/data", Some(100), false),
    ("POST /data", "/data", Some(0), true),
    ("GET /data, 10,000 documents", "/data", Some(10_000), false),
];

/// The one MongoDB stand-in every server of the suite uses, with authentication on.
struct Database {
    _process: Proc,
    uri: String,
    /// The service's and the Flask app's variables for it.
    env: [(&'static str, String); 5],
}

/// Everything measured, started and ready.
struct Servers {
    service: Server,
    service_idle_rss_kib: u64,
    service_start_to_ready: Duration,
    axum: Server,
    floor: Server,
    flask: Server,
    gunicorns: Vec<(usize, Server)>,
    driver: Driver,
}

/// What one scenario sends.
struct Case {
    label: &'static str,
    path: &'static str,
    /// Documents in the collection before each run (`None`: left as it is).
    documents: Option<u64>,
    /// The wrk script that makes it a POST.
    script: Option<PathBuf>,
}

pub fn run(args: &SuiteArgs) -> Result<(), String> {
    let logs = tempfile::tempdir().map_err(|e| e.to_string())?;
    let post = logs.path().join("post.lua");
    std::fs::write(&post, POST_SCRIPT).map_err(|e| e.to_string())?;
    let db = start_database(logs.path())?;
    let servers = start_servers(args, &db, logs.path())?;
    let mut rows = Vec::new();
    for (label, path, documents, is_post) in SCENARIOS {
        let case = Case {
            label,
            path,
            documents,
            script: is_post.then(|| post.clone()),
        };
        rows.push(measure_case(args, &db, &servers, &case)?);
    }
    let mixed = measure_mixed(args, &db, &servers)?;
    // The load generator's own ceiling: its rate, and wrk's, against the trivial server.
    let floor = &servers.floor;
    let ours = load::run(&Http::new(&floor.url), &spec(args, Scenario::Root, None));
    let theirs = wrk(&format!("{}/", floor.url), args, None)?;
    let results = Results {
        machine: machine(),
        settings: Settings {
            connections: args.connections,
            duration_s: args.duration,
            rounds: args.rounds,
            mixed_requests: args.mixed_requests,
        },
        rows,
        mixed,
        load_generator_ceiling: (ours.requests_per_second, theirs.requests_per_second),
        footprint: footprint(args, &servers),
    };
    println!("\n{}", performance::render(&results));
    std::fs::write(&args.svg, plot(&results)?)
        .map_err(|e| format!("{}: {e}", args.svg.display()))?;
    let json = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
    std::fs::write(&args.json, json).map_err(|e| format!("{}: {e}", args.json.display()))?;
    eprintln!(
        "wrote {} and {}; to publish them, copy both to bench/results/ and run `bench tables`",
        args.json.display(),
        args.svg.display()
    );
    Ok(())
}

fn start_database(logs: &Path) -> Result<Database, String> {
    let password = format!("bench-{}", std::process::id());
    let port = free_port();
    let mut command = Command::new("secantusd-rs");
    command
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--storage-path")
        .arg(logs.join("mongo"))
        .args([
            "--auth",
            "--sync-on-commit",
            "--log-file-max",
            "16MB",
            "--cache-size",
            "512M",
        ]);
    let process = Proc::spawn("mongo", command, logs)?;
    wait_for_port(port, Duration::from_secs(10))?;
    crate::admin::add_user("127.0.0.1", port, None, USER, &password, "root")?;
    Ok(Database {
        _process: process,
        uri: format!(
            "mongodb://{USER}:{password}@127.0.0.1:{port}/{DB}?authSource=admin&directConnection=true"
        ),
        env: [
            ("MONGO_HOST", "127.0.0.1".to_owned()),
            ("MONGO_PORT", port.to_string()),
            ("MONGO_USER", USER.to_owned()),
            ("MONGO_PASSWORD", password),
            ("MONGO_DB", DB.to_owned()),
        ],
    })
}

fn start_servers(args: &SuiteArgs, db: &Database, logs: &Path) -> Result<Servers, String> {
    // The service, timed from exec to its first 200 on /readyz.
    let (port, management) = (free_port(), free_port());
    let mut cmd = Command::new(&args.service);
    cmd.envs(db.env.iter().cloned())
        .env("PORT", port.to_string())
        .env("MANAGEMENT_PORT", management.to_string())
        .env("BIND_ADDR", "127.0.0.1");
    let process = Proc::spawn("service", cmd, logs)?;
    let start_to_ready = wait_for_200(
        &format!("http://127.0.0.1:{management}/readyz"),
        Duration::from_secs(20),
    )?;
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss = process.rss_kib().unwrap_or(0);
    let flask = start_python(args, "flask run", logs, &db.env, |cmd, port| {
        cmd.args([
            "-m",
            "flask",
            "--app",
            "app",
            "run",
            "--with-threads",
            "--host",
            "127.0.0.1",
            "--port",
        ])
        .arg(port.to_string());
    })?;
    let mut gunicorns = Vec::new();
    for &workers in &args.gunicorn_workers {
        let name = format!("gunicorn -w{workers}");
        let server = start_python(args, &name, logs, &db.env, |cmd, port| {
            cmd.args([
                "-m",
                "gunicorn",
                "--workers",
                &workers.to_string(),
                "--bind",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .arg("app:app");
        })?;
        gunicorns.push((workers, server));
    }
    Ok(Servers {
        service: Server {
            name: "mongo-api".into(),
            url: format!("http://127.0.0.1:{port}"),
            process,
        },
        service_idle_rss_kib: idle_rss,
        service_start_to_ready: start_to_ready,
        axum: start_axum(args, &db.uri, logs)?,
        floor: start_floor(logs)?,
        flask,
        gunicorns,
        driver: Driver::connect(&db.uri, DB, args.connections).map_err(|e| e.to_string())?,
    })
}

/// One wrk run of `case` against `server`, the collection filled first.
fn measure(args: &SuiteArgs, db: &Database, case: &Case, server: &Server) -> Result<Wrk, String> {
    if let Some(n) = case.documents {
        preload(&db.uri, DB, n).map_err(|e| e.to_string())?;
    }
    let result = wrk(
        &format!("{}{}", server.url, case.path),
        args,
        case.script.as_deref(),
    )?;
    eprintln!(
        "   {:<16} {:>9.0} req/s",
        server.name, result.requests_per_second
    );
    Ok(result)
}

/// A server's runs of one scenario, and what each request cost it on average.
#[derive(Default)]
struct Rounds {
    runs: Vec<Wrk>,
    cpu_seconds: f64,
    switches: f64,
}

impl Rounds {
    fn measure(
        &mut self,
        args: &SuiteArgs,
        db: &Database,
        case: &Case,
        server: &Server,
    ) -> Result<(), String> {
        let cpu = server.process.cpu_seconds().unwrap_or(0.0);
        let switches = server.process.context_switches().unwrap_or(0);
        let result = measure(args, db, case, server)?;
        let requests = result.requests.max(1) as f64;
        self.cpu_seconds += (server.process.cpu_seconds().unwrap_or(0.0) - cpu) / requests;
        let switched = server
            .process
            .context_switches()
            .unwrap_or(0)
            .saturating_sub(switches);
        self.switches += switched as f64 / requests;
        self.runs.push(result);
        Ok(())
    }

    fn per_request_us(&self) -> f64 {
        self.cpu_seconds / self.runs.len().max(1) as f64 * 1e6
    }

    fn switches_per_request(&self) -> f64 {
        self.switches / self.runs.len().max(1) as f64
    }
}

fn measure_case(
    args: &SuiteArgs,
    db: &Database,
    servers: &Servers,
    case: &Case,
) -> Result<Row, String> {
    eprintln!("== {}", case.label);
    let (mut service, mut axum) = (Rounds::default(), Rounds::default());
    for round in 0..args.rounds {
        // Alternating which goes first, so that neither always follows the other.
        if round % 2 == 0 {
            service.measure(args, db, case, &servers.service)?;
            axum.measure(args, db, case, &servers.axum)?;
        } else {
            axum.measure(args, db, case, &servers.axum)?;
            service.measure(args, db, case, &servers.service)?;
        }
    }
    let floor = match (case.path, case.documents) {
        ("/", _) => Some((
            "tiny_http".to_owned(),
            measure(args, db, case, &servers.floor)?.requests_per_second,
        )),
        (_, Some(n)) => {
            preload(&db.uri, DB, n).map_err(|e| e.to_string())?;
            let scenario = if case.script.is_some() {
                Scenario::Insert
            } else {
                Scenario::List
            };
            let report = load::run(&servers.driver, &spec(args, scenario, None));
            Some(("driver".to_owned(), report.requests_per_second))
        }
        _ => None,
    };
    let flask = measure(args, db, case, &servers.flask)?;
    let mut gunicorn = Vec::new();
    for (workers, server) in &servers.gunicorns {
        gunicorn.push((*workers, measure(args, db, case, server)?));
    }
    Ok(Row {
        scenario: case.label.to_owned(),
        service_cpu_us: service.per_request_us(),
        axum_cpu_us: axum.per_request_us(),
        service_switches: service.switches_per_request(),
        axum_switches: axum.switches_per_request(),
        service: median(service.runs),
        axum: median(axum.runs),
        floor,
        flask,
        gunicorn,
    })
}

/// What wrk cannot do: a fixed mix of reads and writes, with this crate's generator.
fn measure_mixed(
    args: &SuiteArgs,
    db: &Database,
    servers: &Servers,
) -> Result<Vec<(String, f64, u64)>, String> {
    eprintln!("== GET /data + 10 % POST (bench run)");
    let mut mixed = Vec::new();
    for server in [&servers.service, &servers.axum, &servers.flask] {
        preload(&db.uri, DB, 100).map_err(|e| e.to_string())?;
        let mut spec = spec(args, Scenario::Mixed, Some(args.mixed_requests));
        spec.duration = Duration::from_secs(600);
        let report = load::run(&Http::new(&server.url), &spec);
        eprintln!(
            "   {:<16} {:>9.0} req/s",
            server.name, report.requests_per_second
        );
        mixed.push((
            server.name.clone(),
            report.requests_per_second,
            report.errors(),
        ));
    }
    Ok(mixed)
}

fn footprint(args: &SuiteArgs, servers: &Servers) -> Footprint {
    let peak_mib = |server: &Server| server.process.peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
    Footprint {
        service_idle_rss_mib: servers.service_idle_rss_kib as f64 / 1024.0,
        service_peak_rss_mib: peak_mib(&servers.service),
        axum_peak_rss_mib: peak_mib(&servers.axum),
        start_to_ready_ms: servers.service_start_to_ready.as_secs_f64() * 1000.0,
        image_bytes: args.image.as_deref().and_then(image_size),
    }
}

fn spec(args: &SuiteArgs, scenario: Scenario, requests: Option<u64>) -> Spec {
    Spec {
        scenario,
        connections: args.connections,
        duration: Duration::from_secs(args.duration),
        requests,
        warmup: Duration::from_secs(2),
        rate: None,
    }
}

/// Runs wrk (2 threads, the connections, the duration) and reads its summary.
fn wrk(url: &str, args: &SuiteArgs, script: Option<&Path>) -> Result<Wrk, String> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t2",
        &format!("-c{}", args.connections),
        &format!("-d{}s", args.duration),
        "--latency",
    ]);
    if let Some(script) = script {
        cmd.arg("-s").arg(script);
    }
    let output = cmd.arg(url).output().map_err(|e| format!("wrk: {e}"))?;
    parse_wrk(&String::from_utf8_lossy(&output.stdout))
}

/// Reads wrk's text summary: requests, requests per second, latency percentiles, errors.
pub fn parse_wrk(text: &str) -> Result<Wrk, String> {
    let field = |prefix: &str| -> Option<&str> {
        text.lines()
            .find_map(|l| l.trim_start().strip_prefix(prefix))
            .map(str::trim)
    };
    let ms = |value: &str| -> Option<f64> {
        let (number, unit) = value.split_at(value.find(|c: char| c.is_ascii_alphabetic())?);
        let n: f64 = number.parse().ok()?;
        Some(match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            "m" => n * 60_000.0,
            _ => return None,
        })
    };
    let rate = field("Requests/sec:").and_then(|v| v.parse().ok());
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    let (Some(rate), Some(requests)) = (rate, requests) else {
        return Err(format!("cannot read wrk's output:\n{text}"));
    };
    let non_2xx: u64 = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let socket: u64 = field("Socket errors:")
        .map(|v| {
            v.split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Ok(Wrk {
        requests_per_second: rate,
        requests,
        p50_ms: field("50%").and_then(ms).unwrap_or(0.0),
        p99_ms: field("99%").and_then(ms).unwrap_or(0.0),
        errors: non_2xx + socket,
    })
}

fn start_axum(args: &SuiteArgs, uri: &str, logs: &Path) -> Result<Server, String> {
    let port = free_port();
    let mut cmd = Command::new(&args.axum);
    cmd.env("MONGODB_URI", uri).env("PORT", port.to_string());
    let process = Proc::spawn("axum", cmd, logs)?;
    let url = format!("http://127.0.0.1:{port}");
    wait_for_200(&format!("{url}/"), Duration::from_secs(20))?;
    Ok(Server {
        name: "axum peer".into(),
        url,
        process,
    })
}

fn start_floor(logs: &Path) -> Result<Server, String> {
    let port = free_port();
    let mut cmd = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
    cmd.args(["floor-http", "--port", &port.to_string()]);
    let process = Proc::spawn("floor", cmd, logs)?;
    let url = format!("http://127.0.0.1:{port}");
    wait_for_200(&format!("{url}/"), Duration::from_secs(10))?;
    Ok(Server {
        name: "tiny_http floor".into(),
        url,
        process,
    })
}

fn start_python(
    args: &SuiteArgs,
    name: &str,
    logs: &Path,
    env: &[(&str, String)],
    configure: impl FnOnce(&mut Command, u16),
) -> Result<Server, String> {
    let port = free_port();
    // A relative program path would be taken relative to the new working directory; made
    // absolute without resolving links, since a virtual environment's python is a link
    // that must be run by its own path to find its packages.
    let python = if args.python.components().count() > 1 {
        std::path::absolute(&args.python).map_err(|e| format!("{}: {e}", args.python.display()))?
    } else {
        args.python.clone()
    };
    let mut cmd = Command::new(python);
    cmd.current_dir(&args.flask_dir).envs(env.iter().cloned());
    configure(&mut cmd, port);
    let log_name = name.replace(' ', "-");
    let process = Proc::spawn(&log_name, cmd, logs)?;
    let url = format!("http://127.0.0.1:{port}");
    wait_for_200(&format!("{url}/"), Duration::from_secs(30))
        .map_err(|e| format!("{name}: {e} (see {}/{log_name}.log)", logs.display()))?;
    Ok(Server {
        name: name.to_owned(),
        url,
        process,
    })
}

fn image_size(image: &str) -> Option<u64> {
    let output = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Size}}", image])
        .output()
        .ok()?;
    String::from_utf8(output.stdout).ok()?.trim().parse().ok()
}

fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cores} cores, {model}")
}

/// The run with the median throughput.
fn median(mut runs: Vec<Wrk>) -> Wrk {
    runs.sort_by(|a, b| a.requests_per_second.total_cmp(&b.requests_per_second));
    let middle = runs.len() / 2;
    runs.swap_remove(middle)
}

/// Draws the chart of a suite's results again, from its JSON.
pub fn replot(json: &Path, svg: &Path) -> Result<(), String> {
    let results = Results::read(json)?;
    std::fs::write(svg, plot(&results)?).map_err(|e| format!("{}: {e}", svg.display()))
}

/// The chart of the rows: throughput (the best Flask setup for Flask) and context switches.
fn plot(results: &Results) -> Result<String, String> {
    let scenarios: Vec<plot::Scenario> = results
        .rows
        .iter()
        .map(|row| plot::Scenario {
            name: row.scenario.clone(),
            service_rps: row.service.requests_per_second,
            axum_rps: row.axum.requests_per_second,
            flask_rps: row.best_flask(),
            service_switches: row.service_switches,
            axum_switches: row.axum_switches,
        })
        .collect();
    plot::suite(&scenarios)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 10s test @ http://127.0.0.1:5000/
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   346.12us  201.57us  10.33ms   91.20%
    Req/Sec    23.34k     1.83k   27.07k    70.50%
  Latency Distribution
     50%  304.00us
     75%  383.00us
     90%  487.00us
     99%    1.12ms
  464521 requests in 10.00s, 76.21MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  46438.31
Transfer/sec:      7.62MB
";

    #[test]
    fn reads_wrks_summary() {
        let w = parse_wrk(WRK).unwrap();
        assert_eq!(w.requests, 464_521);
        assert!((w.requests_per_second - 46_438.31).abs() < 1e-6);
        assert!((w.p50_ms - 0.304).abs() < 1e-9);
        assert!((w.p99_ms - 1.12).abs() < 1e-9);
        assert_eq!(w.errors, 7);
        assert!(parse_wrk("nothing").is_err());
    }
}
