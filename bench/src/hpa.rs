//! `bench hpa-demo`: the HorizontalPodAutoscaler at work on Minikube, end to end. Loads
//! documents through the API (MongoDB is private to the service), drives a steady load
//! sized from the service's CPU cost to well over the HPA's target, and prints, every
//! 15 s, the replicas, the CPU the HPA sees and how the service answers, until the HPA has
//! scaled back to its minimum. The timeline also goes to a CSV and an SVG plot.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::load::{self, Scenario, Spec};
use crate::plot;
use crate::targets::Http;

#[derive(clap::Args)]
pub struct HpaArgs {
    /// The service's URL (`just url`)
    #[arg(long)]
    url: String,
    /// Documents to load through the API first, so each GET /data costs what it would
    #[arg(long, default_value_t = 100)]
    documents: u64,
    /// CPU milliseconds one GET /data of those documents costs the service (`just bench`
    /// measured 0.162 to 0.253 on the same machine type); the load is sized from it
    #[arg(long, default_value_t = 0.25)]
    cpu_ms_per_request: f64,
    /// How many times the HPA's target the load asks of the minimum replicas
    #[arg(long, default_value_t = 2.0)]
    over_target: f64,
    /// Each load connection is closed and opened again after this many requests, so new
    /// pods get their share (kube-proxy balances connections, not requests)
    #[arg(long, default_value_t = 50)]
    reconnect_every: u64,
    /// Minutes of load
    #[arg(long, default_value_t = 5.0)]
    minutes: f64,
    /// Give up waiting for the scale-down this many minutes after the load ends
    #[arg(long, default_value_t = 10.0)]
    cooldown_minutes: f64,
    #[arg(long, default_value = "kubectl")]
    kubectl: String,
    #[arg(long, default_value = "minikube")]
    context: String,
    #[arg(long, default_value = "mongo-api")]
    namespace: String,
    /// Where the timeline goes (`.csv` and `.svg`)
    #[arg(long, default_value = "target/hpa-demo")]
    out: PathBuf,
}

/// What the HPA reports, and how one request fared, at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub seconds: f64,
    pub replicas: u32,
    pub desired: u32,
    /// Average CPU across the pods, in % of their request, as the HPA sees it.
    pub cpu_percent: Option<u32>,
    pub status: u16,
    pub latency_ms: f64,
    pub loading: bool,
}

/// The HPA's current state, from `kubectl get hpa -o json`.
#[derive(Debug, PartialEq)]
pub struct HpaStatus {
    pub min: u32,
    pub target_percent: u32,
    pub replicas: u32,
    pub desired: u32,
    pub cpu_percent: Option<u32>,
}

pub fn parse_hpa(json: &str) -> Result<HpaStatus, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("kubectl output: {e}"))?;
    let number = |value: &serde_json::Value| value.as_u64().map(|n| n as u32);
    let target = v["spec"]["metrics"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["resource"]["name"] == "cpu"))
        .and_then(|m| number(&m["resource"]["target"]["averageUtilization"]))
        .ok_or("the HPA has no CPU utilization target")?;
    let cpu = v["status"]["currentMetrics"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["resource"]["name"] == "cpu"))
        .and_then(|m| number(&m["resource"]["current"]["averageUtilization"]));
    Ok(HpaStatus {
        min: number(&v["spec"]["minReplicas"]).unwrap_or(1),
        target_percent: target,
        replicas: number(&v["status"]["currentReplicas"]).unwrap_or(0),
        desired: number(&v["status"]["desiredReplicas"]).unwrap_or(0),
        cpu_percent: cpu,
    })
}

fn hpa(args: &HpaArgs) -> Result<HpaStatus, String> {
    let output = Command::new(&args.kubectl)
        .args(["--context", &args.context, "-n", &args.namespace])
        .args(["get", "hpa", "mongo-api", "-o", "json"])
        .output()
        .map_err(|e| format!("{}: {e}", args.kubectl))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
    }
    parse_hpa(&String::from_utf8_lossy(&output.stdout))
}

/// The steady rate that asks `over_target` times the HPA's target of `pods` pods, each
/// requesting `request_millicores`.
pub fn rate(
    pods: u32,
    target_percent: u32,
    request_millicores: f64,
    cpu_ms: f64,
    over_target: f64,
) -> f64 {
    let target_millicores =
        f64::from(pods) * request_millicores * f64::from(target_percent) / 100.0;
    // A millicore is a millisecond of CPU per second.
    over_target * target_millicores / cpu_ms
}

/// CPU request of the API container, from the Deployment, in millicores.
fn cpu_request(args: &HpaArgs) -> Result<f64, String> {
    let output = Command::new(&args.kubectl)
        .args(["--context", &args.context, "-n", &args.namespace])
        .args(["get", "deployment", "mongo-api", "-o"])
        .arg("jsonpath={.spec.template.spec.containers[0].resources.requests.cpu}")
        .output()
        .map_err(|e| format!("{}: {e}", args.kubectl))?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    match text.strip_suffix('m') {
        Some(m) => m.parse().map_err(|_| format!("CPU request {text:?}")),
        None => text
            .parse::<f64>()
            .map(|cores| cores * 1000.0)
            .map_err(|_| format!("CPU request {text:?}")),
    }
}

pub fn run(args: &HpaArgs) -> Result<(), String> {
    let base = args.url.trim_end_matches('/');
    let status = hpa(args)?;
    let millicores = cpu_request(args)?;
    let rate = rate(
        status.min,
        status.target_percent,
        millicores,
        args.cpu_ms_per_request,
        args.over_target,
    );
    println!(
        "HPA mongo-api: scales from {} replicas at {}% of {millicores}m CPU each. Loading {} documents through the API,",
        status.min, status.target_percent, args.documents
    );
    println!(
        "then GET /data at {rate:.0} requests/s for {} min ({}x the target of {} pods at {} CPU-ms a request).",
        args.minutes, args.over_target, status.min, args.cpu_ms_per_request
    );
    println!("Minikube's metrics-server reports every 60 s and the HPA looks every 15 s: expect the first new pod 1 to 2 minutes in,");
    println!("and pods to go, one a minute, once the load has been gone for the HPA's 2-minute stabilisation window.\n");
    load_documents(base, args.documents)?;

    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let load_for = Duration::from_secs_f64(args.minutes * 60.0);
    let (samples, report) = std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            let spec = Spec {
                scenario: Scenario::List,
                connections: 32,
                duration: load_for,
                requests: None,
                warmup: Duration::ZERO,
                rate: Some(rate),
            };
            let report = load::run(&Http::reconnecting(base, args.reconnect_every), &spec);
            stop.store(true, Ordering::Release);
            report
        });
        let samples = watch(args, base, started, &stop);
        (samples, load.join().expect("the load thread"))
    });
    println!(
        "\nthe load: {:.0} requests/s answered, p50 {:.1} ms, p99 {:.1} ms, statuses {:?}",
        report.requests_per_second, report.latency.p50_ms, report.latency.p99_ms, report.statuses
    );
    let samples = samples?;
    std::fs::create_dir_all(&args.out).map_err(|e| e.to_string())?;
    let csv = args.out.join("timeline.csv");
    let svg = args.out.join("timeline.svg");
    std::fs::write(&csv, to_csv(&samples)).map_err(|e| e.to_string())?;
    std::fs::write(&svg, plot::timeline(&samples, status.target_percent)?)
        .map_err(|e| e.to_string())?;
    println!("timeline: {} and {}", csv.display(), svg.display());
    Ok(())
}

/// `GET /data` requests each pod of the Deployment has answered since it started, from
/// its `/metrics` through the API server's pod proxy (the management port is open only
/// to the node, and on Minikube the API server runs there).
fn per_pod_requests(args: &HpaArgs) -> Result<Vec<(String, u64)>, String> {
    let kubectl = |extra: &[&str]| -> Result<String, String> {
        let output = Command::new(&args.kubectl)
            .args(["--context", &args.context])
            .args(extra)
            .output()
            .map_err(|e| format!("{}: {e}", args.kubectl))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    // The pod proxy takes a port number, not a port's name.
    let pods = kubectl(&[
        "-n",
        &args.namespace,
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=mongo-api",
        "--field-selector=status.phase=Running",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name} {.spec.containers[0].ports[?(@.name=="management")].containerPort}{"\n"}{end}"#,
    ])?;
    pods.lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(pod, port)| {
            let path = format!(
                "/api/v1/namespaces/{}/pods/{pod}:{port}/proxy/metrics",
                args.namespace
            );
            let metrics = kubectl(&["get", "--raw", &path])?;
            Ok((pod.to_owned(), list_requests(&metrics)))
        })
        .collect()
}

/// The `GET /data` requests a service's `/metrics` text counts, over every status.
pub fn list_requests(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|line| line.starts_with("http_requests_total{"))
        .filter(|line| line.contains(r#"method="GET""#) && line.contains(r#"route="/data""#))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|n| n as u64)
        .sum()
}

fn print_per_pod(counts: &[(String, u64)]) {
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    println!("GET /data answered by each pod, as the load ends (since the pod started):");
    for (pod, n) in counts {
        let share = *n as f64 * 100.0 / total.max(1) as f64;
        println!("  {pod:<40} {n:>9}  {share:>5.1}%");
    }
}

fn load_documents(base: &str, count: u64) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    for n in 0..count {
        let response = agent
            .post(&format!("{base}/data"))
            .header("Content-Type", "application/json")
            .send(crate::targets::insert_json(n))
            .map_err(|e| format!("POST /data: {e}"))?;
        if response.status() != 201 {
            return Err(format!("POST /data answered {}", response.status()));
        }
    }
    Ok(())
}

/// Samples every 15 s while the load runs, then until the HPA is back at its minimum.
fn watch(
    args: &HpaArgs,
    base: &str,
    started: Instant,
    stop: &AtomicBool,
) -> Result<Vec<Sample>, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut samples = Vec::new();
    let mut load_ended: Option<Instant> = None;
    println!(
        "{:>6}  {:>8}  {:>8}  {:>9}  GET /data",
        "time", "replicas", "desired", "CPU/target"
    );
    loop {
        let loading = !stop.load(Ordering::Acquire);
        let status = hpa(args)?;
        let request = Instant::now();
        let answer = agent
            .get(&format!("{base}/data"))
            .call()
            .map(|mut r| {
                let _ = r.body_mut().read_to_vec();
                r.status().as_u16()
            })
            .unwrap_or(0);
        let sample = Sample {
            seconds: started.elapsed().as_secs_f64(),
            replicas: status.replicas,
            desired: status.desired,
            cpu_percent: status.cpu_percent,
            status: answer,
            latency_ms: request.elapsed().as_secs_f64() * 1000.0,
            loading,
        };
        println!(
            "{:>5.0}s  {:>8}  {:>8}  {:>4}/{}%  {} in {:.0} ms{}",
            sample.seconds,
            sample.replicas,
            sample.desired,
            sample.cpu_percent.map_or("?".into(), |c| c.to_string()),
            status.target_percent,
            sample.status,
            sample.latency_ms,
            if loading { "" } else { "  (load over)" }
        );
        samples.push(sample);
        if !loading {
            if load_ended.is_none() {
                // Before the scale-down removes the pods that shared the load.
                match per_pod_requests(args) {
                    Ok(counts) => print_per_pod(&counts),
                    Err(e) => println!("per-pod request counts unavailable: {e}"),
                }
            }
            let ended = *load_ended.get_or_insert_with(Instant::now);
            let scaled_up = samples.iter().any(|s| s.replicas > status.min);
            if status.replicas <= status.min && status.desired <= status.min {
                if !scaled_up {
                    println!("the HPA never scaled up: the load stayed under its target (raise --over-target)");
                }
                return Ok(samples);
            }
            if ended.elapsed() > Duration::from_secs_f64(args.cooldown_minutes * 60.0) {
                println!(
                    "stopped waiting for the scale-down after {} min",
                    args.cooldown_minutes
                );
                return Ok(samples);
            }
        }
        std::thread::sleep(Duration::from_secs(15));
    }
}

pub fn to_csv(samples: &[Sample]) -> String {
    let mut out = String::from("seconds,replicas,desired,cpu_percent,status,latency_ms,loading\n");
    for s in samples {
        let cpu = s.cpu_percent.map_or(String::new(), |c| c.to_string());
        let _ = writeln!(
            out,
            "{:.0},{},{},{cpu},{},{:.1},{}",
            s.seconds, s.replicas, s.desired, s.status, s.latency_ms, s.loading
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HPA: &str = r#"{
        "spec": {"minReplicas": 2, "maxReplicas": 5,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                     "target": {"type": "Utilization", "averageUtilization": 70}}}]},
        "status": {"currentReplicas": 3, "desiredReplicas": 4,
                   "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu",
                       "current": {"averageUtilization": 131, "averageValue": "131m"}}}]}
    }"#;

    #[test]
    fn reads_what_kubectl_reports_of_the_hpa() {
        assert_eq!(
            parse_hpa(HPA).unwrap(),
            HpaStatus {
                min: 2,
                target_percent: 70,
                replicas: 3,
                desired: 4,
                cpu_percent: Some(131)
            }
        );
        // Before metrics-server's first report there is no current value.
        let fresh = HPA.replace(r#""currentMetrics""#, r#""otherMetrics""#);
        assert_eq!(parse_hpa(&fresh).unwrap().cpu_percent, None);
    }

    #[test]
    fn the_load_is_sized_from_the_cpu_cost() {
        // Two pods at 70% of 100m is 140 CPU-ms a second; at 0.26 ms a request, 538 req/s.
        let r = rate(2, 70, 100.0, 0.26, 1.0);
        assert!((r - 538.5).abs() < 0.1, "{r}");
        assert!((rate(2, 70, 100.0, 0.26, 3.0) - 3.0 * r).abs() < 1e-9);
    }

    #[test]
    fn counts_the_list_requests_a_pod_reports() {
        // What the service itself renders, not a copy of its format.
        let metrics = mongo_api::metrics::Metrics::new();
        let ms = Duration::from_millis(1);
        for _ in 0..3 {
            metrics.observe("/data", "GET", 200, ms);
        }
        metrics.observe("/data", "GET", 503, ms);
        metrics.observe("/data", "POST", 201, ms);
        metrics.observe("/", "GET", 200, ms);
        let (text, _) = metrics.render();
        assert_eq!(list_requests(&String::from_utf8(text).unwrap()), 4);
    }

    #[test]
    fn the_timeline_is_written_as_csv_and_svg() {
        let samples: Vec<Sample> = (0..10)
            .map(|i| Sample {
                seconds: f64::from(i) * 15.0,
                replicas: 2 + (i / 3).min(2),
                desired: 2 + (i / 2).min(3),
                cpu_percent: (i > 0).then_some(40 + i * 20),
                status: 200,
                latency_ms: 5.0,
                loading: i < 7,
            })
            .collect();
        let csv = to_csv(&samples);
        assert_eq!(csv.lines().count(), 11);
        assert!(
            csv.lines()
                .nth(1)
                .unwrap()
                .starts_with("0,2,2,,200,5.0,true"),
            "{csv}"
        );
        let svg = crate::plot::timeline(&samples, 70).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("target 70%"));
    }
}
