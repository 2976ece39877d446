//! The hostile-plugin suite: a real component misbehaving in every way we know, each stopped
//! with its own clear error while a well-behaved call running at the same time succeeds and
//! the next call to the hostile plugin is handled normally.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::get;
use kelp::plugins::{CallError, CallLimits, RuntimeSettings};
use kelp_tests::{Host, components as c, manifest};
use serde_json::json;

fn settings() -> RuntimeSettings {
    RuntimeSettings {
        limits: CallLimits {
            timeout_ms: 400,
            memory_mb: 64,
            ..CallLimits::default()
        },
        ..RuntimeSettings::default()
    }
}

async fn hostile_host(grants: &[&str]) -> Host {
    let host = Host::with_settings(settings()).await;
    host.install(
        &manifest(c::COMPONENT_HOSTILE_MANIFEST),
        c::COMPONENT_HOSTILE_WASM,
        grants,
        json!({}),
    )
    .await
    .expect("install hostile");
    host
}

/// Runs `tool` with `input` while an `echo` call runs beside it, then checks the plugin still
/// answers normally. Returns the hostile call's result.
async fn misbehave(host: &Host, tool: &str, input: serde_json::Value) -> Result<String, CallError> {
    let rt = host.runtime.clone();
    let input = input.to_string();
    let tool = tool.to_owned();
    let hostile =
        tokio::spawn(async move { rt.call_tool("hostile", &tool, &input, "u1", None).await });
    // The well-behaved call, concurrently with the misbehaving one.
    let echoed = host
        .runtime
        .call_tool("hostile", "echo", r#"{"ok":1}"#, "u1", None)
        .await;
    assert_eq!(
        echoed.expect("well-behaved call during the hostile one"),
        r#"{"ok":1}"#
    );
    let result = hostile.await.expect("join");
    let after = host
        .runtime
        .call_tool("hostile", "echo", r#"{"after":true}"#, "u1", None)
        .await;
    assert_eq!(
        after.expect("call after the hostile one"),
        r#"{"after":true}"#
    );
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_infinite_loop_is_interrupted_at_its_budget() {
    let host = hostile_host(&[]).await;
    let err = misbehave(&host, "spin", json!({})).await.unwrap_err();
    assert!(
        matches!(err, CallError::TimeBudget { budget_ms: 400, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("time budget of 400 ms"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_unbounded_allocation_hits_the_memory_cap() {
    let host = hostile_host(&[]).await;
    let err = misbehave(&host, "alloc", json!({})).await.unwrap_err();
    assert!(
        matches!(err, CallError::OutOfMemory { limit_mb: 64, .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_unbounded_recursion_overflows_the_stack() {
    let host = hostile_host(&[]).await;
    let err = misbehave(&host, "recurse", json!({})).await.unwrap_err();
    // A Rust guest's frames live mostly on its shadow stack in linear memory, which runs out
    // before the native wasm stack does; either way the error names the recursion.
    assert!(
        matches!(
            err,
            CallError::MemoryFault { .. } | CallError::StackOverflow { .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("recursion"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_panic_is_a_crash_not_a_host_failure() {
    let host = hostile_host(&[]).await;
    let err = misbehave(&host, "panic", json!({})).await.unwrap_err();
    assert!(matches!(err, CallError::Crashed { .. }), "{err}");
    assert!(err.to_string().contains("panicked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_host_files_are_out_of_reach() {
    let host = hostile_host(&["workspace:write"]).await;
    let workspace = tempfile::tempdir().unwrap();
    std::fs::write(workspace.path().join("notes.txt"), "inside").unwrap();
    // A symlink inside the workspace pointing out of it must not be followed.
    #[cfg(unix)]
    std::os::unix::fs::symlink("/etc", workspace.path().join("etc-link")).unwrap();
    let call = |path: &str| {
        let rt = host.runtime.clone();
        let input = json!({"path": path}).to_string();
        let ws = workspace.path().to_owned();
        async move {
            rt.call_tool("hostile", "read_file", &input, "u1", Some(&ws))
                .await
        }
    };
    // The positive control: the granted workspace is readable.
    assert_eq!(call("/workspace/notes.txt").await.unwrap(), "inside");
    for path in [
        "/etc/passwd",
        "/workspace/../etc/passwd",
        "/workspace/../../../../etc/passwd",
        "../etc/passwd",
        "/workspace/etc-link/passwd",
    ] {
        let err = call(path).await.expect_err(path);
        assert!(matches!(err, CallError::Tool(_)), "{path}: {err}");
    }
    // Writes stay inside too, and the host file system is untouched.
    let rt = host.runtime.clone();
    let ws = workspace.path().to_owned();
    let escaped = rt
        .call_tool(
            "hostile",
            "write_file",
            &json!({"path": "/workspace/../escaped.txt", "content": "x"}).to_string(),
            "u1",
            Some(&ws),
        )
        .await;
    assert!(escaped.is_err());
    assert!(
        !workspace
            .path()
            .parent()
            .unwrap()
            .join("escaped.txt")
            .exists()
    );
    // Without a workspace grant there is no file system at all.
    let plain = hostile_host(&[]).await;
    let err = plain
        .runtime
        .call_tool(
            "hostile",
            "read_file",
            r#"{"path":"/workspace/notes.txt"}"#,
            "u1",
            Some(workspace.path()),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Tool(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_workspace_writes_stop_at_the_quota() {
    let host = Host::with_settings(RuntimeSettings {
        workspace_quota_bytes: 1000,
        ..settings()
    })
    .await;
    host.install(
        &manifest(c::COMPONENT_HOSTILE_MANIFEST),
        c::COMPONENT_HOSTILE_WASM,
        &["workspace:write"],
        json!({}),
    )
    .await
    .unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let ws = workspace.path().to_owned();
    let call = |tool: &'static str, input: serde_json::Value| {
        let rt = host.runtime.clone();
        let ws = ws.clone();
        async move {
            rt.call_tool("hostile", tool, &input.to_string(), "u1", Some(&ws))
                .await
        }
    };
    let size = |name: &str| std::fs::metadata(workspace.path().join(name)).map_or(0, |m| m.len());
    let out_of_space = |result: Result<String, CallError>| {
        let err = result.expect_err("a write past the quota");
        assert!(matches!(err, CallError::Tool(_)), "{err}");
        assert!(
            err.to_string()
                .contains("the workspace is full: a write was refused at its quota of 1000 bytes"),
            "{err}"
        );
    };

    // One call cannot write past the quota, whatever it writes in one go.
    out_of_space(
        call(
            "write_file",
            json!({"path": "/workspace/big", "content": "x".repeat(1001)}),
        )
        .await,
    );
    assert_eq!(size("big"), 0);
    call(
        "write_file",
        json!({"path": "/workspace/a", "content": "x".repeat(600)}),
    )
    .await
    .unwrap();
    // Files already there count, whoever wrote them.
    out_of_space(
        call(
            "write_file",
            json!({"path": "/workspace/b", "content": "x".repeat(401)}),
        )
        .await,
    );
    call(
        "write_file",
        json!({"path": "/workspace/b", "content": "x".repeat(400)}),
    )
    .await
    .unwrap();
    // Appending and growing a file by its length are writes too.
    out_of_space(
        call(
            "append_file",
            json!({"path": "/workspace/a", "content": "y"}),
        )
        .await,
    );
    out_of_space(call("set_len", json!({"path": "/workspace/c", "bytes": 1 << 30})).await);
    assert_eq!((size("a"), size("c")), (600, 0));
    // Overwriting or shrinking costs nothing; what was freed can be written again.
    call(
        "write_file",
        json!({"path": "/workspace/a", "content": "z".repeat(600)}),
    )
    .await
    .unwrap();
    call("set_len", json!({"path": "/workspace/a", "bytes": 100}))
        .await
        .unwrap();
    call(
        "append_file",
        json!({"path": "/workspace/a", "content": "y".repeat(500)}),
    )
    .await
    .unwrap();
    assert_eq!((size("a"), size("b")), (600, 400));

    // Without a quota (0) the same write goes through.
    let unlimited = Host::with_settings(RuntimeSettings {
        workspace_quota_bytes: 0,
        ..settings()
    })
    .await;
    unlimited
        .install(
            &manifest(c::COMPONENT_HOSTILE_MANIFEST),
            c::COMPONENT_HOSTILE_WASM,
            &["workspace:write"],
            json!({}),
        )
        .await
        .unwrap();
    unlimited
        .runtime
        .call_tool(
            "hostile",
            "write_file",
            &json!({"path": "/workspace/big", "content": "x".repeat(5000)}).to_string(),
            "u1",
            Some(&ws),
        )
        .await
        .unwrap();
}

/// A loopback server standing in for sites on the internet. Records the `x-api-key` header
/// of each request (and the query) so tests can see where a secret went.
struct Site {
    addr: SocketAddr,
    seen: Seen,
}

/// `(request URI, x-api-key header)` of each request to the recording route.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

async fn site() -> Site {
    let seen: Seen = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let record = seen.clone();
    let app = Router::new()
        .route("/ok", get(|| async { "hello" }))
        // A careless or hostile bound host that echoes the request's credentials.
        .route(
            "/echo-key",
            get(|headers: HeaderMap| async move {
                let key = headers
                    .get("x-api-key")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                ([("x-echo", key.clone())], format!("you sent {key}"))
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(1200)).await;
                "slow hello"
            }),
        )
        .route(
            "/redirect",
            get(move || async move {
                (
                    StatusCode::FOUND,
                    [(
                        header::LOCATION,
                        format!("http://other.test:{}/ok", addr.port()),
                    )],
                    "",
                )
            }),
        )
        .fallback(move |uri: axum::http::Uri, headers: HeaderMap| {
            let record = record.clone();
            async move {
                let key = headers
                    .get("x-api-key")
                    .map(|v| v.to_str().unwrap().to_owned());
                record.lock().unwrap().push((uri.to_string(), key));
                "recorded"
            }
        });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Site { addr, seen }
}

fn names(addr: SocketAddr) -> HashMap<String, Vec<SocketAddr>> {
    ["api.test", "other.test", "evil.test"]
        .iter()
        .map(|n| (n.to_string(), vec![addr]))
        .collect()
}

async fn http_call(
    host: &Host,
    url: &str,
    headers: serde_json::Value,
) -> Result<serde_json::Value, CallError> {
    let input = json!({"url": url, "headers": headers}).to_string();
    host.runtime
        .call_tool("hostile", "http", &input, "u1", None)
        .await
        .map(|out| serde_json::from_str(&out).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_only_granted_hosts_public_addresses_and_no_followed_redirects() {
    let site = site().await;
    let port = site.addr.port();
    let host = Host::with(settings(), names(site.addr)).await;
    let api = format!("api.test:{port}");
    let evil = format!("evil.test:{port}");
    host.install(
        &manifest(c::COMPONENT_HOSTILE_MANIFEST),
        c::COMPONENT_HOSTILE_WASM,
        &[&format!("http-private:{api}"), &format!("http:{evil}")],
        json!({}),
    )
    .await
    .unwrap();

    // Granted (and approved as private, since the fake site is on loopback).
    let ok = http_call(&host, &format!("http://{api}/ok"), json!({}))
        .await
        .unwrap();
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["body"], "hello");

    // A host that was never granted.
    let err = http_call(&host, &format!("http://other.test:{port}/ok"), json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Tool(_)) && err.to_string().contains("not granted"),
        "{err}"
    );

    // A granted hostname that resolves to a loopback address, without private approval.
    let err = http_call(&host, &format!("http://{evil}/ok"), json!({}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");
    // The same for a literal address.
    let err = http_call(&host, &format!("http://127.0.0.1:{port}/ok"), json!({}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not granted"), "{err}");

    // A redirect to a host that is not granted comes back to the guest, not followed...
    let redirect = http_call(&host, &format!("http://{api}/redirect"), json!({}))
        .await
        .unwrap();
    assert_eq!(redirect["status"], 302);
    let location = redirect["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "location")
        .map(|h| h[1].as_str().unwrap().to_owned())
        .unwrap();
    // ...and following it by hand is refused.
    let err = http_call(&host, &location, json!({})).await.unwrap_err();
    assert!(err.to_string().contains("not granted"), "{err}");
    assert!(
        site.seen.lock().unwrap().is_empty(),
        "no request may reach the recording route"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g_a_secret_goes_only_to_its_bound_position() {
    let site = site().await;
    let port = site.addr.port();
    let host = Host::with(settings(), names(site.addr)).await;
    let manifest_text = manifest(c::COMPONENT_HOSTILE_MANIFEST).replace(
        r#"host = "api.test""#,
        &format!(r#"host = "api.test:{port}""#),
    );
    host.install(
        &manifest_text,
        c::COMPONENT_HOSTILE_WASM,
        &[
            &format!("http-private:api.test:{port}"),
            &format!("http-private:other.test:{port}"),
        ],
        json!({}),
    )
    .await
    .unwrap();
    let secret = "sk-live-0123456789abcdef";
    host.runtime
        .set_secret("hostile", "API_KEY", secret)
        .await
        .unwrap();

    // The bound host gets it, in the bound header.
    http_call(&host, &format!("http://api.test:{port}/bound"), json!({}))
        .await
        .unwrap();
    // Another granted host does not.
    http_call(
        &host,
        &format!("http://other.test:{port}/elsewhere"),
        json!({}),
    )
    .await
    .unwrap();
    // The guest cannot set the bound header itself (to redirect the value or spoof it).
    let err = http_call(
        &host,
        &format!("http://api.test:{port}/spoof"),
        json!({"x-api-key": "guess"}),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CallError::Tool(_)), "{err}");

    // A bound host echoing the secret back does not hand it to the guest.
    let echoed = http_call(
        &host,
        &format!("http://api.test:{port}/echo-key"),
        json!({}),
    )
    .await
    .unwrap();
    assert!(!echoed.to_string().contains(secret), "{echoed}");
    assert!(
        echoed["body"]
            .as_str()
            .unwrap()
            .contains("[REDACTED:API_KEY]"),
        "{echoed}"
    );

    let seen = site.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            ("/bound".to_owned(), Some(secret.to_owned())),
            ("/elsewhere".to_owned(), None)
        ],
        "the secret reached exactly the bound header of the bound host"
    );
    // Neither in the query nor anywhere in what the other host received.
    assert!(seen.iter().all(|(uri, _)| !uri.contains(secret)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h_a_secret_goes_only_to_its_bound_port_and_never_in_the_clear_to_an_https_binding() {
    let site = site().await;
    let port = site.addr.port();
    let secret = "sk-live-0123456789abcdef";
    let grant = format!("http-private:api.test:{port}");

    // The manifest binds the key to `api.test` without a port: the service on the default
    // port, not whatever listens on another port of that machine.
    let host = Host::with(settings(), names(site.addr)).await;
    host.install(
        &manifest(c::COMPONENT_HOSTILE_MANIFEST),
        c::COMPONENT_HOSTILE_WASM,
        &[&grant],
        json!({}),
    )
    .await
    .unwrap();
    host.runtime
        .set_secret("hostile", "API_KEY", secret)
        .await
        .unwrap();
    http_call(
        &host,
        &format!("http://api.test:{port}/other-port"),
        json!({}),
    )
    .await
    .unwrap();

    // Bound through `{config.base_url}` to an https URL: plain http to the same host and port
    // is refused, even though the address is approved as private.
    let bound_to_config = manifest(c::COMPONENT_HOSTILE_MANIFEST)
        .replace(r#"host = "api.test""#, r#"host = "{config.base_url}""#)
        + "\n[config]\ntype = \"object\"\nproperties = { base_url = { type = \"string\" } }\n";
    let tls = Host::with(settings(), names(site.addr)).await;
    tls.install(
        &bound_to_config,
        c::COMPONENT_HOSTILE_WASM,
        &[&grant],
        json!({"base_url": format!("https://api.test:{port}/v1")}),
    )
    .await
    .unwrap();
    tls.runtime
        .set_secret("hostile", "API_KEY", secret)
        .await
        .unwrap();
    let err = http_call(&tls, &format!("http://api.test:{port}/plain"), json!({}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("sent only over https"), "{err}");
    assert!(!err.to_string().contains(secret), "{err}");

    // The local model server's case: an http base URL on an address approved as private.
    let local = Host::with(settings(), names(site.addr)).await;
    local
        .install(
            &bound_to_config,
            c::COMPONENT_HOSTILE_WASM,
            &[&grant],
            json!({"base_url": format!("http://api.test:{port}/v1")}),
        )
        .await
        .unwrap();
    local
        .runtime
        .set_secret("hostile", "API_KEY", secret)
        .await
        .unwrap();
    http_call(&local, &format!("http://api.test:{port}/local"), json!({}))
        .await
        .unwrap();

    assert_eq!(
        site.seen.lock().unwrap().clone(),
        vec![
            ("/other-port".to_owned(), None),
            ("/local".to_owned(), Some(secret.to_owned())),
        ],
        "the key went only to the local server it is bound to"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i_huge_output_is_refused() {
    let host = hostile_host(&[]).await;
    let err = misbehave(&host, "huge_output", json!({"bytes": 3 * 1024 * 1024}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::OutputTooLarge { limit: 1048576, .. }),
        "{err}"
    );
    // Output under the cap is fine.
    let ok = host
        .runtime
        .call_tool("hostile", "huge_output", r#"{"bytes": 1000}"#, "u1", None)
        .await
        .unwrap();
    assert_eq!(ok.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn j_spinning_plugins_do_not_starve_host_timers() {
    let mut s = settings();
    s.limits.timeout_ms = 1500;
    let host = Host::with_settings(s).await;
    host.install(
        &manifest(c::COMPONENT_HOSTILE_MANIFEST),
        c::COMPONENT_HOSTILE_WASM,
        &[],
        json!({}),
    )
    .await
    .unwrap();
    // A host task that wants to run every 10 ms; record how late it ever was.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = done.clone();
    let timer = tokio::spawn(async move {
        let mut worst = Duration::ZERO;
        let mut next = Instant::now();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            next += Duration::from_millis(10);
            tokio::time::sleep_until(next.into()).await;
            worst = worst.max(Instant::now().saturating_duration_since(next));
        }
        worst
    });
    // Two spinners: as many as the runtime has worker threads.
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let rt = host.runtime.clone();
            tokio::spawn(async move { rt.call_tool("hostile", "spin", "{}", "u1", None).await })
        })
        .collect();
    for s in spinners {
        let err = s.await.unwrap().unwrap_err();
        assert!(matches!(err, CallError::TimeBudget { .. }), "{err}");
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let worst = timer.await.unwrap();
    // Without yielding, both workers would be held for the whole 1.5 s budget. The bound
    // is generous for a loaded machine; it tests starvation, not speed.
    assert!(
        worst < Duration::from_millis(500),
        "timer task was {worst:?} late while plugins spun"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k_waiting_in_a_host_import_is_not_computing() {
    let site = site().await;
    let port = site.addr.port();
    let host = Host::with(settings(), names(site.addr)).await;
    host.install(
        &manifest(c::COMPONENT_HOSTILE_MANIFEST),
        c::COMPONENT_HOSTILE_WASM,
        &[&format!("http-private:api.test:{port}")],
        json!({}),
    )
    .await
    .unwrap();
    // The server takes 1.2 s; the plugin's budget is 400 ms of computation.
    let out = http_call(&host, &format!("http://api.test:{port}/slow"), json!({}))
        .await
        .unwrap();
    assert_eq!(out["body"], "slow hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_import_that_never_returns_hits_the_wall_clock_limit() {
    let site = site().await;
    let port = site.addr.port();
    let mut s = settings();
    s.limits.wall_timeout_ms = 300;
    let host = Host::with(s, names(site.addr)).await;
    host.install(
        &manifest(c::COMPONENT_HOSTILE_MANIFEST),
        c::COMPONENT_HOSTILE_WASM,
        &[&format!("http-private:api.test:{port}")],
        json!({}),
    )
    .await
    .unwrap();
    let err = http_call(&host, &format!("http://api.test:{port}/slow"), json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::WallTimeout { limit_ms: 300, .. }),
        "{err}"
    );
    assert!(
        host.runtime
            .call_tool("hostile", "echo", "{}", "u1", None)
            .await
            .is_ok()
    );
}

/// A guest that sleeps through WASI's clocks is not computing, but the wait is its own choice,
/// not the host's: it counts against the budget, so a sleeper gives its call slot back at its
/// budget, not at the wall-clock limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m_sleeping_is_stopped_at_the_budget_while_other_calls_flow() {
    let mut s = settings();
    s.max_concurrent_plugin_calls = 2;
    s.limits.wall_timeout_ms = 15_000;
    let host = Host::with_settings(s).await;
    host.install(
        &manifest(c::COMPONENT_HOSTILE_MANIFEST),
        c::COMPONENT_HOSTILE_WASM,
        &[],
        json!({}),
    )
    .await
    .unwrap();
    let call = |tool: &'static str, input: serde_json::Value| {
        let rt = host.runtime.clone();
        tokio::spawn(async move {
            rt.call_tool("hostile", tool, &input.to_string(), "u1", None)
                .await
        })
    };
    // As many sleepers as there are call slots; the normal calls queue behind them.
    let sleepers: Vec<_> = (0..2)
        .map(|_| call("sleep", json!({"ms": 600_000})))
        .collect();
    let echoes: Vec<_> = (0..4).map(|n| call("echo", json!({"n": n}))).collect();
    for sleeper in sleepers {
        let err = sleeper.await.unwrap().unwrap_err();
        assert!(
            matches!(err, CallError::TimeBudget { budget_ms: 400, .. }),
            "{err}"
        );
    }
    for (n, echo) in echoes.into_iter().enumerate() {
        assert_eq!(echo.await.unwrap().unwrap(), json!({"n": n}).to_string());
    }
    // A short sleep within the budget is fine.
    let slept = call("sleep", json!({"ms": 50})).await.unwrap();
    assert_eq!(slept.unwrap(), "slept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_calls_beyond_capacity_queue_instead_of_failing() {
    let site = site().await;
    let port = site.addr.port();
    let mut s = settings();
    s.max_concurrent_plugin_calls = 2;
    let host = Host::with(s, names(site.addr)).await;
    host.install(
        &manifest(c::COMPONENT_HOSTILE_MANIFEST),
        c::COMPONENT_HOSTILE_WASM,
        &[&format!("http-private:api.test:{port}")],
        json!({}),
    )
    .await
    .unwrap();
    // 24 calls at once against a pool of 2 slots; half of them hold their slot while waiting.
    let calls: Vec<_> = (0..24)
        .map(|i| {
            let rt = host.runtime.clone();
            let input = if i % 2 == 0 {
                json!({"url": format!("http://api.test:{port}/ok")}).to_string()
            } else {
                json!({"n": i}).to_string()
            };
            let tool = if i % 2 == 0 { "http" } else { "echo" };
            tokio::spawn(async move { rt.call_tool("hostile", tool, &input, "u1", None).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().expect("a queued call must succeed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_a_huge_error_message_is_bounded_like_output() {
    let host = hostile_host(&[]).await;
    let err = misbehave(&host, "huge_error", json!({"bytes": 3 * 1024 * 1024}))
        .await
        .unwrap_err();
    let shown: String = err.to_string().chars().take(200).collect();
    assert!(
        matches!(err, CallError::OutputTooLarge { limit: 1048576, .. }),
        "{shown}"
    );
    // An error message under the cap reaches the caller as the tool's error.
    let err = host
        .runtime
        .call_tool("hostile", "huge_error", r#"{"bytes": 1000}"#, "u1", None)
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Tool(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o_tool_input_is_checked_against_its_whole_schema() {
    let host = hostile_host(&[]).await;
    let call = |input: serde_json::Value| {
        let rt = host.runtime.clone();
        async move {
            rt.call_tool("hostile", "strict", &input.to_string(), "u1", None)
                .await
        }
    };
    let ok = json!({"id": "report-7", "kind": "file", "size": "10k"});
    assert_eq!(call(ok.clone()).await.unwrap(), ok.to_string());
    for (bad, message) in [
        (
            json!({"id": "Report 7"}),
            "input.id must match the pattern ^[a-z][a-z0-9-]*$",
        ),
        (
            json!({"id": "a", "kind": "dir"}),
            "input.kind must be \"file\"",
        ),
        (
            json!({"id": "a", "size": "big"}),
            "input.size matches none of the allowed forms",
        ),
        (
            json!({"id": "a", "extra": 1}),
            "input.extra is not a known field",
        ),
    ] {
        let err = call(bad.clone()).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("invalid input: {message}"),
            "{bad}"
        );
    }
}

/// A tool whose input schema does not compile is refused at install, naming the tool; one
/// already installed (by an older host, or through the database) fails to load with that
/// error as its load error, and is not served.
async fn schema_that_does_not_compile(host: &Host) {
    let err = host
        .install(
            &manifest(c::COMPONENT_HOSTILE_MANIFEST),
            c::COMPONENT_HOSTILE_WASM,
            &[],
            json!({"bad_schema": true}),
        )
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("tool `broken` has an input schema that is not a valid JSON Schema"),
        "{text}"
    );
    assert!(host.runtime.tools().is_empty(), "nothing was installed");

    host.install(
        &manifest(c::COMPONENT_HOSTILE_MANIFEST),
        c::COMPONENT_HOSTILE_WASM,
        &[],
        json!({}),
    )
    .await
    .unwrap();
    host.runtime
        .db()
        .update_instance("hostile", r#"{"bad_schema": true}"#, "{}")
        .await
        .unwrap();
    let err = host.runtime.load_instance("hostile").await.unwrap_err();
    assert!(format!("{err:#}").contains("tool `broken`"), "{err:#}");
    let shown = host.runtime.load_error("hostile").unwrap();
    assert!(shown.contains("tool `broken`"), "{shown}");
    let call = host
        .runtime
        .call_tool("hostile", "echo", "{}", "u1", None)
        .await;
    assert!(
        matches!(call, Err(CallError::UnknownInstance(_))),
        "{call:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p_a_schema_that_does_not_compile_is_refused_on_sqlite() {
    schema_that_does_not_compile(&Host::with_settings(settings()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p_a_schema_that_does_not_compile_is_refused_on_postgres() {
    let (host, _schema) = Host::on_postgres(settings()).await;
    schema_that_does_not_compile(&host).await;
}

/// One owner's calls beyond `max_plugin_calls_per_user` wait for that owner's own calls, not
/// for a slot: another user's call goes through meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q_one_users_calls_wait_for_each_other_not_for_everyone() {
    let mut s = settings();
    s.max_plugin_calls_per_user = 1;
    s.limits.timeout_ms = 5_000;
    let host = Host::with_settings(s).await;
    host.install(
        &manifest(c::COMPONENT_HOSTILE_MANIFEST),
        c::COMPONENT_HOSTILE_WASM,
        &[],
        json!({}),
    )
    .await
    .unwrap();
    let call = |owner: &'static str, tool: &'static str, input: serde_json::Value| {
        let rt = host.runtime.clone();
        tokio::spawn(async move {
            rt.call_tool("hostile", tool, &input.to_string(), owner, None)
                .await
        })
    };
    // Stopped at its 5 s budget.
    let sleeper = call("alice", "sleep", json!({"ms": 600_000}));
    // Alice has a call in flight once she holds her share (it is free: taken at once).
    kelp_tests::agent::eventually("alice's first call under way", || async {
        host.runtime.owners_with_calls() == 1
    })
    .await;
    let alices = call("alice", "echo", json!({"n": 1}));
    let bobs = call("bob", "echo", json!({"n": 2}));
    assert!(bobs.await.unwrap().is_ok());
    assert!(!sleeper.is_finished(), "bob did not wait for alice's calls");
    assert!(alices.await.unwrap().is_ok());
    assert!(
        sleeper.is_finished(),
        "alice's second call waited for her first"
    );
    assert_eq!(host.runtime.owners_with_calls(), 0);
}
