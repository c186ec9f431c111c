//! The HTTP contract, tested against the service started through `app::run` and a real
//! MongoDB-speaking server with authentication on.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::support::http::{self, raw_exchange, raw_status};
use crate::support::mongo::{skip_unless_managed, Mongo};
use crate::support::service::{login_settings, App};
use crate::support::wait_for;
use mongodb::bson::{doc, Bson};

#[test]
fn root_greets_with_the_local_time_like_python() {
    let mongo = Mongo::shared();
    let app = App::start(&mongo, &mongo.fresh_db("root"), |_| {});
    let reply = http::get(&app.url("/"));
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("Content-Type"),
        Some("text/plain; charset=utf-8")
    );
    let time = reply
        .body
        .strip_prefix("Welcome to the Flask app! The current time is: ")
        .unwrap_or_else(|| panic!("unexpected greeting {:?}", reply.body));
    // Python's str(datetime.now()): "2024-05-01 13:45:07.123456".
    assert_eq!(time.len(), 26, "{time:?}");
    let parsed = chrono::NaiveDateTime::parse_from_str(time, "%Y-%m-%d %H:%M:%S%.6f")
        .unwrap_or_else(|e| panic!("{time:?}: {e}"));
    let skew = chrono::Local::now().naive_local() - parsed;
    assert!(skew.num_seconds().abs() < 5, "time {time} is {skew} off");

    let head = http::head(&app.url("/"));
    assert_eq!(head.status, 200);
    assert_eq!(head.body, "");
    // Query strings on routes without parameters are ignored (cache busters).
    assert_eq!(http::get(&app.url("/?t=1")).status, 200);
}

#[test]
fn documents_round_trip_with_their_types_and_order() {
    let mongo = Mongo::shared();
    let db = mongo.fresh_db("roundtrip");
    let app = App::start(&mongo, &db, |_| {});
    assert_eq!(http::get(&app.url("/data")).body, "[]");

    let bodies = [
        r#"{"name":"small","int":42,"negative":-7,"float":1.0,"fraction":0.1,"big":9007199254740993}"#,
        r#"{"limits":{"i32max":2147483647,"i32over":2147483648,"i64max":9223372036854775807,"i64min":-9223372036854775808}}"#,
        r#"{"exp":1e+300,"tiny":5e-324,"negzero":-0.0}"#,
        r#"{"text":"héllo wörld ✓ 😀","escapes":"quote \" backslash \\ newline \n tab \t nul \u0000","empty":""}"#,
        r#"{"null":null,"yes":true,"no":false,"list":[1,"two",3.5,null,[],{}],"nested":{"a":{"b":{"c":[{"d":1}]}}}}"#,
        r#"{"z":1,"y":2,"x":3,"a":4}"#,
        r#"{"$oid":"not an ObjectId, just a key","dotted.key":1}"#,
    ];
    for body in bodies {
        let reply = http::post_json(&app.url("/data"), body);
        assert_eq!(reply.status, 201, "{body}: {}", reply.body);
        assert_eq!(reply.header("Content-Type"), Some("application/json"));
        assert_eq!(reply.json(), serde_json::json!({"status": "Data inserted"}));
    }

    let listed = http::get(&app.url("/data"));
    assert_eq!(listed.status, 200);
    assert_eq!(listed.header("Content-Type"), Some("application/json"));
    // Byte for byte what was posted, in insertion order (ObjectIds increase), no `_id`.
    assert_eq!(listed.body, format!("[{}]", bodies.join(",")));

    // Stored with the BSON type the JSON number implies.
    let stored = mongo.documents(&db);
    assert_eq!(stored[0].get("int"), Some(&Bson::Int32(42)));
    assert_eq!(stored[0].get("float"), Some(&Bson::Double(1.0)));
    assert_eq!(stored[0].get("big"), Some(&Bson::Int64(9007199254740993)));
    assert!(matches!(stored[0].get("_id"), Some(Bson::ObjectId(_))));
    let limits = stored[1].get_document("limits").unwrap();
    assert_eq!(limits.get("i32max"), Some(&Bson::Int32(i32::MAX)));
    assert_eq!(limits.get("i32over"), Some(&Bson::Int64(2147483648)));
}

#[test]
fn client_ids_are_kept_and_duplicates_conflict() {
    let mongo = Mongo::shared();
    let db = mongo.fresh_db("ids");
    let app = App::start(&mongo, &db, |_| {});
    for body in [
        r#"{"_id":"order-1","v":1}"#,
        r#"{"_id":7,"v":2}"#,
        r#"{"_id":{"k":1},"v":3}"#,
    ] {
        assert_eq!(
            http::post_json(&app.url("/data"), body).status,
            201,
            "{body}"
        );
    }
    let duplicate = http::post_json(&app.url("/data"), r#"{"_id":"order-1","v":99}"#);
    assert_eq!(duplicate.status, 409);
    assert!(duplicate.error().contains("_id already exists"));

    let ids: Vec<Bson> = mongo
        .documents(&db)
        .iter()
        .map(|d| d.get("_id").unwrap().clone())
        .collect();
    assert_eq!(
        ids,
        vec![
            Bson::Int32(7),
            Bson::String("order-1".into()),
            Bson::Document(doc! {"k": 1})
        ]
    );
    // `_id` order (numbers, strings, objects), without `_id`; the duplicate changed nothing.
    assert_eq!(
        http::get(&app.url("/data")).body,
        r#"[{"v":2},{"v":1},{"v":3}]"#
    );
}

#[test]
fn bad_requests_get_clear_json_errors_and_store_nothing() {
    let mongo = Mongo::shared();
    let db = mongo.fresh_db("bad");
    let app = App::start(&mongo, &db, |_| {});
    let url = app.url("/data");
    let json = Some("application/json");
    let deep = format!("{}1{}", r#"{"a":"#.repeat(101), "}".repeat(101));
    let cases: Vec<(Option<&str>, Vec<u8>, u16, &str)> = vec![
        (json, b"".to_vec(), 400, "empty"),
        (json, b"{\"a\":\"\xff\xfe\"}".to_vec(), 400, "UTF-8"),
        (json, b"{\"a\":".to_vec(), 400, "invalid JSON"),
        (json, b"{'a':1}".to_vec(), 400, "invalid JSON"),
        (json, b"[{\"a\":1}]".to_vec(), 400, "JSON object"),
        (json, b"\"a string\"".to_vec(), 400, "JSON object"),
        (json, b"12".to_vec(), 400, "JSON object"),
        (json, b"{\"a\":1,\"a\":2}".to_vec(), 400, "duplicate key"),
        (json, deep.into_bytes(), 400, "100 levels"),
        (
            json,
            b"{\"n\":18446744073709551616}".to_vec(),
            400,
            "64-bit",
        ),
        (json, b"{\"n\":NaN}".to_vec(), 400, "invalid JSON"),
        (json, br#"{"s":"\ud83d"}"#.to_vec(), 400, "invalid JSON"),
        (
            json,
            b"{\"_id\":[1,2]}".to_vec(),
            400,
            "MongoDB refused the document",
        ),
        (None, b"{\"a\":1}".to_vec(), 415, "application/json"),
        (
            Some("text/plain"),
            b"{\"a\":1}".to_vec(),
            415,
            "application/json",
        ),
        (
            Some("application/json; charset=latin1"),
            b"{\"a\":1}".to_vec(),
            415,
            "application/json",
        ),
        (
            Some("application/x-www-form-urlencoded"),
            b"a=1".to_vec(),
            415,
            "application/json",
        ),
    ];
    for (content_type, body, status, message) in &cases {
        let reply = http::post(&url, *content_type, body);
        assert_eq!(
            reply.status,
            *status,
            "{content_type:?} {:?}: {}",
            String::from_utf8_lossy(body),
            reply.body
        );
        let error = reply.error();
        assert!(
            error.contains(message),
            "{:?}: {error:?} lacks {message:?}",
            String::from_utf8_lossy(body)
        );
    }
    assert!(
        mongo.documents(&db).is_empty(),
        "a refused request stored something"
    );

    // Media types JSON clients send are accepted.
    for content_type in [
        "application/json; charset=UTF-8",
        "application/merge-patch+json",
        "Application/JSON",
    ] {
        assert_eq!(
            http::post(&url, Some(content_type), b"{\"ok\":1}").status,
            201,
            "{content_type}"
        );
    }
}

#[test]
fn bodies_over_the_limit_get_413_without_being_read() {
    let mongo = Mongo::shared();
    let db = mongo.fresh_db("limit");
    let app = App::start(&mongo, &db, |s| s.http.max_body_bytes = 1024);

    // Declared far too large, body never sent: answered at once, connection closed.
    let started = Instant::now();
    let text = raw_exchange(
        app.addr,
        b"POST /data HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(raw_status(&text), Some(413), "{text}");
    assert!(text.contains("Connection: close"), "{text}");
    assert!(text.contains("1024-byte limit"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );

    // A chunked body that grows past the limit.
    let chunk = format!(
        "{:x}\r\n{{\"pad\":\"{}\"}}\r\n",
        2000 + 10,
        "x".repeat(2000)
    );
    let request = format!(
        "POST /data HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}0\r\n\r\n"
    );
    let text = raw_exchange(app.addr, request.as_bytes(), Duration::from_secs(5));
    assert_eq!(raw_status(&text), Some(413), "{text}");

    // Exactly at the limit is fine, chunked or not.
    let at_limit = format!(r#"{{"pad":"{}"}}"#, "x".repeat(1024 - 10));
    assert_eq!(at_limit.len(), 1024);
    assert_eq!(http::post_json(&app.url("/data"), &at_limit).status, 201);
    let request = format!(
        "POST /data HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{at_limit}\r\n0\r\n\r\n",
        at_limit.len()
    );
    let text = raw_exchange(app.addr, request.as_bytes(), Duration::from_secs(5));
    assert_eq!(raw_status(&text), Some(201), "{text}");
    assert_eq!(mongo.documents(&db).len(), 2);
}

#[test]
fn answers_say_what_a_cache_may_keep() {
    let mongo = Mongo::shared();
    let db = mongo.fresh_db("caching");
    let app = App::start(&mongo, &db, |_| {});
    assert_eq!(http::post_json(&app.url("/data"), r#"{"a":1}"#).status, 201);
    // Live answers: the time, the collection as of now, errors, the server's own errors.
    let live = [
        http::get(&app.url("/")),
        http::get(&app.url("/data")),
        http::get(&app.url("/data?limit=1")),
        http::head(&app.url("/data")),
        http::post_json(&app.url("/data"), r#"{"a":2}"#),
        http::post_json(&app.url("/data"), "{"),
        http::get(&app.url("/nope")),
        http::delete(&app.url("/data")),
        http::get(&format!("{}{}", app.url("/"), "a".repeat(20_000))),
    ];
    for reply in &live {
        assert_eq!(
            reply.header("Cache-Control"),
            Some("no-store"),
            "{} {:?}",
            reply.status,
            reply.headers
        );
        assert_eq!(reply.header("ETag"), None);
    }
    // The document may be kept, and is revalidated by its ETag.
    let spec = http::get(&app.url("/openapi.json"));
    assert_eq!(spec.status, 200);
    assert_eq!(spec.header("Cache-Control"), Some("no-cache"));
    let etag = spec.header("ETag").expect("an ETag").to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "{etag}"
    );
    let weak = format!("W/{etag}");
    for current in [
        etag.as_str(),
        weak.as_str(),
        "*",
        &format!("\"other\", {etag}"),
    ] {
        let reply = http::get_with(&app.url("/openapi.json"), &[("If-None-Match", current)]);
        assert_eq!(reply.status, 304, "{current}");
        assert_eq!(reply.body, "");
        assert_eq!(reply.header("ETag"), Some(etag.as_str()));
        assert_eq!(reply.header("Cache-Control"), Some("no-cache"));
    }
    let stale = http::get_with(&app.url("/openapi.json"), &[("If-None-Match", "\"other\"")]);
    assert_eq!(
        (stale.status, stale.body.as_str()),
        (200, spec.body.as_str())
    );
}

/// What the NodePort exposes: the API, and liveness. Readiness (a MongoDB ping) and the
/// metrics are the operator's, on the management port only.
#[test]
fn readiness_and_metrics_are_served_on_the_management_port_only() {
    let mongo = Mongo::shared();
    let db = mongo.fresh_db("ports");
    let app = App::start(&mongo, &db, |_| {});
    for path in ["/readyz", "/metrics"] {
        let public = http::get(&app.url(path));
        assert_eq!(public.status, 404, "{path} on the API port");
        assert_eq!(public.error(), "not found");
        let management = http::get(&app.management_url(path));
        assert_eq!(management.status, 200, "{path}: {}", management.body);
    }
    for path in ["/", "/data", "/openapi.json"] {
        assert_eq!(http::get(&app.management_url(path)).status, 404, "{path}");
        assert_eq!(http::get(&app.url(path)).status, 200, "{path}");
    }
    assert_eq!(http::get(&app.url("/healthz")).status, 200);
    assert_eq!(http::get(&app.management_url("/healthz")).status, 200);
}

#[test]
fn unknown_paths_and_methods_get_json_errors() {
    let mongo = Mongo::shared();
    let db = mongo.fresh_db("routes");
    let app = App::start(&mongo, &db, |_| {});
    for path in ["/nope", "/data/", "/DATA", "/data/1", "//data"] {
        let reply = http::get(&app.url(path));
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(reply.error(), "not found");
    }
    let cases = [
        (http::put(&app.url("/data"), "{}"), "GET, HEAD, POST"),
        (http::delete(&app.url("/data")), "GET, HEAD, POST"),
        (http::post_json(&app.url("/"), "{}"), "GET, HEAD"),
        (http::delete(&app.url("/healthz")), "GET, HEAD"),
        (
            http::post_json(&app.management_url("/metrics"), "{}"),
            "GET, HEAD",
        ),
    ];
    for (reply, allow) in cases {
        assert_eq!(reply.status, 405);
        assert_eq!(reply.header("Allow"), Some(allow));
        assert!(reply.error().contains(allow));
    }
    // Malformed or unsupported HTTP gets a JSON error from the server itself.
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(20_000));
    let many_headers = format!(
        "GET / HTTP/1.1\r\nHost: t\r\n{}\r\n",
        "X-Filler: 0123456789\r\n".repeat(120)
    );
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"NONSENSE\r\n\r\n".to_vec(), 400, "malformed request line"),
        (
            b"GET / HTTP/1.1\r\nHost: t\r\nNo colon here\r\n\r\n".to_vec(),
            400,
            "malformed request header",
        ),
        (long_target.into_bytes(), 414, "request line too long"),
        (many_headers.into_bytes(), 431, "too many request headers"),
        (
            b"GET / HTTP/2.0\r\nHost: t\r\n\r\n".to_vec(),
            505,
            "HTTP/1.0 and HTTP/1.1",
        ),
        (
            b"POST /data HTTP/1.1\r\nHost: t\r\nExpect: magic\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
            417,
            "Expect",
        ),
        (
            b"POST /data HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec(),
            400,
            "must not both",
        ),
        (
            b"POST /data HTTP/1.1\r\nHost: t\r\nContent-Length: 2, 3\r\n\r\n{}".to_vec(),
            400,
            "invalid Content-Length",
        ),
    ];
    for (request, status, message) in cases {
        let text = raw_exchange(app.addr, &request, Duration::from_secs(5));
        assert_eq!(raw_status(&text), Some(status), "{text:.300}");
        assert!(
            text.contains("Content-Type: application/json"),
            "{text:.300}"
        );
        assert!(
            text.contains(message) && text.contains("Connection: close"),
            "{text:.300}"
        );
    }

    // Pipelined requests are answered in order; nothing after `Connection: close` is.
    let text = raw_exchange(
        app.addr,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n",
        Duration::from_secs(5),
    );
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "404", "200"], "{text}");
    // Expect: 100-continue, as curl sends for large bodies.
    let text = raw_exchange(
        app.addr,
        b"POST /data HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 7\r\nConnection: close\r\n\r\n{\"a\":1}",
        Duration::from_secs(5),
    );
    assert!(
        text.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n"),
        "{text}"
    );

    // HTTP/1.0: answered, then closed, unless the client asks to keep the connection.
    let text = raw_exchange(
        app.addr,
        b"GET /healthz HTTP/1.0\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
    assert!(
        text.contains("Connection: close") && text.ends_with(r#"{"status":"ok"}"#),
        "{text}"
    );
    // A listing that fits one piece is sent with its length: the connection may stay.
    let listing = b"GET /data HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    let text = raw_exchange(app.addr, listing, Duration::from_secs(5));
    assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n[{\"a\":1}]"), "{text}");
    // A streamed one (more than a batch, 1,000 documents) to an HTTP/1.0 client, which
    // knows no chunked encoding, is delimited by closing the connection.
    mongo.preload(&db, 1_000, 10);
    let pad = "x".repeat(100_000);
    let stored = http::post_json(&app.url("/data"), &format!(r#"{{"pad":"{pad}"}}"#));
    assert_eq!(stored.status, 201);
    let text = raw_exchange(app.addr, listing, Duration::from_secs(5));
    assert!(
        text.starts_with("HTTP/1.0 200 OK\r\n")
            && text.contains("Connection: close")
            && !text.contains("Content-Length")
            && !text.contains("Transfer-Encoding"),
        "{}",
        &text[..300]
    );
    assert!(text.ends_with(&format!(r#"{{"pad":"{pad}"}}]"#)));
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let listed: Vec<serde_json::Value> = serde_json::from_str(body).unwrap();
    assert_eq!(listed.len(), 1_002);
}

#[test]
fn paging_visits_every_document_once_across_id_types() {
    let mongo = Mongo::shared();
    let db = mongo.fresh_db("paging");
    let app = App::start(&mongo, &db, |s| s.http.page_limit_max = 10);
    let mut posted = 0;
    for i in 0..8 {
        assert_eq!(
            http::post_json(&app.url("/data"), &format!(r#"{{"i":{i}}}"#)).status,
            201
        );
        assert_eq!(
            http::post_json(
                &app.url("/data"),
                &format!(r#"{{"_id":{i},"i":{}}}"#, 100 + i)
            )
            .status,
            201
        );
        assert_eq!(
            http::post_json(
                &app.url("/data"),
                &format!(r#"{{"_id":"s{i}","i":{}}}"#, 200 + i)
            )
            .status,
            201
        );
        posted += 3;
    }
    assert_eq!(
        http::post_json(&app.url("/data"), r#"{"_id":2.5,"i":300}"#).status,
        201
    );
    posted += 1;

    let all: Vec<serde_json::Value> = http::get(&app.url("/data"))
        .json()
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(all.len(), posted);

    let mut walked = Vec::new();
    let mut next = Some("/data?limit=4".to_owned());
    let mut pages = 0;
    while let Some(path) = next {
        let reply = http::get(&app.url(&path));
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        let page = reply.json().as_array().unwrap().clone();
        assert!(page.len() <= 4);
        walked.extend(page);
        next = reply.header("Link").map(|link| {
            let target = link
                .strip_prefix('<')
                .and_then(|l| l.split_once('>'))
                .unwrap()
                .0;
            assert!(link.ends_with("; rel=\"next\""), "{link}");
            target.to_owned()
        });
        pages += 1;
        assert!(pages <= 10, "paging does not end");
    }
    assert_eq!(walked, all, "pages differ from the full listing");
    assert_eq!(pages, 7);

    // Limits above the maximum are lowered to it; bad values and cursors are refused.
    let capped = http::get(&app.url("/data?limit=500")).json();
    assert_eq!(capped.as_array().unwrap().len(), 10);
    for bad in [
        "limit=0",
        "limit=-3",
        "limit=ten",
        "limit=1.5",
        "after=bm90LWEtY3Vyc29y",
        "after=%%%",
        "sort=asc",
    ] {
        let reply = http::get(&app.url(&format!("/data?{bad}")));
        assert_eq!(reply.status, 400, "{bad}");
        assert!(!reply.error().is_empty());
    }
}

/// Follows the `Link` headers from `first`; returns every document listed and the
/// number of pages.
fn walk(app: &App, first: &str) -> (Vec<serde_json::Value>, usize) {
    let mut walked = Vec::new();
    let mut next = Some(first.to_owned());
    let mut pages = 0;
    while let Some(path) = next {
        let reply = http::get(&app.url(&path));
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        walked.extend(reply.json().as_array().unwrap().clone());
        next = reply.header("Link").map(|link| {
            link.strip_prefix('<')
                .and_then(|l| l.split_once('>'))
                .unwrap()
                .0
                .to_owned()
        });
        pages += 1;
        assert!(pages <= 100, "paging does not end");
    }
    (walked, pages)
}

#[test]
fn long_ids_can_be_paged_past_and_longer_ones_are_refused() {
    let mongo = Mongo::shared();
    let db = mongo.fresh_db("longid");
    let app = App::start(&mongo, &db, |_| {});
    // The longest string _id stored: 1,024 bytes as a BSON value (length, text, NUL).
    let longest = "k".repeat(1019);
    for (n, id) in [format!("a{}", &longest[1..]), longest.clone(), "z".into()]
        .iter()
        .enumerate()
    {
        let body = serde_json::json!({"_id": id, "n": n}).to_string();
        assert_eq!(http::post_json(&app.url("/data"), &body).status, 201);
    }
    let too_long = serde_json::json!({"_id": format!("{longest}k"), "n": 9}).to_string();
    let reply = http::post_json(&app.url("/data"), &too_long);
    assert_eq!(reply.status, 400);
    assert!(reply.error().contains("1024 bytes"), "{}", reply.body);
    // Another MongoDB client wrote a 1,600-byte _id: it is paged past too.
    mongo
        .database(&db)
        .collection::<mongodb::bson::Document>("data")
        .insert_one(mongodb::bson::doc! {"_id": "m".repeat(1600), "n": 3})
        .run()
        .unwrap();
    let (walked, pages) = walk(&app, "/data?limit=1");
    let order: Vec<i64> = walked.iter().map(|d| d["n"].as_i64().unwrap()).collect();
    assert_eq!(order, [0, 1, 3, 2], "ids sort a…, k…, m…, z");
    assert_eq!(pages, 4);
}

#[test]
fn concurrent_posts_are_each_stored_exactly_once() {
    let mongo = Mongo::shared();
    let db = mongo.fresh_db("concurrent");
    let app = App::start(&mongo, &db, |_| {});
    let url = app.url("/data");
    std::thread::scope(|scope| {
        for t in 0..8 {
            let url = &url;
            scope.spawn(move || {
                for n in 0..200 {
                    let reply = http::post_json(url, &format!(r#"{{"t":{t},"n":{n}}}"#));
                    assert_eq!(reply.status, 201, "{}", reply.body);
                }
            });
        }
    });
    let documents = mongo.documents(&db);
    assert_eq!(documents.len(), 1600);
    let distinct: HashSet<(i32, i32)> = documents
        .iter()
        .map(|d| (d.get_i32("t").unwrap(), d.get_i32("n").unwrap()))
        .collect();
    assert_eq!(distinct.len(), 1600, "a document was stored twice");
    assert_eq!(
        http::get(&app.url("/data"))
            .json()
            .as_array()
            .unwrap()
            .len(),
        1600
    );
}

#[test]
fn concurrent_writes_each_get_their_own_answer() {
    // Concurrent inserts are written to MongoDB together; a conflict or a refused
    // document must still be answered to its own request only.
    let mongo = Mongo::shared();
    let db = mongo.fresh_db("batches");
    let app = App::start(&mongo, &db, |_| {});
    let url = app.url("/data");
    for round in 0..10 {
        let barrier = std::sync::Barrier::new(16);
        let statuses: Vec<(usize, u16)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16)
                .map(|i| {
                    let (url, barrier) = (&url, &barrier);
                    scope.spawn(move || {
                        let body = match i % 4 {
                            0 => format!(r#"{{"_id":"r{round}-shared","i":{i}}}"#),
                            1 => r#"{"_id":[1,2]}"#.to_owned(),
                            _ => format!(r#"{{"round":{round},"i":{i}}}"#),
                        };
                        barrier.wait();
                        (i, http::post_json(url, &body).status)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let count = |kind: usize, status: u16| {
            statuses
                .iter()
                .filter(|(i, s)| i % 4 == kind && *s == status)
                .count()
        };
        assert_eq!(
            (count(0, 201), count(0, 409)),
            (1, 3),
            "round {round}: {statuses:?}"
        );
        assert_eq!(count(1, 400), 4, "round {round}: {statuses:?}");
        assert_eq!(
            count(2, 201) + count(3, 201),
            8,
            "round {round}: {statuses:?}"
        );
    }
    assert_eq!(mongo.documents(&db).len(), 10 * 9);
    // ...and they were indeed written in shared round trips.
    let metrics = http::get(&app.management_url("/metrics")).body;
    let single = metric(&metrics, r#"mongodb_insert_batch_documents_bucket{le="1"}"#);
    let all = metric(&metrics, "mongodb_insert_batch_documents_count");
    assert!(all < 160.0 && single < all, "no batch formed:\n{metrics}");
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
}

#[test]
fn special_characters_in_the_password_work() {
    let mongo = Mongo::shared();
    let db = mongo.fresh_db("password");
    let password = "p@ss:w/rd%40?#[]&=+ é";
    mongo.create_user("app-user", password, &db);
    let app = App::start_with(login_settings(&mongo, &db, "app-user", password));
    let ready = http::get(&app.management_url("/readyz"));
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(
        http::post_json(&app.url("/data"), r#"{"ok":true}"#).status,
        201
    );
    assert_eq!(http::get(&app.url("/data")).body, r#"[{"ok":true}]"#);
}

#[test]
fn wrong_password_gives_503_within_the_timeout() {
    let mongo = Mongo::shared();
    let db = mongo.fresh_db("wrongpw");
    let (user, _) = mongo.root_credentials();
    let mut settings = login_settings(&mongo, &db, &user, "not-the-password");
    settings.mongo.timeout_ms = 1000;
    let app = App::start_with(settings);
    assert_eq!(http::get(&app.url("/healthz")).status, 200);
    for (name, reply) in [
        (
            "readyz",
            timed(|| http::get(&app.management_url("/readyz"))),
        ),
        ("GET /data", timed(|| http::get(&app.url("/data")))),
        (
            "POST /data",
            timed(|| http::post_json(&app.url("/data"), r#"{"a":1}"#)),
        ),
    ] {
        let (reply, took) = reply;
        assert_eq!(reply.status, 503, "{name}: {}", reply.body);
        assert_eq!(reply.header("Retry-After"), Some("1"), "{name}");
        assert_eq!(reply.error(), "database unavailable, try again later");
        assert!(took < Duration::from_secs(3), "{name} took {took:?}");
    }
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let value = f();
    (value, started.elapsed())
}

#[test]
fn mongodb_outage_gives_503_then_recovers_without_losing_writes() {
    let mut mongo = Mongo::start();
    if skip_unless_managed(
        &mongo,
        "mongodb_outage_gives_503_then_recovers_without_losing_writes",
    ) {
        return;
    }
    let db = mongo.fresh_db("outage");
    let app = App::start(&mongo, &db, |s| s.mongo.timeout_ms = 1000);
    for i in 0..20 {
        assert_eq!(
            http::post_json(&app.url("/data"), &format!(r#"{{"before":{i}}}"#)).status,
            201
        );
    }

    // Ready, as its first probe finds it.
    assert_eq!(http::get(&app.management_url("/readyz")).status, 200);

    mongo.kill();
    assert_eq!(http::get(&app.url("/healthz")).status, 200);
    let (reply, took) = timed(|| http::post_json(&app.url("/data"), r#"{"during":1}"#));
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let (reply, took) = timed(|| http::get(&app.url("/data")));
    assert_eq!(reply.status, 503);
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // It has reached MongoDB before: it stays ready and answers for itself.
    assert_eq!(http::get(&app.management_url("/readyz")).status, 200);
    assert_eq!(http::get(&app.url("/healthz")).status, 200);

    mongo.restart();
    wait_for(
        "writes after MongoDB restarts",
        Duration::from_secs(30),
        || (http::post_json(&app.url("/data"), r#"{"after":1}"#).status == 201).then_some(()),
    );
    let listed = http::get(&app.url("/data")).json();
    let listed = listed.as_array().unwrap();
    // Every acknowledged write survived the kill; the refused one was not stored.
    assert_eq!(listed.len(), 21, "{listed:?}");
    assert!(listed.iter().all(|d| d.get("during").is_none()));
}

#[test]
fn metrics_count_requests_by_route_and_status() {
    let mongo = Mongo::shared();
    let app = App::start(&mongo, &mongo.fresh_db("metrics"), |_| {});
    for _ in 0..3 {
        http::post_json(&app.url("/data"), r#"{"a":1}"#);
    }
    http::get(&app.url("/nope/12345"));
    http::post_json(&app.url("/data"), "[]");
    let reply = http::get(&app.management_url("/metrics"));
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("Content-Type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = reply.body;
    for line in [
        r#"http_requests_total{method="POST",route="/data",status="201"} 3"#,
        r#"http_requests_total{method="POST",route="/data",status="400"} 1"#,
        r#"http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
        r#"http_request_duration_seconds_count{route="/data"} 4"#,
        "http_requests_in_flight 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    // (Not "12345": a latency sum such as 0.0123456 may hold those digits.)
    assert!(!text.contains("/nope"), "raw paths must not become labels");
}
