//! The plugins, instances, providers, tools, metrics and OpenAPI endpoints through real HTTP
//! on both databases.

use kelp_tests::server::TestServer;
use kelp_tests::vendor::{FakeVendor, Flavor};
use kelp_tests::{both_backends, components as c, manifest, pack};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn upload(s: &TestServer, token: &str, package: Vec<u8>, query: &str) -> (StatusCode, Value) {
    let resp = s
        .http
        .post(s.url(&format!("/api/plugins{query}")))
        .bearer_auth(token)
        .header("content-type", "application/octet-stream")
        .body(package)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

both_backends!(
    install_list_call_disable_remove,
    |s: TestServer| async move {
        let admin = s.setup_admin().await;
        let alice = s.user("alice").await;
        let calc = pack(&manifest(c::PLUGIN_CALC_MANIFEST), c::PLUGIN_CALC_WASM);

        // Only admins install; broken packages are a 400 with the envelope.
        // (A small body: a server refusing before it read a large upload may close the connection
        // under the client, which is ordinary HTTP but not what this test is about.)
        let (status, _) = upload(&s, &alice, b"x".to_vec(), "").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, body) = upload(&s, &admin, b"not a package".to_vec(), "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("package"),
            "{body}"
        );
        let (status, body) = upload(&s, &admin, calc, "").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["tools"], json!(["calc/calc", "calc/json_query"]));

        // Everyone signed in sees plugins and tools, and can call them.
        let (status, list) = s.send("GET", "/api/plugins", Some(&alice), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["total"], 1);
        assert_eq!(list["items"][0]["name"], "kelp/calc");
        let (status, detail) = s
            .send("GET", "/api/plugins/kelp/calc", Some(&alice), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{detail}");
        assert_eq!(detail["manifest"]["kind"], "tool");
        assert_eq!(
            detail["instance_details"][0]["tools"],
            json!(["calc/calc", "calc/json_query"])
        );
        let (status, out) = s
            .send(
                "POST",
                "/api/tools/calc/calc",
                Some(&alice),
                Some(json!({"expression": "40+2"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{out}");
        assert!(out["output"].as_str().unwrap().contains("42"));

        // Disable: the tool is gone until enabled again.
        let (status, _) = s
            .send("POST", "/api/plugins/kelp/calc/disable", Some(&admin), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = s
            .send(
                "POST",
                "/api/tools/calc/calc",
                Some(&alice),
                Some(json!({"expression": "1"})),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        let (status, _) = s
            .send("POST", "/api/plugins/kelp/calc/enable", Some(&admin), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, tools) = s.send("GET", "/api/tools", Some(&alice), None).await;
        assert_eq!(tools["total"], 2);

        // Metrics count the calls and requests.
        let metrics = s.metrics().await;
        assert!(
            metrics.contains("kelp_plugin_calls_total{outcome=\"ok\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("kelp_plugin_calls_total{outcome=\"refused\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("route=\"/api/tools/{instance}/{tool}\",status=\"200\"} 1"),
            "{metrics}"
        );

        let (status, _) = s
            .send("DELETE", "/api/plugins/kelp/calc", Some(&alice), None)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = s
            .send("DELETE", "/api/plugins/kelp/calc", Some(&admin), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = s
            .send("GET", "/api/plugins/kelp/calc", Some(&admin), None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
);

both_backends!(
    instances_config_grants_and_secrets,
    |s: TestServer| async move {
        let admin = s.setup_admin().await;
        let text = manifest(c::COMPONENT_HOSTILE_MANIFEST).replace(
        "[capabilities]",
        "[config]\ntype = \"object\"\nadditionalProperties = false\nproperties = { greeting = { type = \"string\" } }\n\n[capabilities]",
    );
        let (status, body) = upload(
            &s,
            &admin,
            pack(&text, c::COMPONENT_HOSTILE_WASM),
            "?grants=kv&instance=first",
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["granted"], json!(["kv"]));

        // A second instance; its config is checked against the plugin's schema.
        let (status, body) = s
            .send(
                "POST",
                "/api/plugin-instances",
                Some(&admin),
                Some(json!({"id": "second", "plugin": "test/hostile", "config": {"greeting": 5}})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("config.greeting must be of type string"),
            "{body}"
        );
        let (status, body) = s
        .send("POST", "/api/plugin-instances", Some(&admin), Some(json!({"id": "second", "plugin": "test/hostile", "config": {"greeting": "hey"}, "grants": ["http:api.example.com"]})))
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["granted"], json!(["http:api.example.com"]));
        let (status, _) = s
            .send(
                "POST",
                "/api/plugin-instances",
                Some(&admin),
                Some(json!({"id": "second", "plugin": "test/hostile"})),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        let user = s.user("bob").await;
        let (status, out) = s
            .send(
                "POST",
                "/api/tools/second/config",
                Some(&user),
                Some(json!({"key": "greeting"})),
            )
            .await;
        assert_eq!(
            (status, out["output"].as_str()),
            (StatusCode::OK, Some("\"hey\""))
        );

        // Grants change with PATCH; an unknown grant is a 400.
        let (status, body) = s
            .send(
                "PATCH",
                "/api/plugin-instances/second",
                Some(&admin),
                Some(json!({"grants": ["kv"]})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["granted"], json!(["kv"]));
        let (status, _) = s
            .send(
                "PATCH",
                "/api/plugin-instances/second",
                Some(&admin),
                Some(json!({"grants": ["root"]})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        // Secrets: declared names only, never returned.
        let (status, _) = s
            .send(
                "PUT",
                "/api/plugin-instances/second/secrets/NOPE",
                Some(&admin),
                Some(json!({"value": "x"})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = s
            .send(
                "PUT",
                "/api/plugin-instances/second/secrets/API_KEY",
                Some(&admin),
                Some(json!({"value": "sk-abc-123"})),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, body) = s
            .send("GET", "/api/plugin-instances/second", Some(&admin), None)
            .await;
        assert_eq!(body["secrets"], json!([{"name": "API_KEY", "set": true}]));
        assert!(!body.to_string().contains("sk-abc-123"));
        let (status, _) = s
            .send(
                "DELETE",
                "/api/plugin-instances/second/secrets/API_KEY",
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);

        // Non-admins cannot see or change instances.
        for (method, path) in [
            ("GET", "/api/plugin-instances"),
            ("GET", "/api/plugin-instances/second"),
            ("DELETE", "/api/plugin-instances/second"),
        ] {
            let (status, _) = s.send(method, path, Some(&user), None).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
        }
        let (status, _) = s
            .send(
                "POST",
                "/api/plugin-instances/second/disable",
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = s
            .send("DELETE", "/api/plugin-instances/second", Some(&admin), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = s
            .send("GET", "/api/plugin-instances/second", Some(&admin), None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (_, list) = s
            .send("GET", "/api/plugin-instances", Some(&admin), None)
            .await;
        assert_eq!(list["total"], 1);
    }
);

both_backends!(
    members_see_of_instances_only_what_the_tools_list_shows,
    |s: TestServer| async move {
        let admin = s.setup_admin().await;
        let member = s.user("mallory").await;
        let text = manifest(c::COMPONENT_HOSTILE_MANIFEST).replace(
            "[capabilities]",
            "[config]\ntype = \"object\"\nproperties = { greeting = { type = \"string\" } }\n\n[capabilities]",
        );
        let config = "%7B%22greeting%22%3A%22internal-only%22%7D";
        let (status, body) = upload(
            &s,
            &admin,
            pack(&text, c::COMPONENT_HOSTILE_WASM),
            &format!("?grants=kv,http:intranet.example&instance=open&config={config}"),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        for id in ["hidden", "broken"] {
            let (status, body) = s
                .send(
                    "POST",
                    "/api/plugin-instances",
                    Some(&admin),
                    Some(json!({"id": id, "plugin": "test/hostile", "grants": ["kv"]})),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        let (status, _) = s
            .send(
                "POST",
                "/api/plugin-instances/hidden/disable",
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        // A load error (a secret that no longer opens) is for admins to read.
        sqlx::query("INSERT INTO instance_secrets (instance_id, name, sealed) VALUES ('broken', 'API_KEY', 'garbage')")
            .execute(&s.state.db().pool)
            .await
            .unwrap();
        let _ = s.state.runtime.load_instance("broken").await;

        let (_, tools) = s.send("GET", "/api/tools", Some(&member), None).await;
        let tool_instances: std::collections::BTreeSet<&str> = tools["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["instance"].as_str().unwrap())
            .collect();
        assert_eq!(tool_instances, ["open"].into());

        let (status, detail) = s
            .send("GET", "/api/plugins/test/hostile", Some(&member), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{detail}");
        assert_eq!(detail["instances"], json!(["open"]));
        let details = detail["instance_details"].as_array().unwrap();
        assert_eq!(details.len(), 1, "{detail}");
        let open = details[0].as_object().unwrap();
        let keys: std::collections::BTreeSet<&str> = open.keys().map(String::as_str).collect();
        assert_eq!(keys, ["id", "plugin", "tools"].into(), "{detail}");
        assert!(
            open["tools"]
                .as_array()
                .unwrap()
                .contains(&json!("open/echo"))
        );
        let text = detail.to_string();
        for private in [
            "internal-only",
            "intranet.example",
            "hidden",
            "broken",
            "API_KEY\",\"set",
        ] {
            assert!(
                !text.contains(private),
                "{private} shown to a member: {text}"
            );
        }
        let (_, list) = s.send("GET", "/api/plugins", Some(&member), None).await;
        assert_eq!(list["items"][0]["instances"], json!(["open"]));

        // Admins still see every instance whole.
        let (_, detail) = s
            .send("GET", "/api/plugins/test/hostile", Some(&admin), None)
            .await;
        assert_eq!(detail["instances"], json!(["broken", "hidden", "open"]));
        let details = detail["instance_details"].as_array().unwrap();
        assert_eq!(details[0]["status"], "failed");
        assert!(details[0]["error"].as_str().is_some(), "{detail}");
        assert_eq!(details[1]["status"], "disabled");
        assert_eq!(details[2]["config"]["greeting"], "internal-only");
        assert_eq!(
            details[2]["approved"],
            json!(["http:intranet.example", "kv"])
        );
    }
);

/// A tool manifest of `test/hostile` at `version` asking for `http` hosts, `kv`, and its
/// `API_KEY` at `secret` (a TOML inline table's placement keys).
fn versioned(version: &str, http: &[&str], kv: bool, secret: &str) -> String {
    let http: Vec<String> = http.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "name = \"test/hostile\"\nversion = \"{version}\"\nkind = \"tool\"\n\
         description = \"d\"\nlicense = \"Apache-2.0\"\nwit = \"0.2.0\"\n\n\
         [capabilities]\nhttp = [{}]\nkv = {kv}\n\
         secrets = [{{ name = \"API_KEY\", {secret} }}]\n",
        http.join(", ")
    )
}

both_backends!(
    an_upgrade_asking_for_more_needs_approval_again,
    |s: TestServer| async move {
        let admin = s.setup_admin().await;
        let header = "host = \"api.test\", header = \"x-api-key\"";
        let query = "host = \"api.test\", query = \"key\"";
        let package = |text: String| pack(&text, c::COMPONENT_HOSTILE_WASM);
        let (status, body) = upload(
            &s,
            &admin,
            package(versioned("0.1.0", &["api.test"], false, header)),
            "?approve=requested",
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        // A second instance its operator narrowed to nothing.
        let (status, _) = s
            .send(
                "POST",
                "/api/plugin-instances",
                Some(&admin),
                Some(json!({"id": "narrow", "plugin": "test/hostile"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, _) = s
            .send(
                "PUT",
                "/api/plugin-instances/hostile/secrets/API_KEY",
                Some(&admin),
                Some(json!({"value": "sk-placed"})),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let granted = |id: &'static str| {
            let s = &s;
            let admin = admin.clone();
            async move {
                let (_, body) = s
                    .send(
                        "GET",
                        &format!("/api/plugin-instances/{id}"),
                        Some(&admin),
                        None,
                    )
                    .await;
                assert_eq!(body["status"], "loaded", "{body}");
                body["granted"].clone()
            }
        };
        let version = || async {
            let (_, detail) = s
                .send("GET", "/api/plugins/test/hostile", Some(&admin), None)
                .await;
            detail["version"].as_str().unwrap().to_owned()
        };

        // Asking for nothing new: an upgrade as before.
        let (status, body) = upload(
            &s,
            &admin,
            package(versioned("0.2.0", &["api.test"], false, header)),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");

        // The key moved to a query parameter, a new host and kv: refused, nothing changes.
        let (status, body) = upload(
            &s,
            &admin,
            package(versioned(
                "0.3.0",
                &["api.test", "api.other.test"],
                true,
                query,
            )),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["code"], "approval_required", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        for expected in [
            "test/hostile 0.3.0 asks for more than the installed 0.2.0 was approved for",
            "http:api.other.test",
            "kv",
            "secret API_KEY now goes to the query parameter `key` on api.test (was the header `x-api-key` on api.test)",
            "approve=requested",
        ] {
            assert!(message.contains(expected), "{expected} not in {message}");
        }
        assert_eq!(version().await, "0.2.0");
        assert_eq!(granted("hostile").await, json!(["http:api.test"]));
        // Grants alone do not approve an upgrade's changes.
        let (status, _) = upload(
            &s,
            &admin,
            package(versioned("0.3.0", &["api.test"], false, query)),
            "?grants=http:api.test",
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(version().await, "0.2.0");

        // Approved: every instance gets what is new, but one narrowed stays narrowed.
        let (status, body) = upload(
            &s,
            &admin,
            package(versioned(
                "0.3.0",
                &["api.test", "api.other.test"],
                true,
                query,
            )),
            "?approve=requested",
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(version().await, "0.3.0");
        assert_eq!(
            granted("hostile").await,
            json!(["http:api.test", "http:api.other.test", "kv"])
        );
        assert_eq!(granted("narrow").await, json!(["kv"]));

        // A secret the installed version does not declare may still have a stored value.
        let text = versioned("0.4.0", &["api.test", "api.other.test"], true, query).replace(
            "}]",
            "}, { name = \"OLD_KEY\", host = \"api.other.test\", header = \"x-old\" }]",
        );
        let (status, body) = upload(&s, &admin, package(text), "").await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("secret OLD_KEY (new) goes to the header `x-old` on api.other.test"),
            "{body}"
        );
        assert_eq!(version().await, "0.3.0");
    }
);

both_backends!(
    a_provider_test_sends_the_stored_key_only_to_the_instances_base_url,
    |s: TestServer| async move {
        let own = FakeVendor::start(Flavor::OpenAi).await;
        let elsewhere = FakeVendor::start(Flavor::OpenAi).await;
        let a = kelp_tests::agent::setup(&s, &own, "gpt-4o").await;
        let test = |body: Value| {
            let s = &s;
            let admin = a.admin.clone();
            async move {
                let (status, out) = s
                    .send("POST", "/api/providers/test", Some(&admin), Some(body))
                    .await;
                assert_eq!(status, StatusCode::OK, "{out}");
                out
            }
        };
        // Another base URL without a key: tried without one.
        test(json!({"provider": "openai", "model": "gpt-4o", "base_url": elsewhere.base_url()}))
            .await;
        let reached = elsewhere.requests();
        assert_eq!(reached.len(), 1);
        assert_eq!(reached[0].header("authorization"), None);
        // Another port of the same host is another address too.
        let other_port = own.base_url().replace(
            &own.addr().port().to_string(),
            &elsewhere.addr().port().to_string(),
        );
        test(json!({"provider": "openai", "model": "gpt-4o", "base_url": other_port})).await;
        assert_eq!(elsewhere.requests()[1].header("authorization"), None);
        // With a key given, that key.
        test(json!({"provider": "openai", "model": "gpt-4o", "base_url": elsewhere.base_url(), "api_key": "sk-tried"}))
            .await;
        assert_eq!(
            elsewhere.requests()[2].header("authorization"),
            Some("Bearer sk-tried")
        );
        // The instance's own base URL (another path on it included) keeps the stored key.
        let own_path = format!("{}/", own.base_url());
        for base_url in [Value::Null, json!(own.base_url()), json!(own_path)] {
            let mut body = json!({"provider": "openai", "model": "gpt-4o"});
            if !base_url.is_null() {
                body["base_url"] = base_url;
            }
            let out = test(body).await;
            assert_eq!(out["ok"], true, "{out}");
            assert_eq!(
                own.requests().last().unwrap().header("authorization"),
                Some("Bearer sk-test-secret")
            );
        }
        assert_eq!(elsewhere.requests().len(), 3);
    }
);

both_backends!(provider_credentials, |s: TestServer| async move {
    let admin = s.setup_admin().await;
    // The test provider, declaring an API key bound to its base URL's host.
    let text = manifest(c::COMPONENT_PROVIDER_ECHO_MANIFEST).replace(
        "http = [\"{config.base_url}\"]\n",
        "http = [\"{config.base_url}\"]\n\
         secrets = [{ name = \"API_KEY\", host = \"{config.base_url}\", header = \"authorization\", format = \"Bearer {}\" }]\n",
    );
    assert!(text.contains("secrets ="));
    let (status, body) = upload(
        &s,
        &admin,
        pack(&text, c::COMPONENT_PROVIDER_ECHO_WASM),
        "?instance=local-llm&config=%7B%22base_url%22%3A%22http%3A%2F%2F127.0.0.1%3A9%22%7D",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (_, list) = s.send("GET", "/api/providers", Some(&admin), None).await;
    assert_eq!(list["items"][0]["id"], "local-llm");
    assert_eq!(list["items"][0]["configured"], false);

    let (status, body) = s
        .send(
            "PUT",
            "/api/providers/local-llm/auth",
            Some(&admin),
            Some(json!({"api_key": "sk-local", "base_url": "http://127.0.0.1:11434/v1"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, list) = s.send("GET", "/api/providers", Some(&admin), None).await;
    assert_eq!(list["items"][0]["configured"], true);
    assert_eq!(list["items"][0]["base_url"], "http://127.0.0.1:11434/v1");
    assert!(!list.to_string().contains("sk-local"));
    // The base URL's host is approved — as private, since it is loopback.
    let (_, instance) = s
        .send("GET", "/api/plugin-instances/local-llm", Some(&admin), None)
        .await;
    assert_eq!(
        instance["granted"],
        json!(["http:127.0.0.1:11434 (private allowed)"])
    );

    let (status, _) = s
        .send(
            "PUT",
            "/api/providers/local-llm/auth",
            Some(&admin),
            Some(json!({"base_url": "ftp://x"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A change the instance cannot load with is refused and not stored: the provider keeps
    // running as it was.
    let (status, body) = s
        .send(
            "PATCH",
            "/api/plugin-instances/local-llm",
            Some(&admin),
            Some(json!({"config": {"base_url": "not a url"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (_, instance) = s
        .send("GET", "/api/plugin-instances/local-llm", Some(&admin), None)
        .await;
    assert_eq!(instance["config"]["base_url"], "http://127.0.0.1:11434/v1");
    assert_eq!(instance["status"], "loaded");
    let (status, _) = s
        .send(
            "PUT",
            "/api/providers/nope/auth",
            Some(&admin),
            Some(json!({"api_key": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let user = s.user("carol").await;
    let (status, _) = s
        .send(
            "PUT",
            "/api/providers/local-llm/auth",
            Some(&user),
            Some(json!({"api_key": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, out) = s
        .send(
            "DELETE",
            "/api/providers/local-llm/auth",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["removed_secrets"], json!(["API_KEY"]), "{out}");
    // The plugin has no default address to return to: it keeps its own.
    assert_eq!(out["base_url"], "http://127.0.0.1:11434/v1", "{out}");
    let (_, list) = s.send("GET", "/api/providers", Some(&user), None).await;
    assert_ne!(list["items"][0]["key"], "set", "{list}");
    assert!(list["items"][0].get("base_url").is_none(), "{list}");
});

/// Every `$ref` in the document resolves, and every operation has responses.
fn check_refs(doc: &Value, node: &Value, path: &str) {
    match node {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                let pointer = target
                    .strip_prefix('#')
                    .unwrap_or_else(|| panic!("external ref {target} at {path}"));
                assert!(
                    doc.pointer(pointer).is_some(),
                    "unresolved {target} at {path}"
                );
            }
            for (k, v) in map {
                check_refs(doc, v, &format!("{path}/{k}"));
            }
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, v)| check_refs(doc, v, &format!("{path}/{i}"))),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_document_covers_every_route() {
    let s = TestServer::start(kelp_tests::server::Backend::Sqlite).await;
    let (status, doc) = s.send("GET", "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    check_refs(&doc, &doc, "");
    let paths = doc["paths"].as_object().unwrap();
    for expected in [
        "/api/auth/login",
        "/api/auth/setup",
        "/api/me",
        "/api/tokens",
        "/api/tools",
        "/api/plugins",
        "/api/plugin-instances/{id}/secrets/{name}",
        "/api/providers/{id}/auth",
        "/api/sessions/{id}/messages",
        "/api/sessions/{id}/events",
        "/api/sessions/{id}/abort",
        "/api/ask",
        "/api/ws",
        "/api/runs/{id}",
        "/api/costs/today",
        "/api/costs/history",
        "/api/costs/breakdown",
        "/api/settings/budget",
        "/api/providers/test",
        "/api/providers/{id}/models",
        "/v1/chat/completions",
        "/v1/models",
    ] {
        assert!(
            paths.contains_key(expected),
            "{expected} missing from the OpenAPI document"
        );
    }
    // What OpenAPI 3.1 requires of operations: responses, each with a description, and
    // operation ids unique across the document (checked with openapi-spec-validator too).
    let mut ids = std::collections::HashSet::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{method} {path} has no responses"));
            assert!(!responses.is_empty(), "{method} {path}");
            for (status, response) in responses {
                assert!(
                    response["description"]
                        .as_str()
                        .is_some_and(|d| !d.is_empty()),
                    "{method} {path} {status}"
                );
            }
            // A path parameter must be in the template (a query struct declared without
            // `parameter_in = Query` shows up as a path parameter that is not).
            for param in op["parameters"].as_array().into_iter().flatten() {
                if param["in"] == "path" {
                    let name = param["name"].as_str().unwrap();
                    assert!(
                        path.contains(&format!("{{{name}}}")),
                        "{method} {path}: path parameter `{name}` is not in the path"
                    );
                }
            }
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(ids.insert(id.to_owned()), "operationId {id} repeats");
        }
    }
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert!(schemes.contains_key("bearer") && schemes.contains_key("cookie"));
    assert!(doc["components"]["schemas"].get("ErrorEnvelope").is_some());
}
