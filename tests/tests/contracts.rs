//! The contract versions one host serves side by side: components built for the released
//! `kelp:plugin@0.1.0` (prebuilt, checked in: nothing else in the repository builds for 0.1.0
//! any more) install and run beside those built for 0.2.0; each installed plugin records the
//! version it was built for; 0.2.0's provider embeddings reach the vendor.

use kelp::llm::{EmbeddingsRequest, FailureKind};
use kelp::plugins::{PluginRuntime, RuntimeSettings};
use kelp_tests::agent::{ask_and_wait, setup, setup_with_provider};
use kelp_tests::server::TestServer;
use kelp_tests::vendor::{FakeVendor, Flavor, Reply};
use kelp_tests::{Host, both_backends, components as c, manifest};
use serde_json::{Value, json};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/contract-0.1.0");

fn fixture(file: &str) -> String {
    format!("{FIXTURES}/{file}")
}

/// The contract version the database records for installed plugin `name`.
async fn recorded_contract(db: &kelp::store::Db, name: &str) -> Option<String> {
    db.get_plugin(name).await.unwrap().unwrap().contract
}

async fn calc(runtime: &PluginRuntime, instance: &str) -> Value {
    let out = runtime
        .call_tool(instance, "calc", r#"{"expression": "6 * 7"}"#, "u1", None)
        .await
        .unwrap();
    serde_json::from_str(&out).unwrap()
}

/// A 0.1.0 tool and the same tool built for 0.2.0, on one runtime; then a second runtime on
/// the same database loads the 0.1.0 one from its recorded version.
async fn both_versions_of_a_tool_run(host: Host) {
    let old = manifest(&fixture("calc.kelp.toml")).replace("kelp/calc", "old/old-calc");
    host.install(&old, &fixture("calc.wasm"), &[], json!({}))
        .await
        .unwrap();
    host.install(
        &manifest(c::PLUGIN_CALC_MANIFEST),
        c::PLUGIN_CALC_WASM,
        &[],
        json!({}),
    )
    .await
    .unwrap();
    let db = host.runtime.db().clone();
    assert_eq!(
        recorded_contract(&db, "old/old-calc").await.as_deref(),
        Some("0.1.0")
    );
    assert_eq!(
        recorded_contract(&db, "kelp/calc").await.as_deref(),
        Some("0.2.0")
    );
    let instances: Vec<String> = db
        .list_instances()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(instances, ["calc", "old-calc"]);
    for id in &instances {
        assert_eq!(calc(&host.runtime, id).await["result"], 42, "instance {id}");
    }

    let again = PluginRuntime::new(RuntimeSettings::default(), host.dir.path(), db).unwrap();
    let failures = again.load_all().await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    for id in &instances {
        assert_eq!(calc(&again, id).await["result"], 42, "instance {id}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_0_1_0_tool_runs_beside_its_0_2_0_build_on_sqlite() {
    both_versions_of_a_tool_run(Host::new().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_0_1_0_tool_runs_beside_its_0_2_0_build_on_postgres() {
    let (host, _schema) = Host::on_postgres(RuntimeSettings::default()).await;
    both_versions_of_a_tool_run(host).await;
}

both_backends!(
    a_0_1_0_provider_streams_a_chat_with_tool_calls,
    |s: TestServer| async move {
        let vendor = FakeVendor::start(Flavor::OpenAi).await;
        vendor.push(Reply::tool_call("calc", r#"{"expression": "6 * 7"}"#));
        vendor.push(Reply::text("It is 42."));
        let a = setup_with_provider(
            &s,
            &vendor,
            "gpt-4o",
            (
                "openai",
                &fixture("openai.kelp.toml"),
                &fixture("openai.wasm"),
            ),
        )
        .await;
        assert_eq!(
            recorded_contract(s.state.db(), "kelp/openai")
                .await
                .as_deref(),
            Some("0.1.0")
        );
        let (status, body) = ask_and_wait(&s, &a.admin, &a.session_id, "six times seven?").await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        assert_eq!(body["status"], "completed", "{body}");
        assert!(body.to_string().contains("It is 42."), "{body}");
        assert_eq!(vendor.request_count(), 2);
        // 0.1.0 has no embeddings call: said so, and the vendor is not asked.
        let failure = s
            .state
            .runtime
            .embed("openai", &embed_request(&["a"]))
            .await
            .unwrap_err();
        assert_eq!(failure.kind, FailureKind::Unsupported, "{failure:?}");
        assert!(failure.message.contains("0.1.0"), "{failure:?}");
        assert_eq!(vendor.request_count(), 2);
    }
);

fn embed_request(inputs: &[&str]) -> EmbeddingsRequest {
    EmbeddingsRequest {
        model: "text-embedding-3-small".into(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        dimensions: Some(4),
    }
}

/// What the fake vendor's vector for `text` is (its bytes over 256, cycled).
fn expected_vector(text: &str, dims: usize) -> Vec<f32> {
    let bytes = text.as_bytes();
    (0..dims)
        .map(|i| f32::from(bytes[i % bytes.len()]) / 256.0)
        .collect()
}

/// Two texts embedded through the vendor's provider plugin, then a 429 that comes back as
/// one, with its wait.
async fn embeddings_round_trip(s: TestServer, flavor: Flavor) {
    let vendor = FakeVendor::start(flavor).await;
    let a = setup(&s, &vendor, "gpt-4o").await;
    let got = s
        .state
        .runtime
        .embed(&a.provider, &embed_request(&["first", "second"]))
        .await
        .unwrap();
    assert_eq!(
        got.vectors,
        vec![expected_vector("first", 4), expected_vector("second", 4)]
    );
    assert!(got.input_tokens.is_some());
    let sent = vendor.requests();
    let sent = sent.last().unwrap();
    assert_eq!(sent.body["input"], json!(["first", "second"]));
    assert_eq!(sent.body["dimensions"], 4);

    vendor.push(Reply::rate_limited(7));
    let failure = s
        .state
        .runtime
        .embed(&a.provider, &embed_request(&["x"]))
        .await
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::RateLimited, "{failure:?}");
    assert_eq!(failure.retry_after, Some(7), "{failure:?}");
}

both_backends!(openai_embeddings, |s: TestServer| async move {
    embeddings_round_trip(s, Flavor::OpenAi).await;
});

both_backends!(ollama_embeddings, |s: TestServer| async move {
    embeddings_round_trip(s, Flavor::Ollama).await;
});
