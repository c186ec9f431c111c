//! `bench`: how fast is mongo-api? Load for one server (`run`), the whole comparison
//! with floors and the Flask reference (`suite`, what `just bench` runs), the bare
//! tiny_http floor server (`floor-http`), and MongoDB user setup (`create-user`).

mod admin;
mod floor;
mod hpa;
mod load;
mod plot;
mod procs;
mod report;
mod suite;
mod tables;
mod targets;

use std::time::Duration;

use clap::{Parser, Subcommand};

use load::{Report, Scenario, Spec};

#[derive(Parser)]
#[command(name = "bench", about = "Load generator and baselines for mongo-api")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send load to one server (or to the MongoDB driver directly) and report
    Run(RunArgs),
    /// Measure every scenario against the service, its floors and the Flask reference
    Suite(suite::SuiteArgs),
    /// Draw a suite's chart again from its JSON (after changing how it is drawn)
    Plot {
        #[arg(long, default_value = "bench/results/bench.json")]
        json: std::path::PathBuf,
        #[arg(long, default_value = "bench/results/bench.svg")]
        svg: std::path::PathBuf,
    },
    /// Put the committed results into the documents that show them (docs/performance.md)
    Tables {
        /// Only say whether a document differs from its results (exit status 1 if so)
        #[arg(long)]
        check: bool,
    },
    /// Serve a constant GET / with stock tiny_http (the floor for GET /)
    FloorHttp {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 16)]
        threads: usize,
    },
    /// Create a MongoDB user (the first one through the localhost exception)
    CreateUser(admin::CreateUser),
    /// Show the HPA scaling on Minikube: documents through the API, a load over its
    /// target, replicas and CPU every 15 s until it scales back (`just hpa-demo`)
    HpaDemo(hpa::HpaArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Base URL of the server (on Minikube: the NodePort URL, see `just url`)
    #[arg(long, default_value = "http://127.0.0.1:5000")]
    url: String,
    /// Load the MongoDB driver directly instead of a server (insert and list only)
    #[arg(long, value_name = "MONGODB_URI")]
    driver: Option<String>,
    /// Database for --driver and --preload
    #[arg(long, default_value = "flask_db")]
    db: String,
    #[arg(long, value_enum, default_value = "root")]
    scenario: Scenario,
    /// Concurrent connections, one worker each
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Measured seconds
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many measured requests (or at --duration, whichever is first)
    #[arg(long)]
    requests: Option<u64>,
    /// Unmeasured seconds first
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Send this many requests per second in total instead of as many as possible
    #[arg(long)]
    rate: Option<f64>,
    /// Before running, empty collection `data` and insert this many documents
    /// (needs --mongo-uri)
    #[arg(long)]
    preload: Option<u64>,
    /// MongoDB for --preload
    #[arg(long)]
    mongo_uri: Option<String>,
    /// A second server: run both in alternating rounds and print their ratio per round
    #[arg(long)]
    compare: Option<String>,
    /// Rounds for --compare
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(&args),
        Command::Suite(args) => suite::run(&args),
        Command::Plot { json, svg } => suite::replot(&json, &svg),
        Command::Tables { check } => tables::write(std::path::Path::new("."), check),
        Command::FloorHttp { port, threads } => floor::serve(port, threads),
        Command::CreateUser(args) => admin::create_user(&args),
        Command::HpaDemo(args) => hpa::run(&args),
    };
    if let Err(e) = result {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: &RunArgs) -> Result<(), String> {
    if args.connections == 0 || args.duration <= 0.0 {
        return Err("--connections and --duration must be positive".into());
    }
    let spec = Spec {
        scenario: args.scenario,
        connections: args.connections,
        duration: Duration::from_secs_f64(args.duration),
        requests: args.requests,
        warmup: Duration::from_secs_f64(args.warmup),
        rate: args.rate.filter(|r| *r > 0.0),
    };
    let prepare = || -> Result<(), String> {
        match (args.preload, &args.mongo_uri) {
            (Some(n), Some(uri)) => targets::preload(uri, &args.db, n).map_err(|e| e.to_string()),
            (Some(_), None) => Err("--preload needs --mongo-uri".into()),
            _ => Ok(()),
        }
    };
    let measure = |url: &str| -> Result<Report, String> {
        prepare()?;
        Ok(match &args.driver {
            Some(uri) => {
                let driver = targets::Driver::connect(uri, &args.db, args.connections)
                    .map_err(|e| e.to_string())?;
                load::run(&driver, &spec)
            }
            None => load::run(&targets::Http::new(url), &spec),
        })
    };
    let Some(other) = &args.compare else {
        let report = measure(&args.url)?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
            );
        } else {
            report::print(&report);
        }
        return Ok(());
    };

    // Alternate the order each round so that neither side always runs on a warmer or
    // cooler machine; the per-round ratio is what to trust on a noisy one.
    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        let (first, second) = if round % 2 == 1 {
            (&args.url, other)
        } else {
            (other, &args.url)
        };
        let a = measure(first)?;
        let b = measure(second)?;
        let (a, b) = if round % 2 == 1 { (a, b) } else { (b, a) };
        let ratio = a.requests_per_second / b.requests_per_second.max(1e-9);
        if !args.json {
            println!(
                "round {round}: {} {:.0} req/s (p99 {:.2} ms)   {} {:.0} req/s (p99 {:.2} ms)   ratio {ratio:.2}",
                args.url, a.requests_per_second, a.latency.p99_ms, other, b.requests_per_second, b.latency.p99_ms
            );
        }
        rounds.push((a, b, ratio));
    }
    let mut ratios: Vec<f64> = rounds.iter().map(|r| r.2).collect();
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    if args.json {
        let value = serde_json::json!({
            "rounds": rounds.iter().map(|(a, b, r)| serde_json::json!({"a": a, "b": b, "ratio": r})).collect::<Vec<_>>(),
            "median_ratio": median,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?
        );
    } else {
        println!("median ratio {} / {}: {median:.2}", args.url, other);
    }
    Ok(())
}
