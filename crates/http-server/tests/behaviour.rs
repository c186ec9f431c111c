//! What the server promises on its own, over real sockets, with a stub application and
//! no database: framing, deadlines, the minimum rate, eviction at the connection limit,
//! bodies over the limit, and the drain. (The service's tests check the same through the
//! service; these pin it where it is built.)

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use tiny_http::{Request, Response, Server, ServerOptions};

/// A running server whose route answers `/` inline, counts `/count`, queues `/work` for
/// the test's own worker (held until the test releases it) and answers `413` when the
/// body was over the limit.
struct Stub {
    server: Arc<Server>,
    counted: Arc<AtomicUsize>,
    queued: mpsc::Receiver<Request>,
    worker: Option<thread::JoinHandle<()>>,
}

impl Stub {
    fn start(options: ServerOptions) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let counted = Arc::new(AtomicUsize::new(0));
        let route = {
            let counted = counted.clone();
            move |rq: Request| {
                if rq.body_exceeds_limit() {
                    rq.respond(Response::json_error(413, "too large"));
                    return None;
                }
                match rq.url() {
                    "/work" => Some(rq),
                    "/count" => {
                        counted.fetch_add(1, Ordering::SeqCst);
                        rq.respond(Response::from_string("counted"));
                        None
                    }
                    _ => {
                        let body = format!("ok {}", rq.body().len());
                        rq.respond(Response::from_string(body));
                        None
                    }
                }
            }
        };
        let server = Arc::new(Server::from_listener(listener, options, route).unwrap());
        // The worker hands every queued request to the test, which answers it when it
        // chooses: a request "being answered" for as long as the test wants.
        let (tx, queued) = mpsc::channel();
        let worker = {
            let server = server.clone();
            thread::spawn(move || {
                while let Some(rq) = server.recv() {
                    if tx.send(rq).is_err() {
                        break;
                    }
                }
            })
        };
        Stub {
            server,
            counted,
            queued,
            worker: Some(worker),
        }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.server.server_addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    }

    fn next_queued(&self) -> Request {
        self.queued
            .recv_timeout(Duration::from_secs(5))
            .expect("a request queued for the worker")
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.server.abort_connections();
        // Requests the test left unanswered are dropped with the channel.
        while self.queued.try_recv().is_ok() {}
        self.server
            .wait_drained(Instant::now() + Duration::from_secs(5));
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Reads until the peer closes, or the read timeout: everything it sent.
fn read_all(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&out)),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one response whose body is `Content-Length` long.
fn read_response(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut byte = [0; 1];
    while !out.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "closed mid-head");
        out.push(byte[0]);
    }
    let head = String::from_utf8(out).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    head + &String::from_utf8(body).unwrap()
}

fn status(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn quick() -> ServerOptions {
    ServerOptions {
        keep_alive_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        ..ServerOptions::default()
    }
}

#[test]
fn framing_that_could_smuggle_a_request_is_refused_and_what_follows_never_runs() {
    let stub = Stub::start(ServerOptions::default());
    for smuggling in [
        // Both framings: which one a proxy in front used is unknown.
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        // A header folded onto the previous line (obs-fold).
        "GET / HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n",
        // Two different lengths.
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        // No Host on HTTP/1.1.
        "GET / HTTP/1.1\r\n\r\n",
    ] {
        let mut stream = stub.connect();
        let behind = "GET /count HTTP/1.1\r\nHost: t\r\n\r\n";
        stream
            .write_all(format!("{smuggling}{behind}").as_bytes())
            .unwrap();
        let answer = read_all(&mut stream);
        assert_eq!(status(&answer), 400, "{smuggling:?}: {answer}");
        assert!(answer.contains("\"error\""), "{answer}");
        assert_eq!(answer.matches("\r\n\r\n").count(), 1, "one answer: {answer}");
    }
    assert_eq!(
        stub.counted.load(Ordering::SeqCst),
        0,
        "a request behind one refused ran"
    );
}

#[test]
fn idle_connections_close_after_the_keep_alive_timeout_and_stalled_requests_get_408() {
    let stub = Stub::start(quick());
    let started = Instant::now();
    let mut idle = stub.connect();
    let mut stalled = stub.connect();
    stalled.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
    assert_eq!(
        read_all(&mut idle),
        "",
        "an idle connection closes silently"
    );
    let idle_for = started.elapsed();
    let answer = read_all(&mut stalled);
    let stalled_for = started.elapsed();
    assert_eq!(status(&answer), 408, "{answer}");
    assert!(
        (Duration::from_millis(900)..Duration::from_millis(1900)).contains(&idle_for),
        "idle closed after {idle_for:?}"
    );
    assert!(
        (Duration::from_millis(1900)..Duration::from_millis(3500)).contains(&stalled_for),
        "408 after {stalled_for:?}"
    );
}

#[test]
fn a_request_trickling_below_the_minimum_rate_is_cut_before_the_request_deadline() {
    let stub = Stub::start(ServerOptions {
        request_timeout: Duration::from_secs(8),
        min_request_rate: 100,
        min_rate_grace: Duration::from_millis(500),
        ..ServerOptions::default()
    });
    let mut stream = stub.connect();
    let started = Instant::now();
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        thread::spawn(move || {
            for byte in b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: "
                .iter()
                .cycle()
                .take(40)
            {
                if stream.write_all(&[*byte]).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let answer = read_all(&mut stream);
    let took = started.elapsed();
    assert_eq!(status(&answer), 408, "{answer}");
    assert!(
        took < Duration::from_secs(5),
        "cut after {took:?}, the deadline is 8 s"
    );
    let _ = stream.shutdown(Shutdown::Both);
    writer.join().unwrap();
}

#[test]
fn at_the_connection_limit_a_newcomer_takes_an_idle_slot_or_gets_503_when_all_are_answered() {
    let stub = Stub::start(ServerOptions {
        max_connections: 2,
        keep_alive_timeout: Duration::from_secs(30),
        ..ServerOptions::default()
    });
    // Two connections, each with a request being answered: no slot can be taken.
    let mut busy = [stub.connect(), stub.connect()];
    for stream in &mut busy {
        stream
            .write_all(b"GET /work HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
    }
    let held = [stub.next_queued(), stub.next_queued()];
    let mut refused = stub.connect();
    let answer = read_all(&mut refused);
    assert_eq!(status(&answer), 503, "{answer}");
    assert!(answer.contains("Retry-After"), "{answer}");

    // Answered, both are idle keep-alive connections: a newcomer takes the oldest's slot.
    for rq in held {
        rq.respond(Response::from_string("worked"));
    }
    for stream in &mut busy {
        assert_eq!(status(&read_response(stream)), 200);
    }
    let mut newcomer = stub.connect();
    newcomer
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(status(&read_response(&mut newcomer)), 200);
    let evicted = busy.iter().filter(|stream| closed(stream)).count();
    assert_eq!(
        evicted, 1,
        "one idle connection made room, the other kept its slot"
    );
}

/// Whether the peer has closed `stream` (the server sends it nothing unasked).
fn closed(mut stream: &TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    match stream.read(&mut [0; 1]) {
        Ok(n) => n == 0,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

#[test]
fn a_body_over_the_limit_is_refused_from_its_length_before_it_is_sent() {
    let stub = Stub::start(ServerOptions {
        max_body_bytes: 1024,
        ..ServerOptions::default()
    });
    let mut stream = stub.connect();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1073741824\r\n\r\n")
        .unwrap();
    // Not a byte of the body sent: the answer comes from the head alone.
    let answer = read_response(&mut stream);
    assert_eq!(status(&answer), 413, "{answer}");

    let mut within = stub.connect();
    within
        .write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1024\r\n\r\n")
        .unwrap();
    within.write_all(&[b'x'; 1024]).unwrap();
    assert!(read_response(&mut within).ends_with("ok 1024"));
}

#[test]
fn the_drain_answers_what_it_has_taken_in_closes_idle_connections_and_ends() {
    let stub = Stub::start(ServerOptions::default());
    let mut idle = stub.connect();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(status(&read_response(&mut idle)), 200);
    let mut in_flight = stub.connect();
    in_flight
        .write_all(b"GET /work HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let rq = stub.next_queued();

    stub.server.stop_accepting();
    assert_eq!(
        read_all(&mut idle),
        "",
        "an idle connection is closed at once"
    );
    let answerer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        rq.respond(Response::from_string("worked"));
    });
    let answer = read_all(&mut in_flight);
    assert_eq!(status(&answer), 200, "{answer}");
    assert!(answer.contains("Connection: close"), "{answer}");
    assert!(answer.ends_with("worked"), "{answer}");
    answerer.join().unwrap();
    assert!(stub
        .server
        .wait_drained(Instant::now() + Duration::from_secs(5)));
    assert!(
        TcpStream::connect(stub.server.server_addr()).is_err(),
        "the listener is closed"
    );
}
