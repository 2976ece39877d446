//! The first-party plugins installed and called through the real runtime.

use kelp_tests::{Host, components as c, manifest};
use serde_json::json;

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
    let out = host
        .runtime
        .call_tool(
            "calc",
            "calc",
            r#"{"expression": "2 * (3 + 4) ^ 2"}"#,
            "u1",
            None,
        )
        .await
        .unwrap();
    assert!(out.contains("98"), "{out}");
    let err = host
        .runtime
        .call_tool("calc", "calc", r#"{"expression": "1 / 0"}"#, "u1", None)
        .await
        .unwrap_err();
    assert!(err.to_string().to_lowercase().contains("zero"), "{err}");
    let out = host
        .runtime
        .call_tool(
            "calc",
            "json_query",
            r#"{"document": {"a": [{"b": 7}]}, "path": ".a[0].b"}"#,
            "u1",
            None,
        )
        .await;
    println!("{out:?}");
}
