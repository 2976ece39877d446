//! `kill -9` while writes are in flight, then a restart: every write the server had
//! acknowledged is still there, on SQLite and on PostgreSQL.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kelp_tests::process::KelpProcess;
use serde_json::{Value, json};

const KELP: &str = env!("CARGO_BIN_EXE_kelp");

async fn acknowledged_writes_survive(env: Vec<(String, String)>) {
    let data = tempfile::tempdir().unwrap();
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = KelpProcess::start(KELP, data.path(), &[], &env_refs);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let setup: Value = http
        .post(format!("{}/api/auth/setup", server.base))
        .json(&json!({"username": "admin", "password": "correct horse"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = setup["token"].as_str().unwrap().to_owned();

    // Writers create API tokens as fast as they can; each 201 is an acknowledged write.
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (http, base, token, acked) = (
                http.clone(),
                server.base.clone(),
                token.clone(),
                acked.clone(),
            );
            tokio::spawn(async move {
                for i in 0.. {
                    let resp = http
                        .post(format!("{base}/api/tokens"))
                        .bearer_auth(&token)
                        .json(&json!({"name": format!("w{w}-{i}")}))
                        .send()
                        .await;
                    match resp {
                        Ok(r) if r.status() == 201 => {
                            let body: Value = match r.json().await {
                                Ok(b) => b,
                                Err(_) => return,
                            };
                            acked
                                .lock()
                                .unwrap()
                                .insert(body["id"].as_str().unwrap().to_owned());
                        }
                        // The server died mid-request: that write was never acknowledged.
                        _ => return,
                    }
                }
            })
        })
        .collect();
    // Let writes pile up, then crash the server under them.
    while acked.lock().unwrap().len() < 200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill_9();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let server = KelpProcess::start(KELP, data.path(), &[], &env_refs);
    let mut stored = HashSet::new();
    let mut offset = 0;
    loop {
        let page: Value = http
            .get(format!(
                "{}/api/tokens?limit=200&offset={offset}",
                server.base
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for item in page["items"].as_array().unwrap() {
            stored.insert(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_offset"].as_i64() {
            Some(next) => offset = next,
            None => break,
        }
    }
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost after kill -9",
        lost.len(),
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_keeps_acknowledged_writes_across_kill_9() {
    acknowledged_writes_survive(vec![]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_keeps_acknowledged_writes_across_kill_9() {
    let schema = kelp_tests::PgSchema::create().await;
    acknowledged_writes_survive(vec![("KELP_DATABASE_URL".into(), schema.url())]).await;
}
