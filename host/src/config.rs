//! `kelp serve` configuration: a TOML file plus `KELP_*` environment variables, with
//! documented defaults (see docs/configuration.md).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::agent::AgentSettings;
use crate::api::http::HttpSettings;
use crate::channels::ChannelSettings;
use crate::plugins::RuntimeSettings;

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Loopback by default: exposing Kelp is a deliberate choice.
    pub bind: SocketAddr,
    /// `sqlite://…` or `postgres://…`; default: `kelp.db` in the data directory.
    pub database_url: Option<String>,
    /// Log format: `human` or `json`.
    pub log_format: String,
    /// The plugin runtime.
    pub plugins: RuntimeSettings,
    /// The agent loop: retries, timeouts, context guard, prices.
    pub agent: AgentSettings,
    /// Who may address the server and how it tells clients apart.
    pub http: HttpSettings,
    /// How chat channels run.
    pub channels: ChannelSettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: "127.0.0.1:7777".parse().expect("valid address"),
            database_url: None,
            log_format: "human".into(),
            plugins: RuntimeSettings::default(),
            agent: AgentSettings::default(),
            http: HttpSettings::default(),
            channels: ChannelSettings::default(),
        }
    }
}

impl Config {
    /// Reads `path` if given, else `config.toml` in the data directory if present, then
    /// applies `KELP_*` environment overrides.
    pub fn load(path: Option<&Path>, data_dir: &Path) -> Result<Config> {
        let default_path = data_dir.join("config.toml");
        let path = path
            .map(Path::to_owned)
            .or_else(|| default_path.exists().then_some(default_path));
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
            }
            None => Config::default(),
        };
        if let Ok(bind) = std::env::var("KELP_BIND") {
            config.bind = bind.parse().with_context(|| format!("KELP_BIND={bind}"))?;
        }
        if let Ok(url) = std::env::var("KELP_DATABASE_URL") {
            config.database_url = Some(url);
        }
        if let Ok(format) = std::env::var("KELP_LOG_FORMAT") {
            config.log_format = format;
        }
        if let Ok(n) = std::env::var("KELP_MAX_CONCURRENT_PLUGIN_CALLS") {
            config.plugins.max_concurrent_plugin_calls = n
                .parse()
                .with_context(|| format!("KELP_MAX_CONCURRENT_PLUGIN_CALLS={n}"))?;
        }
        Ok(config)
    }
}

/// The data directory: `--data-dir`, else `KELP_DATA_DIR`, else `$XDG_DATA_HOME/kelp`
/// (`~/.local/share/kelp`). Only named here; [`create_data_dir`] makes it, for the commands
/// that own one (`serve`, a local `user add`).
pub fn data_dir(flag: Option<&Path>) -> Result<PathBuf> {
    Ok(match flag {
        Some(dir) => dir.to_owned(),
        None => match std::env::var_os("KELP_DATA_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => dirs::data_dir()
                .context("no data directory: set --data-dir or KELP_DATA_DIR")?
                .join("kelp"),
        },
    })
}

/// Creates the data directory if it does not exist; whether it did not.
pub fn create_data_dir(dir: &Path) -> Result<bool> {
    if dir.is_dir() {
        return Ok(false);
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    Ok(true)
}

/// This host's stable id (a file in the data directory): runs record which host runs them, so
/// at start a host marks only its own cut-off runs as interrupted.
pub fn host_id(data_dir: &Path) -> Result<String> {
    let path = data_dir.join("host.id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        _ => {
            let id = crate::util::new_id();
            std::fs::create_dir_all(data_dir)?;
            std::fs::write(&path, &id).with_context(|| format!("writing {}", path.display()))?;
            Ok(id)
        }
    }
}
