//! A loopback service that records what is POSTed to its `/replies` and answers
//! `{"id": "r-N"}`: the far end of the generic webhook channel.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use serde_json::{Value, json};

/// What the service received: each request's headers and JSON body, in order.
pub type Received = Arc<Mutex<Vec<(HeaderMap, Value)>>>;

/// Starts the service; it stops with the test's runtime.
pub async fn start() -> (SocketAddr, Received) {
    use axum::routing::post;
    let seen: Received = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/replies",
        post(
            move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| {
                let record = record.clone();
                async move {
                    let mut seen = record.lock().unwrap();
                    seen.push((headers, body));
                    axum::Json(json!({"id": format!("r-{}", seen.len())}))
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (addr, seen)
}
