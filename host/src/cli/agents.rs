//! `kelp agent`: the signed-in user's agents, through the server's API.

use std::process::ExitCode;

use anyhow::{Result, bail};
use reqwest::Method;
use serde_json::{Value, json};

use super::AgentCommand;
use super::admin::{strings, text};
use super::client::{Server, segment};

pub(super) async fn agent(cmd: AgentCommand, server: &Server) -> Result<ExitCode> {
    match cmd {
        AgentCommand::List => {
            let agents = server.get_all("/api/agents").await?;
            if agents.is_empty() {
                eprintln!("no agents yet (`kelp agent add NAME --provider ID --model MODEL`)");
            }
            for a in agents {
                let tools = strings(&a["tools"]);
                let tools = if tools.is_empty() {
                    String::new()
                } else {
                    format!(" · tools: {}", tools.join(", "))
                };
                println!(
                    "{} — {}/{}{tools}",
                    text(&a["name"]),
                    text(&a["provider"]["plugin"]),
                    text(&a["provider"]["model"])
                );
            }
        }
        AgentCommand::Add {
            name,
            provider,
            model,
            instructions,
            tools,
            skills,
            max_steps,
        } => {
            let mut body = json!({
                "name": name,
                "instructions": instructions.unwrap_or_default(),
                "provider": {"plugin": provider, "model": model},
                "tools": tools,
                "skills": skills,
            });
            if let Some(max_steps) = max_steps {
                body["max_steps"] = json!(max_steps);
            }
            let created = server
                .call(Method::POST, "/api/agents", Some(&body))
                .await?;
            println!("created agent {}", text(&created["name"]));
            warn(&created);
        }
        AgentCommand::Show { name } => {
            let agent = find(server, &name).await?;
            println!("{}", serde_json::to_string_pretty(&agent)?);
        }
        AgentCommand::Remove { name } => {
            let agent = find(server, &name).await?;
            server
                .call(
                    Method::DELETE,
                    &format!("/api/agents/{}", segment(text(&agent["id"]))),
                    None,
                )
                .await?;
            println!("removed agent {name} (its sessions stay)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The agent named `name` (or with that id).
pub(super) async fn find(server: &Server, name: &str) -> Result<Value> {
    let agents = server.get_all("/api/agents").await?;
    if let Some(agent) = agents.iter().find(|a| a["name"] == name || a["id"] == name) {
        return Ok(agent.clone());
    }
    let names: Vec<&str> = agents.iter().map(|a| text(&a["name"])).collect();
    if names.is_empty() {
        bail!("no agent named `{name}`: you have no agents yet");
    }
    bail!("no agent named `{name}`; your agents: {}", names.join(", "))
}

fn warn(agent: &Value) {
    for warning in strings(&agent["warnings"]) {
        eprintln!("warning: {warning}");
    }
}
