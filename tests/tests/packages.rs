//! Installing packages: contract version checks, kinds, the compile cache, instances,
//! secrets at rest, and restarts.

use kelp::plugins::cache::{CacheOutcome, CompileCache};
use kelp::plugins::engine::build_engine;
use kelp::plugins::grants::Approval;
use kelp::plugins::{CallError, InstallOptions, PluginRuntime, RuntimeSettings};
use kelp::store::Db;
use kelp_tests::{Host, components as c, manifest, pack};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn an_unsupported_contract_version_is_refused_naming_both() {
    let host = Host::new().await;
    let err = host
        .install(
            &manifest(c::COMPONENT_FUTURE_WIT_MANIFEST),
            c::COMPONENT_FUTURE_WIT_WASM,
            &[],
            json!({}),
        )
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("uses kelp:plugin@0.3.0")
            && text.contains("supports kelp:plugin@0.1.0, kelp:plugin@0.2.0"),
        "{text}"
    );
    assert!(
        host.runtime.db().list_plugins().await.unwrap().is_empty(),
        "nothing stored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn manifest_and_component_must_agree() {
    let host = Host::new().await;
    // Declares another contract version than the component uses.
    let wrong_wit =
        manifest(c::PLUGIN_CALC_MANIFEST).replace(r#"wit = "0.2.0""#, r#"wit = "0.2.1""#);
    let err = host
        .install(&wrong_wit, c::PLUGIN_CALC_WASM, &[], json!({}))
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains(r#"declares wit = "0.2.1""#),
        "{err:#}"
    );
    // Says provider, exports tool.
    let wrong_kind =
        manifest(c::PLUGIN_CALC_MANIFEST).replace(r#"kind = "tool""#, r#"kind = "provider""#);
    let err = host
        .install(&wrong_kind, c::PLUGIN_CALC_WASM, &[], json!({}))
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("must export kelp:plugin/provider@0.2.0"),
        "{err:#}"
    );
    // A core module is not a component.
    let core = b"\0asm\x01\0\0\0";
    let err = kelp_registry::package::write_package(
        &manifest(c::PLUGIN_CALC_MANIFEST),
        Some(core),
        None,
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("core"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_component_is_test_instantiated_and_installed() {
    let host = Host::new().await;
    let id = host
        .install(
            &manifest(c::COMPONENT_PROVIDER_ECHO_MANIFEST),
            c::COMPONENT_PROVIDER_ECHO_WASM,
            &["http-private:127.0.0.1:9"],
            json!({"base_url": "http://127.0.0.1:9"}),
        )
        .await
        .unwrap();
    let (kind, _, grants, tools) = host.runtime.instance_summary(&id).unwrap();
    assert_eq!(kind.to_string(), "provider");
    assert_eq!(
        grants,
        vec!["http:127.0.0.1:9 (private allowed)".to_owned()]
    );
    assert!(tools.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_packages_are_refused_and_change_nothing() {
    let host = Host::new().await;
    host.install(
        &manifest(c::PLUGIN_CALC_MANIFEST),
        c::PLUGIN_CALC_WASM,
        &[],
        json!({}),
    )
    .await
    .unwrap();
    let mut package = pack(
        &manifest(c::COMPONENT_HOSTILE_MANIFEST),
        c::COMPONENT_HOSTILE_WASM,
    );
    let middle = package.len() / 2;
    package[middle] ^= 0xff;
    let err = host
        .runtime
        .install(&package, InstallOptions::default())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("package"), "{err:#}");
    // The installed plugin is untouched and still works.
    let names: Vec<_> = host
        .runtime
        .db()
        .list_plugins()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, vec!["kelp/calc"]);
    assert!(
        host.runtime
            .call_tool("calc", "calc", r#"{"expression":"1+1"}"#, "u", None)
            .await
            .unwrap()
            .contains(r#""result":2"#)
    );
}

#[test]
fn the_compile_cache_hits_and_rejects_tampered_entries() {
    let dir = tempfile::tempdir().unwrap();
    let engine = build_engine(&RuntimeSettings::default()).unwrap();
    let cache = CompileCache::open(
        &engine,
        &dir.path().join("cache"),
        &dir.path().join("cache.key"),
    )
    .unwrap();
    let wasm = std::fs::read(c::PLUGIN_CALC_WASM).unwrap();
    let sha = kelp::util::sha256_hex(&wasm);
    assert_eq!(
        cache.load_or_compile(&engine, &wasm, &sha).unwrap().1,
        CacheOutcome::Miss
    );
    assert_eq!(
        cache.load_or_compile(&engine, &wasm, &sha).unwrap().1,
        CacheOutcome::Hit
    );

    // Flip one byte of machine code: the HMAC fails, the entry is recompiled, never loaded.
    let entry = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&entry).unwrap();
    let last = bytes.len() - 100;
    bytes[last] ^= 1;
    std::fs::write(&entry, &bytes).unwrap();
    assert_eq!(
        cache.load_or_compile(&engine, &wasm, &sha).unwrap().1,
        CacheOutcome::Rejected
    );
    assert_eq!(
        cache.load_or_compile(&engine, &wasm, &sha).unwrap().1,
        CacheOutcome::Hit
    );

    // Another host key: the entry is not trusted.
    let other = CompileCache::open(
        &engine,
        &dir.path().join("cache"),
        &dir.path().join("other.key"),
    )
    .unwrap();
    assert_eq!(
        other.load_or_compile(&engine, &wasm, &sha).unwrap().1,
        CacheOutcome::Rejected
    );

    // A digest that does not match the wasm is refused outright.
    let err = cache
        .load_or_compile(&engine, &wasm, &"0".repeat(64))
        .err()
        .unwrap();
    assert!(err.to_string().contains("digest mismatch"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_coexist_and_can_be_disabled_enabled_and_removed() {
    let host = Host::new().await;
    let text = manifest(c::COMPONENT_HOSTILE_MANIFEST).replace(
        "[capabilities]",
        "[config]\ntype = \"object\"\n\n[capabilities]",
    );
    let package = pack(&text, c::COMPONENT_HOSTILE_WASM);
    host.runtime
        .install(
            &package,
            InstallOptions {
                instance_id: Some("one".into()),
                config: json!({"greeting": "hi"}),
                approval: Approval::default(),
                approve_changes: false,
            },
        )
        .await
        .unwrap();
    host.runtime
        .create_instance(
            "test/hostile",
            "two",
            json!({"greeting": "hello"}),
            Approval::default(),
        )
        .await
        .unwrap();
    let one = host
        .runtime
        .call_tool("one", "config", r#"{"key":"greeting"}"#, "u", None)
        .await
        .unwrap();
    let two = host
        .runtime
        .call_tool("two", "config", r#"{"key":"greeting"}"#, "u", None)
        .await
        .unwrap();
    assert_eq!((one.as_str(), two.as_str()), (r#""hi""#, r#""hello""#));

    host.runtime.set_enabled("one", false).await.unwrap();
    let err = host
        .runtime
        .call_tool("one", "echo", "{}", "u", None)
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Disabled(_)), "{err}");
    assert!(
        host.runtime
            .call_tool("two", "echo", "{}", "u", None)
            .await
            .is_ok()
    );
    host.runtime.set_enabled("one", true).await.unwrap();
    assert!(
        host.runtime
            .call_tool("one", "echo", "{}", "u", None)
            .await
            .is_ok()
    );

    assert!(host.runtime.remove("test/hostile").await.unwrap());
    let err = host
        .runtime
        .call_tool("two", "echo", "{}", "u", None)
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::UnknownInstance(_)), "{err}");
    assert!(host.runtime.db().list_instances().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_sealed_at_rest_and_only_declared_names_accepted() {
    let host = Host::new().await;
    host.install(
        &manifest(c::COMPONENT_HOSTILE_MANIFEST),
        c::COMPONENT_HOSTILE_WASM,
        &[],
        json!({}),
    )
    .await
    .unwrap();
    let err = host
        .runtime
        .set_secret("hostile", "NOT_DECLARED", "x")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("declares no secret"), "{err}");
    let value = "sk-very-secret-value-42";
    host.runtime
        .set_secret("hostile", "API_KEY", value)
        .await
        .unwrap();
    let sealed = host.runtime.db().sealed_secrets("hostile").await.unwrap();
    assert_eq!(sealed.len(), 1);
    assert!(!sealed[0].1.contains(value));
    // Not in the database file (or its WAL) in any form we wrote.
    for file in ["kelp.db", "kelp.db-wal"] {
        if let Ok(bytes) = std::fs::read(host.dir.path().join(file)) {
            assert!(
                !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                "{file} holds the secret"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_host_serves_the_same_plugins_from_the_database() {
    let host = Host::new().await;
    host.install(
        &manifest(c::PLUGIN_CALC_MANIFEST),
        c::PLUGIN_CALC_WASM,
        &[],
        json!({}),
    )
    .await
    .unwrap();
    let dir = host.dir.path().to_owned();
    drop(host.runtime);
    let db = Db::open_sqlite_in(&dir).await.unwrap();
    let runtime = PluginRuntime::new(RuntimeSettings::default(), &dir, db).unwrap();
    assert!(runtime.load_all().await.unwrap().is_empty());
    let tools: Vec<_> = runtime
        .tools()
        .into_iter()
        .map(|(i, t)| format!("{i}/{}", t.name))
        .collect();
    assert_eq!(tools, vec!["calc/calc", "calc/json_query"]);
    assert!(
        runtime
            .call_tool("calc", "calc", r#"{"expression":"6*7"}"#, "u", None)
            .await
            .unwrap()
            .contains(r#""result":42"#)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_keeps_the_instance_configuration_and_grants() {
    let host = Host::new().await;
    host.install(
        &manifest(c::COMPONENT_HOSTILE_MANIFEST),
        c::COMPONENT_HOSTILE_WASM,
        &["kv"],
        json!({}),
    )
    .await
    .unwrap();
    host.runtime
        .call_tool("hostile", "kv_set", r#"{"key":"k","value":"v"}"#, "u", None)
        .await
        .unwrap();
    let newer = manifest(c::COMPONENT_HOSTILE_MANIFEST)
        .replace(r#"version = "0.1.0""#, r#"version = "0.2.0""#);
    // Installed again with no grants at all: the existing instance keeps what it had.
    let installed = host
        .runtime
        .install(
            &pack(&newer, c::COMPONENT_HOSTILE_WASM),
            InstallOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(installed.version, "0.2.0");
    assert_eq!(installed.grants, vec!["kv".to_owned()]);
    let (_, _, grants, _) = host.runtime.instance_summary("hostile").unwrap();
    assert_eq!(grants, vec!["kv".to_owned()]);
    assert_eq!(
        host.runtime
            .call_tool("hostile", "kv_get", r#"{"key":"k"}"#, "u", None)
            .await
            .unwrap(),
        r#""v""#
    );
}
