//! The first hour with providers: pointing one at a local server and back at the vendor,
//! what `/api/providers` says is missing, a server's own models, what local runs cost, money
//! in the API, and `/v1` answers that hold every step's text.

use kelp_tests::agent::{SseReader, ask_and_wait, provider_plugin, setup, upload};
use kelp_tests::both_backends;
use kelp_tests::server::{Backend, Settings, TestServer};
use kelp_tests::vendor::{FakeVendor, Flavor, Reply};
use kelp_tests::{manifest, pack};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn providers(s: &TestServer, token: &str) -> Value {
    let (status, list) = s.send("GET", "/api/providers", Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list
}

fn find<'a>(list: &'a Value, id: &str) -> &'a Value {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("no provider {id} in {list}"))
}

async fn put_auth(s: &TestServer, token: &str, id: &str, body: Value) -> Value {
    let (status, out) = s
        .send(
            "PUT",
            &format!("/api/providers/{id}/auth"),
            Some(token),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    out
}

/// The approvals of an instance, as admins see them.
async fn granted(s: &TestServer, token: &str, id: &str) -> Value {
    let (_, instance) = s
        .send(
            "GET",
            &format!("/api/plugin-instances/{id}"),
            Some(token),
            None,
        )
        .await;
    instance["granted"].clone()
}

both_backends!(
    switching_from_a_local_server_to_the_vendor_is_one_call,
    |s: TestServer| async move {
        let vendor = FakeVendor::start(Flavor::OpenAi).await;
        let a = setup(&s, &vendor, "gpt-4o-mini").await;
        // The stand-in's address is what every view shows admins, next to the vendor's.
        let list = providers(&s, &a.admin).await;
        let openai = find(&list, "openai");
        assert_eq!(openai["base_url"], vendor.base_url(), "{openai}");
        assert_eq!(openai["default_base_url"], "https://api.openai.com/v1");
        // Setting only a key keeps the stand-in's address, and says where the key goes.
        let out = put_auth(&s, &a.admin, "openai", json!({"api_key": "sk-real"})).await;
        assert_eq!(out["base_url"], vendor.base_url(), "{out}");
        let warning = out["warnings"][0].as_str().unwrap_or_default();
        assert!(warning.contains(&vendor.base_url()), "{out}");
        assert!(warning.contains("\"base_url\": null"), "{out}");

        // The key with `"base_url": null`: the vendor's address, the stand-in's approval gone.
        let out = put_auth(
            &s,
            &a.admin,
            "openai",
            json!({"api_key": "sk-real", "base_url": null}),
        )
        .await;
        assert_eq!(out["base_url"], "https://api.openai.com/v1", "{out}");
        // The stand-in's key was replaced by the new one, not kept beside it.
        assert_eq!(out["removed_secrets"], json!([]), "{out}");
        assert_eq!(out["key"], "set", "{out}");
        assert_eq!(out["warnings"], json!([]), "{out}");
        let grants = granted(&s, &a.admin, "openai").await;
        assert!(
            !grants.to_string().contains("127.0.0.1"),
            "the stand-in's address stays approved: {grants}"
        );
        assert!(grants.to_string().contains("api.openai.com"), "{grants}");

        // Back to the stand-in, then `DELETE` resets key and address in one call.
        put_auth(
            &s,
            &a.admin,
            "openai",
            json!({"base_url": vendor.base_url(), "api_key": "sk-local"}),
        )
        .await;
        let (status, out) = s
            .send("DELETE", "/api/providers/openai/auth", Some(&a.admin), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{out}");
        assert_eq!(out["base_url"], "https://api.openai.com/v1", "{out}");
        assert_eq!(out["removed_secrets"], json!(["API_KEY"]), "{out}");
        assert_eq!(out["key"], "missing", "{out}");
        let (_, instance) = s
            .send("GET", "/api/plugin-instances/openai", Some(&a.admin), None)
            .await;
        assert!(instance["config"].get("base_url").is_none(), "{instance}");
        assert!(!instance.to_string().contains("127.0.0.1"), "{instance}");

        // Members see no addresses, in any view.
        let bob = s.user("bob").await;
        let list = providers(&s, &bob).await;
        let openai = find(&list, "openai");
        assert!(openai.get("base_url").is_none(), "{openai}");
        assert!(openai.get("default_base_url").is_none(), "{openai}");
        assert!(!list.to_string().contains("api.openai.com"), "{list}");
    }
);

both_backends!(
    providers_say_what_stands_in_the_way,
    |s: TestServer| async move {
        let admin = s.setup_admin().await;
        for flavor in [Flavor::OpenAi, Flavor::Ollama] {
            let (_, manifest_path, wasm) = provider_plugin(flavor);
            let (status, body) = upload(&s, &admin, pack(&manifest(manifest_path), wasm)).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        // Ollama's default address is loopback, which is never approved without asking.
        let list = providers(&s, &admin).await;
        let ollama = find(&list, "ollama");
        assert_eq!(ollama["configured"], false, "{ollama}");
        assert_eq!(ollama["address_approved"], false, "{ollama}");
        assert_eq!(ollama["reachable"], Value::Null, "{ollama}");
        let fix = ollama["fix"].as_str().unwrap();
        assert!(
            fix.contains(
                r#"PUT /api/providers/ollama/auth with {"base_url": "http://127.0.0.1:11434"}"#
            ),
            "{fix}"
        );
        // A member learns the same, without the address.
        let bob = s.user("bob").await;
        let list = providers(&s, &bob).await;
        let ollama = find(&list, "ollama");
        assert_eq!(ollama["address_approved"], false, "{ollama}");
        assert!(
            ollama["fix"].as_str().unwrap().contains("ask an admin"),
            "{ollama}"
        );
        assert!(!list.to_string().contains("127.0.0.1"), "{list}");

        // A keyless local server that answers: ready, with no key needed.
        let local = FakeVendor::start(Flavor::OpenAi).await;
        put_auth(&s, &admin, "openai", json!({"base_url": local.base_url()})).await;
        let list = providers(&s, &admin).await;
        let openai = find(&list, "openai");
        assert_eq!(openai["configured"], true, "{openai}");
        assert_eq!(openai["key"], "not_needed", "{openai}");
        assert_eq!(openai["reachable"], true, "{openai}");
        assert_eq!(openai["fix"], Value::Null, "{openai}");
        assert!(
            local.requests().iter().any(|r| r.path == "/v1/models"),
            "its model list was asked for"
        );

        // Approved but nothing listening: unreachable, and what to do about it.
        let gone = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let out = put_auth(
            &s,
            &admin,
            "ollama",
            json!({"base_url": format!("http://{gone}")}),
        )
        .await;
        // The answer to a change does not wait on the server; the list asks it.
        assert_eq!(out["reachable"], Value::Null, "{out}");
        let list = providers(&s, &admin).await;
        let out = find(&list, "ollama");
        assert_eq!(out["address_approved"], true, "{out}");
        assert_eq!(out["reachable"], false, "{out}");
        assert_eq!(out["configured"], false, "{out}");
        assert!(
            out["fix"].as_str().unwrap().contains("nothing answers at"),
            "{out}"
        );
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_server_lists_its_own_models_in_pages() {
    let s = TestServer::start(Backend::Sqlite).await;
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    vendor.set_models(&["qwen2.5-7b-instruct", "llama-3.1-8b"]);
    let a = setup(&s, &vendor, "qwen2.5-7b-instruct").await;
    let (status, models) = s
        .send(
            "GET",
            "/api/providers/openai/models?limit=1",
            Some(&a.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{models}");
    assert_eq!(models["source"], "server", "{models}");
    assert_eq!(models["total"], 2, "{models}");
    assert_eq!(models["next_offset"], 1, "{models}");
    assert_eq!(models["items"][0]["id"], "qwen2.5-7b-instruct", "{models}");
    let (_, rest) = s
        .send(
            "GET",
            "/api/providers/openai/models?offset=1",
            Some(&a.admin),
            None,
        )
        .await;
    assert_eq!(rest["items"][0]["id"], "llama-3.1-8b", "{rest}");
    assert_eq!(rest["next_offset"], Value::Null, "{rest}");
    // None of the vendor's own names, which the server does not serve.
    let all = format!("{models}{rest}");
    assert!(!all.contains("gpt-"), "{all}");

    // Ollama's own list comes from its /api/tags.
    let ollama = FakeVendor::start(Flavor::Ollama).await;
    ollama.set_models(&["mistral:7b"]);
    let (_, manifest_path, wasm) = provider_plugin(Flavor::Ollama);
    let (status, body) = upload(&s, &a.admin, pack(&manifest(manifest_path), wasm)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    put_auth(
        &s,
        &a.admin,
        "ollama",
        json!({"base_url": ollama.base_url()}),
    )
    .await;
    let (status, models) = s
        .send("GET", "/api/providers/ollama/models", Some(&a.admin), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{models}");
    assert_eq!(
        models["items"],
        json!([{"id": "mistral:7b", "context_window": null, "max_output_tokens": null}])
    );

    // A server that cannot list them is a clear error, not the vendor's list.
    let gone = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    put_auth(
        &s,
        &a.admin,
        "ollama",
        json!({"base_url": format!("http://{gone}")}),
    )
    .await;
    let (status, body) = s
        .send("GET", "/api/providers/ollama/models", Some(&a.admin), None)
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["code"], "provider_unreachable", "{body}");
}

/// A server without `[agent.prices]` entries for the instance, as `kelp serve` starts.
async fn unpriced(backend: Backend) -> TestServer {
    TestServer::start_with(backend, Settings::unpriced()).await
}

async fn local_runs_cost_nothing_and_money_is_exact(s: TestServer) {
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    // The README's stand-in: a local server, asked for `gpt-4o-mini`.
    let a = setup(&s, &vendor, "gpt-4o-mini").await;
    let (status, _) = s
        .send(
            "PUT",
            "/api/settings/budget",
            Some(&a.admin),
            Some(json!({"daily_limit_usd": "0.000001"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // Not refused by a budget a vendor's price would break at once.
    vendor.push(Reply::text("free"));
    let (status, out) = ask_and_wait(&s, &a.admin, &a.session_id, "hi").await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["status"], "completed", "{out}");
    assert_eq!(out["cost_usd"], "0.00", "{out}");
    let (_, today) = s
        .send("GET", "/api/costs/today", Some(&a.admin), None)
        .await;
    assert_eq!(today["cost_usd"], "0.00", "{today}");
    assert_eq!(today["calls"], 1, "{today}");
    assert_eq!(today["daily_limit_usd"], "0.000001", "{today}");
    assert_eq!(today["unpriced_models"], json!([]), "{today}");
    let (_, breakdown) = s
        .send("GET", "/api/costs/breakdown", Some(&a.admin), None)
        .await;
    assert_eq!(breakdown["by_model"][0]["pricing"], "local", "{breakdown}");
    assert_eq!(breakdown["by_model"][0]["priced"], true, "{breakdown}");
    let (_, agent) = s
        .send(
            "GET",
            &format!("/api/agents/{}", a.agent_id),
            Some(&a.admin),
            None,
        )
        .await;
    assert_eq!(agent["warnings"], json!([]), "{agent}");
}

// Not `both_backends!`: the default test server prices the instance, and these run on
// `kelp serve` as shipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_runs_cost_nothing_on_sqlite() {
    local_runs_cost_nothing_and_money_is_exact(unpriced(Backend::Sqlite).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_runs_cost_nothing_on_postgres() {
    local_runs_cost_nothing_and_money_is_exact(unpriced(Backend::Postgres).await).await;
}

both_backends!(
    money_is_a_decimal_string_everywhere,
    |s: TestServer| async move {
        // The default test server prices `openai/gpt-4o-mini` at OpenAI's rates.
        let vendor = FakeVendor::start(Flavor::OpenAi).await;
        let a = setup(&s, &vendor, "gpt-4o-mini").await;
        let (status, budget) = s
            .send(
                "PUT",
                "/api/settings/budget",
                Some(&a.admin),
                Some(json!({"daily_limit_usd": "12.50", "monthly_limit_usd": null, "alert_thresholds": [0.5]})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{budget}");
        assert_eq!(budget["daily_limit_usd"], "12.50", "{budget}");
        for bad in [json!("1.0000001"), json!("-1"), json!("ten")] {
            let (status, body) = s
                .send(
                    "PUT",
                    "/api/settings/budget",
                    Some(&a.admin),
                    Some(json!({"daily_limit_usd": bad})),
                )
                .await;
            assert!(status.is_client_error(), "{bad}: {status} {body}");
        }
        vendor.push(Reply::text("priced"));
        let (_, out) = ask_and_wait(&s, &a.admin, &a.session_id, "hi").await;
        let cost = out["cost_usd"].as_str().unwrap_or_else(|| panic!("{out}"));
        assert!(cost != "0.00", "{out}");
        // Exact: at most six decimals, never a float's tail.
        let (whole, fraction) = cost.split_once('.').unwrap();
        assert!(
            whole.parse::<u64>().is_ok() && fraction.len() <= 6,
            "{cost}"
        );
        let (_, run) = s
            .send(
                "GET",
                &format!("/api/runs/{}", out["run_id"].as_str().unwrap()),
                Some(&a.admin),
                None,
            )
            .await;
        assert_eq!(run["cost_usd"], cost, "{run}");
        let (_, today) = s
            .send("GET", "/api/costs/today", Some(&a.admin), None)
            .await;
        assert_eq!(today["cost_usd"], cost, "{today}");
        assert_eq!(today["month_cost_usd"], cost, "{today}");
        let (_, days) = s
            .send("GET", "/api/costs/history?days=1", Some(&a.admin), None)
            .await;
        assert_eq!(days[0]["cost_usd"], cost, "{days}");
        let (_, breakdown) = s
            .send("GET", "/api/costs/breakdown", Some(&a.admin), None)
            .await;
        assert_eq!(breakdown["total"]["cost_usd"], cost, "{breakdown}");
        assert_eq!(
            breakdown["by_model"][0]["pricing"], "instance",
            "{breakdown}"
        );
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_answers_hold_every_step_streamed_or_not() {
    let s = TestServer::start(Backend::Sqlite).await;
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    let a = setup(&s, &vendor, "gpt-4o").await;
    let script = || {
        vendor.push(Reply::ToolCalls {
            text: Some("Let me calculate that.".into()),
            calls: vec![("calc".into(), r#"{"expression": "6 * 7"}"#.into())],
        });
        vendor.push(Reply::text("It is 42."));
    };
    let request = |stream: bool| {
        json!({
            "model": "helper",
            "stream": stream,
            "messages": [{"role": "user", "content": "What is 6*7?"}]
        })
    };
    script();
    let (status, out) = s
        .send(
            "POST",
            "/v1/chat/completions",
            Some(&a.admin),
            Some(request(false)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    let whole = out["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(whole, "Let me calculate that.\n\nIt is 42.");

    script();
    let resp = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&a.admin)
        .json(&request(true))
        .send()
        .await
        .unwrap();
    let mut reader = SseReader::new(resp);
    let mut streamed = String::new();
    while let Some(e) = reader.next().await {
        if let Some(text) = e.data["choices"][0]["delta"]["content"].as_str() {
            streamed.push_str(text);
        }
    }
    assert_eq!(streamed, whole);
}

/// The document says what the answers above are: money a string, the provider's status, the
/// models page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_money_and_provider_status() {
    let s = TestServer::start(Backend::Sqlite).await;
    let (_, doc) = s.send("GET", "/openapi.json", None, None).await;
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["Usd"]["type"], "string", "{}", schemas["Usd"]);
    let usd = json!({"$ref": "#/components/schemas/Usd"});
    assert_eq!(schemas["Totals"]["properties"]["cost_usd"], usd);
    assert_eq!(schemas["Run"]["properties"]["cost_usd"], usd);
    assert_eq!(schemas["RunOutcome"]["properties"]["cost_usd"], usd);
    assert_eq!(
        schemas["KeyState"]["enum"],
        json!(["set", "refused", "missing", "not_needed"])
    );
    for field in [
        "configured",
        "key",
        "address_approved",
        "reachable",
        "fix",
        "base_url",
    ] {
        assert!(
            schemas["Provider"]["properties"].get(field).is_some(),
            "Provider.{field}"
        );
    }
    let models = &doc["paths"]["/api/providers/{id}/models"]["get"]["responses"];
    assert_eq!(
        models["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ModelList"
    );
    assert!(models.get("502").is_some(), "{models}");
    let delete = &doc["paths"]["/api/providers/{id}/auth"]["delete"]["responses"];
    assert_eq!(
        delete["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ProviderAuthChange"
    );
}
