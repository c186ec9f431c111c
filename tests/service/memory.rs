//! Memory stays inside the Deployment's limit under the worst valid inputs, measured as
//! the pod's memory cgroup counts it (user and kernel memory: `crate::support::pod`), for the
//! static release binary started with the Deployment's own settings inside a cgroup with
//! the Deployment's memory limit: bodies that grow most when converted, as many as there
//! are workers; `MAX_CONNECTIONS` uploads stalled just before their end; many clients
//! listing documents of several MiB each; one listing of a collection larger than the
//! budget. What does not fit in `REQUEST_MEMORY_MIB` waits, then gets 503 with
//! `Retry-After`; nothing is killed.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::http::{self, raw_status};
use crate::support::mongo::Mongo;
use crate::support::pod::{self, Pod};
use crate::support::results;
use crate::support::service::mongo_env;
use mongodb::bson::{doc, Document};

/// The release binary in the Deployment's limits, with its settings, connected to `db`.
fn start(mongo: &Mongo, db: &str) -> Pod {
    let pod = Pod::start(db, &mongo_env(mongo, db));
    assert_eq!(
        http::get(&pod.service.management_url("/readyz")).status,
        200
    );
    pod
}

/// A body just under 1 MiB that grows about sixfold into BSON: one array of zeros.
fn array_body(max: usize) -> Vec<u8> {
    let zeros = (max - 16) / 2;
    let mut body = b"{\"a\":[".to_vec();
    body.extend(b"0,".repeat(zeros - 1));
    body.extend(b"0]}");
    assert!(body.len() <= max);
    body
}

fn workers() -> usize {
    pod::deployment().number("WORKERS", 16) as usize
}

fn max_connections() -> usize {
    pod::deployment()
        .var("MAX_CONNECTIONS")
        .expect("the Deployment sets MAX_CONNECTIONS")
        .parse()
        .unwrap()
}

#[test]
fn as_many_array_bodies_as_workers_stay_inside_the_limit() {
    let mongo = Mongo::shared();
    let db = mongo.fresh_db("arrays");
    let mut pod = start(&mongo, &db);
    let service = &pod.service;
    let body = array_body(1024 * 1024);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers())
            .map(|_| {
                let (body, url) = (&body, service.url("/data"));
                scope.spawn(move || {
                    let reply = http::post(&url, Some("application/json"), body);
                    if reply.status == 503 {
                        assert_eq!(reply.header("Retry-After"), Some("1"));
                    }
                    reply.status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let stored = statuses.iter().filter(|s| **s == 201).count();
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 503),
        "{statuses:?}"
    );
    assert!(stored >= 1, "none stored: {statuses:?}");
    assert_eq!(mongo.documents(&db).len(), stored);
    eprintln!(
        "{} concurrent 1 MiB array bodies: {stored} stored, {} answered 503",
        statuses.len(),
        statuses.len() - stored
    );
    let url = service.url("/data");
    let report = pod.assert_within_limit("array bodies");
    // The memory came back: one more is stored at once.
    assert_eq!(
        http::post(&url, Some("application/json"), &body).status,
        201
    );
    results::attack(
        "array-bodies",
        3,
        &format!(
            "{} concurrent `POST /data` (as many as `WORKERS`), each a body just under 1 MiB of one array of {} zeros (about six times that as BSON)",
            statuses.len(),
            results::thousands((body.len() - 16) / 2)
        ),
        &report,
        &format!(
            "{stored} stored (`201`), {} `503` with `Retry-After`; the next one stored at once",
            statuses.len() - stored
        ),
    );
}

/// Uploads stalled at once in the stalled-uploads attack: a dozen times what the request
/// budget can hold (48 bodies of 1 MiB), so most wait for memory and are refused.
const STALLED_UPLOADS: usize = 600;

#[test]
fn stalled_almost_complete_uploads_stay_inside_the_limit() {
    let mongo = Mongo::shared();
    let db = mongo.fresh_db("stalled");
    let mut pod = start(&mongo, &db);
    let service = &pod.service;
    let (addr, url) = (service.addr, service.url("/data"));
    let body = array_body(1024 * 1024);
    let head = format!(
        "POST /data HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let started = Instant::now();
    let stalled: Vec<TcpStream> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..STALLED_UPLOADS)
            .map(|_| {
                let (head, body) = (&head, &body);
                scope.spawn(move || {
                    let mut stream = TcpStream::connect(addr).unwrap();
                    stream.write_all(head.as_bytes()).unwrap();
                    // All but the last few hundred bytes; a refused upload may be cut.
                    let _ = stream.write_all(&body[..body.len() - 300]);
                    stream
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    eprintln!(
        "{} uploads stalled after {:?}",
        stalled.len(),
        started.elapsed()
    );
    std::thread::sleep(Duration::from_secs(2));
    // Probes answer meanwhile.
    let probe = Instant::now();
    assert_eq!(http::get(&service.management_url("/healthz")).status, 200);
    let probe = probe.elapsed();
    assert!(probe < Duration::from_millis(100), "{probe:?}");
    let peak = pod.assert_within_limit("stalled uploads");
    // Each stalled upload ends with 503 (no memory for its body, not read) or 408 (read,
    // but not finished in time).
    let mut answers = std::collections::BTreeMap::new();
    for mut stream in stalled {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut text = Vec::new();
        let outcome = stream.read_to_end(&mut text).err().map(|e| e.kind());
        let text = String::from_utf8_lossy(&text);
        *answers.entry((raw_status(&text), outcome)).or_insert(0) += 1;
    }
    eprintln!("answers to the stalled uploads: {answers:?} ({peak})");

    assert!(
        answers
            .keys()
            .all(|(s, _)| matches!(s, Some(503) | Some(408))),
        "{answers:?}"
    );
    assert_eq!(
        http::post(&url, Some("application/json"), &body).status,
        201
    );
    let answered = |status: u16| -> usize {
        answers
            .iter()
            .filter(|((s, _), _)| *s == Some(status))
            .map(|(_, n)| n)
            .sum()
    };
    results::attack(
        "stalled-uploads",
        4,
        &format!("{STALLED_UPLOADS} connections each sending all but the last 300 bytes of such a body, then stalling"),
        &peak,
        &format!(
            "{} bodies read (the budget's worth), then `408` at the request deadline; {} `503` unread; `/healthz` answered in {:.1} ms meanwhile; a write stored right after",
            answered(408),
            answered(503),
            probe.as_secs_f64() * 1000.0
        ),
    );
}

#[test]
fn many_clients_listing_documents_of_several_mib_stay_inside_the_limit() {
    let mongo = Mongo::shared();
    let db = mongo.fresh_db("big");
    // Written by another MongoDB client: 12 documents of 4 MiB each.
    let collection = mongo.database(&db).collection::<Document>("data");
    for i in 0..12 {
        collection
            .insert_one(doc! {"i": i, "blob": "x".repeat(4 * 1024 * 1024)})
            .run()
            .unwrap();
    }
    let mut pod = start(&mongo, &db);
    let addr = pod.service.addr;
    let outcomes: Vec<(u16, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16).map(|_| scope.spawn(move || list(addr))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let report = pod.assert_within_limit("listings of 4 MiB documents");
    let complete = outcomes.iter().filter(|o| **o == (200, 12)).count();
    let refused = outcomes.iter().filter(|o| o.0 == 503).count();
    eprintln!("16 clients listing 48 MiB each: {complete} complete, {refused} answered 503");
    assert!(complete >= 1, "{outcomes:?}");
    let warnings: Vec<String> = pod
        .service
        .output()
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        complete + refused,
        outcomes.len(),
        "some were cut: {outcomes:?}\n{warnings:#?}"
    );
    assert_eq!(list(addr), (200, 12), "served again afterwards");
    results::attack(
        "listings-of-large-documents",
        5,
        "16 clients listing 12 documents of 4 MiB each (written by another MongoDB client) at once",
        &report,
        &format!("{complete} listings complete, the other {refused} `503` with `Retry-After` before any byte of a body; none cut; a listing complete right after"),
    );
}

#[test]
fn a_collection_larger_than_the_budget_is_listed_in_bounded_memory() {
    let mongo = Mongo::shared();
    let db = mongo.fresh_db("large");
    mongo.preload(&db, 100_000, 540);
    let mut pod = start(&mongo, &db);
    let mut response = http::agent().get(&pod.service.url("/data")).call().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut body = Vec::new();
    response
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .reader()
        .read_to_end(&mut body)
        .unwrap();
    let items: Vec<serde::de::IgnoredAny> = serde_json::from_slice(&body).expect("a JSON array");
    assert_eq!(items.len(), 100_000);
    let bytes = body.len();
    assert!(bytes > 50_000_000, "only {bytes} bytes");
    let report = pod.assert_within_limit(&format!(
        "100,000 documents, {} MB of JSON",
        bytes / 1_000_000
    ));
    // Streamed, not gathered: the whole listing costs less than its JSON, or its BSON.
    assert!(
        report.peak() < 40 * 1024 * 1024,
        "{report} for a {bytes}-byte listing"
    );
    results::attack(
        "listing-larger-than-the-budget",
        6,
        &format!(
            "One client listing 100,000 documents ({} MB of JSON, more than the budget)",
            bytes / 1_000_000
        ),
        &report,
        "the whole listing, streamed (asserted under 40 MiB, less than its JSON or its BSON)",
    );
}

/// Lists on a raw connection: the status, and how many documents arrived complete (a
/// listing cut short has fewer).
fn list(addr: std::net::SocketAddr) -> (u16, usize) {
    let stream = crate::support::http::request_listing(addr);
    let mut reader = std::io::BufReader::new(stream);
    let Some(response) = crate::support::http::read_response(&mut reader) else {
        return (0, 0);
    };
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    let documents = serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&response.body)
        .map(|d| d.len())
        .unwrap_or(0);
    (response.status, documents)
}

#[test]
fn more_connections_than_the_limit_can_hold_are_refused_at_start() {
    let limit = pod::deployment().memory_limit;
    let Some(output) = Pod::run_to_exit(&[("MAX_CONNECTIONS", "1000000".to_owned())], limit) else {
        return; // No cgroup here: the process cannot know a limit (said above).
    };
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("MAX_CONNECTIONS=1000000") && stderr.contains("at most"),
        "{stderr}"
    );
}

/// Opens `count` connections to `addr`, each answered one `GET /` and kept alive.
fn keep_alive_clients(addr: std::net::SocketAddr, count: usize) -> Vec<BufReader<TcpStream>> {
    (0..count)
        .map(|i| {
            let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connection {i}: {e}"));
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let mut reader = BufReader::new(stream);
            assert_eq!(get_root(&mut reader), Some(200), "connection {i}");
            reader
        })
        .collect()
}

/// One `GET /` on a kept-alive connection; its status.
fn get_root(reader: &mut BufReader<TcpStream>) -> Option<u16> {
    reader
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .ok()?;
    crate::support::http::read_response(reader).map(|r| r.status)
}

#[test]
fn ten_thousand_idle_keep_alive_connections_fit_in_the_pod_and_are_all_answered() {
    crate::support::raise_fd_limit();
    const CLIENTS: usize = 10_000;
    let max = max_connections();
    assert!(max >= CLIENTS, "the Deployment holds {max} connections");
    let mongo = Mongo::shared();
    let db = mongo.fresh_db("capacity");
    let mut env = mongo_env(&mongo, &db);
    // Long enough for all of them to be asked twice.
    env.push(("KEEP_ALIVE_TIMEOUT_SECS", "300".into()));
    let mut pod = Pod::start(&db, &env);
    let addr = pod.service.addr;
    assert_eq!(http::get(&pod.service.url("/")).status, 200);
    std::thread::sleep(Duration::from_millis(500));
    let before = pod.memory();
    let started = Instant::now();
    let mut clients = keep_alive_clients(addr, CLIENTS);
    let opened = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let held = pod.memory();
    // A newcomer meanwhile, on a fresh connection.
    let newcomer = Instant::now();
    assert_eq!(http::get(&pod.service.url("/")).status, 200);
    let newcomer = newcomer.elapsed();
    // Every one of them is still served.
    let answered = clients
        .iter_mut()
        .map(get_root)
        .filter(|status| *status == Some(200))
        .count();
    let report = pod.assert_within_limit("10,000 idle keep-alive connections");
    let (Some(now), Some(base)) = (held.cgroup_now, before.cgroup_now) else {
        eprintln!("per-connection cost SKIPPED: no cgroup");
        assert_eq!(answered, CLIENTS);
        return;
    };
    let per_connection = (now.saturating_sub(base)) / CLIENTS as u64;
    eprintln!(
        "{CLIENTS} keep-alive connections opened in {opened:.1?}: cgroup {:.1} -> {:.1} MiB, \
         {per_connection} bytes each (user and kernel); a newcomer served in {newcomer:?}; \
         {answered} answered again; peak {report}",
        base as f64 / 1048576.0,
        now as f64 / 1048576.0
    );
    assert_eq!(answered, CLIENTS, "some connections were lost");
    assert!(newcomer < Duration::from_millis(100), "{newcomer:?}");
    assert!(
        per_connection <= mongo_api::settings::MEMORY_PER_CONNECTION,
        "{per_connection} bytes per idle connection: more than the memory formula counts"
    );
    drop(clients);
    results::figures(
        "idle-connection-cost",
        1,
        &[
            (
                "At rest (the process with its threads and MongoDB clients, connected)",
                format!("{:.1} MiB", results::mib(base)),
            ),
            (
                "Per idle keep-alive connection (10,000, each having had one `GET /` answered)",
                format!(
                    "{:.1} KiB (cgroup {:.1} → {:.1} MiB; `VmHWM` {:.1} MiB: the rest is the kernel's)",
                    per_connection as f64 / 1024.0,
                    results::mib(base),
                    results::mib(now),
                    results::mib(held.vm_hwm)
                ),
            ),
        ],
    );
    results::attack(
        "idle-connections",
        1,
        "10,000 idle keep-alive connections, then each asked again",
        &report,
        &format!(
            "all {} answered twice; a newcomer served in {:.1} ms meanwhile",
            results::thousands(answered),
            newcomer.as_secs_f64() * 1000.0
        ),
    );
}

/// Whether the server has already answered `stream` with `status` (without waiting).
fn answered(stream: &mut TcpStream, status: u16) -> bool {
    let mut start = [0; 12];
    stream.set_nonblocking(true).unwrap();
    let read = stream.read(&mut start);
    stream.set_nonblocking(false).unwrap();
    matches!(read, Ok(12)) && start.ends_with(format!(" {status}").as_bytes())
}

/// Opens `count` connections that each send `bytes` of a head and nothing more.
fn partial_heads(addr: std::net::SocketAddr, count: usize, bytes: usize) -> Vec<TcpStream> {
    let mut head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Fill: ".to_vec();
    head.resize(bytes, b'a');
    (0..count)
        .map(|i| {
            let mut stream =
                TcpStream::connect(addr).unwrap_or_else(|e| panic!("connection {i}: {e}"));
            // A connection the server refused meanwhile is one fewer, not a failure.
            let _ = stream.write_all(&head);
            stream
        })
        .collect()
}

#[test]
fn connections_holding_partial_heads_cost_their_bytes_from_the_budget_and_stay_inside_the_limit() {
    crate::support::raise_fd_limit();
    let mongo = Mongo::shared();
    let db = mongo.fresh_db("heads");
    let mut pod = start(&mongo, &db);
    let addr = pod.service.addr;
    std::thread::sleep(Duration::from_millis(300));
    let before = pod.memory();
    // A thousand 4 KiB partial heads: what each costs beyond its bytes.
    const HEAD: usize = 4096;
    let first = partial_heads(addr, 1_000, HEAD);
    std::thread::sleep(Duration::from_millis(300));
    let held = pod.memory();
    // Then the worst shape: every slot the Deployment allows sending 7 KiB (just under
    // `max_head_bytes`), 82 MiB of heads against a 48 MiB budget; the budget refuses
    // those it cannot hold (503), and probes still answer.
    let mut rest = partial_heads(addr, max_connections() - 1_000, 7 * 1024);
    let probe = Instant::now();
    assert_eq!(
        http::get(&pod.service.management_url("/healthz")).status,
        200
    );
    let probe = probe.elapsed();
    let refused = rest
        .iter_mut()
        .map(|s| answered(s, 503))
        .filter(|&a| a)
        .count();
    let report = pod.assert_within_limit("12,000 partial heads");
    drop((first, rest));
    assert!(refused > 0, "82 MiB of heads held in a 48 MiB budget");
    assert_eq!(
        http::get(&pod.service.url("/")).status,
        200,
        "served again afterwards"
    );
    let (Some(now), Some(base)) = (held.cgroup_now, before.cgroup_now) else {
        eprintln!("per-connection cost SKIPPED: no cgroup");
        return;
    };
    let per_connection = now.saturating_sub(base) / 1_000;
    eprintln!(
        "1,000 connections holding {HEAD} bytes of a head: {per_connection} bytes each \
         (user and kernel); then every slot holding 7 KiB: {report}; {refused} refused; \
         /healthz in {probe:?}"
    );
    assert!(probe < Duration::from_millis(500), "{probe:?}");
    // The head's bytes are the budget's; what the connection costs beside them is what
    // the memory formula counts.
    assert!(
        per_connection <= HEAD as u64 + mongo_api::settings::MEMORY_PER_CONNECTION,
        "{per_connection} bytes per connection holding {HEAD} bytes of a head"
    );
    results::figures(
        "partial-head-cost",
        2,
        &[(
            "Per connection holding 4 KiB of a head (1,000 connections)",
            format!(
                "{:.1} KiB: its bytes, charged to the budget, and what an idle connection costs",
                per_connection as f64 / 1024.0
            ),
        )],
    );
    let slots = max_connections();
    results::attack(
        "partial-heads",
        2,
        &format!(
            "{} connections (every slot) each sending 7 KiB of a head ({} MiB of heads against the {} MiB budget) and nothing more",
            results::thousands(slots),
            slots * 7 / 1024,
            pod::deployment().number("REQUEST_MEMORY_MIB", 48)
        ),
        &report,
        &format!(
            "the heads the budget cannot hold refused `503` ({} of them); `/healthz` answered in {:.1} ms meanwhile; `GET /` served right after",
            results::thousands(refused),
            probe.as_secs_f64() * 1000.0
        ),
    );
}
