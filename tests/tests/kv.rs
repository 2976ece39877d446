//! The `kv` host import: scoped per instance and owner, buffered and committed only when a
//! call succeeds, compare-and-swap, quota, and denial without the grant.

use kelp::plugins::{CallError, CallLimits, RuntimeSettings};
use kelp_tests::server::Backend;
use kelp_tests::{Host, PgSchema, components as c, manifest};
use serde_json::json;

async fn call(
    host: &Host,
    tool: &str,
    input: serde_json::Value,
    owner: &str,
) -> Result<String, CallError> {
    host.runtime
        .call_tool("hostile", tool, &input.to_string(), owner, None)
        .await
}

async fn kv_host(grants: &[&str], quota: u64) -> Host {
    let settings = RuntimeSettings {
        limits: CallLimits {
            kv_quota_bytes: quota,
            ..CallLimits::default()
        },
        ..RuntimeSettings::default()
    };
    let host = Host::with_settings(settings).await;
    host.install(
        &manifest(c::COMPONENT_HOSTILE_MANIFEST),
        c::COMPONENT_HOSTILE_WASM,
        grants,
        json!({}),
    )
    .await
    .unwrap();
    host
}

/// A host with the hostile component (granted `kv`) on `backend`; the schema guard, if any,
/// must outlive the host.
async fn kv_host_on(backend: Backend, quota: u64) -> (Host, Option<PgSchema>) {
    let settings = RuntimeSettings {
        limits: CallLimits {
            kv_quota_bytes: quota,
            ..CallLimits::default()
        },
        ..RuntimeSettings::default()
    };
    let (host, schema) = match backend {
        Backend::Sqlite => (Host::with_settings(settings).await, None),
        Backend::Postgres => {
            let (host, schema) = Host::on_postgres(settings).await;
            (host, Some(schema))
        }
    };
    host.install(
        &manifest(c::COMPONENT_HOSTILE_MANIFEST),
        c::COMPONENT_HOSTILE_WASM,
        &["kv"],
        json!({}),
    )
    .await
    .unwrap();
    (host, schema)
}

/// Keys of several bytes a character count as bytes: a quota counted in characters would let
/// a plugin store more than it allows.
async fn quota_counts_key_bytes(backend: Backend) {
    let (host, _schema) = kv_host_on(backend, 100).await;
    // 80 bytes of key (40 characters) + 10 of value = 90 bytes.
    let wide = "é".repeat(40);
    call(
        &host,
        "kv_set",
        json!({"key": wide, "value": "x".repeat(10)}),
        "u",
    )
    .await
    .unwrap();
    // 1 + 15 more bytes would make 106: over the quota (in characters it would be 66).
    let err = call(
        &host,
        "kv_set",
        json!({"key": "k", "value": "y".repeat(15)}),
        "u",
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("quota"), "{err}");
    assert_eq!(
        call(&host, "kv_get", json!({"key": "k"}), "u")
            .await
            .unwrap(),
        "null"
    );
    // What fits in bytes still fits.
    call(
        &host,
        "kv_set",
        json!({"key": "k", "value": "y".repeat(9)}),
        "u",
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_counts_key_bytes_on_sqlite() {
    quota_counts_key_bytes(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_counts_key_bytes_on_postgres() {
    quota_counts_key_bytes(Backend::Postgres).await;
}

async fn list_keys_by_prefix(backend: Backend) {
    let (host, _schema) = kv_host_on(backend, 1 << 20).await;
    for key in ["note/1", "note/2", "notes", "n", "été/1", "été/2", "other"] {
        call(&host, "kv_set", json!({"key": key, "value": "v"}), "u")
            .await
            .unwrap();
    }
    call(
        &host,
        "kv_set",
        json!({"key": "note/3", "value": "v"}),
        "someone-else",
    )
    .await
    .unwrap();
    let list = |prefix: &'static str| {
        let host = &host;
        async move {
            let out = call(host, "kv_list", json!({"prefix": prefix}), "u")
                .await
                .unwrap();
            serde_json::from_str::<Vec<String>>(&out).unwrap()
        }
    };
    assert_eq!(list("note/").await, ["note/1", "note/2"]);
    assert_eq!(list("note").await, ["note/1", "note/2", "notes"]);
    assert_eq!(list("été/").await, ["été/1", "été/2"]);
    // LIKE wildcards are plain characters in a prefix.
    assert!(list("%").await.is_empty());
    assert_eq!(list("").await.len(), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_keys_by_prefix_on_sqlite() {
    list_keys_by_prefix(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn list_keys_by_prefix_on_postgres() {
    list_keys_by_prefix(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn values_persist_per_owner_and_only_when_the_call_succeeds() {
    let host = kv_host(&["kv"], 1 << 20).await;
    call(&host, "kv_set", json!({"key": "k", "value": "v1"}), "alice")
        .await
        .unwrap();
    assert_eq!(
        call(&host, "kv_get", json!({"key": "k"}), "alice")
            .await
            .unwrap(),
        r#""v1""#
    );
    // Another owner sees its own (empty) space.
    assert_eq!(
        call(&host, "kv_get", json!({"key": "k"}), "bob")
            .await
            .unwrap(),
        "null"
    );

    // A call that returns an error or traps leaves the store as it was.
    let err = call(
        &host,
        "kv_set_then_fail",
        json!({"key": "k", "value": "v2"}),
        "alice",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CallError::Tool(_)), "{err}");
    let err = call(
        &host,
        "kv_set_then_trap",
        json!({"key": "k", "value": "v3"}),
        "alice",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CallError::Crashed { .. }), "{err}");
    assert_eq!(
        call(&host, "kv_get", json!({"key": "k"}), "alice")
            .await
            .unwrap(),
        r#""v1""#
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn compare_and_swap_swaps_only_from_the_expected_value() {
    let host = kv_host(&["kv"], 1 << 20).await;
    let swapped = |out: String| {
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["swapped"]
            .as_bool()
            .unwrap()
    };
    assert!(swapped(
        call(&host, "kv_cas", json!({"key": "c", "new": "1"}), "u")
            .await
            .unwrap()
    ));
    assert!(!swapped(
        call(&host, "kv_cas", json!({"key": "c", "new": "1"}), "u")
            .await
            .unwrap()
    ));
    assert!(!swapped(
        call(
            &host,
            "kv_cas",
            json!({"key": "c", "expected": "0", "new": "2"}),
            "u"
        )
        .await
        .unwrap()
    ));
    assert!(swapped(
        call(
            &host,
            "kv_cas",
            json!({"key": "c", "expected": "1", "new": "2"}),
            "u"
        )
        .await
        .unwrap()
    ));
    assert_eq!(
        call(&host, "kv_get", json!({"key": "c"}), "u")
            .await
            .unwrap(),
        r#""2""#
    );

    // Many concurrent increments-by-swap from the same value: exactly one wins.
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let rt = host.runtime.clone();
            let input = json!({"key": "c", "expected": "2", "new": format!("w{i}")}).to_string();
            tokio::spawn(async move { rt.call_tool("hostile", "kv_cas", &input, "u", None).await })
        })
        .collect();
    let mut winners = 0;
    for c in calls {
        match c.await.unwrap() {
            Ok(out) if swapped(out.clone()) => winners += 1,
            // Lost the race: either saw the new value, or lost at commit.
            Ok(_) | Err(CallError::Kv(_)) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(winners, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_and_grant_are_enforced() {
    let host = kv_host(&["kv"], 100).await;
    call(
        &host,
        "kv_set",
        json!({"key": "a", "value": "x".repeat(50)}),
        "u",
    )
    .await
    .unwrap();
    let err = call(
        &host,
        "kv_set",
        json!({"key": "b", "value": "x".repeat(60)}),
        "u",
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("quota"), "{err}");
    // The earlier value is intact.
    assert_eq!(
        call(&host, "kv_get", json!({"key": "a"}), "u")
            .await
            .unwrap(),
        format!("\"{}\"", "x".repeat(50))
    );

    // Replacing a value counts its new size, not old + new: a plugin above half its quota
    // can still update its largest key.
    call(
        &host,
        "kv_set",
        json!({"key": "a", "value": "y".repeat(60)}),
        "u",
    )
    .await
    .unwrap();
    assert_eq!(
        call(&host, "kv_get", json!({"key": "a"}), "u")
            .await
            .unwrap(),
        format!("\"{}\"", "y".repeat(60))
    );

    let ungranted = kv_host(&[], 1 << 20).await;
    let err = call(&ungranted, "kv_set", json!({"key": "a", "value": "x"}), "u")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`kv` is not granted"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn compare_and_swap_has_one_winner_on_postgres_too() {
    let (host, _schema) = Host::on_postgres(RuntimeSettings::default()).await;
    host.install(
        &manifest(c::COMPONENT_HOSTILE_MANIFEST),
        c::COMPONENT_HOSTILE_WASM,
        &["kv"],
        json!({}),
    )
    .await
    .unwrap();
    // Many concurrent swaps from "absent": READ COMMITTED alone would let several win.
    for round in 0..5 {
        let key = format!("lock{round}");
        let calls: Vec<_> = (0..8)
            .map(|i| {
                let rt = host.runtime.clone();
                let input = json!({"key": key, "new": format!("owner{i}")}).to_string();
                tokio::spawn(
                    async move { rt.call_tool("hostile", "kv_cas", &input, "u", None).await },
                )
            })
            .collect();
        let mut winners = 0;
        for c in calls {
            match c.await.unwrap() {
                Ok(out) if out.contains("true") => winners += 1,
                Ok(_) | Err(CallError::Kv(_)) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
}
