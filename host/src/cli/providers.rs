//! `kelp provider`: the model providers a server has (instances of provider plugins), their
//! credentials and models, through the server's API.

use std::process::ExitCode;

use anyhow::{Result, bail};
use reqwest::Method;
use serde_json::json;

use super::ProviderCommand;
use super::admin::{strings, text};
use super::client::{Server, segment};
use super::input::read_secret;

pub(super) async fn provider(cmd: ProviderCommand, server: &Server) -> Result<ExitCode> {
    match cmd {
        ProviderCommand::List => {
            let providers = server.get_all("/api/providers").await?;
            if providers.is_empty() {
                eprintln!("no providers: no provider plugin is installed");
            }
            for p in providers {
                let state = if p["configured"] == true {
                    "configured"
                } else {
                    "needs a key"
                };
                let base = p["base_url"]
                    .as_str()
                    .map(|u| format!(" · {u}"))
                    .unwrap_or_default();
                println!(
                    "{} ({}) — {state}{base}",
                    text(&p["id"]),
                    text(&p["plugin"])
                );
            }
        }
        ProviderCommand::Set {
            id,
            base_url,
            api_key,
        } => {
            if base_url.is_none() && !api_key {
                bail!("give --base-url URL, --api-key (read from standard input), or both");
            }
            let mut body = json!({});
            if let Some(url) = &base_url {
                body["base_url"] = json!(url);
            }
            if api_key {
                let key = read_secret(&format!("API key for {id}: "))?;
                if key.is_empty() {
                    bail!("no API key given (it is read from standard input)");
                }
                body["api_key"] = json!(key);
            }
            let changed = server
                .call(
                    Method::PUT,
                    &format!("/api/providers/{}/auth", segment(&id)),
                    Some(&body),
                )
                .await?;
            // The provider as it is now, with `removed_secrets` beside its fields.
            let provider = &changed;
            println!(
                "{id}: {}{}",
                if provider["configured"] == true {
                    "configured"
                } else {
                    "needs a key"
                },
                provider["base_url"]
                    .as_str()
                    .map(|u| format!(" · {u}"))
                    .unwrap_or_default()
            );
            for name in strings(&changed["removed_secrets"]) {
                // The key was for the old address; it is never sent to the new one.
                eprintln!(
                    "note: the stored {name} was removed: it was set for the previous base URL \
                     (set one for this address with --api-key)"
                );
            }
        }
        ProviderCommand::Models { id } => {
            let models = server
                .get(&format!("/api/providers/{}/models", segment(&id)))
                .await?;
            for m in models.as_array().into_iter().flatten() {
                match m["context_window"].as_u64() {
                    Some(window) => println!("{} ({window} tokens of context)", text(&m["id"])),
                    None => println!("{}", text(&m["id"])),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
