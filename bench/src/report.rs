//! Printing results for people.

use num_format::{Locale, ToFormattedString};

use crate::load::{Report, Scenario};

pub fn scenario_name(scenario: Scenario) -> &'static str {
    match scenario {
        Scenario::Root => "GET /",
        Scenario::Insert => "POST /data",
        Scenario::List => "GET /data",
        Scenario::Mixed => "GET /data + 10% POST /data",
    }
}

/// Groups digits: 1234567 -> "1,234,567".
pub fn thousands(n: u64) -> String {
    n.to_formatted_string(&Locale::en)
}

pub fn print(report: &Report) {
    let mode = match report.target_rate {
        Some(rate) => format!("steady {rate} req/s"),
        None => "as fast as answered".to_owned(),
    };
    println!(
        "{} against {}: {} connections (kept alive, each reused by one worker), {mode}, {:.1} s measured",
        scenario_name(report.scenario),
        report.target,
        report.connections,
        report.seconds
    );
    println!(
        "  requests   {:>12}   {:.1} req/s",
        thousands(report.requests),
        report.requests_per_second
    );
    let l = &report.latency;
    println!(
        "  latency    p50 {:.2} ms   p90 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
        l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
    );
    let statuses: Vec<String> = report
        .statuses
        .iter()
        .map(|(status, n)| format!("{status}: {}", thousands(*n)))
        .collect();
    println!("  answers    {}", statuses.join("   "));
    println!(
        "  received   {:.1} MB",
        report.bytes_received as f64 / 1_000_000.0
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_groups_digits() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1000), "1,000");
        assert_eq!(super::thousands(1234567), "1,234,567");
    }
}
