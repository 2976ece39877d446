//! `kelp channel`: chat channels (Telegram, the generic webhook channel), through the server's
//! API. The bot's secret is read from standard input, never from the command line (where
//! `ps` and the shell history would show it).

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use reqwest::Method;
use serde_json::{Value, json};

use super::admin::text;
use super::client::{Server, segment};
use super::input::read_secret;
use super::{ChannelCommand, PairCommand};

pub(super) async fn channel(cmd: ChannelCommand, server: &Server) -> Result<ExitCode> {
    match cmd {
        ChannelCommand::Add {
            plugin,
            agent,
            secret,
            access,
            mode,
            instance_config,
            grants,
            allow,
            stopped,
        } => {
            let plugin = if plugin.contains('/') {
                plugin
            } else {
                format!("kelp/{plugin}")
            };
            let agent = super::agents::find(server, &agent).await?;
            let value = read_secret(&format!("{secret} (it is read from standard input): "))?;
            if value.is_empty() {
                bail!("no value given for {secret} (it is read from standard input)");
            }
            let config: Value = serde_json::from_str(&instance_config)
                .context("--instance-config must be a JSON object")?;
            let mut body = json!({
                "plugin": plugin,
                "agent_id": agent["id"],
                "config": config,
                "secrets": {secret.clone(): value},
                "grants": grants,
                "allowlist": allow,
                "start": !stopped,
            });
            if let Some(access) = access {
                body["access"] = json!(access);
            }
            if let Some(mode) = mode {
                body["mode"] = json!(mode);
            }
            let made = server
                .call(Method::POST, "/api/channels", Some(&body))
                .await?;
            println!(
                "added channel {} ({plugin}, {} access, {}){}",
                text(&made["id"]),
                text(&made["access"]),
                text(&made["mode"]),
                if made["running"] == true {
                    ", started"
                } else {
                    ""
                }
            );
            if made["access"] == "pairing" {
                eprintln!(
                    "people who write to the bot get a pairing code; approve one with \
                     `kelp channel pair approve CODE`"
                );
            }
        }
        ChannelCommand::List => {
            let channels = server.get_all("/api/channels").await?;
            if channels.is_empty() {
                eprintln!("no channels yet (`kelp channel add telegram --agent NAME`)");
            }
            for c in channels {
                println!("{}", summary(&c));
            }
        }
        ChannelCommand::Status { id } => {
            let c = get(server, &id).await?;
            println!("{}", summary(&c));
            if let Some(handle) = c["bot"]["handle"].as_str() {
                println!("  bot: @{handle}");
            }
            if let Some(error) = c["last_error"].as_str() {
                println!("  last error: {error}");
            }
            let chats = server
                .get_all(&format!("/api/channels/{}/chats", segment(&id)))
                .await?;
            for chat in chats {
                let code = chat["pair_code"]
                    .as_str()
                    .map(|c| format!(" (code {c})"))
                    .unwrap_or_default();
                println!(
                    "  chat {} — {}, {}{code}",
                    text(&chat["chat_id"]),
                    text(&chat["title"]),
                    text(&chat["state"])
                );
            }
        }
        ChannelCommand::Start { id } => {
            let c = server
                .call(
                    Method::POST,
                    &format!("/api/channels/{}/start", segment(&id)),
                    None,
                )
                .await?;
            println!("{}", summary(&c));
        }
        ChannelCommand::Stop { id } => {
            let c = server
                .call(
                    Method::POST,
                    &format!("/api/channels/{}/stop", segment(&id)),
                    None,
                )
                .await?;
            println!("{}", summary(&c));
        }
        ChannelCommand::Remove { id } => {
            server
                .call(
                    Method::DELETE,
                    &format!("/api/channels/{}", segment(&id)),
                    None,
                )
                .await?;
            println!("removed channel {id} (its chats' sessions stay)");
        }
        ChannelCommand::Pair(PairCommand::Approve { code }) => {
            let chat = server
                .call(
                    Method::POST,
                    "/api/channels/pairings",
                    Some(&json!({"code": code})),
                )
                .await?;
            println!(
                "approved chat {} ({}): its next message reaches the agent",
                text(&chat["chat_id"]),
                text(&chat["title"])
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn get(server: &Server, id: &str) -> Result<Value> {
    server
        .call(Method::GET, &format!("/api/channels/{}", segment(id)), None)
        .await
}

fn summary(c: &Value) -> String {
    format!(
        "{} — instance {}, {} access, {}, {}",
        text(&c["id"]),
        text(&c["instance_id"]),
        text(&c["access"]),
        text(&c["mode"]),
        if c["running"] == true {
            "running"
        } else {
            "stopped"
        }
    )
}
