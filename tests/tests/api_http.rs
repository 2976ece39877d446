//! What the server's front door does with any request, before authentication: the labels it
//! counts requests under.

use kelp_tests::server::{Backend, TestServer};

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
