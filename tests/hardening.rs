//! tiny_http's known weaknesses, each shown fixed against the real binary: idle, silent,
//! stalled and trickling clients are cut off on time; slow uploads and idle connections
//! do not hold workers; threads return to their resting number; connections beyond the
//! limit are refused. (Huge bodies: `tests/reliability.rs`.)

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::http::{self, raw_status, read_until_close};
use support::mongo::Mongo;
use support::service::{mongo_env, Process};
use support::wait_for;

fn start(mongo: &Mongo, name: &str, extra: &[(&'static str, &str)]) -> Process {
    let mut env = mongo_env(mongo, &mongo.fresh_db(name));
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    Process::start(&env)
}

fn connect(service: &Process) -> TcpStream {
    let stream = TcpStream::connect(service.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
}

/// Reads until the server closes; returns what it sent and when it closed.
fn until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let text = read_until_close(stream);
    (text, started.elapsed())
}

#[test]
fn idle_and_silent_connections_are_closed_after_the_keep_alive_timeout() {
    let mongo = Mongo::start();
    let service = start(&mongo, "idle", &[("KEEP_ALIVE_TIMEOUT_SECS", "1")]);

    let mut silent = connect(&service);
    let (text, after) = until_closed(&mut silent);
    assert_eq!(text, "", "an idle close is silent");
    assert!(
        after > Duration::from_millis(800) && after < Duration::from_millis(2500),
        "{after:?}"
    );

    let mut kept = connect(&service);
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 1024];
    let n = kept.read(&mut first).unwrap();
    assert_eq!(raw_status(&String::from_utf8_lossy(&first[..n])), Some(200));
    let (rest, after) = until_closed(&mut kept);
    assert_eq!(rest, "");
    assert!(
        after > Duration::from_millis(800) && after < Duration::from_millis(2500),
        "{after:?}"
    );
}

#[test]
fn stalled_and_trickling_requests_get_408_at_the_request_deadline() {
    let mongo = Mongo::start();
    let service = start(&mongo, "stall", &[("REQUEST_TIMEOUT_SECS", "2")]);

    let mut stalled = connect(&service);
    stalled.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
    let (text, after) = until_closed(&mut stalled);
    assert_eq!(raw_status(&text), Some(408), "{text}");
    assert!(
        text.contains(r#"{"error":"the request did not arrive in time"}"#),
        "{text}"
    );
    assert!(
        after > Duration::from_millis(1800) && after < Duration::from_secs(4),
        "{after:?}"
    );

    // One byte every 200 ms resets a per-read timeout forever; the deadline holds.
    let mut trickle = connect(&service);
    trickle
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let started = Instant::now();
    let header = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Slow: {}", "a".repeat(200));
    let mut answer = Vec::new();
    for byte in header.bytes() {
        if trickle.write_all(&[byte]).is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match trickle.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if !answer.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the trickle was never cut off"
        );
    }
    trickle
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    answer.extend(read_until_close(&mut trickle).into_bytes());
    let after = started.elapsed();
    assert_eq!(raw_status(&String::from_utf8_lossy(&answer)), Some(408));
    assert!(after < Duration::from_secs(4), "trickle lasted {after:?}");
}

#[test]
fn slow_uploads_and_idle_connections_do_not_hold_workers() {
    let mongo = Mongo::start();
    let service = start(
        &mongo,
        "workers",
        &[("WORKERS", "1"), ("REQUEST_TIMEOUT_SECS", "30")],
    );
    // A body that never finishes, and many idle connections.
    let mut uploads: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut s = connect(&service);
            s.write_all(b"POST /data HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":1")
                .unwrap();
            s
        })
        .collect();
    let idle: Vec<TcpStream> = (0..50).map(|_| connect(&service)).collect();
    // The only worker is free: other requests are answered at once.
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(http::get(&service.url("/")).status, 200);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
    }
    // The uploads are served once they finish.
    for upload in &mut uploads {
        upload
            .write_all(format!("{}}}", " ".repeat(93)).as_bytes())
            .unwrap();
        let mut buf = [0u8; 512];
        let n = upload.read(&mut buf).unwrap();
        assert_eq!(raw_status(&String::from_utf8_lossy(&buf[..n])), Some(201));
    }
    drop(idle);
}

#[test]
fn connection_threads_return_to_their_resting_number() {
    let mongo = Mongo::start();
    let service = start(&mongo, "threads", &[("KEEP_ALIVE_TIMEOUT_SECS", "3")]);
    assert_eq!(http::get(&service.url("/readyz")).status, 200);
    std::thread::sleep(Duration::from_secs(6));
    let resting = service.threads();

    let connections: Vec<TcpStream> = (0..200).map(|_| connect(&service)).collect();
    let busy = wait_for("a thread per connection", Duration::from_secs(5), || {
        let n = service.threads();
        (n >= resting + 190).then_some(n)
    });
    assert_eq!(http::get(&service.url("/")).status, 200);
    drop(connections);
    // Idle connection threads leave after 5 s without work.
    let settled = wait_for(
        "threads to go back to rest",
        Duration::from_secs(15),
        || {
            let n = service.threads();
            (n <= resting + 2).then_some(n)
        },
    );
    eprintln!("threads: resting {resting}, with 200 connections {busy}, after {settled}");
}

#[test]
fn connections_beyond_the_limit_are_refused_with_503() {
    let mongo = Mongo::start();
    let service = start(&mongo, "maxconn", &[("MAX_CONNECTIONS", "10")]);
    let held: Vec<TcpStream> = (0..10).map(|_| connect(&service)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = connect(&service);
    let _ = extra.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let (text, after) = until_closed(&mut extra);
    assert_eq!(raw_status(&text), Some(503), "{text}");
    assert!(
        text.contains("Retry-After: 1") && text.contains("too many connections"),
        "{text}"
    );
    assert!(after < Duration::from_secs(1));
    drop(held);
    wait_for("a free connection slot", Duration::from_secs(5), || {
        (http::get(&service.url("/")).status == 200).then_some(())
    });
}
