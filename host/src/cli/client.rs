//! The CLI as a client of a Kelp server. Every command that acts on what a server runs —
//! plugins, tools, users, agents, providers, chat — goes through the server's HTTP API, so
//! its effect is the server's at once (a plugin disabled here is disabled there) and it never
//! opens, or creates, a data directory of its own.
//!
//! Which server and token: `--url`/`--token`, else `KELP_URL`/`KELP_TOKEN`, else what
//! `kelp login` stored in the user's configuration directory.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where `kelp serve` listens unless configured otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7777";

/// How long to wait for the server to accept a connection. There is no overall timeout: a
/// chat reply streams for as long as its run lasts, and an install compiles a component.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The server options every command accepts.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ServerArgs {
    /// Kelp server (default: $KELP_URL, else the one `kelp login` stored).
    #[arg(long, global = true, value_name = "URL", env = "KELP_URL")]
    pub url: Option<String>,
    /// API token (default: $KELP_TOKEN, else the one `kelp login` stored for that server).
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "KELP_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

impl ServerArgs {
    fn url(&self) -> Option<String> {
        self.url
            .as_deref()
            .map(|u| u.trim().trim_end_matches('/'))
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
    }

    fn token(&self) -> Option<String> {
        self.token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
    }

    /// Whether any server is named: by a flag, the environment or a stored login.
    pub fn configured(&self) -> Result<bool> {
        Ok(self.url().is_some() || self.token().is_some() || StoredLogin::load()?.is_some())
    }

    /// The server to talk to and the token to send it; fails, saying how to configure one,
    /// when none is.
    pub fn connect(&self) -> Result<Server> {
        let stored = StoredLogin::load()?;
        let (url, token) = match (self.url(), self.token(), stored) {
            (Some(url), Some(token), _) => (url, token),
            // A stored token goes only to the server it was made by.
            (Some(url), None, Some(login)) if login.url == url => (url, login.token),
            (Some(url), None, _) => bail!(
                "not signed in to {url}: run `kelp login {url}`, or pass --token (KELP_TOKEN)"
            ),
            (None, Some(token), stored) => (
                stored.map_or_else(|| DEFAULT_URL.to_owned(), |l| l.url),
                token,
            ),
            (None, None, Some(login)) => (login.url, login.token),
            (None, None, None) => bail!(
                "no Kelp server configured: sign in with `kelp login [URL]` (default \
                 {DEFAULT_URL}), or pass --url and --token (KELP_URL, KELP_TOKEN)"
            ),
        };
        Server::new(url, token)
    }
}

/// What `kelp login` keeps: the server and a token of its own, in
/// `$XDG_CONFIG_HOME/kelp/login.toml` (`~/.config/kelp/login.toml`), readable by the user only.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredLogin {
    pub url: String,
    pub token: String,
    /// The token's id on the server, so `kelp logout` can revoke it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
}

impl StoredLogin {
    pub fn path() -> Result<PathBuf> {
        Ok(dirs::config_dir()
            .context("no configuration directory (set XDG_CONFIG_HOME or HOME)")?
            .join("kelp")
            .join("login.toml"))
    }

    pub fn load() -> Result<Option<StoredLogin>> {
        let path = StoredLogin::path()?;
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .map(Some)
                .with_context(|| format!("reading {} (`kelp logout` removes it)", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the file, created 0600: it holds a bearer token.
    pub fn save(&self) -> Result<PathBuf> {
        let path = StoredLogin::path()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = toml::to_string(self).context("writing the login")?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        // `mode` applies only to a new file; one left by an older version is narrowed too.
        #[cfg(unix)]
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        file.write_all(text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Removes the file; whether there was one.
    pub fn remove() -> Result<bool> {
        let path = StoredLogin::path()?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
}

/// A Kelp server and the token to talk to it with.
pub struct Server {
    http: reqwest::Client,
    pub url: String,
    token: String,
}

/// An answer other than success, as the API reports it (`{"error": {"code", "message"}}`).
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            StatusCode::UNAUTHORIZED => write!(
                f,
                "the server refused the token: {} (sign in again with `kelp login`, or pass a \
                 valid --token / KELP_TOKEN)",
                self.message
            ),
            StatusCode::FORBIDDEN => {
                write!(f, "{} (this needs an admin's token)", self.message)
            }
            status => write!(f, "{} ({status})", self.message),
        }
    }
}

impl std::error::Error for Refusal {}

impl Refusal {
    pub async fn read(response: reqwest::Response) -> Refusal {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let text = |v: &Value| v.as_str().map(str::to_owned);
        Refusal {
            status,
            code: text(&body["error"]["code"]).unwrap_or_default(),
            message: text(&body["error"]["message"])
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned()),
        }
    }
}

impl Server {
    pub fn new(url: String, token: String) -> Result<Server> {
        let url = url.trim_end_matches('/').to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("the server URL must start with http:// or https://, not `{url}`");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        Ok(Server { http, url, token })
    }

    /// A request to `path` (under the server's URL) with the token.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token)
    }

    pub fn unreachable(&self, e: reqwest::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "could not reach Kelp at {} ({e}); is `kelp serve` running there? (--url, KELP_URL, \
             `kelp login`)",
            self.url
        )
    }

    /// Sends `request`; an answer other than success is a [`Refusal`] (callers that handle
    /// one case themselves downcast to it).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            return Err(Refusal::read(response).await.into());
        }
        Ok(response)
    }

    /// `method path` with an optional JSON body; the JSON answer (`Null` when empty).
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = self.send(request).await?;
        let bytes = response.bytes().await.context("reading the answer")?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).context("the server's answer is not JSON")
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.call(Method::GET, path, None).await
    }

    /// Every item of a paged list (`{"items", "next_offset"}`).
    pub async fn get_all(&self, path: &str) -> Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut offset = 0;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let page = self
                .get(&format!("{path}{sep}limit=200&offset={offset}"))
                .await?;
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_offset"].as_i64() {
                Some(next) if next > offset => offset = next,
                _ => return Ok(items),
            }
        }
    }
}

/// `s` as one path segment: every byte but unreserved ones percent-encoded, so an id with a
/// `/`, `?` or `#` cannot reach another route.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A plugin's `namespace/name` as the two path segments the API takes.
pub fn plugin_path(name: &str) -> Result<String> {
    match name.split_once('/') {
        Some((namespace, short)) if !namespace.is_empty() && !short.is_empty() => {
            Ok(format!("{}/{}", segment(namespace), segment(short)))
        }
        _ => bail!(
            "name the plugin in full, as `namespace/name` (e.g. `local/hello`); \
             `kelp plugin list` shows them"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cannot_leave_their_place() {
        assert_eq!(segment("calc"), "calc");
        assert_eq!(segment("a/b?c#d e"), "a%2Fb%3Fc%23d%20e");
        assert_eq!(segment("é"), "%C3%A9");
        assert_eq!(plugin_path("kelp/calc").unwrap(), "kelp/calc");
        assert!(plugin_path("calc").is_err());
    }
}
