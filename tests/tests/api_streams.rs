//! Event streams (SSE, streamed completions, WebSockets) and the credentials they are opened
//! with: a stream ends when its credential does, each user holds a bounded number, and the
//! slot comes back when the client goes away. Also the WebSocket's Origin check and the
//! cookie's `Secure`.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kelp::api::http::HttpSettings;
use kelp_tests::agent::{SseReader, events, setup};
use kelp_tests::both_backends;
use kelp_tests::server::{Backend, TestServer};
use kelp_tests::vendor::{FakeVendor, Flavor};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Reads `reader` until its end; panics if it is still open after 30 s.
async fn ends(reader: &mut SseReader, what: &str) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while reader.next().await.is_some() {}
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: the stream is still open"));
}

/// Signs `username` in (password `user-password`); returns the login's token and its
/// session cookie (`kelp_session=…`).
async fn login(s: &TestServer, username: &str) -> (String, String) {
    let resp = s
        .http
        .post(s.url("/api/auth/login"))
        .json(&json!({"username": username, "password": "user-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let body: Value = resp.json().await.unwrap();
    (body["token"].as_str().unwrap().to_owned(), cookie)
}

async fn new_session(s: &TestServer, token: &str) -> String {
    let (status, session) = s
        .send(
            "POST",
            "/api/sessions",
            Some(token),
            Some(json!({"title": "streams"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    session["id"].as_str().unwrap().to_owned()
}

async fn session_count(s: &TestServer, token: &str) -> i64 {
    let (_, page) = s.send("GET", "/api/sessions", Some(token), None).await;
    page["total"].as_i64().unwrap()
}

async fn user_id(s: &TestServer, token: &str) -> String {
    let (_, me) = s.send("GET", "/api/me", Some(token), None).await;
    me["id"].as_str().unwrap().to_owned()
}

/// Opens a session's event stream with a cookie.
async fn events_with_cookie(s: &TestServer, cookie: &str, session: &str) -> SseReader {
    let resp = s
        .http
        .get(s.url(&format!("/api/sessions/{session}/events")))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    SseReader::new(resp)
}

/// Opens `/api/ws` with `headers`; the handshake's answer on refusal.
async fn websocket(
    s: &TestServer,
    headers: &[(&str, &str)],
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    u16,
> {
    let url = s.url("/api/ws").replace("http://", "ws://");
    let mut request = url.as_str().into_client_request().unwrap();
    for (name, value) in headers {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

/// Waits until the server counts `n` open streams for `user` (a client that went away is
/// noticed when the server next polls its connection).
async fn open_streams_become(s: &TestServer, user: &str, n: usize) {
    for _ in 0..300 {
        if s.state.streams.open_streams(user) == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{user} still has {} streams open, not {n}",
        s.state.streams.open_streams(user)
    );
}

both_backends!(
    streams_end_when_their_credential_does,
    |s: TestServer| async move {
        // Without periodic re-checks in the test's time: on its own host a stream must end
        // because of the change itself.
        let s = TestServer::start_with(
            s.backend,
            HttpSettings {
                stream_recheck_s: 3600,
                ..HttpSettings::default()
            },
        )
        .await;
        let admin = s.setup_admin().await;
        s.user("bob").await;
        let (bob, _) = login(&s, "bob").await;
        let session = new_session(&s, &bob).await;

        // Logout: the stream opened with that login ends, one opened with another stays.
        let (other_login, _) = login(&s, "bob").await;
        let mut signed_out = events(&s, &bob, &session, None).await;
        let _stays = events(&s, &other_login, &session, None).await;
        let bob_id = user_id(&s, &bob).await;
        let (status, _) = s.send("POST", "/api/auth/logout", Some(&bob), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        ends(&mut signed_out, "after logout").await;
        open_streams_become(&s, &bob_id, 1).await;

        // A revoked API token.
        let (_, token) = s
            .send(
                "POST",
                "/api/tokens",
                Some(&other_login),
                Some(json!({"name": "script"})),
            )
            .await;
        let mut revoked = events(&s, token["token"].as_str().unwrap(), &session, None).await;
        let path = format!("/api/tokens/{}", token["id"].as_str().unwrap());
        let (status, _) = s.send("DELETE", &path, Some(&other_login), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        ends(&mut revoked, "after revocation").await;

        // A password change ends the other login sessions, and their streams (a cookie's).
        let (_, bob_cookie) = login(&s, "bob").await;
        let mut by_cookie = events_with_cookie(&s, &bob_cookie, &session).await;
        let (status, body) = s
            .send(
                "POST",
                "/api/auth/change-password",
                Some(&other_login),
                Some(json!({"current_password": "user-password", "new_password": "new-password"})),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        ends(&mut by_cookie, "after a password change").await;

        // Deactivation ends everything, the WebSocket with a policy close.
        let auth = format!("Bearer {other_login}");
        let mut socket = websocket(&s, &[("authorization", auth.as_str())])
            .await
            .unwrap();
        let user_path = format!("/api/admin/users/{bob_id}/deactivate");
        let (status, _) = s.send("POST", &user_path, Some(&admin), None).await;
        assert_eq!(status, StatusCode::OK);
        let closed = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match socket.next().await {
                    Some(Ok(Message::Close(frame))) => return frame,
                    Some(Ok(_)) => continue,
                    other => panic!("no close frame: {other:?}"),
                }
            }
        })
        .await
        .expect("the socket is still open after deactivation");
        assert_eq!(closed.unwrap().code, CloseCode::Policy);
        ends(&mut { _stays }, "after deactivation").await;
        open_streams_become(&s, &bob_id, 0).await;
    }
);

/// Two hosts on one PostgreSQL: a stream on one ends when its user is deactivated on the
/// other, within the re-check interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_its_credential_is_revoked_on_another_host() {
    let http = HttpSettings {
        stream_recheck_s: 1,
        ..HttpSettings::default()
    };
    let a = TestServer::start_with(Backend::Postgres, http).await;
    let b = a.second_host().await;
    let admin = a.setup_admin().await;
    let bob = a.user("bob").await;
    let session = new_session(&a, &bob).await;
    let mut on_b = events(&b, &bob, &session, None).await;
    let bob_id = user_id(&a, &bob).await;
    let path = format!("/api/admin/users/{bob_id}/deactivate");
    let (status, _) = a.send("POST", &path, Some(&admin), None).await;
    assert_eq!(status, StatusCode::OK);
    ends(&mut on_b, "on the other host").await;
}

/// Sends a request that opens a stream and checks it is refused with `429
/// too_many_streams` (checked before the body is read: an accepted stream never ends).
async fn too_many_streams(
    s: &TestServer,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Value {
    let mut req = s
        .http
        .request(method.parse().unwrap(), s.url(path))
        .bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "{method} {path} opened a stream over the limit"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_streams", "{body}");
    body
}

/// Each user holds at most `max_streams_per_user` streams of any kind; the next is answered
/// 429 in the envelope before anything is created, and a client that goes away gives its
/// slot back.
async fn streams_per_user_are_bounded_and_freed_when_the_client_goes_away(backend: Backend) {
    let http = HttpSettings {
        max_streams_per_user: 2,
        ..HttpSettings::default()
    };
    let s = TestServer::start_with(backend, http).await;
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    let a = setup(&s, &vendor, "gpt-4o").await;
    let admin_id = user_id(&s, &a.admin).await;
    let first = events(&s, &a.admin, &a.session_id, None).await;
    let _second = events(&s, &a.admin, &a.session_id, None).await;
    let before = session_count(&s, &a.admin).await;

    let path = format!("/api/sessions/{}/events", a.session_id);
    let body = too_many_streams(&s, "GET", &path, &a.admin, None).await;
    assert!(body["error"]["request_id"].is_string(), "{body}");
    let ask = json!({"text": "hello", "agent": "helper"});
    too_many_streams(&s, "POST", "/api/ask", &a.admin, Some(ask)).await;
    let completion = json!({
        "model": "helper",
        "stream": true,
        "messages": [{"role": "user", "content": "hello"}],
    });
    too_many_streams(
        &s,
        "POST",
        "/v1/chat/completions",
        &a.admin,
        Some(completion),
    )
    .await;
    let auth = format!("Bearer {}", a.admin);
    let refused = websocket(&s, &[("authorization", auth.as_str())]).await;
    assert_eq!(refused.err(), Some(429));
    assert_eq!(
        session_count(&s, &a.admin).await,
        before,
        "a refused stream created a session"
    );
    assert_eq!(vendor.request_count(), 0);

    // The limit is per user.
    let alice = s.user("alice").await;
    let alices = new_session(&s, &alice).await;
    let _hers = events(&s, &alice, &alices, None).await;

    // The client of the first stream goes away: its slot comes back.
    drop(first);
    open_streams_become(&s, &admin_id, 1).await;
    let _third = events(&s, &a.admin, &a.session_id, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_per_user_are_bounded_and_freed_when_the_client_goes_away_sqlite() {
    streams_per_user_are_bounded_and_freed_when_the_client_goes_away(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_per_user_are_bounded_and_freed_when_the_client_goes_away_postgres() {
    streams_per_user_are_bounded_and_freed_when_the_client_goes_away(Backend::Postgres).await;
}

both_backends!(
    websocket_upgrades_come_from_this_servers_own_pages,
    |s: TestServer| async move {
        s.setup_admin().await;
        s.user("bob").await;
        let (_, cookie) = login(&s, "bob").await;
        let own = format!("http://{}", s.base.trim_start_matches("http://"));
        // Another site's page opening a socket with the user's cookie.
        let refused = websocket(
            &s,
            &[
                ("cookie", cookie.as_str()),
                ("origin", "http://evil.example"),
            ],
        )
        .await;
        assert_eq!(refused.err(), Some(403));
        let mut socket = websocket(&s, &[("cookie", cookie.as_str()), ("origin", own.as_str())])
            .await
            .unwrap();
        socket
            .send(Message::text(
                json!({"type": "subscribe", "session_id": "nope"}).to_string(),
            ))
            .await
            .unwrap();
        let reply = socket.next().await.unwrap().unwrap();
        assert!(reply.to_text().unwrap().contains("error"), "{reply:?}");
    }
);

/// Signs in through a proxy that says whether the client used HTTPS; the `Set-Cookie`s of
/// login and logout.
async fn cookies(s: &TestServer, forwarded_proto: Option<&str>) -> (String, String) {
    let mut req = s
        .http
        .post(s.url("/api/auth/login"))
        .json(&json!({"username": "admin", "password": "admin-password"}));
    if let Some(proto) = forwarded_proto {
        req = req.header("x-forwarded-proto", proto);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    let token = resp.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut req = s.http.post(s.url("/api/auth/logout")).bearer_auth(token);
    if let Some(proto) = forwarded_proto {
        req = req.header("x-forwarded-proto", proto);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let cleared = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    (set, cleared)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cookie_is_secure_when_a_trusted_proxy_says_https() {
    // The test client is on loopback, which is trusted by default.
    let s = TestServer::start(Backend::Sqlite).await;
    s.setup_admin().await;
    for cookie in <[String; 2]>::from(cookies(&s, Some("https")).await) {
        assert!(cookie.contains("; Secure"), "{cookie}");
    }
    for cookie in <[String; 2]>::from(cookies(&s, None).await) {
        assert!(!cookie.contains("Secure"), "{cookie}");
    }
    // From a peer that is not a trusted proxy, the header means nothing.
    let http = HttpSettings {
        trusted_proxies: vec!["10.0.0.0/8".into()],
        ..HttpSettings::default()
    };
    let s = TestServer::start_with(Backend::Sqlite, http).await;
    s.setup_admin().await;
    let (set, _) = cookies(&s, Some("https")).await;
    assert!(!set.contains("Secure"), "{set}");
}
