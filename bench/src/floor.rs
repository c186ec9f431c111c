//! The floor for `GET /`: tiny_http as published, with worker threads answering a
//! constant body. Nothing can serve HTTP through tiny_http faster than this.

use std::sync::Arc;

use tiny_http_upstream::{Header, Response, Server};

const BODY: &str = "Welcome to the Flask app! The current time is: 2026-01-01 00:00:00.000000";

pub fn serve(port: u16, threads: usize) -> Result<(), String> {
    let server =
        Arc::new(Server::http(("127.0.0.1", port)).map_err(|e| format!("listen on {port}: {e}"))?);
    println!("floor listening on {}", server.server_addr());
    let header = Header::from_bytes("Content-Type", "text/plain; charset=utf-8")
        .map_err(|()| "header".to_owned())?;
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let server = server.clone();
            let header = header.clone();
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    let response = Response::from_string(BODY).with_header(header.clone());
                    let _ = request.respond(response);
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    Ok(())
}
