//! What the server's front door does with any request, before authentication: the names it
//! answers to (DNS rebinding) and the labels it counts requests under.

use kelp::api::http::HttpSettings;
use kelp_tests::both_backends;
use kelp_tests::server::{Backend, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Sends `method path` with `host` as the `Host` header.
async fn with_host(
    s: &TestServer,
    method: &str,
    path: &str,
    host: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = s
        .http
        .request(method.parse().unwrap(), s.url(path))
        .header("host", host);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or_default())
}

both_backends!(
    a_page_on_another_name_cannot_reach_a_loopback_server,
    |s: TestServer| async move {
        let port = s.base.rsplit(':').next().unwrap().to_owned();
        // A page at http://rebound.example:PORT whose name now resolves to 127.0.0.1: its
        // requests carry its own name. While no user exists, setup would make it the admin.
        let rebound = format!("rebound.example:{port}");
        let credentials = json!({"username": "mallory", "password": "mallory-password"});
        let (status, body) =
            with_host(&s, "POST", "/api/auth/setup", &rebound, Some(credentials)).await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{body}");
        assert_eq!(body["error"]["code"], "unknown_host", "{body}");
        assert!(body["error"]["request_id"].is_string(), "{body}");
        for (method, path) in [
            ("POST", "/api/auth/login"),
            ("GET", "/metrics"),
            ("GET", "/api/me"),
            ("GET", "/no/such/route"),
        ] {
            let body = (method == "POST").then(|| json!({"username": "a", "password": "b"}));
            let (status, _) = with_host(&s, method, path, &rebound, body).await;
            assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{method} {path}");
        }
        assert_eq!(
            s.state.db().count_users().await.unwrap(),
            0,
            "nothing stored"
        );
        // The names a local client uses all work, and setup is still open to them.
        for host in [
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
        ] {
            let (status, body) = with_host(&s, "GET", "/health", &host, None).await;
            assert_eq!(status, StatusCode::OK, "{host}: {body}");
        }
        s.setup_admin().await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_names_behind_a_proxy_are_configured() {
    let http = HttpSettings {
        public_hosts: vec!["kelp.example.com".into()],
        ..HttpSettings::default()
    };
    let s = TestServer::start_with(Backend::Sqlite, http).await;
    let (status, _) = with_host(&s, "GET", "/health", "kelp.example.com", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = with_host(&s, "GET", "/health", "KELP.example.com:443", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = with_host(&s, "GET", "/health", "other.example.com", None).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    // The refusal is part of every operation's contract.
    let (_, doc) = s.send("GET", "/openapi.json", None, None).await;
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            assert!(
                operation["responses"]["421"].is_object(),
                "{method} {path} does not declare 421"
            );
        }
    }
    assert!(operations > 50, "{operations}");
}

/// A method token of `len` characters no one has seen before.
fn made_up_method(n: usize, len: usize) -> reqwest::Method {
    let token: String = format!("M{n}X").chars().cycle().take(len).collect();
    reqwest::Method::from_bytes(token.as_bytes()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_labels_stay_bounded_whatever_clients_send() {
    let s = TestServer::start(Backend::Sqlite).await;
    let send = |method: reqwest::Method, path: &'static str| {
        let req = s.http.request(method, s.url(path));
        async move { req.send().await.unwrap().status() }
    };
    // One of each kind first, so the page has every series it will ever have.
    send(made_up_method(0, 200), "/health").await;
    send(made_up_method(0, 200), "/no/such/route").await;
    // The page's own route is counted after it is rendered: read it once so it is there too.
    s.metrics().await;
    let before = s.metrics().await;
    for n in 1..=50 {
        send(made_up_method(n, 200), "/health").await;
        send(made_up_method(n, 200), "/no/such/route").await;
    }
    let after = s.metrics().await;
    let leaked = after.lines().find(|l| l.contains("M1X"));
    assert!(
        leaked.is_none(),
        "a client's method token became a label: {leaked:?}"
    );
    assert!(after.contains("method=\"other\""), "{after}");
    assert_eq!(
        before.lines().count(),
        after.lines().count(),
        "made-up methods added series"
    );
    // Every status label is a number HTTP names or a class.
    for line in after
        .lines()
        .filter(|l| l.starts_with("kelp_http_requests_total"))
    {
        let status = line
            .split("status=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap();
        let named = status
            .parse::<u16>()
            .ok()
            .and_then(|code| reqwest::StatusCode::from_u16(code).ok())
            .is_some_and(|code| code.canonical_reason().is_some());
        assert!(named || status.ends_with("xx"), "{line}");
    }
}
