//! The HTTP server against hostile clients, each attack run against the real binary:
//! idle, silent, stalled and trickling clients are cut off on time; slow uploads, idle
//! connections and clients that never read hold neither workers nor probes; a flood of
//! slow connections at the limit keeps out neither probes nor prompt clients; framing
//! that could smuggle a request is refused. (Huge bodies: the `reliability` module.)

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::http::{self, raw_exchange, raw_status, read_response, read_until_close};
use crate::support::mongo::Mongo;
use crate::support::pod::Pod;
use crate::support::service::{mongo_env, start, Process};
use crate::support::wait_for;

/// Reads until the server closes; returns what it sent and when it closed.
fn until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let text = read_until_close(stream);
    (text, started.elapsed())
}

#[test]
fn idle_and_silent_connections_are_closed_after_the_keep_alive_timeout() {
    let mongo = Mongo::shared();
    let service = start(
        &mongo,
        &mongo.fresh_db("idle"),
        &[("KEEP_ALIVE_TIMEOUT_SECS", "1")],
    );

    let mut silent = service.connect();
    let (text, after) = until_closed(&mut silent);
    assert_eq!(text, "", "an idle close is silent");
    assert!(
        after > Duration::from_millis(800) && after < Duration::from_millis(2500),
        "{after:?}"
    );

    let mut kept = service.connect();
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
    let mongo = Mongo::shared();
    let service = start(
        &mongo,
        &mongo.fresh_db("stall"),
        &[("REQUEST_TIMEOUT_SECS", "2")],
    );

    let mut stalled = service.connect();
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
    let mut trickle = service.connect();
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
    let mongo = Mongo::shared();
    let service = start(
        &mongo,
        &mongo.fresh_db("workers"),
        &[("WORKERS", "1"), ("REQUEST_TIMEOUT_SECS", "30")],
    );
    // A body that never finishes, and many idle connections.
    let mut uploads: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut s = service.connect();
            s.write_all(b"POST /data HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":1")
                .unwrap();
            s
        })
        .collect();
    let idle: Vec<TcpStream> = (0..50).map(|_| service.connect()).collect();
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
fn connections_cost_no_thread() {
    let mongo = Mongo::shared();
    let service = start(&mongo, &mongo.fresh_db("threads"), &[]);
    assert_eq!(http::get(&service.management_url("/readyz")).status, 200);
    let resting = service.threads();
    // Idle, mid-head, and kept alive after a response.
    let mut connections: Vec<TcpStream> = (0..600).map(|_| service.connect()).collect();
    for (i, c) in connections.iter_mut().enumerate() {
        if i % 3 == 1 {
            c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
        } else if i % 3 == 2 {
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            let mut reader = BufReader::new(c.try_clone().unwrap());
            assert_eq!(read_response(&mut reader).map(|r| r.status), Some(200));
        }
    }
    assert_eq!(http::get(&service.url("/")).status, 200);
    let busy = service.threads();
    eprintln!("threads: {resting} at rest, {busy} with 600 connections");
    assert!(
        busy <= resting,
        "threads {resting} -> {busy} for 600 connections"
    );
}

/// A connection whose receive buffer is as small as the kernel allows: a client that
/// stops reading fills it, and then the server's send buffer, within a few kilobytes.
fn connect_tiny_buffer(addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.into()
}

/// Times one request on a fresh connection; panics on anything but `expected`.
fn timed_get(url: &str, expected: u16) -> Duration {
    let started = Instant::now();
    let reply = http::get(url);
    let elapsed = started.elapsed();
    assert_eq!(reply.status, expected, "{url}: {}", reply.body);
    elapsed
}

/// The probe and a plain request, as the attack goes on: each must answer within 100 ms.
fn assert_probes_answer_promptly(service: &Process, rounds: usize) -> Duration {
    let mut slowest = Duration::ZERO;
    for _ in 0..rounds {
        for url in [
            service.management_url("/healthz"),
            service.url("/healthz"),
            service.url("/"),
        ] {
            let took = timed_get(&url, 200);
            assert!(took < Duration::from_millis(100), "{url} took {took:?}");
            slowest = slowest.max(took);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    slowest
}

#[test]
fn clients_that_never_read_pin_neither_workers_nor_probes() {
    let mongo = Mongo::shared();
    let service = start(
        &mongo,
        &mongo.fresh_db("noread"),
        &[("MAX_CONNECTIONS", "256")],
    );
    // As many clients as there are workers (16), each pipelining 500 requests for the
    // largest fixed answer, on sockets that take a couple of kilobytes and are never read.
    let request = b"GET /openapi.json HTTP/1.1\r\nHost: t\r\n\r\n".repeat(500);
    let attackers: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut stream = connect_tiny_buffer(service.addr);
            stream.write_all(&request).unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let slowest = assert_probes_answer_promptly(&service, 5);
    // Workers are free too: a write and a listing go through at once.
    let started = Instant::now();
    assert_eq!(
        http::post_json(&service.url("/data"), r#"{"a":1}"#).status,
        201
    );
    assert_eq!(http::get(&service.url("/data")).body, r#"[{"a":1}]"#);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    eprintln!("16 non-reading pipelining clients: slowest probe or GET / {slowest:?}");
    drop(attackers);
}

#[test]
fn a_flood_of_trickling_connections_starves_neither_probes_nor_prompt_clients() {
    let mongo = Mongo::shared();
    let service = start(
        &mongo,
        &mongo.fresh_db("flood"),
        &[("MAX_CONNECTIONS", "256")],
    );
    // The Deployment's MAX_CONNECTIONS, each sending a byte of a head every 2 s.
    let mut flood: Vec<TcpStream> = (0..256)
        .map(|_| {
            let mut s = service.connect();
            s.write_all(b"G").unwrap();
            s
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let trickler = {
        let stop = stop.clone();
        let mut streams: Vec<TcpStream> = flood.iter().map(|s| s.try_clone().unwrap()).collect();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for s in &mut streams {
                    let _ = s.write_all(b"E");
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let slowest = assert_probes_answer_promptly(&service, 5);
    stop.store(true, Ordering::Relaxed);
    trickler.join().unwrap();
    // Each prompt client took the slot of the oldest trickler; the rest are reaped at the
    // request deadline, with a 408 for those the server did not need to evict first.
    let mut cut = 0;
    for s in &mut flood {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let (text, after) = until_closed(s);
        assert!(text.is_empty() || raw_status(&text) == Some(408), "{text}");
        // A read that timed out is a connection the server never closed.
        cut += usize::from(after < Duration::from_secs(15));
    }
    assert_eq!(cut, 256, "tricklers the server left open");
    eprintln!("256 trickling connections: slowest probe or GET / {slowest:?}");
}

#[test]
fn connections_beyond_the_limit_evict_a_waiting_one_or_get_503_when_all_are_answered() {
    let mongo = Mongo::shared();
    let service = start(
        &mongo,
        &mongo.fresh_db("maxconn"),
        &[("MAX_CONNECTIONS", "10")],
    );
    // Ten idle connections: a newcomer takes the oldest one's slot and is served.
    let mut idle: Vec<TcpStream> = (0..10).map(|_| service.connect()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let text = raw_exchange(
        service.addr,
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(raw_status(&text), Some(200), "{text}");
    assert_eq!(
        read_until_close(&mut idle[0]),
        "",
        "the oldest idle one was closed"
    );
    drop(idle);

    // Ten connections each being answered (writing to a client that does not read): the
    // newcomer gets a fast 503. Their answers (15 MB each) are far more than the socket
    // buffers hold, so none can finish and turn idle; each has started once its first
    // bytes arrive.
    let request = b"GET /openapi.json HTTP/1.1\r\nHost: t\r\n\r\n".repeat(2000);
    let busy: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut stream = connect_tiny_buffer(service.addr);
            stream.write_all(&request).unwrap();
            stream
        })
        .collect();
    for stream in &busy {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(stream.peek(&mut [0u8; 1]).unwrap(), 1, "an answer started");
    }
    // Until the socket buffers are full, a thread may still pass between two answers.
    std::thread::sleep(Duration::from_millis(500));
    let mut extra = service.connect();
    let _ = extra.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let (text, after) = until_closed(&mut extra);
    assert_eq!(raw_status(&text), Some(503), "{text}");
    assert!(
        text.contains("Retry-After: 1") && text.contains("too many connections"),
        "{text}"
    );
    assert!(after < Duration::from_secs(1));
    // The probes have their own listener.
    let probe = timed_get(&service.management_url("/healthz"), 200);
    assert!(probe < Duration::from_millis(100), "{probe:?}");
    drop(busy);
    wait_for("a free connection slot", Duration::from_secs(5), || {
        (http::get(&service.url("/")).status == 200).then_some(())
    });
}

#[test]
fn framing_that_could_smuggle_a_request_is_refused_and_the_connection_closed() {
    let mongo = Mongo::shared();
    let db = mongo.fresh_db("smuggle");
    let mut env = mongo_env(&mongo, &db);
    env.push(("LOG_LEVEL", "info".into()));
    let service = Process::start(&env);
    // Each would, on a lenient server, make the pipelined POST below part of a body (or
    // the reverse): it must never be executed.
    let smuggled = "POST /data HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"smuggled\":true}";
    let cases: &[(&str, &str)] = &[
        ("obs-fold SP", "POST /data HTTP/1.1\r\nHost: t\r\nX: y\r\n Content-Length: 31\r\n\r\n"),
        ("obs-fold HTAB", "POST /data HTTP/1.1\r\nHost: t\r\nX: y\r\n\tContent-Length: 31\r\n\r\n"),
        ("obs-fold VT", "POST /data HTTP/1.1\r\nHost: t\r\nX: y\r\n\x0bContent-Length: 31\r\n\r\n"),
        ("obs-fold FF", "POST /data HTTP/1.1\r\nHost: t\r\nX: y\r\n\x0cContent-Length: 31\r\n\r\n"),
        ("TE with FF", "POST /data HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: \x0cchunked\r\n\r\n"),
        ("chunk extension ended by LF", "POST /data HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2;\nxx\r\n{}\r\n0\r\n\r\n"),
        ("chunk size ended by LF", "POST /data HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\n{}\r\n0\r\n\r\n"),
        ("CR in a value", "GET / HTTP/1.1\r\nHost: t\r\nX: a\rb\r\n\r\n"),
        ("NUL in a value", "GET / HTTP/1.1\r\nHost: t\r\nX: a\0b\r\n\r\n"),
        ("empty name", "GET / HTTP/1.1\r\nHost: t\r\n: v\r\n\r\n"),
        ("space before colon", "GET / HTTP/1.1\r\nHost: t\r\nContent-Length : 5\r\n\r\n"),
        ("no Host", "GET / HTTP/1.1\r\n\r\n"),
        ("two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        ("TE on HTTP/1.0", "POST /data HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
    ];
    for (name, attack) in cases {
        let mut stream = TcpStream::connect(service.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = stream.write_all(format!("{attack}{smuggled}").as_bytes());
        let mut reader = BufReader::new(stream);
        let response = read_response(&mut reader).unwrap_or_else(|| panic!("{name}: no answer"));
        assert_eq!(response.status, 400, "{name}");
        assert!(response.closes(), "{name}: the connection must close");
        let error: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert!(error["error"].is_string(), "{name}: {error}");
        let rest = read_until_close(reader.get_mut());
        assert_eq!(rest, "", "{name}: something after the refusal");
    }
    // A transfer coding other than chunked: 501, as hyper answers.
    let text = raw_exchange(
        service.addr,
        b"POST /data HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(raw_status(&text), Some(501), "{text}");
    assert_eq!(
        mongo.documents(&db).len(),
        0,
        "a smuggled request was executed"
    );
    assert!(!service.output().contains("\"panic\""));
}

#[test]
fn a_listing_nobody_reads_holds_no_worker_and_is_cut_once_it_takes_nothing() {
    let mongo = Mongo::shared();
    let db = mongo.fresh_db("stall");
    mongo.preload(&db, 5_000, 1_000);
    let mut env = mongo_env(&mongo, &db);
    // One listing worker (half of two workers).
    env.push(("WORKERS", "2".into()));
    env.push(("RESPONSE_TIMEOUT_SECS", "3".into()));
    let service = Process::start(&env);
    let mut stalled = connect_tiny_buffer(service.addr);
    stalled
        .write_all(b"GET /data HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    // Meanwhile another whole listing, writes and pages go through at once: the stalled
    // listing waits for its client, holding no worker and no listing slot.
    let took = Instant::now();
    let listing = http::get(&service.url("/data"));
    assert_eq!(listing.status, 200, "{}", listing.body);
    assert_eq!(listing.json().as_array().unwrap().len(), 5_000);
    assert_eq!(
        http::post_json(&service.url("/data"), r#"{"b":2}"#).status,
        201
    );
    assert_eq!(http::get(&service.url("/data?limit=2")).status, 200);
    eprintln!(
        "a listing of 5 MB beside one nobody reads: {:?}",
        took.elapsed()
    );
    // The stalled listing is cut once it has taken nothing for RESPONSE_TIMEOUT_SECS (3 s).
    stalled
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = vec![0; 1 << 20];
    // Read nothing until the server gives up; then whatever is buffered, then the end.
    std::thread::sleep(Duration::from_secs(6));
    let mut received = 0;
    loop {
        match stalled.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
    }
    let total = 5_000 * 1_010;
    assert!(
        received < total,
        "the whole listing arrived ({received} bytes)"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        service.output().contains("took nothing of its response"),
        "{}",
        service.output()
    );
}

/// Lists the collection on a raw connection, reading `chunk` bytes every `pause`;
/// returns the status and how many documents arrived.
fn slow_listing(addr: SocketAddr, chunk: usize, pause: Duration) -> (u16, usize) {
    let mut stream = http::request_listing(addr);
    let mut received = Vec::new();
    let mut buf = vec![0; chunk];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
        std::thread::sleep(pause);
    }
    let mut reader = BufReader::new(&received[..]);
    match read_response(&mut reader) {
        Some(response) => {
            let listed = serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&response.body)
                .map_or(0, |d| d.len());
            (response.status, listed)
        }
        None => (0, 0),
    }
}

/// The release binary in its cgroup, over a fresh collection of 60,000 documents (about
/// 10 MB of JSON); the database and its user last as long as the `Mongo` returned.
fn pod_with_ten_megabytes(name: &str) -> (Mongo, Pod) {
    let mongo = Mongo::shared();
    let db = mongo.fresh_db(name);
    mongo.preload(&db, 60_000, 120);
    let pod = Pod::start(&db, &mongo_env(&mongo, &db));
    (mongo, pod)
}

#[test]
fn eight_slow_readers_of_the_whole_collection_do_not_deny_a_ninth() {
    let (_mongo, pod) = pod_with_ten_megabytes("slowreaders");
    let addr = pod.service.addr;
    assert_eq!(
        http::get(&pod.service.management_url("/readyz")).status,
        200
    );
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            // 2 KiB every 2 s, as a phone on a bad link (or an attacker) reads.
            scope.spawn(|| {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream
                    .write_all(b"GET /data HTTP/1.1\r\nHost: t\r\n\r\n")
                    .unwrap();
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if stream.read(&mut buf).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(2));
                }
            });
        }
        std::thread::sleep(Duration::from_secs(2));
        let started = Instant::now();
        let ninth = slow_listing(addr, 1 << 20, Duration::ZERO);
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        eprintln!("a ninth listing of 60,000 documents beside eight slow readers: {ninth:?} in {took:.1?}");
        assert_eq!(ninth, (200, 60_000));
    });
}

#[test]
fn listings_in_flight_hold_up_neither_writes_nor_pages() {
    let (_mongo, pod) = pod_with_ten_megabytes("busylisters");
    let addr = pod.service.addr;
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Twice as many listings as WORKERS at all times, each read as fast as it comes
        // and thrown away; each client counts the listings it got whole.
        let listers: Vec<_> = (0..32)
            .map(|_| {
                scope.spawn(|| {
                    let mut buf = vec![0u8; 1 << 16];
                    let mut whole = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let mut stream = http::request_listing(addr);
                        let mut bytes = 0;
                        while let Ok(n @ 1..) = stream.read(&mut buf) {
                            bytes += n;
                        }
                        // The padding alone of 60,000 documents.
                        whole += usize::from(bytes > 60_000 * 120);
                    }
                    whole
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(2));
        let mut slowest = Duration::ZERO;
        let mut answers = Vec::new();
        for i in 0..20 {
            let started = Instant::now();
            let page = http::get(&format!("http://{addr}/data?limit=10"));
            let write = http::post_json(&format!("http://{addr}/data"), &format!(r#"{{"n":{i}}}"#));
            slowest = slowest.max(started.elapsed());
            answers.push(((page.status, write.status), [page.body, write.body]));
        }
        stop.store(true, Ordering::Relaxed);
        let listed: usize = listers.into_iter().map(|l| l.join().unwrap()).sum();
        eprintln!("20 pages and writes beside 32 listings of 60,000 documents: slowest pair {slowest:.1?}; {listed} whole listings meanwhile");
        assert!(
            listed >= 8,
            "the listings were not under way: {listed} whole"
        );
        let refused: Vec<String> = pod
            .service
            .output()
            .lines()
            .filter(|l| l.contains(r#""status":503"#) || l.contains(r#""level":"WARN""#))
            .map(str::to_owned)
            .collect();
        let failed: Vec<_> = answers
            .iter()
            .filter(|(statuses, _)| *statuses != (200, 201))
            .map(|(statuses, [page, write])| (statuses, &page[..page.len().min(200)], write))
            .collect();
        assert!(failed.is_empty(), "{failed:?}\n{refused:#?}");
        // Inside QUEUE_TIMEOUT_MS (1 s), after which a request waiting for a worker is
        // refused. (When the listings took the workers: 2.6 s, and most refused.)
        assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    });
}

#[test]
fn a_steady_slow_reader_gets_a_listing_that_outlasts_the_response_timeout() {
    let mongo = Mongo::shared();
    let db = mongo.fresh_db("steadyreader");
    mongo.preload(&db, 6_000, 100);
    let mut env = mongo_env(&mongo, &db);
    env.push(("RESPONSE_TIMEOUT_SECS", "2".into()));
    let service = Process::start(&env);
    // About 700 KB at 64 KiB a second (10 s): five times the response timeout, but it
    // never stops taking bytes for long.
    let started = Instant::now();
    let outcome = slow_listing(service.addr, 16 * 1024, Duration::from_millis(250));
    let took = started.elapsed();
    eprintln!("a steady slow reader: {outcome:?} after {took:.1?}");
    assert!(
        took > Duration::from_secs(4),
        "{took:?}: not slow enough to prove anything"
    );
    assert_eq!(outcome, (200, 6_000));
}

#[test]
fn head_of_the_whole_collection_reads_nothing_from_mongodb() {
    let mongo = Mongo::start();
    if crate::support::mongo::skip_unless_managed(
        &mongo,
        "head_of_the_whole_collection_reads_nothing_from_mongodb",
    ) {
        return;
    }
    let db = mongo.fresh_db("head");
    mongo.preload(&db, 20_000, 100);
    let mut env = mongo_env(&mongo, &db);
    env.push(("MONGO_TIMEOUT_MS", "1000".into()));
    let service = Process::start(&env);
    assert_eq!(http::get(&service.management_url("/readyz")).status, 200);
    // MongoDB stops answering: anything that reads from it would wait out the timeout.
    mongo.signal(nix::sys::signal::Signal::SIGSTOP);
    let started = Instant::now();
    let text = raw_exchange(
        service.addr,
        b"HEAD /data HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    let took = started.elapsed();
    mongo.signal(nix::sys::signal::Signal::SIGCONT);
    assert_eq!(raw_status(&text), Some(200), "{text}");
    assert!(text.contains("Content-Type: application/json"), "{text}");
    assert!(text.contains("Transfer-Encoding: chunked"), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "a body after a HEAD: {text}");
    assert!(took < Duration::from_millis(500), "{took:?}");
    let output = service.output();
    let warnings: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\""))
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
}

#[test]
fn a_listing_lists_what_existed_when_it_began_exactly_once_under_concurrent_inserts() {
    let mongo = Mongo::shared();
    let db = mongo.fresh_db("snapshot");
    mongo.preload(&db, 5_000, 200);
    let service = Process::start(&mongo_env(&mongo, &db));
    let before: std::collections::HashSet<i32> = mongo
        .documents(&db)
        .iter()
        .map(|d| d.get_i32("i").unwrap())
        .collect();
    let addr = service.addr;
    let (listed, inserted) = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut stream = http::request_listing(addr);
            let mut received = Vec::new();
            let mut buf = vec![0; 32 * 1024];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let response = read_response(&mut BufReader::new(&received[..])).expect("a response");
            assert_eq!(response.status, 200);
            serde_json::from_slice::<Vec<serde_json::Value>>(&response.body).unwrap()
        });
        let mut inserted = 0;
        while !reader.is_finished() && inserted < 2_000 {
            let body = format!(r#"{{"i":{},"new":true}}"#, 100_000 + inserted);
            assert_eq!(
                http::post_json(&format!("http://{addr}/data"), &body).status,
                201
            );
            inserted += 1;
        }
        (reader.join().unwrap(), inserted)
    });
    let mut seen = std::collections::HashMap::new();
    for document in &listed {
        *seen
            .entry(document["i"].as_i64().unwrap() as i32)
            .or_insert(0) += 1;
    }
    eprintln!(
        "a listing of 5,000 documents beside {inserted} inserts: {} listed, {} of them new",
        listed.len(),
        listed.iter().filter(|d| d.get("new").is_some()).count()
    );
    assert!(inserted > 0);
    assert!(seen.values().all(|&n| n == 1), "a document listed twice");
    assert!(
        before.iter().all(|i| seen.contains_key(i)),
        "an existing document was missed"
    );
}

/// Uploads a document of `size` bytes at about `rate` bytes a second on its own connection,
/// as an honest client on a slow link; returns the status it got.
fn slow_upload(addr: SocketAddr, size: usize, rate: usize) -> u16 {
    let filler = size - 16;
    let body = format!(r#"{{"blob":"{}"}}"#, "x".repeat(filler));
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "POST /data HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let piece = rate / 16;
    let started = Instant::now();
    for (i, chunk) in body.as_bytes().chunks(piece).enumerate() {
        if stream.write_all(chunk).is_err() {
            return 0;
        }
        // Paced from the start, so that a slow write is caught up, never compounded.
        let due = started + Duration::from_secs_f64((i + 1) as f64 / 16.0);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    let mut reader = BufReader::new(stream);
    read_response(&mut reader).map_or(0, |r| r.status)
}

/// A flood of connections that each send part of a head and nothing more: `burst` at once,
/// then `per_second` more until `stop`.
fn partial_head_flood(
    addr: SocketAddr,
    burst: usize,
    per_second: usize,
    stop: &AtomicBool,
) -> usize {
    let open = |held: &mut Vec<TcpStream>| {
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = s.write_all(b"POST /data HTTP/1.1\r\nHost: t\r\nX-Padding: aaaa");
            held.push(s);
        }
    };
    let mut held = Vec::new();
    for _ in 0..burst {
        open(&mut held);
    }
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..per_second / 10 {
            open(&mut held);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    held.len()
}

fn upload_during_flood(max_connections: Option<&str>) {
    crate::support::raise_fd_limit();
    let mongo = Mongo::shared();
    let db = mongo.fresh_db("upload");
    let mut env = mongo_env(&mongo, &db);
    if let Some(max) = max_connections {
        env.push(("MAX_CONNECTIONS", max.to_owned()));
    }
    let pod = Pod::start(&db, &env);
    let addr = pod.service.addr;
    assert_eq!(
        http::get(&pod.service.management_url("/readyz")).status,
        200
    );
    let stop = AtomicBool::new(false);
    let (status, took, flooded, newcomer) = std::thread::scope(|scope| {
        let flood = scope.spawn(|| partial_head_flood(addr, 600, 100, &stop));
        std::thread::sleep(Duration::from_millis(500));
        let started = Instant::now();
        // 256 KiB at 64 KiB/s: 4 s, well inside REQUEST_TIMEOUT_SECS.
        let status = slow_upload(addr, 256 * 1024, 64 * 1024);
        let took = started.elapsed();
        let newcomer = timed_get(&pod.service.url("/"), 200);
        stop.store(true, Ordering::Relaxed);
        (status, took, flood.join().unwrap(), newcomer)
    });
    eprintln!(
        "a 256 KiB upload at 64 KiB/s beside {flooded} partial-head connections (MAX_CONNECTIONS {}): \
         {status} after {took:.1?}; a newcomer then served in {newcomer:?}",
        max_connections.unwrap_or("as deployed")
    );
    assert_eq!(status, 201, "the steady upload was cut");
    let stored = mongo.documents(&db);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].get_str("blob").unwrap().len(), 256 * 1024 - 16);
    assert!(newcomer < Duration::from_millis(100), "{newcomer:?}");
}

#[test]
fn a_steady_upload_is_not_disturbed_by_a_flood_of_partial_heads() {
    upload_during_flood(None);
}

#[test]
fn a_steady_upload_keeps_its_slot_when_a_flood_fills_every_slot() {
    upload_during_flood(Some("256"));
}
