//! `just bench`: every scenario against the service, its floors and the Flask reference,
//! on one MongoDB stand-in, one after the other on this machine; then the table.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use crate::load::{self, Report, Scenario, Spec};
use crate::procs::{free_port, wait_for_200, wait_for_port, Proc};
use crate::report::{scenario_name, thousands};
use crate::targets::{preload, Driver, Http};

#[derive(clap::Args)]
pub struct SuiteArgs {
    /// Measured seconds per run
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds before each run
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Concurrent connections (and driver threads for the floors)
    #[arg(long, default_value_t = 16)]
    connections: usize,
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
    /// Python with Flask, pymongo and gunicorn installed
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Directory of the Flask reference app
    #[arg(long, default_value = "bench/flask_ref")]
    flask_dir: PathBuf,
    /// gunicorn worker counts to measure
    #[arg(long, value_delimiter = ',', default_value = "2,4,8")]
    gunicorn_workers: Vec<usize>,
    /// Image whose size to report, if Docker can see it
    #[arg(long)]
    image: Option<String>,
    /// Runs of the service and of its floor per scenario (alternating; the median counts)
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Write every measurement as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
}

struct Server {
    name: String,
    url: String,
    process: Proc,
}

#[derive(Serialize)]
struct Row {
    scenario: String,
    documents: Option<u64>,
    service: Report,
    floor: Option<Report>,
    flask: Report,
    gunicorn: Vec<(usize, Report)>,
    service_cpu_seconds_per_1000: Option<f64>,
}

#[derive(Serialize)]
struct Footprint {
    idle_rss_mib: f64,
    peak_rss_mib: f64,
    start_to_ready_ms: f64,
    image_bytes: Option<u64>,
}

#[derive(Serialize)]
struct Results {
    rows: Vec<Row>,
    footprint: Footprint,
}

const DB: &str = "bench";
const USER: &str = "bench";

pub fn run(args: &SuiteArgs) -> Result<(), String> {
    let logs = tempfile::tempdir().map_err(|e| e.to_string())?;
    let password = format!("bench-{}", std::process::id());

    let mongo_port = free_port();
    let mut mongo_cmd = Command::new("secantusd-rs");
    mongo_cmd
        .args(["--host", "127.0.0.1", "--port", &mongo_port.to_string()])
        .arg("--storage-path")
        .arg(logs.path().join("mongo"))
        .args([
            "--auth",
            "--sync-on-commit",
            "--log-file-max",
            "16MB",
            "--cache-size",
            "512M",
        ]);
    let _mongo = Proc::spawn("mongo", mongo_cmd, logs.path())?;
    wait_for_port(mongo_port, Duration::from_secs(10))?;
    crate::admin::add_user("127.0.0.1", mongo_port, None, USER, &password, "root")?;
    let uri = format!(
        "mongodb://{USER}:{password}@127.0.0.1:{mongo_port}/{DB}?authSource=admin&directConnection=true"
    );
    let mongo_env = [
        ("MONGO_HOST", "127.0.0.1".to_owned()),
        ("MONGO_PORT", mongo_port.to_string()),
        ("MONGO_USER", USER.to_owned()),
        ("MONGO_PASSWORD", password.clone()),
        ("MONGO_DB", DB.to_owned()),
    ];

    // The service, timed from exec to its first 200 on /readyz.
    let port = free_port();
    let mut cmd = Command::new(&args.service);
    cmd.envs(mongo_env.iter().cloned())
        .env("PORT", port.to_string())
        .env("BIND_ADDR", "127.0.0.1");
    let url = format!("http://127.0.0.1:{port}");
    let service = Proc::spawn("service", cmd, logs.path())?;
    let start_to_ready = wait_for_200(&format!("{url}/readyz"), Duration::from_secs(20))?;
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss = service.rss_kib().unwrap_or(0);
    let service = Server {
        name: "mongo-api".into(),
        url,
        process: service,
    };

    let floor = start_floor(logs.path())?;
    let flask = start_python(args, "flask-run", logs.path(), &mongo_env, |cmd, port| {
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
        gunicorns.push((
            workers,
            start_python(
                args,
                &format!("gunicorn-{workers}"),
                logs.path(),
                &mongo_env,
                |cmd, port| {
                    cmd.args([
                        "-m",
                        "gunicorn",
                        "--workers",
                        &workers.to_string(),
                        "--bind",
                    ])
                    .arg(format!("127.0.0.1:{port}"))
                    .arg("app:app");
                },
            )?,
        ));
    }
    let driver = Driver::connect(&uri, DB, args.connections).map_err(|e| e.to_string())?;

    let spec = |scenario, requests| Spec {
        scenario,
        connections: args.connections,
        duration: Duration::from_secs_f64(args.duration),
        requests,
        warmup: Duration::from_secs_f64(args.warmup),
        rate: None,
    };
    let plans: [(Scenario, Option<u64>, Option<u64>); 5] = [
        (Scenario::Root, None, None),
        (Scenario::Insert, Some(0), None),
        (Scenario::List, Some(100), None),
        (Scenario::List, Some(10_000), None),
        (Scenario::Mixed, Some(100), Some(args.mixed_requests)),
    ];
    let mut rows = Vec::new();
    for (scenario, documents, requests) in plans {
        let mut spec = spec(scenario, requests);
        if requests.is_some() {
            // Fixed work: let even the slowest server finish it.
            spec.duration = Duration::from_secs(600);
        }
        let label = match documents {
            Some(n) if scenario != Scenario::Insert => {
                format!("{} ({} docs)", scenario_name(scenario), thousands(n))
            }
            _ => scenario_name(scenario).to_owned(),
        };
        eprintln!("== {label}");
        let measure = |server: &Server| -> Result<Report, String> {
            if let Some(n) = documents {
                preload(&uri, DB, n).map_err(|e| e.to_string())?;
            }
            eprintln!("   {}", server.name);
            let mut report = load::run(&Http::new(&server.url), &spec);
            report.target = server.name.clone();
            Ok(report)
        };
        let run_floor = || -> Result<Option<Report>, String> {
            match scenario {
                Scenario::Root => measure(&floor).map(Some),
                Scenario::Insert | Scenario::List => {
                    if let Some(n) = documents {
                        preload(&uri, DB, n).map_err(|e| e.to_string())?;
                    }
                    eprintln!("   driver floor");
                    let mut report = load::run(&driver, &spec);
                    report.target = "driver floor".into();
                    Ok(Some(report))
                }
                Scenario::Mixed => Ok(None),
            }
        };
        // The service and its floor in alternating order, round after round: on a noisy
        // machine the median of each is what to compare.
        let mut service_runs = Vec::new();
        let mut floor_runs = Vec::new();
        let (mut cpu, mut answered) = (0.0, 0);
        for round in 0..args.rounds {
            if round % 2 == 1 {
                floor_runs.extend(run_floor()?);
            }
            let before = service.process.cpu_seconds().unwrap_or(0.0);
            let report = measure(&service)?;
            cpu += service.process.cpu_seconds().unwrap_or(0.0) - before;
            answered += report.requests_total;
            service_runs.push(report);
            if round % 2 == 0 {
                floor_runs.extend(run_floor()?);
            }
        }
        let service_report = median(service_runs);
        let floor_report = (!floor_runs.is_empty()).then(|| median(floor_runs));
        let cpu = (answered > 0).then(|| cpu / answered as f64 * 1000.0);
        let flask_report = measure(&flask)?;
        let mut gunicorn_reports = Vec::new();
        for (workers, server) in &gunicorns {
            gunicorn_reports.push((*workers, measure(server)?));
        }
        rows.push(Row {
            scenario: label,
            documents: documents.filter(|_| scenario != Scenario::Insert),
            service: service_report,
            floor: floor_report,
            flask: flask_report,
            gunicorn: gunicorn_reports,
            service_cpu_seconds_per_1000: cpu,
        });
    }

    let footprint = Footprint {
        idle_rss_mib: idle_rss as f64 / 1024.0,
        peak_rss_mib: service.process.peak_rss_kib().unwrap_or(0) as f64 / 1024.0,
        start_to_ready_ms: start_to_ready.as_secs_f64() * 1000.0,
        image_bytes: args.image.as_deref().and_then(image_size),
    };
    let results = Results { rows, footprint };
    print_tables(&results, args);
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
        std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn start_floor(logs: &std::path::Path) -> Result<Server, String> {
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
    logs: &std::path::Path,
    env: &[(&str, String)],
    configure: impl FnOnce(&mut Command, u16),
) -> Result<Server, String> {
    let port = free_port();
    // A relative program path would be taken relative to the new working directory.
    let python = if args.python.components().count() > 1 {
        std::fs::canonicalize(&args.python)
            .map_err(|e| format!("{}: {e}", args.python.display()))?
    } else {
        args.python.clone()
    };
    let mut cmd = Command::new(python);
    cmd.current_dir(&args.flask_dir).envs(env.iter().cloned());
    configure(&mut cmd, port);
    let process = Proc::spawn(name, cmd, logs)?;
    let url = format!("http://127.0.0.1:{port}");
    wait_for_200(&format!("{url}/"), Duration::from_secs(30))
        .map_err(|e| format!("{name}: {e} (see {}/{name}.log)", logs.display()))?;
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

/// The run with the median throughput.
fn median(mut runs: Vec<Report>) -> Report {
    runs.sort_by(|a, b| a.requests_per_second.total_cmp(&b.requests_per_second));
    let middle = runs.len() / 2;
    runs.swap_remove(middle)
}

fn ratio(a: &Report, b: &Report) -> f64 {
    a.requests_per_second / b.requests_per_second.max(1e-9)
}

fn print_tables(results: &Results, args: &SuiteArgs) {
    let machine = std::fs::read_to_string("/proc/cpuinfo")
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
    println!();
    println!(
        "{} connections, {} s per run after {} s warm-up, one machine ({cores} cores, {machine}), SecantusDB with --auth --sync-on-commit",
        args.connections, args.duration, args.warmup
    );
    println!();
    let gunicorn_heads: String = args
        .gunicorn_workers
        .iter()
        .map(|w| format!(" gunicorn -w{w} |"))
        .collect();
    println!("| Scenario | mongo-api req/s | p99 ms | floor req/s | of floor | flask run | ×flask |{gunicorn_heads} ×best gunicorn | errors |");
    let gunicorn_rule: String = args.gunicorn_workers.iter().map(|_| "---:|").collect();
    println!("|---|---:|---:|---:|---:|---:|---:|{gunicorn_rule}---:|---:|");
    for row in &results.rows {
        let floor = row.floor.as_ref();
        let best = row
            .gunicorn
            .iter()
            .map(|(_, r)| r)
            .max_by(|a, b| a.requests_per_second.total_cmp(&b.requests_per_second));
        let gunicorn_cells: String = row
            .gunicorn
            .iter()
            .map(|(_, r)| format!(" {:.0} |", r.requests_per_second))
            .collect();
        let errors = row.service.errors()
            + row.flask.errors()
            + row.gunicorn.iter().map(|(_, r)| r.errors()).sum::<u64>()
            + floor.map_or(0, |f| f.errors());
        println!(
            "| {} | {:.0} | {:.1} | {} | {} | {:.0} | {:.1} |{gunicorn_cells} {} | {} |",
            row.scenario,
            row.service.requests_per_second,
            row.service.latency.p99_ms,
            floor.map_or("–".into(), |f| format!("{:.0}", f.requests_per_second)),
            floor.map_or("–".into(), |f| format!(
                "{:.0} %",
                ratio(&row.service, f) * 100.0
            )),
            row.flask.requests_per_second,
            ratio(&row.service, &row.flask),
            best.map_or("–".into(), |b| format!("{:.1}", ratio(&row.service, b))),
            errors
        );
    }
    let f = &results.footprint;
    println!();
    println!("| mongo-api footprint | |");
    println!("|---|---:|");
    println!(
        "| RSS idle (after start, 1 s after ready) | {:.1} MiB |",
        f.idle_rss_mib
    );
    println!("| RSS peak (whole suite) | {:.1} MiB |", f.peak_rss_mib);
    println!(
        "| Start to `/readyz` = 200 | {:.0} ms |",
        f.start_to_ready_ms
    );
    for row in &results.rows {
        if let Some(cpu) = row.service_cpu_seconds_per_1000 {
            println!(
                "| CPU per 1,000 requests, {} | {:.3} s |",
                row.scenario, cpu
            );
        }
    }
    if let Some(bytes) = f.image_bytes {
        println!("| Image size | {:.2} MB |", bytes as f64 / 1_000_000.0);
    }
}
