//! (h) A plugin flooding the log — through `host.log` or its stdout — is capped per call,
//! and what reaches the log is tagged with the plugin and redacted. In its own test binary
//! because it captures the process-wide log.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use kelp::plugins::{CallLimits, RuntimeSettings};
use kelp_tests::{Host, components as c, manifest};
use serde_json::json;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured() -> &'static Captured {
    static LOG: OnceLock<Captured> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Captured::default();
        let writer = log.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        log
    })
}

fn plugin_log_bytes(instance: &str) -> (usize, String) {
    let text = String::from_utf8_lossy(&captured().0.lock().unwrap()).into_owned();
    let mine: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&format!("instance=\"{instance}\"")))
        .collect();
    (mine.iter().map(|l| l.len()).sum(), mine.join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h_log_and_stdout_floods_are_capped_per_call() {
    captured();
    let settings = RuntimeSettings {
        limits: CallLimits {
            log_bytes: 8 * 1024,
            ..CallLimits::default()
        },
        ..RuntimeSettings::default()
    };
    let host = Host::with_settings(settings).await;
    host.install(
        &manifest(c::COMPONENT_HOSTILE_MANIFEST),
        c::COMPONENT_HOSTILE_WASM,
        &[],
        json!({}),
    )
    .await
    .unwrap();
    // 4 MiB through host.log and 4 MiB through stdout: both calls complete...
    let out = host
        .runtime
        .call_tool("hostile", "log_flood", r#"{"bytes": 4194304}"#, "u1", None)
        .await
        .unwrap();
    assert!(out.contains("lines"), "{out}");
    let out = host
        .runtime
        .call_tool(
            "hostile",
            "print_flood",
            r#"{"bytes": 4194304}"#,
            "u1",
            None,
        )
        .await
        .unwrap();
    assert!(out.contains("lines"), "{out}");
    // ...and the log holds two calls' budget (plus tags and one note each), not 8 MiB.
    let (bytes, text) = plugin_log_bytes("hostile");
    assert!(bytes < 2 * 8 * 1024 * 3, "plugin log is {bytes} bytes");
    assert!(
        bytes > 8 * 1024,
        "the budget's worth of lines is kept ({bytes} bytes)"
    );
    assert_eq!(
        text.matches("log limit reached").count(),
        2,
        "one note per flooding call"
    );
    assert!(
        text.contains("plugin=\"test/hostile\""),
        "lines are tagged with the plugin"
    );
    // The well-behaved next call still logs within its own budget.
    host.runtime
        .call_tool("hostile", "echo", "{}", "u1", None)
        .await
        .unwrap();
}
