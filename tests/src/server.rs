//! A real Kelp HTTP server on a loopback port, on a fresh SQLite file or a fresh PostgreSQL
//! schema, for API tests that must pass on both databases.

use kelp::agent::AgentSettings;
use kelp::api::AppState;
use kelp::api::http::HttpSettings;
use kelp::channels::ChannelSettings;
use kelp::plugins::{PluginRuntime, RuntimeSettings};
use kelp::store::Db;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The databases every API test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// PostgreSQL of the test machine (CI has one at this address with trust auth).
pub fn postgres_url() -> String {
    std::env::var("KELP_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// What a test server runs with: `kelp serve`'s `[agent]` and `[plugins]` settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub agent: AgentSettings,
    pub plugins: RuntimeSettings,
    pub http: HttpSettings,
    pub channels: ChannelSettings,
}

impl Default for Settings {
    /// `kelp serve`'s defaults, but for prices: the fake vendors listen on loopback, where a
    /// provider's calls are free unless priced, so the suite prices the first-party
    /// instances' models (`openai/gpt-4o`, …) at their vendors' built-in rates, as an
    /// operator would price a server of their own. Costs and budgets are exercised that way;
    /// [`Settings::unpriced`] is what a server without those entries does.
    fn default() -> Settings {
        let mut agent = AgentSettings::default();
        for (model, price) in kelp::agent::budget::default_prices() {
            for instance in ["openai", "anthropic", "ollama"] {
                agent.prices.insert(format!("{instance}/{model}"), price);
            }
        }
        Settings {
            agent,
            ..Settings::unpriced()
        }
    }
}

impl Settings {
    /// `kelp serve`'s defaults exactly: calls through a provider on a local address are free.
    pub fn unpriced() -> Settings {
        Settings {
            agent: AgentSettings::default(),
            plugins: RuntimeSettings::default(),
            http: HttpSettings::default(),
            channels: ChannelSettings::default(),
        }
    }
}

impl From<HttpSettings> for Settings {
    fn from(http: HttpSettings) -> Settings {
        Settings {
            http,
            ..Settings::default()
        }
    }
}

/// A running server. Dropping it stops the server and drops its PostgreSQL schema.
pub struct TestServer {
    pub base: String,
    pub http: reqwest::Client,
    pub state: AppState,
    pub dir: tempfile::TempDir,
    pub backend: Backend,
    /// The `[http]` settings it serves with (a second host gets the same).
    /// What it runs with; a second host runs with the same.
    pub settings: Settings,
    /// Dropped after the server stops (see `Drop`): the schema goes with it.
    schema: Option<crate::PgSchema>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        TestServer::start_with(backend, Settings::default()).await
    }

    /// [`TestServer::start`] with settings of the test's own (`[http]` alone converts).
    pub async fn start_with(backend: Backend, settings: impl Into<Settings>) -> TestServer {
        let settings = settings.into();
        let dir = tempfile::tempdir().unwrap();
        let (db, schema) = match backend {
            Backend::Sqlite => (Db::open_sqlite_in(dir.path()).await.unwrap(), None),
            Backend::Postgres => {
                let schema = crate::PgSchema::create().await;
                (Db::connect(&schema.url()).await.unwrap(), Some(schema))
            }
        };
        TestServer::serve(db, dir, backend, schema, settings).await
    }

    /// Another host sharing this one's PostgreSQL database, as several hosts behind a load
    /// balancer run. It uses this one's data directory for the same master key (in production
    /// each host has a directory of its own, and its host id there, and the key from the
    /// environment); its host id is its own.
    pub async fn second_host(&self) -> TestServer {
        self.second_host_with(self.settings.clone()).await
    }

    /// [`TestServer::second_host`] with settings of its own.
    pub async fn second_host_with(&self, settings: Settings) -> TestServer {
        assert_eq!(
            self.backend,
            Backend::Postgres,
            "hosts share a database only on PostgreSQL"
        );
        let db = self.another_db().await;
        // Its `dir` is an empty directory of its own; its data directory is the first host's.
        let own = tempfile::tempdir().unwrap();
        let mut second =
            TestServer::serve_in(db, self.dir.path(), own, self.backend, None, settings).await;
        second.http = self.http.clone();
        second
    }

    /// The URL of this server's PostgreSQL schema (`None` on SQLite, whose database is
    /// `kelp.db` in `dir`): what another process sharing the database is given.
    pub fn database_url(&self) -> Option<String> {
        self.schema.as_ref().map(crate::PgSchema::url)
    }

    /// A connection pool of its own to this server's database, as another process (a host
    /// or a CLI command) has.
    pub async fn another_db(&self) -> Db {
        match &self.schema {
            Some(schema) => Db::connect(&schema.url()).await.unwrap(),
            None => Db::open_sqlite_in(self.dir.path()).await.unwrap(),
        }
    }

    async fn serve(
        db: Db,
        dir: tempfile::TempDir,
        backend: Backend,
        schema: Option<crate::PgSchema>,
        settings: Settings,
    ) -> TestServer {
        let data = dir.path().to_owned();
        TestServer::serve_in(db, &data, dir, backend, schema, settings).await
    }

    async fn serve_in(
        db: Db,
        data: &std::path::Path,
        dir: tempfile::TempDir,
        backend: Backend,
        schema: Option<crate::PgSchema>,
        settings: Settings,
    ) -> TestServer {
        let runtime = PluginRuntime::new(settings.plugins.clone(), data, db).unwrap();
        let host_id = kelp::util::new_id();
        let state = AppState::with_agent(runtime, settings.agent.clone(), host_id.clone())
            .with_http(&settings.http)
            .unwrap()
            .with_channels(settings.channels.clone(), host_id);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serve_state = state.clone();
        tokio::spawn(async move {
            kelp::api::serve_on(listener, serve_state, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            base,
            http: reqwest::Client::new(),
            state,
            dir,
            backend,
            settings,
            schema,
            stop: Some(stop),
        }
    }

    /// The `/metrics` page.
    pub async fn metrics(&self) -> String {
        let resp = self.http.get(self.url("/metrics")).send().await.unwrap();
        resp.text().await.unwrap()
    }

    /// The value of one series on the `/metrics` page, e.g. `kelp_runs_total` or
    /// `kelp_run_history_total{source="memory"}`; panics if the page has none.
    pub async fn metric(&self, series: &str) -> u64 {
        let metrics = self.metrics().await;
        let prefix = format!("{series} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {series} in {metrics}"))
            .parse()
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `method path` with an optional bearer token and JSON body; returns status and
    /// the parsed JSON body (`Value::Null` when empty).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method.parse().unwrap(), self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        (status, value)
    }

    /// POSTs a body of `size` bytes over a raw connection, reading the answer while the body is
    /// still being written. A server may answer 413 and close before it read an oversized
    /// body; an ordinary client then often fails on its own write and never sees the answer,
    /// which would make the test about the client, not the server.
    pub async fn post_oversized(&self, path: &str, token: &str, size: usize) -> (u16, Value) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.base.trim_start_matches("http://").to_owned();
        let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\
             content-type: application/json\r\ncontent-length: {size}\r\nconnection: close\r\n\r\n"
        );
        let write = tokio::spawn(async move {
            let _ = writer.write_all(head.as_bytes()).await;
            let _ = writer.write_all(&vec![b'x'; size]).await;
        });
        let mut response = Vec::new();
        let _ = reader.read_to_end(&mut response).await;
        write.abort();
        let text = String::from_utf8_lossy(&response).into_owned();
        let status: u16 = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("an HTTP status line");
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default();
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    /// Creates the first admin through the API; returns their token.
    pub async fn setup_admin(&self) -> String {
        let (status, body) = self
            .send(
                "POST",
                "/api/auth/setup",
                None,
                Some(json!({"username": "admin", "password": "admin-password"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// Creates a regular user directly in the database and signs them in; returns a token.
    pub async fn user(&self, username: &str) -> String {
        let hash = kelp::auth::hash_password("user-password").unwrap();
        self.state
            .db()
            .create_user(kelp::store::users::NewUser {
                username,
                display_name: username,
                password_hash: &hash,
                role: "user",
            })
            .await
            .unwrap()
            .expect("new username");
        let (status, body) = self
            .send(
                "POST",
                "/api/auth/login",
                None,
                Some(json!({"username": username, "password": "user-password"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        drop(self.schema.take());
    }
}

/// Runs an async test body once per database: `both_backends!(name, |server| async move { … })`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let server =
                    $crate::server::TestServer::start($crate::server::Backend::Sqlite).await;
                ($body)(server).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let server =
                    $crate::server::TestServer::start($crate::server::Backend::Postgres).await;
                ($body)(server).await;
            }
        }
    };
}
