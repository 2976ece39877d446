//! What is installed and configured lives in the database; a change made anywhere — through
//! another host's API, or by the `kelp` CLI (a client of the API) — is in effect on every
//! host before its next plugin call.

use std::sync::{Arc, Mutex};

use kelp::plugins::InstallOptions;
use kelp::plugins::grants::Approval;

use kelp_tests::agent::{ask_and_wait, new_session, setup, upload};
use kelp_tests::process::CliUser;
use kelp_tests::server::{Backend, Settings, TestServer};
use kelp_tests::vendor::{FakeVendor, Flavor};
use kelp_tests::{both_backends, components as c, manifest, pack};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn tool_names(s: &TestServer, token: &str) -> Vec<String> {
    let (status, tools) = s.send("GET", "/api/tools", Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "{tools}");
    tools["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{}/{}",
                t["instance"].as_str().unwrap(),
                t["name"].as_str().unwrap()
            )
        })
        .collect()
}

async fn call_tool(s: &TestServer, token: &str, tool: &str, input: Value) -> StatusCode {
    s.send(
        "POST",
        &format!("/api/tools/{tool}"),
        Some(token),
        Some(input),
    )
    .await
    .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_host_is_in_effect_on_the_other_before_its_next_call() {
    let a = TestServer::start(Backend::Postgres).await;
    let first = FakeVendor::start(Flavor::OpenAi).await;
    let second = FakeVendor::start(Flavor::OpenAi).await;
    let set = setup(&a, &first, "gpt-4o").await;
    let b = a.second_host().await;
    // B starts as `kelp serve` does, with everything loaded.
    b.state.runtime.load_all().await.unwrap();
    let (_, run) = ask_and_wait(&b, &set.admin, &set.session_id, "hi").await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(
        first.requests().last().unwrap().header("authorization"),
        Some("Bearer sk-test-secret")
    );

    // The operator replaces the vendor on host A: B's next run must not go to the old one
    // (with a real key, that would send the conversation where the operator no longer wants).
    let (status, body) = a
        .send(
            "PUT",
            "/api/providers/openai/auth",
            Some(&set.admin),
            Some(json!({"base_url": second.base_url(), "api_key": "sk-replaced"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let before = first.request_count();
    let (_, run) = ask_and_wait(&b, &set.admin, &set.session_id, "again").await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(
        first.request_count(),
        before,
        "B still reached the old vendor"
    );
    assert_eq!(
        second.requests().last().unwrap().header("authorization"),
        Some("Bearer sk-replaced")
    );
    let (_, models) = b
        .send(
            "GET",
            "/api/providers/openai/models",
            Some(&set.admin),
            None,
        )
        .await;
    assert_eq!(models["source"], "server", "{models}");
    // B asked the new server, with the new key.
    let listed = second.requests().last().unwrap().clone();
    assert_eq!(listed.path, "/v1/models");
    assert_eq!(listed.header("authorization"), Some("Bearer sk-replaced"));

    // Disabled on A: B refuses the tool, and lists it no more, from its next call on.
    assert_eq!(
        call_tool(&b, &set.admin, "calc/calc", json!({"expression": "1+1"})).await,
        StatusCode::OK
    );
    let (status, _) = a
        .send(
            "POST",
            "/api/plugin-instances/calc/disable",
            Some(&set.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        call_tool(&b, &set.admin, "calc/calc", json!({"expression": "1+1"})).await,
        StatusCode::CONFLICT
    );
    assert!(tool_names(&b, &set.admin).await.is_empty());
    let (_, detail) = b
        .send("GET", "/api/plugins/kelp/calc", Some(&set.admin), None)
        .await;
    assert_eq!(
        detail["instance_details"][0]["status"], "disabled",
        "{detail}"
    );
    let (status, _) = a
        .send(
            "POST",
            "/api/plugin-instances/calc/enable",
            Some(&set.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        call_tool(&b, &set.admin, "calc/calc", json!({"expression": "1+1"})).await,
        StatusCode::OK
    );

    // Installed on A: B lists and serves it; removed on A: B stops serving it.
    let (status, body) = upload(
        &a,
        &set.admin,
        pack(
            &manifest(c::COMPONENT_HOSTILE_MANIFEST),
            c::COMPONENT_HOSTILE_WASM,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(
        tool_names(&b, &set.admin)
            .await
            .contains(&"hostile/echo".to_owned())
    );
    assert_eq!(
        call_tool(&b, &set.admin, "hostile/echo", json!({"x": 1})).await,
        StatusCode::OK
    );
    let (status, _) = a
        .send(
            "DELETE",
            "/api/plugins/test/hostile",
            Some(&set.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        call_tool(&b, &set.admin, "hostile/echo", json!({"x": 1})).await,
        StatusCode::NOT_FOUND
    );
    assert!(
        !tool_names(&b, &set.admin)
            .await
            .contains(&"hostile/echo".to_owned())
    );
}

/// Runs the `kelp` CLI against the server, as an admin signed in to it: the CLI is one more
/// client of the API, with no data directory or database of its own.
fn kelp(s: &TestServer, token: &str, args: &[&str], stdin: &str) -> String {
    let user = CliUser::new(env!("CARGO_BIN_EXE_kelp"));
    let out = user.run_with(args, &[("KELP_URL", &s.base), ("KELP_TOKEN", token)], stdin);
    assert!(out.success, "kelp {args:?} failed\n{out}");
    out.stdout
}

both_backends!(
    the_cli_changing_plugins_under_a_running_server,
    |s: TestServer| async move {
        let admin = s.setup_admin().await;
        let vendor = FakeVendor::start(Flavor::OpenAi).await;
        let packages = tempfile::tempdir().unwrap();
        let write = |name: &str, manifest_path: &str, wasm: &str| {
            let path = packages.path().join(name);
            std::fs::write(&path, pack(&manifest(manifest_path), wasm)).unwrap();
            path.to_str().unwrap().to_owned()
        };
        let calc = write("calc.kelp", c::PLUGIN_CALC_MANIFEST, c::PLUGIN_CALC_WASM);
        let openai = write(
            "openai.kelp",
            c::PLUGIN_OPENAI_MANIFEST,
            c::PLUGIN_OPENAI_WASM,
        );
        // The server has served (and so loaded) before the CLI changes anything.
        assert!(tool_names(&s, &admin).await.is_empty());

        kelp(&s, &admin, &["plugin", "install", &calc, "--yes"], "");
        assert!(
            tool_names(&s, &admin)
                .await
                .contains(&"calc/calc".to_owned())
        );
        assert_eq!(
            call_tool(&s, &admin, "calc/calc", json!({"expression": "6*7"})).await,
            StatusCode::OK
        );
        kelp(&s, &admin, &["plugin", "disable", "calc"], "");
        assert_eq!(
            call_tool(&s, &admin, "calc/calc", json!({"expression": "6*7"})).await,
            StatusCode::CONFLICT
        );
        kelp(&s, &admin, &["plugin", "enable", "calc"], "");
        assert_eq!(
            call_tool(&s, &admin, "calc/calc", json!({"expression": "6*7"})).await,
            StatusCode::OK
        );

        // A provider installed and keyed by the CLI; a new key reaches the next run.
        let config = json!({"base_url": vendor.base_url()}).to_string();
        let grant = format!("http-private:{}", vendor.addr());
        kelp(
            &s,
            &admin,
            &[
                "plugin",
                "install",
                &openai,
                "--grant",
                &grant,
                "--instance-config",
                &config,
            ],
            "",
        );
        kelp(
            &s,
            &admin,
            &["plugin", "secret", "openai", "API_KEY"],
            "sk-cli-first\n",
        );
        let (status, agent) = s
            .send(
                "POST",
                "/api/agents",
                Some(&admin),
                Some(json!({"name": "a", "provider": {"plugin": "openai", "model": "gpt-4o"}})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{agent}");
        let session = new_session(&s, &admin, agent["id"].as_str().unwrap()).await;
        let (_, run) = ask_and_wait(&s, &admin, &session, "hi").await;
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(
            vendor.requests().last().unwrap().header("authorization"),
            Some("Bearer sk-cli-first")
        );
        kelp(
            &s,
            &admin,
            &["plugin", "secret", "openai", "API_KEY"],
            "sk-cli-second\n",
        );
        let (_, run) = ask_and_wait(&s, &admin, &session, "again").await;
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(
            vendor.requests().last().unwrap().header("authorization"),
            Some("Bearer sk-cli-second")
        );
        kelp(&s, &admin, &["plugin", "disable", "openai"], "");
        let before = vendor.request_count();
        let (_, run) = ask_and_wait(&s, &admin, &session, "once more").await;
        assert_eq!(run["status"], "failed", "{run}");
        assert!(run["error"].to_string().contains("disabled"), "{run}");
        assert_eq!(vendor.request_count(), before);

        // Removed by the CLI: no longer listed or served.
        kelp(&s, &admin, &["plugin", "remove", "kelp/calc"], "");
        assert_eq!(
            call_tool(&s, &admin, "calc/calc", json!({"expression": "6*7"})).await,
            StatusCode::NOT_FOUND
        );
        assert!(tool_names(&s, &admin).await.is_empty());
    }
);

/// A loopback site for `test/hostile`: `/gate` answers only once the test opens it (an instance
/// configured with `list_gate` pointing there is held mid-load), and every other path records
/// the `x-api-key` it was sent.
struct Site {
    addr: std::net::SocketAddr,
    keys: Arc<Mutex<Vec<Option<String>>>>,
    open: tokio::sync::watch::Sender<bool>,
    arrived: tokio::sync::watch::Receiver<usize>,
}

impl Site {
    async fn start() -> Site {
        use axum::http::HeaderMap;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let keys: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let (open, opened) = tokio::sync::watch::channel(false);
        let (arrive, arrived) = tokio::sync::watch::channel(0usize);
        let record = keys.clone();
        let app = axum::Router::new()
            .route(
                "/gate",
                axum::routing::get(move || {
                    let mut opened = opened.clone();
                    arrive.send_modify(|n| *n += 1);
                    async move {
                        let _ = opened.wait_for(|open| *open).await;
                        "open"
                    }
                }),
            )
            .fallback(move |headers: HeaderMap| {
                let key = headers
                    .get("x-api-key")
                    .map(|v| v.to_str().unwrap().to_owned());
                record.lock().unwrap().push(key);
                async { "recorded" }
            });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Site {
            addr,
            keys,
            open,
            arrived,
        }
    }

    fn gate(&self) -> String {
        format!("http://{}/gate", self.addr)
    }

    /// Waits until `n` requests in all have reached the gate.
    async fn held(&self, n: usize) {
        let mut arrived = self.arrived.clone();
        arrived.wait_for(|count| *count >= n).await.unwrap();
    }

    fn open_gate(&self) {
        self.open.send_replace(true);
    }

    fn last_key(&self) -> Option<String> {
        self.keys.lock().unwrap().last().cloned().flatten()
    }
}

/// Installs `test/hostile` as instance `hostile` with its `API_KEY` bound to `site` (plain
/// HTTP, which a secret takes only to an address approved as private) and `config`.
async fn install_hostile(s: &TestServer, site: &Site, config: Value) {
    let text = manifest(c::COMPONENT_HOSTILE_MANIFEST).replace(
        r#"host = "api.test""#,
        &format!(r#"host = "{}""#, site.addr),
    );
    let mut approval = Approval::default();
    approval
        .add_item(&format!("http-private:{}", site.addr))
        .unwrap();
    s.state
        .runtime
        .install(
            &pack(&text, c::COMPONENT_HOSTILE_WASM),
            InstallOptions {
                config,
                approval,
                ..InstallOptions::default()
            },
        )
        .await
        .unwrap();
}

async fn put_key(s: &TestServer, token: &str, key: &str) {
    let (status, body) = s
        .send(
            "PUT",
            "/api/plugin-instances/hostile/secrets/API_KEY",
            Some(token),
            Some(json!({"value": key})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

/// The key `hostile` sends to the site now.
async fn key_sent(s: &TestServer, token: &str, site: &Site) -> Option<String> {
    let url = format!("http://{}/key", site.addr);
    let status = call_tool(s, token, "hostile/http", json!({"url": url})).await;
    assert_eq!(status, StatusCode::OK);
    site.last_key()
}

// Two changes to one instance overlap: the admin's config change was being built (with the
// key stored then) when another change stored a new key. Whichever finishes last, the host
// ends up sending the new key — not the one the first build read, stamped as current.
both_backends!(
    overlapping_changes_leave_no_host_with_a_stale_key,
    |s: TestServer| async move {
        let admin = s.setup_admin().await;
        let site = Site::start().await;
        install_hostile(&s, &site, json!({})).await;
        put_key(&s, &admin, "sk-first").await;
        assert_eq!(
            key_sent(&s, &admin, &site).await.as_deref(),
            Some("sk-first")
        );
        // The other change comes from another host where there is one (PostgreSQL), else a
        // concurrent request on this one.
        let b = match s.backend {
            Backend::Postgres => Some(s.second_host().await),
            Backend::Sqlite => None,
        };
        let other = b.as_ref().unwrap_or(&s);

        let patch = s.send(
            "PATCH",
            "/api/plugin-instances/hostile",
            Some(&admin),
            Some(json!({"config": {"list_gate": site.gate()}})),
        );
        let meanwhile = async {
            // The config change is being tried, its key read: store another meanwhile.
            site.held(1).await;
            put_key(other, &admin, "sk-second").await;
            site.open_gate();
        };
        let ((status, body), ()) = tokio::join!(patch, meanwhile);
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            key_sent(&s, &admin, &site).await.as_deref(),
            Some("sk-second"),
            "the host kept the key its config change had read"
        );
        if let Some(b) = &b {
            assert_eq!(
                key_sent(b, &admin, &site).await.as_deref(),
                Some("sk-second")
            );
        }
    }
);

// A plugin change makes the next call rebuild the changed instance, which may take long (a
// compile, a slow listing); calls to other instances do not wait for it.
async fn a_call_does_not_wait_for_another_instances_reload(backend: Backend) {
    // Limits far above the test's own guard: a load held at the gate stays held until the
    // test opens it, never ended by the plugin's HTTP or wall-clock timeout.
    let mut settings = Settings::default();
    settings.plugins.limits.http_timeout_ms = 3_600_000;
    settings.plugins.limits.wall_timeout_ms = 3_600_000;
    let s = TestServer::start_with(backend, settings).await;
    let admin = s.setup_admin().await;
    let site = Site::start().await;
    install_hostile(&s, &site, json!({})).await;
    let (status, body) = upload(
        &s,
        &admin,
        pack(&manifest(c::PLUGIN_CALC_MANIFEST), c::PLUGIN_CALC_WASM),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        call_tool(&s, &admin, "calc/calc", json!({"expression": "1+1"})).await,
        StatusCode::OK
    );
    // Changed elsewhere (another host, the CLI): this host rebuilds it at its next call.
    let instance = s.state.db().get_instance("hostile").await.unwrap().unwrap();
    let config = json!({"list_gate": site.gate()}).to_string();
    s.another_db()
        .await
        .update_instance("hostile", &config, &instance.approval_json)
        .await
        .unwrap()
        .unwrap();

    let listing = s.send("GET", "/api/tools", Some(&admin), None);
    let meanwhile = async {
        site.held(1).await;
        // The listing is rebuilding `hostile` and held there; the gate opens only after this
        // call is answered, so a call that waited for the rebuild would never be.
        let call = call_tool(&s, &admin, "calc/calc", json!({"expression": "2*3"}));
        let status = tokio::time::timeout(std::time::Duration::from_secs(60), call)
            .await
            .expect("the call to calc waited for hostile's reload");
        site.open_gate();
        status
    };
    let ((status, tools), called) = tokio::join!(listing, meanwhile);
    assert_eq!(called, StatusCode::OK);
    assert_eq!(status, StatusCode::OK, "{tools}");
    // The changed instance itself is served as changed.
    let (_, instance) = s
        .send("GET", "/api/plugin-instances/hostile", Some(&admin), None)
        .await;
    assert_eq!(instance["config"]["list_gate"], site.gate(), "{instance}");
    assert_eq!(instance["status"], "loaded", "{instance}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_does_not_wait_for_another_instances_reload_sqlite() {
    a_call_does_not_wait_for_another_instances_reload(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_does_not_wait_for_another_instances_reload_postgres() {
    a_call_does_not_wait_for_another_instances_reload(Backend::Postgres).await;
}

async fn config_value(s: &TestServer, token: &str, key: &str) -> (StatusCode, Value) {
    s.send(
        "POST",
        "/api/tools/hostile/config",
        Some(token),
        Some(json!({"key": key})),
    )
    .await
}

// A reload that the database fails (a timeout, a lost connection) keeps the instance as it
// was and is tried again at the next call; a reload that fails for the instance's own
// reasons still takes it out of service with the error.
both_backends!(
    a_reload_the_database_fails_keeps_the_instance_and_is_retried,
    |s: TestServer| async move {
        let admin = s.setup_admin().await;
        let site = Site::start().await;
        install_hostile(&s, &site, json!({"marker": "one"})).await;
        let (status, out) = config_value(&s, &admin, "marker").await;
        assert_eq!(status, StatusCode::OK, "{out}");
        assert_eq!(out["output"], "\"one\"");

        let other = s.another_db().await;
        let approval = other
            .get_instance("hostile")
            .await
            .unwrap()
            .unwrap()
            .approval_json;
        other
            .update_instance("hostile", r#"{"marker": "two"}"#, &approval)
            .await
            .unwrap()
            .unwrap();
        // The reload reads the package from `plugins`; with the table out of reach every such
        // read fails, as it would with the database timing out.
        sqlx::query("ALTER TABLE plugins RENAME TO plugins_away")
            .execute(&other.pool)
            .await
            .unwrap();
        for _ in 0..2 {
            let (status, out) = config_value(&s, &admin, "marker").await;
            assert_eq!(status, StatusCode::OK, "{out}");
            assert_eq!(out["output"], "\"one\"");
        }
        // Switched off meanwhile: not served as it was, even before its reload succeeds.
        other
            .set_instance_enabled("hostile", false)
            .await
            .unwrap()
            .unwrap();
        let (status, out) = config_value(&s, &admin, "marker").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{out}");
        sqlx::query("ALTER TABLE plugins_away RENAME TO plugins")
            .execute(&other.pool)
            .await
            .unwrap();
        let (status, out) = config_value(&s, &admin, "marker").await;
        assert_eq!(status, StatusCode::CONFLICT, "{out}");
        other
            .set_instance_enabled("hostile", true)
            .await
            .unwrap()
            .unwrap();
        let (status, out) = config_value(&s, &admin, "marker").await;
        assert_eq!(status, StatusCode::OK, "{out}");
        assert_eq!(out["output"], "\"two\"");

        // A config the instance cannot load with, set behind the API's back: not served, and
        // the instance says why.
        other
            .update_instance("hostile", r#"{"bad_schema": true}"#, &approval)
            .await
            .unwrap()
            .unwrap();
        let (status, out) = config_value(&s, &admin, "marker").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{out}");
        let (_, instance) = s
            .send("GET", "/api/plugin-instances/hostile", Some(&admin), None)
            .await;
        assert_eq!(instance["status"], "failed", "{instance}");
        assert!(
            instance["error"].as_str().unwrap().contains("schema"),
            "{instance}"
        );
    }
);

async fn put_auth(s: &TestServer, token: &str, body: Value) -> Value {
    let (status, out) = s
        .send("PUT", "/api/providers/openai/auth", Some(token), Some(body))
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    out
}

// A provider's base URL and key change together, in one change every host sees whole; and a
// key set for one address is never sent to another.
both_backends!(
    a_provider_moved_elsewhere_does_not_take_its_key_along,
    |s: TestServer| async move {
        let first = FakeVendor::start(Flavor::OpenAi).await;
        let second = FakeVendor::start(Flavor::OpenAi).await;
        let set = setup(&s, &first, "gpt-4o").await;
        let generation = || async { s.state.db().plugin_generation().await.unwrap() };

        // Another address, no key given: the stored key is dropped, and the answer says so.
        let before = generation().await;
        let out = put_auth(&s, &set.admin, json!({"base_url": second.base_url()})).await;
        assert_eq!(generation().await, before + 1);
        assert_eq!(out["removed_secrets"], json!(["API_KEY"]), "{out}");
        // No key now; the keyless fake answers without one.
        assert_eq!(out["key"], "not_needed", "{out}");
        assert_eq!(out["base_url"], second.base_url(), "{out}");
        let (_, run) = ask_and_wait(&s, &set.admin, &set.session_id, "hi").await;
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(
            second.requests().last().unwrap().header("authorization"),
            None
        );

        // A key for it, then another path on the same origin: the key stays.
        put_auth(&s, &set.admin, json!({"api_key": "sk-second"})).await;
        let out = put_auth(
            &s,
            &set.admin,
            json!({"base_url": format!("{}/", second.base_url())}),
        )
        .await;
        assert_eq!(out["removed_secrets"], json!([]), "{out}");
        assert_eq!(out["key"], "set", "{out}");
        assert_eq!(out["configured"], true, "{out}");
        let (_, run) = ask_and_wait(&s, &set.admin, &set.session_id, "again").await;
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(
            second.requests().last().unwrap().header("authorization"),
            Some("Bearer sk-second")
        );

        // A new address with its own key: one change, and that key.
        let before = generation().await;
        let out = put_auth(
            &s,
            &set.admin,
            json!({"base_url": first.base_url(), "api_key": "sk-first-again"}),
        )
        .await;
        assert_eq!(generation().await, before + 1);
        assert_eq!(out["removed_secrets"], json!([]), "{out}");
        let (_, run) = ask_and_wait(&s, &set.admin, &set.session_id, "once more").await;
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(
            first.requests().last().unwrap().header("authorization"),
            Some("Bearer sk-first-again")
        );

        // Members see which providers exist and whether they are set up, not where they point.
        let member = s.user("mel").await;
        let (status, list) = s.send("GET", "/api/providers", Some(&member), None).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        assert_eq!(list["items"][0]["id"], "openai", "{list}");
        assert_eq!(list["items"][0]["configured"], true, "{list}");
        assert!(list["items"][0].get("base_url").is_none(), "{list}");
        assert!(
            !list.to_string().contains(&first.addr().to_string()),
            "{list}"
        );
        let (_, list) = s
            .send("GET", "/api/providers", Some(&set.admin), None)
            .await;
        assert_eq!(list["items"][0]["base_url"], first.base_url(), "{list}");
    }
);
