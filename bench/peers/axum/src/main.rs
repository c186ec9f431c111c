//! The Flask app's three routes in idiomatic axum: what a Rust user would write first.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::{Client, Collection};

async fn welcome() -> String {
    let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S%.6f");
    format!("Welcome to the Flask app! The current time is: {now}")
}

async fn list(State(data): State<Collection<Document>>) -> Result<Json<Vec<Document>>, StatusCode> {
    let cursor = data
        .find(doc! {})
        .projection(doc! { "_id": 0 })
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    let documents = cursor.try_collect().await.map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok(Json(documents))
}

async fn insert(
    State(data): State<Collection<Document>>,
    Json(document): Json<Document>,
) -> Result<(StatusCode, Json<serde_json::Value>), StatusCode> {
    data.insert_one(document).await.map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "status": "Data inserted" }))))
}

#[tokio::main]
async fn main() {
    let uri = std::env::var("MONGODB_URI").unwrap_or_else(|_| "mongodb://localhost:27017".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "5000".into());
    let client = Client::with_uri_str(&uri).await.expect("MongoDB URI");
    let db = client.default_database().unwrap_or_else(|| client.database("flask_db"));
    let app = Router::new()
        .route("/", get(welcome))
        .route("/data", get(list).post(insert))
        .with_state(db.collection::<Document>("data"));
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}
