//! What the load is sent to: an HTTP server (the service, the Flask reference, the bare
//! tiny_http floor), or the MongoDB driver itself (the floors for `POST /data` and
//! `GET /data`, doing the same work without HTTP).

use std::io;
use std::time::Duration;

use mongodb::bson::{doc, Document};
use mongodb::options::ClientOptions;
use mongodb::sync::{Client, Collection};

use crate::load::{Op, Outcome, Target};

/// The document every insert sends (with `n` set to the request number).
pub fn insert_json(n: u64) -> String {
    format!(r#"{{"name":"bench","n":{n},"tags":["a","b"],"score":1.5,"active":true}}"#)
}

fn insert_document(n: u64) -> Document {
    doc! { "name": "bench", "n": n as i64, "tags": ["a", "b"], "score": 1.5, "active": true }
}

pub struct Http {
    base: String,
    reconnect_every: Option<u64>,
}

impl Http {
    pub fn new(base: &str) -> Http {
        Http {
            base: base.trim_end_matches('/').to_owned(),
            reconnect_every: None,
        }
    }

    /// A client that asks the server to close its connection every `requests` requests
    /// and opens a new one: behind a Service, kube-proxy picks a pod per connection, so
    /// only new connections reach pods the HPA has just added.
    pub fn reconnecting(base: &str, requests: u64) -> Http {
        Http {
            reconnect_every: Some(requests.max(1)),
            ..Http::new(base)
        }
    }
}

/// Sends one request and reads the whole response body, counting its bytes.
fn exchange(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Outcome {
    let Ok(mut response) = result else {
        return Outcome::Failed;
    };
    let status = response.status().as_u16();
    let mut body = response.body_mut().with_config().limit(u64::MAX).reader();
    match io::copy(&mut body, &mut io::sink()) {
        Ok(bytes) => Outcome::Status(status, bytes),
        Err(_) => Outcome::Failed,
    }
}

impl Target for Http {
    type Client = Box<dyn FnMut(Op, u64) -> Outcome>;

    fn client(&self) -> Self::Client {
        // One agent per worker, keeping at most one connection: every request of this
        // worker reuses the same kept-alive connection, as a real client's pool would.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .max_idle_connections(1)
            .max_idle_connections_per_host(1)
            .build()
            .into();
        let root = format!("{}/", self.base);
        let data = format!("{}/data", self.base);
        let every = self.reconnect_every;
        Box::new(move |op, n| {
            // The last request on a connection says so; ureq then does not pool it.
            let last = every.is_some_and(|every| n % every == every - 1);
            let connection = if last { "close" } else { "keep-alive" };
            match op {
                Op::Root => exchange(agent.get(&root).header("Connection", connection).call()),
                Op::List => exchange(agent.get(&data).header("Connection", connection).call()),
                Op::Insert => exchange(
                    agent
                        .post(&data)
                        .header("Content-Type", "application/json")
                        .header("Connection", connection)
                        .send(insert_json(n)),
                ),
            }
        })
    }

    fn describe(&self) -> String {
        self.base.clone()
    }
}

/// The raw sync driver, configured as the service configures it (write concern
/// majority + journaled, one pooled connection per worker).
pub struct Driver {
    collection: Collection<Document>,
    uri_host: String,
}

impl Driver {
    pub fn connect(uri: &str, db: &str, connections: usize) -> mongodb::error::Result<Driver> {
        let mut options = ClientOptions::parse(uri).run()?;
        options.max_pool_size = Some(connections as u32);
        // The service's own write concern (its wtimeout only bounds a wait it never hits here).
        options.write_concern = Some(mongo_api::settings::write_concern(
            std::time::Duration::from_secs(10),
        ));
        let uri_host = options
            .hosts
            .first()
            .map(|h| h.to_string())
            .unwrap_or_default();
        let client = Client::with_options(options)?;
        Ok(Driver {
            collection: client.database(db).collection("data"),
            uri_host,
        })
    }
}

impl Target for Driver {
    type Client = Box<dyn FnMut(Op, u64) -> Outcome>;

    fn client(&self) -> Self::Client {
        let collection = self.collection.clone();
        Box::new(move |op, n| match op {
            Op::Insert => match collection.insert_one(insert_document(n)).run() {
                Ok(_) => Outcome::Status(200, 0),
                Err(_) => Outcome::Failed,
            },
            // What a handler would do with the driver alone: the same query as the
            // service, every document into memory, then one JSON encoding.
            Op::List => {
                let found: mongodb::error::Result<Vec<Document>> = collection
                    .find(doc! {})
                    .projection(doc! { "_id": 0 })
                    .sort(doc! { "_id": 1 })
                    .run()
                    .and_then(|cursor| cursor.collect());
                match found.map(|docs| serde_json::to_vec(&docs)) {
                    Ok(Ok(json)) => Outcome::Status(200, json.len() as u64),
                    _ => Outcome::Failed,
                }
            }
            Op::Root => Outcome::Failed,
        })
    }

    fn describe(&self) -> String {
        format!("mongodb driver ({})", self.uri_host)
    }
}

/// Empties `data` and inserts `count` documents like the ones the insert scenario sends.
pub fn preload(uri: &str, db: &str, count: u64) -> mongodb::error::Result<()> {
    let client = Client::with_uri_str(uri)?;
    let collection = client.database(db).collection::<Document>("data");
    collection.drop().run()?;
    let documents: Vec<Document> = (0..count).map(insert_document).collect();
    for batch in documents.chunks(10_000) {
        collection.insert_many(batch).run()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// The client ports a server saw for `requests` requests from one reconnecting client.
    fn connections_for(requests: u64, reconnect_every: Option<u64>) -> usize {
        let server = tiny_http_upstream::Server::http("127.0.0.1:0").unwrap();
        let base = format!("http://{}", server.server_addr().to_ip().unwrap());
        let http = match reconnect_every {
            Some(every) => Http::reconnecting(&base, every),
            None => Http::new(&base),
        };
        let client = std::thread::spawn(move || {
            let mut client = http.client();
            (0..requests)
                .filter(|&n| matches!(client(Op::Root, n), Outcome::Status(200, _)))
                .count() as u64
        });
        let mut ports = HashSet::new();
        for _ in 0..requests {
            let request = server
                .recv_timeout(Duration::from_secs(10))
                .unwrap()
                .expect("the client's next request within 10 s");
            ports.insert(request.remote_addr().unwrap().port());
            request
                .respond(tiny_http_upstream::Response::from_string("ok"))
                .unwrap();
        }
        assert_eq!(
            client.join().unwrap(),
            requests,
            "every request answered 200"
        );
        ports.len()
    }

    #[test]
    fn a_reconnecting_client_opens_a_new_connection_every_n_requests() {
        assert_eq!(connections_for(20, None), 1);
        assert_eq!(connections_for(20, Some(5)), 4);
        assert_eq!(connections_for(20, Some(1)), 20);
    }
}
