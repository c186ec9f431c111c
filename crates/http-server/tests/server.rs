//! The server on its own, over real sockets, with a route that misbehaves on purpose:
//! what a loop runs inline may panic, and only that request suffers.

use std::future::Future;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::Duration;

use tiny_http::{Body, NoRequest, Piece, Queue, Request, Response, Server, ServerOptions, Stream};

/// Pieces until `n`, then a panic (a bug in a producer).
struct Countdown(u32);

impl Stream for Countdown {
    fn next_piece(&mut self) -> io::Result<Option<Piece>> {
        self.0 -= 1;
        if self.0 == 0 {
            panic!("a bug in a producer");
        }
        Ok(Some(Piece {
            bytes: b"tick\n".to_vec(),
            memory: None,
        }))
    }
}

fn route(rq: Request) -> Option<Request> {
    match rq.url() {
        "/panic" => panic!("a bug in an inline handler"),
        "/work" => Some(rq),
        "/stream" => {
            let first = Piece {
                bytes: b"start\n".to_vec(),
                memory: None,
            };
            rq.respond(Response::new(
                200,
                vec![],
                Body::Stream {
                    first,
                    rest: Box::new(Countdown(3)),
                },
            ));
            None
        }
        _ => {
            rq.respond(Response::from_string("ok"));
            None
        }
    }
}

fn start() -> (Arc<Server>, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let options = ServerOptions {
        io_threads: 2,
        ..ServerOptions::default()
    };
    let server = Arc::new(Server::from_listener(listener, options, route).unwrap());
    let worker = {
        let server = server.clone();
        thread::spawn(move || {
            while let Some(rq) = server.recv() {
                rq.respond(Response::from_string("worked"));
            }
        })
    };
    (server, worker)
}

/// Sends a request on `stream` and reads one response: status and body.
fn exchange(reader: &mut BufReader<TcpStream>, path: &str) -> Option<(u16, String)> {
    reader
        .get_mut()
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .ok()?;
    let mut status = String::new();
    reader.read_line(&mut status).ok()?;
    let code = status.split(' ').nth(1)?.parse().ok()?;
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length: ") {
            length = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((code, String::from_utf8(body).ok()?))
}

fn connect(server: &Server) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(server.server_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    BufReader::new(stream)
}

#[test]
fn a_panic_in_an_inline_handler_answers_that_request_500_and_nothing_else_notices() {
    let (server, worker) = start();
    let mut bystander = connect(&server);
    assert_eq!(exchange(&mut bystander, "/"), Some((200, "ok".into())));
    let mut victim = connect(&server);
    let (status, body) = exchange(&mut victim, "/panic").expect("an answer");
    assert_eq!(status, 500);
    assert_eq!(body, r#"{"error":"internal server error"}"#);
    // The same connection, the others, and the workers go on.
    assert_eq!(exchange(&mut victim, "/"), Some((200, "ok".into())));
    assert_eq!(
        exchange(&mut bystander, "/work"),
        Some((200, "worked".into()))
    );
    let mut newcomer = connect(&server);
    assert_eq!(exchange(&mut newcomer, "/"), Some((200, "ok".into())));
    drop((bystander, victim, newcomer));
    server.stop_accepting();
    assert!(server.wait_drained(std::time::Instant::now() + Duration::from_secs(5)));
    worker.join().unwrap();
}

#[test]
fn a_panic_in_a_stream_producer_cuts_that_body_only() {
    let (server, worker) = start();
    let mut stream = connect(&server);
    stream
        .get_mut()
        .write_all(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    let text = String::from_utf8_lossy(&received);
    assert!(text.contains("Transfer-Encoding: chunked"), "{text}");
    assert!(
        text.contains("start\n") && text.contains("tick\n"),
        "{text}"
    );
    // Cut: no last chunk, so the client can tell the body is incomplete.
    assert!(!text.ends_with("0\r\n\r\n"), "{text}");
    let mut other = connect(&server);
    assert_eq!(exchange(&mut other, "/work"), Some((200, "worked".into())));
    drop(other);
    server.stop_accepting();
    assert!(server.wait_drained(std::time::Instant::now() + Duration::from_secs(5)));
    worker.join().unwrap();
}

/// Runs `future` on this thread, parking between polls (as a worker's runtime waits).
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        thread::park();
    }
}

/// `n` pieces, each naming the thread that made it.
struct Named(u32);

impl Stream for Named {
    fn next_piece(&mut self) -> io::Result<Option<Piece>> {
        if self.0 == 0 {
            return Ok(None);
        }
        self.0 -= 1;
        let name = thread::current().name().unwrap_or("?").to_owned();
        Ok(Some(Piece {
            bytes: format!("{name}\n").into_bytes(),
            memory: None,
        }))
    }
}

/// A worker on `queue` until the server drains, answering with a streamed body.
fn serve_queue(server: Arc<Server>, queue: Queue, name: &str) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .name(name.into())
        .spawn(move || loop {
            match server.try_recv(queue) {
                Ok(rq) => rq.respond(Response::new(
                    200,
                    vec![],
                    Body::Stream {
                        first: Piece {
                            bytes: b"first\n".to_vec(),
                            memory: None,
                        },
                        rest: Box::new(Named(2)),
                    },
                )),
                Err(NoRequest::Empty) => block_on(server.work_ready(queue)),
                Err(NoRequest::Closed) => return,
            }
        })
        .unwrap()
}

/// Sends a `GET` and reads the response whole (a chunked body, or none): its status and
/// the bytes after the head.
fn get_raw(stream: &mut TcpStream, path: &str) -> (u16, String) {
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let mut all = String::new();
    stream.read_to_string(&mut all).unwrap();
    let status = all.split(' ').nth(1).unwrap().parse().unwrap();
    let body = all.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

#[test]
fn each_queue_has_its_own_workers_and_a_streamed_body_stays_in_its_queue() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let options = ServerOptions {
        queues: 2,
        ..ServerOptions::default()
    };
    let route = |mut rq: Request| {
        match rq.url() {
            "/second" => rq.set_queue(Queue(1)),
            "/nowhere" => rq.set_queue(Queue(7)),
            _ => {}
        }
        Some(rq)
    };
    let server = Arc::new(Server::from_listener(listener, options, route).unwrap());
    let connect = || {
        let stream = TcpStream::connect(server.server_addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
    };
    // Only the second queue has a worker: what is queued there is answered, and every
    // piece of its body is made there.
    let second = serve_queue(server.clone(), Queue(1), "second-queue");
    let (status, body) = get_raw(&mut connect(), "/second");
    assert_eq!(status, 200);
    assert!(
        body.contains("first") && body.matches("second-queue").count() == 2,
        "{body}"
    );
    // A request for the first queue waits for a worker of its own...
    let mut waiting = connect();
    waiting
        .write_all(b"GET /first HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    let early = waiting.read(&mut byte);
    assert!(
        matches!(&early, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
        "answered by another queue's worker: {early:?}"
    );
    // ...and gets one once there is.
    let first = serve_queue(server.clone(), Queue::FIRST, "first-queue");
    waiting
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut rest = String::new();
    waiting.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("first-queue"), "{rest}");
    // A queue the server does not have: 500, not a request lost.
    assert_eq!(get_raw(&mut connect(), "/nowhere").0, 500);
    server.stop_accepting();
    assert!(server.wait_drained(std::time::Instant::now() + Duration::from_secs(5)));
    first.join().unwrap();
    second.join().unwrap();
}
