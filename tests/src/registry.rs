//! `kelp-registry serve` as a real process, and a publisher's side of its protocol: keys,
//! signed key-log entries and signed release statements, made with `kelp_registry`'s own
//! types as `kelp plugin publish` will make them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use base64::Engine;
use ed25519_dalek::SigningKey;
use kelp_registry::keylog::{KeyAction, KeyLog, KeyLogEntry};
use kelp_registry::package::{PackageLimits, read_package};
use kelp_registry::signing::{KeyId, ReleaseStatement, encode_signature, generate_signing_key};
use serde_json::{Value, json};

use crate::process::free_port;

/// Which database a registry process uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Sqlite,
    Postgres,
}

/// A running `kelp-registry serve`; killed when dropped (then its PostgreSQL schema goes).
pub struct RegistryProcess {
    child: Child,
    /// The `kelp-registry` binary (a test's `env!("CARGO_BIN_EXE_kelp-registry")`).
    binary: String,
    pub base: String,
    /// Shared with [`RegistryProcess::another`]; removed when the last process goes.
    pub data: std::sync::Arc<tempfile::TempDir>,
    pub database_url: Option<String>,
    pub http: reqwest::Client,
    schema: Option<std::sync::Arc<crate::PgSchema>>,
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RegistryProcess {
    /// Starts a registry on a fresh data directory (and, for PostgreSQL, a fresh schema of
    /// the test server) and waits until it listens.
    pub async fn start(binary: &str, store: Store) -> RegistryProcess {
        RegistryProcess::start_with(binary, store, &[]).await
    }

    /// [`RegistryProcess::start`] with more `serve` arguments.
    pub async fn start_with(binary: &str, store: Store, args: &[&str]) -> RegistryProcess {
        let data = std::sync::Arc::new(tempfile::tempdir().unwrap());
        let schema = match store {
            Store::Sqlite => None,
            Store::Postgres => Some(std::sync::Arc::new(crate::PgSchema::create().await)),
        };
        let database_url = schema.as_ref().map(|s| s.url());
        RegistryProcess::spawn(binary, data, database_url, schema, args)
    }

    /// A second process serving the same registry: the same data directory (keys, blobs)
    /// and database, as several registry processes behind one address would.
    pub fn another(&self) -> RegistryProcess {
        RegistryProcess::spawn(
            &self.binary,
            self.data.clone(),
            self.database_url.clone(),
            self.schema.clone(),
            &[],
        )
    }

    fn spawn(
        binary: &str,
        data: std::sync::Arc<tempfile::TempDir>,
        database_url: Option<String>,
        schema: Option<std::sync::Arc<crate::PgSchema>>,
        args: &[&str],
    ) -> RegistryProcess {
        let port = free_port();
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(data.path())
            .arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(url) = &database_url {
            command.arg("--database-url").arg(url);
        }
        let mut child = command.spawn().expect("starting kelp-registry serve");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        loop {
            let Some(line) = lines.next() else {
                panic!("kelp-registry exited before serving:\n{}", seen.join("\n"));
            };
            let line = line.unwrap();
            if line.contains("kelp-registry is serving") {
                break;
            }
            seen.push(line);
        }
        // Warnings and errors go to the test's output (shown when it fails).
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("registry: {line}");
                }
            }
        });
        RegistryProcess {
            child,
            binary: binary.to_owned(),
            base: format!("http://127.0.0.1:{port}"),
            data,
            database_url,
            // A hung server fails the test instead of hanging the suite.
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .unwrap(),
            schema,
        }
    }

    /// Sends SIGTERM (what a service manager sends) and waits up to `within` for the
    /// process to exit; its exit status, or `None` if it is still running.
    pub fn terminate(&mut self, within: std::time::Duration) -> Option<std::process::ExitStatus> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }

    /// Runs another `kelp-registry` command on this registry's data directory and database.
    pub fn command(&self, args: &[&str]) -> std::process::Output {
        let mut command = Command::new(&self.binary);
        command.args(args).arg("--data-dir").arg(self.data.path());
        if let Some(url) = &self.database_url {
            command.arg("--database-url").arg(url);
        }
        command.output().expect("running kelp-registry")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET `path`: status and body text.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// GET `path` as JSON, which must answer 200.
    pub async fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Sends `body` with `method` to `path`, with `token` when given: status and JSON body.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, token, body).await
    }

    /// Signs up `username` and returns a token.
    pub async fn sign_up(&self, username: &str) -> String {
        let (status, body) = self
            .post(
                "/api/v1/accounts",
                None,
                &json!({"username": username, "password": "correct horse battery"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }
}

/// A publisher: an account's token, a namespace and its key log as the publisher keeps it.
pub struct Publisher {
    pub token: String,
    pub log: KeyLog,
    pub key: SigningKey,
}

impl Publisher {
    /// Signs up `username` and claims `namespace` with a new key.
    pub async fn new(registry: &RegistryProcess, username: &str, namespace: &str) -> Publisher {
        let token = registry.sign_up(username).await;
        let key = generate_signing_key().unwrap();
        let log = KeyLog::start(namespace, &key).unwrap();
        let (status, body) = registry
            .post(
                "/api/v1/namespaces",
                Some(&token),
                &json!({"entry": log.entries()[0]}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        Publisher { token, log, key }
    }

    /// Signs the next key-log entry with `signer` (the registry is not told).
    pub fn sign_entry(&mut self, action: KeyAction, signer: &SigningKey) -> KeyLogEntry {
        self.log.sign_next(action, signer).unwrap().clone()
    }

    /// Appends an entry to the namespace's log at the registry.
    pub async fn append(&self, registry: &RegistryProcess, entry: &KeyLogEntry) -> (u16, Value) {
        registry
            .post(
                &format!("/api/v1/namespaces/{}/keys", entry.namespace),
                Some(&self.token),
                &json!({"entry": entry}),
            )
            .await
    }
}

/// The body `kelp plugin publish` sends: the statement for `package` signed by `key`.
pub fn publish_body(package: &[u8], key: &SigningKey) -> Value {
    let read = read_package(package, &PackageLimits::default()).unwrap();
    let statement = ReleaseStatement::for_package(&read, KeyId::of(&key.verifying_key()));
    let signature = statement.sign(key).unwrap();
    json!({
        "statement": statement,
        "signature": encode_signature(&signature),
        "package": base64::engine::general_purpose::STANDARD.encode(package),
    })
}

/// The first-party `calc` tool component under another name and version.
pub fn calc_package(name: &str, version: &str) -> Vec<u8> {
    let manifest = crate::manifest(crate::components::PLUGIN_CALC_MANIFEST)
        .replace("name = \"kelp/calc\"", &format!("name = \"{name}\""))
        .replace("version = \"0.1.0\"", &format!("version = \"{version}\""));
    crate::pack(&manifest, crate::components::PLUGIN_CALC_WASM)
}

/// A skill package (`SKILL.md` only).
pub fn skill_package(name: &str, version: &str, description: &str, tags: &[&str]) -> Vec<u8> {
    let skill = name.rsplit('/').next().unwrap();
    let tags = tags
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let manifest = format!(
        "name = \"{name}\"\nversion = \"{version}\"\nkind = \"skill\"\n\
         description = \"{description}\"\ntags = [{tags}]\n"
    );
    let skill_md = format!("---\nname: {skill}\ndescription: {description}\n---\nDo it well.\n");
    kelp_registry::package::write_package(&manifest, None, Some(&skill_md), None).unwrap()
}

/// The registry's root public key as written at its first start.
pub fn root_public_key(data: &Path) -> String {
    std::fs::read_to_string(data.join("root.pub"))
        .unwrap()
        .trim()
        .to_owned()
}

/// A `.kelp` archive of `files` written directly, for packages Kelp's own writer refuses to
/// make (a registry must refuse them too).
pub fn raw_package(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut archive = tar::Builder::new(Vec::new());
    for (path, contents) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        archive.append_data(&mut header, path, *contents).unwrap();
    }
    let tar = archive.into_inner().unwrap();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gzip, &tar).unwrap();
    gzip.finish().unwrap()
}
