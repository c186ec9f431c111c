//! HTTP: routing, the handlers, and turning their results into responses. Every request
//! is answered, counted in the metrics and logged as one JSON line.

mod data;
mod error;
mod probes;
mod reply;

use std::hash::{Hash, Hasher};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use budget::Budget;
use codec::paging;
use mongodb::bson::oid::ObjectId;
use tiny_http::{Method, Queue, Request};

pub use error::ApiError;
pub use reply::{Body, Reply};

use crate::metrics::{InFlight, Metrics};
use crate::settings::HttpSettings;
use crate::store::{Session, Store, StoreError};

/// What the handlers hold requests to.
pub struct Limits {
    max_body_bytes: u64,
    queue_timeout: Duration,
    page_limit_max: u32,
    /// The memory budget requests take what they hold from.
    memory: Budget,
}

impl Limits {
    pub fn new(settings: &HttpSettings, memory: Budget) -> Limits {
        Limits {
            max_body_bytes: settings.max_body_bytes,
            queue_timeout: settings.queue_timeout(),
            page_limit_max: settings.page_limit_max,
            memory,
        }
    }
}

/// Whole-collection listings (and the later pieces of their bodies), for workers of their
/// own (see [`listing_workers`]), so that writes, pages and readiness never wait behind
/// them. Everything else waits in [`Queue::FIRST`].
pub const LISTINGS: Queue = Queue(1);
/// The API server's job queues.
pub const QUEUES: usize = LISTINGS.0 + 1;

/// The workers that fetch for listings, which is how many fetch at once: no more than the
/// budget holds the largest reply for (a fetch reserves `MAX_BATCH_BYTES`; one more would
/// only wait for memory), and at most half `WORKERS`. Only they take listings, so a
/// listing waiting for memory never holds a worker that could be doing something else.
/// The listings' cursors get as many MongoDB connections.
pub fn listing_workers(settings: &HttpSettings, memory: &Budget) -> u16 {
    let replies = memory.total() / crate::store::MAX_BATCH_BYTES;
    settings
        .listings()
        .min(u16::try_from(replies).unwrap_or(u16::MAX))
        .max(1)
}

pub struct Handler {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    limits: Limits,
    /// Whether MongoDB has answered this process's readiness ping once (probes.rs).
    reached_mongodb: AtomicBool,
}

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Api,
    Management,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Root,
    Data,
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    Unknown,
}

/// The OpenAPI 3 description of every route, status and body, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every path served, and its route.
const ROUTES: &[(&str, Route)] = &[
    ("/", Route::Root),
    ("/data", Route::Data),
    ("/healthz", Route::Healthz),
    ("/readyz", Route::Readyz),
    ("/metrics", Route::Metrics),
    ("/openapi.json", Route::OpenApi),
];

/// The paths `port` serves (`--print-config` prints them for the manifest checks).
pub fn paths(port: Port) -> Vec<&'static str> {
    ROUTES
        .iter()
        .filter(|(path, _)| Route::on(port, path) != Route::Unknown)
        .map(|(path, _)| *path)
        .collect()
}

impl Route {
    fn of(path: &str) -> Route {
        ROUTES
            .iter()
            .find(|(p, _)| *p == path)
            .map_or(Route::Unknown, |(_, route)| *route)
    }

    /// The route of `path` on `port`: each listener serves only its own routes.
    fn on(port: Port, path: &str) -> Route {
        match Route::of(path) {
            route if !route.served_on(port) => Route::Unknown,
            route => route,
        }
    }

    /// Readiness and metrics are the operator's, on the management port only: on the API
    /// port they would be open to anyone who reaches the NodePort (whether the pod has
    /// reached MongoDB, the process's counters). Liveness is on both: it is answered on the event
    /// loop, touches nothing and says nothing, and a load balancer in front of the API
    /// port may health-check that port.
    fn served_on(self, port: Port) -> bool {
        match self {
            Route::Healthz => true,
            Route::Readyz | Route::Metrics => port == Port::Management,
            Route::Root | Route::Data | Route::OpenApi => port == Port::Api,
            Route::Unknown => false,
        }
    }

    /// The metrics label: the route's path, never the raw path, so clients cannot add
    /// series.
    fn label(self) -> &'static str {
        ROUTES
            .iter()
            .find(|(_, route)| *route == self)
            .map_or("unmatched", |(path, _)| path)
    }

    fn allow(self) -> &'static str {
        match self {
            Route::Data => "GET, HEAD, POST",
            _ => "GET, HEAD",
        }
    }

    fn allows(self, method: &Method) -> bool {
        match method {
            Method::Get | Method::Head => true,
            Method::Post => self == Route::Data,
            _ => false,
        }
    }
}

/// The client's `X-Request-Id` if it is a sane token, else a fresh unique one.
fn request_id(rq: &Request) -> String {
    rq.header_values("X-Request-Id")
        .next()
        .filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| ObjectId::new().to_hex())
}

/// `GET /`: the reference app's greeting, with the local time formatted like Python's
/// `str(datetime.now())`: `2024-05-01 13:45:07.123456`. Written digit by digit: chrono's
/// formatter turns the UTC offset into a string on every call, which cost more than the
/// rest of the request.
fn welcome() -> Reply {
    use chrono::{Datelike, Timelike};
    const GREETING: &[u8] = b"Welcome to the Flask app! The current time is: ";
    let now = chrono::Local::now().naive_local();
    let mut body = Vec::with_capacity(GREETING.len() + 26);
    body.extend_from_slice(GREETING);
    push_digits(&mut body, now.year().max(0) as u32, 4);
    for (separator, value) in [
        (b'-', now.month()),
        (b'-', now.day()),
        (b' ', now.hour()),
        (b':', now.minute()),
        (b':', now.second()),
    ] {
        body.push(separator);
        push_digits(&mut body, value, 2);
    }
    body.push(b'.');
    // A leap second shows as a nanosecond count past 999,999,999.
    push_digits(&mut body, (now.nanosecond() / 1000).min(999_999), 6);
    Reply::new(200, "text/plain; charset=utf-8", Body::Bytes(body, None))
}

/// `value` as exactly `width` decimal digits (leading zeros; higher digits dropped).
fn push_digits(out: &mut Vec<u8>, value: u32, width: usize) {
    let mut text = [b'0'; 10];
    let mut rest = value;
    for slot in text[..width].iter_mut().rev() {
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&text[..width]);
}

/// `/openapi.json` changes only with the binary, so caches may keep it and revalidate.
fn openapi(rq: &Request) -> Reply {
    static ETAG: LazyLock<String> = LazyLock::new(|| {
        let mut hasher = std::hash::DefaultHasher::new();
        OPENAPI.hash(&mut hasher);
        format!("\"{:016x}\"", hasher.finish())
    });
    let etag = ETAG.as_str();
    let current = rq
        .header_values("If-None-Match")
        .any(|value| names_tag(value, etag));
    let body = if current { b"" } else { OPENAPI.as_bytes() };
    Reply::new(
        if current { 304 } else { 200 },
        reply::JSON,
        Body::Static(body),
    )
    .validated_by(etag)
}

/// Whether an `If-None-Match` value names `etag`: `*`, or a list of tags compared weakly
/// (RFC 9110, 13.1.2: a `W/` prefix does not matter).
fn names_tag(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

fn split_target(url: &str) -> (&str, &str) {
    url.split_once('?').unwrap_or((url, ""))
}

impl Handler {
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>, limits: Limits) -> Handler {
        Handler {
            store,
            metrics,
            limits,
            reached_mongodb: AtomicBool::new(false),
        }
    }

    /// The first look at a request, on its connection's event loop: what needs no
    /// MongoDB is answered there (it never blocks), the rest is returned, to be queued
    /// for a worker ([`Handler::answer`]).
    pub fn triage(&self, mut rq: Request, port: Port) -> Option<Request> {
        let (path, query) = split_target(rq.url());
        let route = Route::on(port, path);
        match self.plan(&rq, route, query) {
            Plan::Now(now) => {
                // Counted in flight while it is answered (a scrape sees itself).
                let exchange = self.exchange(&rq, port, route);
                let result = self.reply_now(now, &rq);
                exchange.finish(rq, result);
                None
            }
            Plan::Work(work) => {
                if work.is_whole_listing() {
                    rq.set_queue(LISTINGS);
                }
                rq.extensions_mut().insert(Planned { route, work });
                Some(rq)
            }
        }
    }

    /// Answers a request [`Handler::triage`] queued, on a worker with its MongoDB
    /// session; counts and logs it, and never panics on any input. A `POST` may be
    /// answered later, by the worker that writes it (see [`Store::insert`]).
    pub fn answer(&self, mut rq: Request, port: Port, session: &Session) {
        let planned = rq.extensions_mut().remove::<Planned>();
        let route = planned.as_ref().map_or(Route::Unknown, |p| p.route);
        let exchange = self.exchange(&rq, port, route);
        let Some(Planned { work, .. }) = planned else {
            tracing::error!(
                path = exchange.path,
                "a request reached a worker without its plan"
            );
            return exchange.finish(rq, Err(ApiError::Internal));
        };
        if exchange.waited > self.limits.queue_timeout {
            return exchange.finish(rq, Err(ApiError::Overloaded));
        }
        let result = match work {
            Work::Insert => return self.insert_document(session, rq, exchange),
            Work::List(params) => {
                self.list_documents(session, params, *rq.method() == Method::Head)
            }
            Work::Ready => self.ready(session),
        };
        exchange.finish(rq, result);
    }

    /// How `route` answers `rq`: at once, or by a worker with MongoDB.
    fn plan(&self, rq: &Request, route: Route, query: &str) -> Plan {
        if route == Route::Unknown {
            return Plan::Now(Now::Refuse(ApiError::NotFound));
        }
        if !route.allows(rq.method()) {
            return Plan::Now(Now::Refuse(ApiError::MethodNotAllowed {
                allow: route.allow(),
            }));
        }
        match route {
            Route::Root => Plan::Now(Now::Welcome),
            Route::Healthz => Plan::Now(Now::Live),
            Route::Metrics => Plan::Now(Now::Scrape),
            Route::OpenApi => Plan::Now(Now::OpenApi),
            Route::Unknown => Plan::Now(Now::Refuse(ApiError::NotFound)),
            Route::Data if *rq.method() == Method::Post => Plan::Work(Work::Insert),
            Route::Data => match paging::Params::parse(query, self.limits.page_limit_max) {
                Ok(params) => Plan::Work(Work::List(params)),
                Err(e) => Plan::Now(Now::Refuse(ApiError::BadRequest(e))),
            },
            Route::Readyz => Plan::Work(Work::Ready),
        }
    }

    /// The answer to what needs no MongoDB.
    fn reply_now(&self, now: Now, rq: &Request) -> Result<Reply, ApiError> {
        match now {
            Now::Welcome => Ok(welcome()),
            Now::Live => Ok(self.live()),
            Now::Scrape => Ok(self.scrape()),
            Now::OpenApi => Ok(openapi(rq)),
            Now::Refuse(error) => Err(error),
        }
    }

    /// The record of `rq` being answered, counted from when it had arrived (the wait
    /// for a worker included).
    fn exchange(&self, rq: &Request, port: Port, route: Route) -> Exchange {
        let (path, _) = split_target(rq.url());
        Exchange {
            started: Instant::now(),
            waited: rq.received_at().elapsed(),
            _in_flight: self.metrics.in_flight(),
            metrics: self.metrics.clone(),
            id: request_id(rq),
            method: rq.method().standard_name().unwrap_or("OTHER"),
            path: path.to_owned(),
            route,
            port,
        }
    }
}

/// How a request is answered.
enum Plan {
    /// On the event loop, now: it needs no MongoDB.
    Now(Now),
    /// By a worker, with its MongoDB session.
    Work(Work),
}

/// What is answered at once.
enum Now {
    Welcome,
    Live,
    Scrape,
    OpenApi,
    Refuse(ApiError),
}

/// What a worker does for a request.
#[derive(Debug, Clone, PartialEq)]
enum Work {
    Insert,
    /// `GET /data`, its query parsed.
    List(paging::Params),
    Ready,
}

impl Work {
    /// Whole-collection listings have workers of their own ([`LISTINGS`]).
    fn is_whole_listing(&self) -> bool {
        matches!(self, Work::List(params) if params.limit.is_none())
    }
}

/// What [`Handler::triage`] decided, carried with the request to the worker.
#[derive(Debug, Clone)]
struct Planned {
    route: Route,
    work: Work,
}

/// A request being answered: what its response, its metrics and its log line need,
/// carried to whichever thread answers it.
struct Exchange {
    started: Instant,
    waited: Duration,
    _in_flight: InFlight,
    metrics: Arc<Metrics>,
    id: String,
    method: &'static str,
    path: String,
    route: Route,
    port: Port,
}

impl Exchange {
    /// Sends the response `result` makes, then counts and logs it.
    fn finish(self, rq: Request, result: Result<Reply, ApiError>) {
        let reply = result.unwrap_or_else(ApiError::into_reply);
        let status = reply.status;
        reply.send(rq, &self.id);
        let elapsed = self.started.elapsed() + self.waited;
        let (method, path) = (self.method, self.path.as_str());
        self.metrics
            .observe(self.route.label(), method, status, elapsed);
        let duration_ms = elapsed.as_micros() as f64 / 1000.0;
        // Probes and scrapes come every few seconds: not worth a line each.
        if self.port == Port::Management {
            tracing::debug!(
                method,
                path,
                status,
                duration_ms,
                request_id = self.id,
                "management request"
            );
        } else {
            tracing::info!(
                method,
                path,
                status,
                duration_ms,
                request_id = self.id,
                "request"
            );
        }
    }
}

/// Logs a MongoDB failure (the store has counted it) and says what the client gets.
fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::Duplicate => ApiError::Conflict,
        StoreError::Rejected(reason) => {
            ApiError::BadRequest(format!("MongoDB refused the document: {reason}"))
        }
        StoreError::Unavailable(e) => {
            tracing::warn!(error = %e, "MongoDB unavailable");
            ApiError::Unavailable
        }
        StoreError::Busy => ApiError::Overloaded,
        StoreError::Internal(e) => {
            tracing::error!(error = %e, "MongoDB operation failed");
            ApiError::Internal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_welcome_time_is_written_as_python_writes_it() {
        let mut out = Vec::new();
        push_digits(&mut out, 7, 2);
        push_digits(&mut out, 2026, 4);
        push_digits(&mut out, 5, 6);
        assert_eq!(out, b"072026000005");
    }

    #[test]
    fn listing_workers_are_no_more_than_the_budget_holds_replies_for() {
        let mut http = crate::settings::Settings::defaults().http;
        http.workers = 16;
        let mib = |n: u64| Budget::new(n * 1024 * 1024);
        // 48 MiB holds two replies of 16 MiB and their envelope, not three.
        assert_eq!(listing_workers(&http, &mib(48)), 2);
        assert_eq!(
            listing_workers(&http, &mib(512)),
            8,
            "half the workers at most"
        );
        assert_eq!(
            listing_workers(&http, &mib(4)),
            1,
            "one, whatever the budget"
        );
    }

    #[test]
    fn if_none_match_names_a_tag_weakly_or_by_star() {
        let tag = "\"abc\"";
        for value in [
            "\"abc\"",
            "W/\"abc\"",
            "\"x\", \"abc\"",
            "*",
            " \"y\",W/\"abc\" ",
        ] {
            assert!(names_tag(value, tag), "{value}");
        }
        for value in ["\"abcd\"", "abc", "\"ABC\"", "", "W/\"x\""] {
            assert!(!names_tag(value, tag), "{value}");
        }
    }

    #[test]
    fn readiness_and_metrics_are_served_on_the_management_port_only() {
        assert_eq!(
            paths(Port::Api),
            ["/", "/data", "/healthz", "/openapi.json"]
        );
        assert_eq!(paths(Port::Management), ["/healthz", "/readyz", "/metrics"]);
        assert_eq!(Route::on(Port::Api, "/readyz"), Route::Unknown);
        assert_eq!(Route::on(Port::Api, "/metrics"), Route::Unknown);
        assert_eq!(Route::on(Port::Management, "/data"), Route::Unknown);
    }

    #[test]
    fn the_openapi_document_describes_exactly_the_api_ports_routes() {
        let spec: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        assert_eq!(spec["info"]["version"], env!("CARGO_PKG_VERSION"));
        let paths = spec["paths"].as_object().expect("paths");
        let mut documented: Vec<&str> = paths.keys().map(String::as_str).collect();
        let mut routed = super::paths(Port::Api);
        documented.sort_unstable();
        routed.sort_unstable();
        assert_eq!(documented, routed);
        for (path, operations) in paths {
            let route = Route::of(path);
            for method in operations.as_object().expect("operations").keys() {
                let method: Method = method.to_uppercase().parse().expect("a method");
                assert!(
                    route.allows(&method),
                    "{method} {path} is documented but refused"
                );
            }
            let allowed = route.allow().split(", ").filter(|m| *m != "HEAD").count();
            assert_eq!(
                operations.as_object().unwrap().len(),
                allowed,
                "{path}: undocumented methods"
            );
        }
    }
}
