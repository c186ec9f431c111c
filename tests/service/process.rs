//! The real binary as a process: configuration, logs, signals, memory.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::http::{self, raw_status, read_until_close};
use crate::support::mongo::Mongo;
use crate::support::service::{mongo_env, run_binary, Process};
use mongodb::bson::{doc, Document};
use nix::sys::signal::Signal;

const VARIABLES: &[(&str, &str)] = &[
    ("BIND_ADDR", "0.0.0.0"),
    ("PORT", "5000"),
    ("MANAGEMENT_PORT", "8081"),
    ("MONGODB_URI", ""),
    ("MONGO_HOST", "mongo"),
    ("MONGO_PORT", "27017"),
    ("MONGO_USER", ""),
    ("MONGO_PASSWORD", ""),
    ("MONGO_DB", ""),
    ("MONGO_AUTH_DB", "admin"),
    ("MONGO_TIMEOUT_MS", "2000"),
    ("WORKERS", "16"),
    ("MAX_BODY_BYTES", "1048576"),
    ("MAX_CONNECTIONS", "1024"),
    ("REQUEST_MEMORY_MIB", "48"),
    ("KEEP_ALIVE_TIMEOUT_SECS", "5"),
    ("REQUEST_TIMEOUT_SECS", "10"),
    ("RESPONSE_TIMEOUT_SECS", "60"),
    ("QUEUE_TIMEOUT_MS", "1000"),
    ("SHUTDOWN_GRACE_SECS", "10"),
    ("ACCEPT_FAILURE_LIMIT_SECS", "30"),
    ("PAGE_LIMIT_MAX", "1000"),
    ("LOG_LEVEL", "info"),
];

#[test]
fn help_lists_every_variable_with_its_default() {
    let output = run_binary(&["--help"], &[]);
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for (name, default) in VARIABLES {
        let line = help
            .lines()
            .find(|l| {
                l.contains(&format!("[env: {name}=")) || l.contains(&format!("[env: {name}]"))
            })
            .unwrap_or_else(|| panic!("--help does not mention {name}:\n{help}"));
        if !default.is_empty() {
            assert!(
                line.contains(&format!("[default: {default}]")),
                "{name}: {line}"
            );
        }
    }
    let db_line = help
        .lines()
        .find(|l| l.contains("[env: MONGO_DB="))
        .unwrap();
    assert!(db_line.contains("flask_db"), "{db_line}");
}

#[test]
fn bad_configuration_exits_non_zero_with_one_clear_line() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("PORT", "http")], "http"),
        (&[("WORKERS", "0")], "workers"),
        (&[("MAX_BODY_BYTES", "99999999999")], "max-body-bytes"),
        (&[("LOG_LEVEL", "loud")], "loud"),
        (&[("MONGO_USER", "app")], "MONGO_PASSWORD must be set"),
        (
            &[("MONGO_PASSWORD", "Secret-In-Env-123")],
            "MONGO_USER must be set",
        ),
        (
            &[("MONGODB_URI", "mongo://app:Secret-In-Uri-456@db")],
            "MONGODB_URI is not a valid",
        ),
    ];
    for (env, expected) in cases {
        let output = run_binary(&[], env);
        assert_eq!(output.status.code(), Some(2), "{env:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{env:?}: {stderr}");
        assert!(stderr.contains(expected), "{env:?}: {stderr}");
        assert!(
            !stderr.contains("Secret-In"),
            "{env:?} leaked a secret: {stderr}"
        );
    }
}

#[test]
fn a_port_another_process_holds_is_named_with_the_setting_that_moves_it() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    for (variable, other) in [("PORT", "MANAGEMENT_PORT"), ("MANAGEMENT_PORT", "PORT")] {
        let env = [
            ("BIND_ADDR", "127.0.0.1"),
            (variable, port.as_str()),
            (other, "0"),
        ];
        let output = run_binary(&[], &env);
        assert!(!output.status.success(), "{variable}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{variable}: {stderr}");
        assert!(
            stderr.contains(&format!("127.0.0.1:{port} ({variable})"))
                && stderr.contains(&format!("set {variable} to another port")),
            "{stderr}"
        );
    }
}

/// Sends complete requests on many connections, signals, and checks that every one of
/// them is answered in full and that the process exits 0 within the grace period.
fn requests_in_flight_are_answered(signal: Signal) {
    let mongo = Mongo::shared();
    let db = mongo.fresh_db("drain");
    mongo.preload(&db, 5000, 100);
    let mut env = mongo_env(&mongo, &db);
    env.push(("WORKERS", "4".into()));
    // This test is about draining, not about shedding load that waits too long.
    env.push(("QUEUE_TIMEOUT_MS", "60000".into()));
    let mut service = Process::start(&env);

    let post: &[u8] = b"POST /data HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 14\r\nConnection: close\r\n\r\n{\"drain\":true}";
    let get = b"GET /data HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let mut connections = Vec::new();
    for i in 0..40 {
        let mut stream = TcpStream::connect(service.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let request: &[u8] = if i % 2 == 0 { get } else { post };
        stream.write_all(request).unwrap();
        connections.push((i % 2 == 0, stream));
    }
    // One request only half sent when the signal arrives.
    let mut late = TcpStream::connect(service.addr).unwrap();
    late.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    late.write_all(&post[..30]).unwrap();
    std::thread::sleep(Duration::from_millis(50));

    let signalled = Instant::now();
    service.signal(signal);
    std::thread::sleep(Duration::from_millis(100));
    late.write_all(&post[30..]).unwrap();
    connections.push((false, late));

    for (i, (is_get, mut stream)) in connections.into_iter().enumerate() {
        let text = read_until_close(&mut stream);
        let expected = if is_get { 200 } else { 201 };
        assert_eq!(
            raw_status(&text),
            Some(expected),
            "request {i}: {text:.200}"
        );
        assert!(text.contains("Connection: close"), "request {i}");
        if is_get {
            assert!(
                text.ends_with("]\r\n0\r\n\r\n"),
                "request {i}: listing cut short"
            );
        } else {
            assert!(
                text.ends_with(r#"{"status":"Data inserted"}"#),
                "request {i}"
            );
        }
    }
    let status = service
        .wait_exit(Duration::from_secs(12))
        .expect("exits within the grace period");
    assert_eq!(status.code(), Some(0), "{}", service.output());
    assert!(signalled.elapsed() < Duration::from_secs(11));
    assert!(
        TcpStream::connect(service.addr).is_err(),
        "still accepting after exit"
    );
    let stored = mongo
        .database(&db)
        .collection::<Document>("data")
        .count_documents(doc! {"drain": true})
        .run()
        .unwrap();
    assert_eq!(stored, 21);
    assert!(service.output().contains(r#""message":"stopped""#));
}

#[test]
fn sigterm_answers_every_request_in_flight_then_exits_zero() {
    requests_in_flight_are_answered(Signal::SIGTERM);
}

#[test]
fn sigint_answers_every_request_in_flight_then_exits_zero() {
    requests_in_flight_are_answered(Signal::SIGINT);
}

#[test]
fn idle_shutdown_is_prompt() {
    let mongo = Mongo::shared();
    let mut service = Process::start(&mongo_env(&mongo, &mongo.fresh_db("idle")));
    // Idle keep-alive connections (each answered once) must not hold the exit back until
    // they time out.
    let idle: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut stream = TcpStream::connect(service.addr).unwrap();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            assert_eq!(
                http::read_response(&mut reader).map(|r| r.status),
                Some(200)
            );
            stream
        })
        .collect();
    let started = Instant::now();
    service.signal(Signal::SIGTERM);
    let status = service.wait_exit(Duration::from_secs(5)).expect("exits");
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}\n{}",
        started.elapsed(),
        service.output()
    );
    drop(idle);
}

#[test]
fn a_connection_that_has_not_sent_its_request_yet_gets_a_moment_at_shutdown() {
    let mongo = Mongo::shared();
    let mut service = Process::start(&mongo_env(&mongo, &mongo.fresh_db("fresh")));
    // Connected, request not sent yet (as a client whose request is still in flight).
    let mut late = TcpStream::connect(service.addr).unwrap();
    let silent = TcpStream::connect(service.addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    service.signal(Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    late.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    late.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let answer = read_until_close(&mut late);
    assert_eq!(raw_status(&answer), Some(200), "{answer}");
    assert!(answer.contains("Connection: close\r\n"), "{answer}");
    // The silent one is closed when the moment (2 s) is over, and the process exits.
    let status = service.wait_exit(Duration::from_secs(5)).expect("exits");
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(
        took > Duration::from_millis(1500) && took < Duration::from_secs(3),
        "exit after {took:?}"
    );
    drop(silent);
}

#[test]
fn logs_are_json_lines_with_the_request_fields() {
    let mongo = Mongo::shared();
    let mut service = Process::start(&mongo_env(&mongo, &mongo.fresh_db("logs")));
    let reply = http::agent()
        .get(&service.url("/data?limit=1"))
        .header("X-Request-Id", "trace-abc-123")
        .call()
        .unwrap();
    assert_eq!(
        reply.headers().get("X-Request-Id").unwrap(),
        "trace-abc-123"
    );
    let generated = http::get(&service.url("/nope"));
    let generated_id = generated.header("X-Request-Id").unwrap().to_owned();
    assert_eq!(generated_id.len(), 24);
    service.signal(Signal::SIGTERM);
    service.wait_exit(Duration::from_secs(10)).expect("exits");

    let output = service.output();
    let lines: Vec<serde_json::Value> = output
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for line in &lines {
        for field in ["timestamp", "level", "message"] {
            assert!(line.get(field).is_some(), "{line} lacks {field}");
        }
    }
    let request = lines
        .iter()
        .find(|l| l["request_id"] == "trace-abc-123")
        .expect("a log line for the request");
    assert_eq!(request["method"], "GET");
    assert_eq!(request["path"], "/data");
    assert_eq!(request["status"], 200);
    assert!(request["duration_ms"].as_f64().unwrap() >= 0.0);
    let not_found = lines
        .iter()
        .find(|l| l["request_id"] == generated_id.as_str())
        .unwrap();
    assert_eq!(not_found["status"], 404);
}

#[test]
fn the_password_never_appears_in_logs_errors_or_metrics() {
    let mongo = Mongo::shared();
    let db = mongo.fresh_db("secrets");
    let password = "Pa55-Marker-7f3e9a";
    mongo.create_user("leaky", password, &db);
    let wrong = "Wr0ng-Marker-1b2c3d";
    let uri = format!(
        "mongodb://leaky:{wrong}@{}:{}/{db}?authSource=admin&directConnection=true",
        mongo.host, mongo.port
    );
    let setups: Vec<Vec<(&str, String)>> = vec![
        vec![
            ("MONGO_HOST", mongo.host.clone()),
            ("MONGO_PORT", mongo.port.to_string()),
            ("MONGO_USER", "leaky".into()),
            ("MONGO_PASSWORD", wrong.into()),
            ("MONGO_DB", db.clone()),
        ],
        vec![("MONGODB_URI", uri)],
        vec![
            ("MONGO_HOST", mongo.host.clone()),
            ("MONGO_PORT", mongo.port.to_string()),
            ("MONGO_USER", "leaky".into()),
            ("MONGO_PASSWORD", password.into()),
            ("MONGO_DB", db.clone()),
        ],
    ];
    for mut env in setups {
        env.push(("MONGO_TIMEOUT_MS", "500".into()));
        env.push(("LOG_LEVEL", "debug".into()));
        let mut service = Process::start(&env);
        let mut seen = String::new();
        for reply in [
            http::get(&service.management_url("/readyz")),
            http::post_json(&service.url("/data"), r#"{"a":1}"#),
            http::get(&service.url("/data")),
            http::get(&service.url("/data?limit=1")),
            http::post_json(&service.url("/data"), "{bad"),
            http::get(&service.management_url("/metrics")),
        ] {
            seen.push_str(&reply.body);
            for (name, value) in &reply.headers {
                seen.push_str(name);
                seen.push_str(value);
            }
        }
        service.signal(Signal::SIGTERM);
        service.wait_exit(Duration::from_secs(10)).expect("exits");
        seen.push_str(&service.output());
        assert!(seen.contains("listening"), "the service logged nothing");
        for secret in [password, wrong] {
            assert!(!seen.contains(secret), "{secret} leaked:\n{seen}");
        }
    }
}

#[test]
fn a_server_error_inside_a_listing_cuts_the_connection() {
    // The listing is streamed, so a failure after the first byte cannot change the status;
    // the response must then be visibly incomplete rather than a well-formed short array.
    let mut mongo = Mongo::start();
    if crate::support::mongo::skip_unless_managed(
        &mongo,
        "a_server_error_inside_a_listing_cuts_the_connection",
    ) {
        return;
    }
    let db = mongo.fresh_db("cut");
    mongo.preload(&db, 60_000, 300);
    let mut env = mongo_env(&mongo, &db);
    // The kill makes the next batch fail at once; the deadline only has to let the first
    // batch of 60,000 sorted documents through on a loaded test machine.
    env.push(("MONGO_TIMEOUT_MS", "10000".into()));
    let service = Process::start(&env);
    assert_eq!(http::get(&service.management_url("/readyz")).status, 200);

    let mut stream = TcpStream::connect(service.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /data HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 4096];
    let n = std::io::Read::read(&mut stream, &mut first).unwrap();
    assert_eq!(raw_status(&String::from_utf8_lossy(&first[..n])), Some(200));
    mongo.kill();
    let rest = read_until_close(&mut stream);
    assert!(
        !rest.ends_with("0\r\n\r\n"),
        "the chunked body was terminated as if complete"
    );
    assert_eq!(http::get(&service.url("/healthz")).status, 200);
}
