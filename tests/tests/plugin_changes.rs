//! What is installed and configured lives in the database; a change made anywhere — through
//! another host's API, or by the `kelp` CLI writing the database while a server runs — is in
//! effect on every host before its next plugin call.

use std::process::{Command, Output, Stdio};

use kelp_tests::agent::{ask_and_wait, new_session, setup, upload};
use kelp_tests::server::{Backend, TestServer};
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
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
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
    assert!(models.is_array(), "{models}");

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

/// Runs the `kelp` binary on the server's data directory and database, as an operator does
/// on the server's machine.
fn kelp(s: &TestServer, args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut command = Command::new(env!("CARGO_BIN_EXE_kelp"));
    command
        .args(args)
        .env("KELP_DATA_DIR", s.dir.path())
        .env_remove("KELP_DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(url) = s.database_url() {
        command.env("KELP_DATABASE_URL", url);
    }
    let mut child = command.spawn().expect("running kelp");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output: Output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "kelp {args:?} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
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

        kelp(&s, &["plugin", "install", &calc, "--yes"], "");
        assert!(
            tool_names(&s, &admin)
                .await
                .contains(&"calc/calc".to_owned())
        );
        assert_eq!(
            call_tool(&s, &admin, "calc/calc", json!({"expression": "6*7"})).await,
            StatusCode::OK
        );
        kelp(&s, &["plugin", "disable", "calc"], "");
        assert_eq!(
            call_tool(&s, &admin, "calc/calc", json!({"expression": "6*7"})).await,
            StatusCode::CONFLICT
        );
        kelp(&s, &["plugin", "enable", "calc"], "");
        assert_eq!(
            call_tool(&s, &admin, "calc/calc", json!({"expression": "6*7"})).await,
            StatusCode::OK
        );

        // A provider installed and keyed by the CLI; a new key reaches the next run.
        let config = json!({"base_url": vendor.base_url()}).to_string();
        let grant = format!("http-private:{}", vendor.addr());
        kelp(
            &s,
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
            &["plugin", "secret", "openai", "API_KEY"],
            "sk-cli-second\n",
        );
        let (_, run) = ask_and_wait(&s, &admin, &session, "again").await;
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(
            vendor.requests().last().unwrap().header("authorization"),
            Some("Bearer sk-cli-second")
        );
        kelp(&s, &["plugin", "disable", "openai"], "");
        let before = vendor.request_count();
        let (_, run) = ask_and_wait(&s, &admin, &session, "once more").await;
        assert_eq!(run["status"], "failed", "{run}");
        assert!(run["error"].to_string().contains("disabled"), "{run}");
        assert_eq!(vendor.request_count(), before);

        // Removed by the CLI: no longer listed or served.
        kelp(&s, &["plugin", "remove", "kelp/calc"], "");
        assert_eq!(
            call_tool(&s, &admin, "calc/calc", json!({"expression": "6*7"})).await,
            StatusCode::NOT_FOUND
        );
        assert!(tool_names(&s, &admin).await.is_empty());
    }
);
