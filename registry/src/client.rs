//! A host's HTTP client for a registry (feature `client`): fetches what [`crate::resolve`]
//! decides on, and downloads the chosen package under a size cap, checking its digest
//! before anything is unpacked. Every document fetched is capped in size too: a hostile
//! registry cannot make a host hold more than [`MAX_DOCUMENT_BYTES`] per document.
//!
//! What is kept between installs (the pins, the newest timestamp seen) is the caller's to
//! store; this client only reads and checks.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::manifest::PluginName;
use crate::package::{Package, PackageLimits};
use crate::resolve::{Fetched, Pins, Request, Resolution, ResolveError, resolve, verify_download};
use crate::signing::KeyId;
use crate::trust::OnlineKeyCertificate;

/// The largest index, key log or other document read from a registry.
pub const MAX_DOCUMENT_BYTES: u64 = 8 * 1024 * 1024;

/// Why talking to a registry failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The registry could not be reached or stopped answering.
    #[error("registry {url}: {message}")]
    Unreachable {
        /// What was fetched.
        url: String,
        /// Why.
        message: String,
    },
    /// The registry answered with an error.
    #[error("registry {url} answered {status}: {message}")]
    Status {
        /// What was fetched.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The registry's message, or the body's start.
        message: String,
    },
    /// A document that is not what the protocol says.
    #[error("registry {url}: {message}")]
    Malformed {
        /// What was fetched.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// More bytes than allowed.
    #[error("registry {url}: more than {cap} bytes; refused")]
    TooLarge {
        /// What was fetched.
        url: String,
        /// The cap.
        cap: u64,
    },
    /// The registry's answers do not check out, or nothing fits.
    #[error("{0}")]
    Resolve(#[from] ResolveError),
}

/// A registry as a host added it: its address and the root key id pinned then.
#[derive(Clone)]
pub struct RegistryClient {
    base: String,
    pinned_root: KeyId,
    http: reqwest::Client,
}

impl RegistryClient {
    /// A client for the registry at `base` (`http://host:port`, no trailing path) whose
    /// root key must be `pinned_root`.
    pub fn new(base: &str, pinned_root: KeyId, http: reqwest::Client) -> RegistryClient {
        RegistryClient {
            base: base.trim_end_matches('/').to_owned(),
            pinned_root,
            http,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GETs `path` and reads at most `cap` bytes of its body, handing each chunk's running
    /// total and the announced length to `progress`.
    async fn fetch(
        &self,
        path: &str,
        cap: u64,
        mut progress: impl FnMut(u64, Option<u64>),
    ) -> Result<Vec<u8>, ClientError> {
        let url = self.url(path);
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            url: url.clone(),
            message: e.to_string(),
        };
        let mut response = self.http.get(&url).send().await.map_err(unreachable)?;
        let status = response.status();
        let length = response.content_length();
        if length.is_some_and(|n| n > cap) {
            return Err(ClientError::TooLarge { url, cap });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() as u64 + chunk.len() as u64 > cap {
                return Err(ClientError::TooLarge { url, cap });
            }
            body.extend_from_slice(&chunk);
            progress(body.len() as u64, length);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| text.chars().take(200).collect());
            return Err(ClientError::Status {
                url,
                status: status.as_u16(),
                message,
            });
        }
        Ok(body)
    }

    async fn json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let body = self.fetch(path, MAX_DOCUMENT_BYTES, |_, _| {}).await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Malformed {
            url: self.url(path),
            message: e.to_string(),
        })
    }

    async fn text(&self, path: &str) -> Result<String, ClientError> {
        let body = self.fetch(path, MAX_DOCUMENT_BYTES, |_, _| {}).await?;
        String::from_utf8(body).map_err(|_| ClientError::Malformed {
            url: self.url(path),
            message: "not UTF-8".into(),
        })
    }

    /// `GET /api/v1/search` with `query` (already URL-encoded `key=value&…`).
    pub async fn search(&self, query: &str) -> Result<Value, ClientError> {
        self.json(&format!("/api/v1/search?{query}")).await
    }

    /// `GET /api/v1/packages/{name}`: the package's detail.
    pub async fn detail(&self, name: &PluginName) -> Result<Value, ClientError> {
        self.json(&format!("/api/v1/packages/{name}")).await
    }

    /// Fetches the registry's signed state, the namespace's key log and the package's index,
    /// and decides which release to install (see [`resolve`]).
    pub async fn resolve(
        &self,
        request: &Request<'_>,
        pins: &Pins,
        now_ms: u64,
    ) -> Result<Resolution, ClientError> {
        let name = request.name;
        let well_known: Value = self.json("/.well-known/kelp-registry.json").await?;
        let malformed = |message: &str| ClientError::Malformed {
            url: self.url("/.well-known/kelp-registry.json"),
            message: message.to_owned(),
        };
        let root_key = well_known["root_key"]
            .as_str()
            .ok_or_else(|| malformed("no root_key"))?
            .to_owned();
        let certificate: OnlineKeyCertificate =
            serde_json::from_value(well_known["certificate"].clone())
                .map_err(|e| malformed(&format!("certificate: {e}")))?;
        let fetched = Fetched {
            root_key,
            certificate,
            timestamp: self.json("/timestamp.json").await?,
            advisories: self.json("/advisories.json").await?,
            key_log: self.text(&format!("/keys/{}", name.namespace())).await?,
            index: self.text(&format!("/index/{name}")).await?,
        };
        Ok(resolve(&self.pinned_root, pins, fetched, request, now_ms)?)
    }

    /// Downloads the resolved release (at most `limits.compressed_bytes`), checks its
    /// SHA-256 against the signed statement before unpacking, then reads it. `progress` gets
    /// the bytes so far and the announced total.
    pub async fn download(
        &self,
        resolution: &Resolution,
        limits: &PackageLimits,
        progress: impl FnMut(u64, Option<u64>),
    ) -> Result<(Vec<u8>, Package), ClientError> {
        let digest = resolution.line.statement.package_sha256;
        let bytes = self
            .fetch(
                &format!("/blobs/sha256/{digest}"),
                limits.compressed_bytes,
                progress,
            )
            .await?;
        let package = verify_download(&resolution.line, &bytes, limits)?;
        Ok((bytes, package))
    }
}
