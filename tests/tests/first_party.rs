//! The first-party plugins, installed from their real components and called through the
//! real runtime.

use std::collections::HashMap;

use axum::Router;
use axum::http::header;
use axum::routing::get;
use kelp::channels::model::Mode;
use kelp::plugins::{CallError, RuntimeSettings};
use kelp_tests::{Host, components as c, manifest};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn calc_evaluates_and_reports_errors() {
    let host = Host::new().await;
    let id = host
        .install(
            &manifest(c::PLUGIN_CALC_MANIFEST),
            c::PLUGIN_CALC_WASM,
            &[],
            json!({}),
        )
        .await
        .unwrap();
    assert_eq!(id, "calc");
    let out: Value = serde_json::from_str(
        &host
            .runtime
            .call_tool(
                "calc",
                "calc",
                r#"{"expression": "2 * (3 + 4) ^ 2"}"#,
                "u1",
                None,
            )
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(out["result"], 98);
    let err = host
        .runtime
        .call_tool("calc", "calc", r#"{"expression": "1 / 0"}"#, "u1", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::Tool(_)) && err.to_string().to_lowercase().contains("zero"),
        "{err}"
    );
    let out = host
        .runtime
        .call_tool(
            "calc",
            "json_query",
            r#"{"document": {"a": [{"b": 7}, {"b": 9}]}, "path": ".a[*].b"}"#,
            "u1",
            None,
        )
        .await
        .unwrap();
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!([7, 9]));
}

#[tokio::test(flavor = "multi_thread")]
async fn input_is_checked_against_the_tool_schema_before_the_call() {
    let host = Host::new().await;
    host.install(
        &manifest(c::PLUGIN_CALC_MANIFEST),
        c::PLUGIN_CALC_WASM,
        &[],
        json!({}),
    )
    .await
    .unwrap();
    for (input, message) in [
        ("{}", "input.expression is required"),
        (
            r#"{"expression": 5}"#,
            "input.expression must be of type string",
        ),
        ("[]", "input must be of type object"),
    ] {
        let err = host
            .runtime
            .call_tool("calc", "calc", input, "u", None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CallError::InvalidInput(m) if m == message),
            "{input}: {err}"
        );
    }
    // Refused before running: counted as refused, not as a tool error.
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(host.runtime.stats().refused.load(Relaxed), 3);
    assert_eq!(host.runtime.stats().tool_errors.load(Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn http_fetch_returns_readable_text_and_follows_redirects_through_the_host() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route(
            "/page",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    "<html><head><title>T</title><script>var x = 1;</script><style>p{}</style></head>\
                     <body><h1>Kelp &amp; friends</h1><p>First paragraph.</p><p>Second.</p></body></html>",
                )
            }),
        )
        .route("/moved", get(|| async { axum::response::Redirect::temporary("/page") }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let names = HashMap::from([("docs.test".to_owned(), vec![addr])]);
    let host = Host::with(RuntimeSettings::default(), names).await;
    let grant = format!("http-private:docs.test:{}", addr.port());
    host.install(
        &manifest(c::PLUGIN_HTTP_FETCH_MANIFEST),
        c::PLUGIN_HTTP_FETCH_WASM,
        &[&grant],
        json!({}),
    )
    .await
    .unwrap();
    let input = json!({"url": format!("http://docs.test:{}/moved", addr.port())}).to_string();
    let out: Value = serde_json::from_str(
        &host
            .runtime
            .call_tool("http-fetch", "http_fetch", &input, "u", None)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(out["status"], 200);
    assert!(out["url"].as_str().unwrap().ends_with("/page"), "{out}");
    let text = out["text"].as_str().unwrap();
    assert!(
        text.contains("Kelp & friends")
            && text.contains("First paragraph.")
            && text.contains("Second."),
        "{text}"
    );
    assert!(
        !text.contains("var x") && !text.contains("p{}"),
        "scripts and styles are dropped: {text}"
    );

    // A host outside the grant is refused with the capability named.
    let input = json!({"url": "http://elsewhere.test/"}).to_string();
    let err = host
        .runtime
        .call_tool("http-fetch", "http_fetch", &input, "u", None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not granted"), "{err}");
}

/// The channel plugins load (0.2.0 only) and describe their platforms: Telegram polls or
/// takes webhooks and edits; the generic webhook channel only takes webhooks and cannot edit,
/// so the host will send a reply whole.
#[tokio::test(flavor = "multi_thread")]
async fn channel_plugins_load_and_describe_their_platforms() {
    let host = Host::new().await;
    let telegram = host
        .install(
            &manifest(c::PLUGIN_TELEGRAM_MANIFEST),
            c::PLUGIN_TELEGRAM_WASM,
            &["kv", "http:api.telegram.org:443"],
            json!({}),
        )
        .await
        .unwrap();
    let info = host.runtime.channel_info(&telegram).unwrap();
    assert_eq!(info.modes, [Mode::Poll, Mode::Webhook]);
    assert!(info.edit && info.typing && info.markdown, "{info:?}");
    assert_eq!(info.max_text_units, 4096);
    assert!(info.max_poll_wait_s > 0);

    let webhook = host
        .install(
            &manifest(c::PLUGIN_WEBHOOK_MANIFEST),
            c::PLUGIN_WEBHOOK_WASM,
            &["http:chat.example.com:443"],
            json!({"reply_url": "https://chat.example.com/replies"}),
        )
        .await
        .unwrap();
    let info = host.runtime.channel_info(&webhook).unwrap();
    assert_eq!(info.modes, [Mode::Webhook]);
    assert!(!info.edit && !info.typing, "{info:?}");
    // A tool is not a channel.
    assert!(host.runtime.channel_info("nope").is_none());
}
