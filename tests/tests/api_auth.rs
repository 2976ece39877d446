//! Setup, login, logout, the current user and API tokens, through real HTTP on both databases.

use kelp::api::http::HttpSettings;
use kelp_tests::both_backends;
use kelp_tests::server::{Backend, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// (method, path, bearer token, body, content type, expected status)
type BadRequest<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    reqwest::Body,
    Option<&'a str>,
    u16,
);

both_backends!(setup_login_me_tokens, |s: TestServer| async move {
    // Setup is open once.
    let admin = s.setup_admin().await;
    let (status, body) = s
        .send(
            "POST",
            "/api/auth/setup",
            None,
            Some(json!({"username": "x", "password": "12345678"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "already_set_up");
    assert!(
        body["error"]["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );

    let (status, me) = s.send("GET", "/api/me", Some(&admin), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (me["username"].as_str(), me["role"].as_str()),
        (Some("admin"), Some("admin"))
    );

    // Login sets an HttpOnly cookie and returns a token.
    let resp = s
        .http
        .post(s.url("/api/auth/login"))
        .json(&json!({"username": "admin", "password": "admin-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();

    // The cookie authenticates reads; writes need this server's own Origin.
    let read = s
        .http
        .get(s.url("/api/me"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    let cross = s
        .http
        .put(s.url("/api/me"))
        .header("cookie", &session)
        .header("origin", "http://evil.example")
        .json(&json!({"display_name": "Mallory"}))
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    let host = s.base.trim_start_matches("http://").to_owned();
    let same = s
        .http
        .put(s.url("/api/me"))
        .header("cookie", &session)
        .header("origin", format!("http://{host}"))
        .json(&json!({"display_name": "The Admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), StatusCode::OK);

    // Wrong password, unknown user: the same 401.
    for (user, pass) in [("admin", "wrong-password"), ("nobody", "whatever-pass")] {
        let (status, body) = s
            .send(
                "POST",
                "/api/auth/login",
                None,
                Some(json!({"username": user, "password": pass})),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"]["code"], "invalid_credentials");
    }

    // API tokens: shown once, listed without value, revocable.
    let (status, created) = s
        .send(
            "POST",
            "/api/tokens",
            Some(&admin),
            Some(json!({"name": "script"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 69);
    let (status, _) = s.send("GET", "/api/me", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = s.send("GET", "/api/tokens", Some(&admin), None).await;
    assert_eq!(list["total"], 1);
    assert!(list["items"][0].get("token").is_none());
    let id = created["id"].as_str().unwrap();
    let (status, _) = s
        .send("DELETE", &format!("/api/tokens/{id}"), Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = s.send("GET", "/api/me", Some(&token), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Another user cannot revoke the admin's tokens: 404, not 403.
    let (_, created) = s
        .send(
            "POST",
            "/api/tokens",
            Some(&admin),
            Some(json!({"name": "second"})),
        )
        .await;
    let alice = s.user("alice").await;
    let (status, _) = s
        .send(
            "DELETE",
            &format!("/api/tokens/{}", created["id"].as_str().unwrap()),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Logout ends the session.
    let (status, _) = s.send("POST", "/api/auth/logout", Some(&admin), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = s.send("GET", "/api/me", Some(&admin), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
});

both_backends!(
    bad_input_is_4xx_with_the_envelope,
    |s: TestServer| async move {
        let admin = s.setup_admin().await;
        let cases: Vec<BadRequest> = vec![
            (
                "POST",
                "/api/auth/login",
                None,
                "{not json".into(),
                Some("application/json"),
                400,
            ),
            (
                "POST",
                "/api/auth/login",
                None,
                r#"{"username": 5, "password": "x"}"#.into(),
                Some("application/json"),
                422,
            ),
            (
                "POST",
                "/api/auth/login",
                None,
                r#"{"username": "a"}"#.into(),
                Some("application/json"),
                422,
            ),
            (
                "POST",
                "/api/auth/login",
                None,
                r#"{"username":"a","password":"b"}"#.into(),
                Some("text/plain"),
                415,
            ),
            ("GET", "/api/me", Some("kelp_bogus"), "".into(), None, 401),
            ("GET", "/api/nope", Some(&admin), "".into(), None, 404),
            (
                "DELETE",
                "/api/tokens/unknown-id",
                Some(&admin),
                "".into(),
                None,
                404,
            ),
            (
                "PUT",
                "/api/me",
                Some(&admin),
                r#"{"display_name": ""}"#.into(),
                Some("application/json"),
                400,
            ),
            (
                "PUT",
                "/api/me",
                Some(&admin),
                r#"{"display_name": "x", "role": "admin"}"#.into(),
                Some("application/json"),
                422,
            ),
        ];
        for (method, path, token, body, content_type, expected) in cases {
            let mut req = s
                .http
                .request(method.parse().unwrap(), s.url(path))
                .body(body);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(ct) = content_type {
                req = req.header("content-type", ct);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let id = resp
                .headers()
                .get("x-request-id")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            assert_eq!(status, expected, "{method} {path}: {body}");
            assert!(
                body["error"]["code"].is_string() && body["error"]["message"].is_string(),
                "{method} {path}: {body}"
            );
            assert_eq!(
                body["error"]["request_id"].as_str(),
                id.as_deref(),
                "{method} {path}"
            );
        }
    }
);

/// Signs in as `username` from `client` (as the proxy reports it in `x-forwarded-for`).
async fn login_from(
    s: &TestServer,
    client: &str,
    username: &str,
    password: &str,
) -> (StatusCode, Value) {
    let resp = s
        .http
        .post(s.url("/api/auth/login"))
        .header("x-forwarded-for", client)
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or_default())
}

/// A server behind a reverse proxy on loopback that reports each client's address.
async fn behind_a_proxy(backend: Backend) -> TestServer {
    let http = HttpSettings {
        client_address_header: Some("x-forwarded-for".into()),
        ..HttpSettings::default()
    };
    TestServer::start_with(backend, http).await
}

/// Ten wrong passwords from one client lock that client out of the account, not the
/// account's owner signing in from elsewhere (before, anyone could lock out the admin).
async fn guessing_locks_out_the_guesser_not_the_owner(backend: Backend) {
    let s = behind_a_proxy(backend).await;
    s.setup_admin().await;
    let guesser = "203.0.113.7";
    for _ in 0..10 {
        let (status, body) = login_from(&s, guesser, "admin", "nope-nope").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let (status, body) = login_from(&s, guesser, "admin", "nope-nope").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "too_many_attempts");
    // The guesser cannot be told from the owner by the password, so it is not checked.
    let (status, _) = login_from(&s, guesser, "admin", "admin-password").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // Entries the guesser puts before the proxy's own are the guesser's claims, not its address.
    let spoofed = format!("198.51.100.1, {guesser}");
    let (status, _) = login_from(&s, &spoofed, "admin", "nope-nope").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // The owner, from another address, signs in.
    let (status, body) = login_from(&s, "198.51.100.1", "admin", "admin-password").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_locks_out_the_guesser_not_the_owner_sqlite() {
    guessing_locks_out_the_guesser_not_the_owner(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_locks_out_the_guesser_not_the_owner_postgres() {
    guessing_locks_out_the_guesser_not_the_owner(Backend::Postgres).await;
}

both_backends!(
    without_a_configured_proxy_header_clients_cannot_name_themselves,
    |s: TestServer| async move {
        s.setup_admin().await;
        // A client rotating made-up `x-forwarded-for` values is still one client: the TCP
        // peer, since no proxy header is configured.
        for n in 0..10 {
            let (status, _) =
                login_from(&s, &format!("198.51.100.{n}"), "admin", "nope-nope").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
        let (status, body) = login_from(&s, "198.51.100.99", "admin", "nope-nope").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    }
);

both_backends!(
    a_burst_of_guesses_is_counted_as_it_arrives,
    |s: TestServer| async move {
        s.setup_admin().await;
        // Thirty concurrent guesses: each is counted before its (slow) password check, so at
        // most the allowance of ten is even checked; the rest are refused outright.
        let burst: Vec<_> = (0..30)
            .map(|_| {
                let (http, url) = (s.http.clone(), s.url("/api/auth/login"));
                tokio::spawn(async move {
                    http.post(url)
                        .json(&json!({"username": "admin", "password": "burst-guess"}))
                        .send()
                        .await
                        .unwrap()
                        .status()
                })
            })
            .collect();
        let (mut checked, mut refused) = (0, 0);
        for b in burst {
            match b.await.unwrap() {
                StatusCode::UNAUTHORIZED => checked += 1,
                StatusCode::TOO_MANY_REQUESTS => refused += 1,
                other => panic!("unexpected {other}"),
            }
        }
        assert!(checked <= 10, "{checked} guesses were checked in one burst");
        assert_eq!(checked + refused, 30);
    }
);

both_backends!(
    an_oversized_body_is_413_with_the_envelope,
    |s: TestServer| async move {
        let admin = s.setup_admin().await;
        let (status, body) = s
            .post_oversized("/api/tokens", &admin, 2 * 1024 * 1024)
            .await;
        assert_eq!(status, 413, "{body}");
        assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    }
);
