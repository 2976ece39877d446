//! Plugin administration and tool calls from the command line. These work directly on the
//! data directory's database, so they also work while no server runs.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use super::{PluginCommand, ToolCommand};
use crate::config::Config;
use crate::plugins::grants::Approval;
use crate::plugins::{InstallOptions, PluginRuntime};
use crate::store::Db;

/// Opens the database and the plugin runtime for a data directory.
pub async fn open(config: &Config, data_dir: &Path) -> Result<Arc<PluginRuntime>> {
    let db = match &config.database_url {
        Some(url) => Db::connect(url).await?,
        None => Db::open_sqlite_in(data_dir).await?,
    };
    PluginRuntime::new(config.plugins.clone(), data_dir, db)
}

pub(super) async fn plugin(
    cmd: PluginCommand,
    config: &Config,
    data_dir: &Path,
) -> Result<ExitCode> {
    let runtime = open(config, data_dir).await?;
    match cmd {
        PluginCommand::Install {
            file,
            yes,
            grants,
            instance,
            instance_config,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let (review, _) = runtime.review(&bytes)?;
            let config: serde_json::Value = serde_json::from_str(&instance_config)
                .context("--instance-config must be a JSON object")?;
            if !config.is_object() {
                bail!("--instance-config must be a JSON object");
            }
            let m = &review.manifest;
            println!("{} {} ({}) — {}", m.name, m.version, m.kind, m.description);
            println!("digest sha256:{}", review.digest);
            if review.requested.is_empty() {
                println!("requests no capabilities");
            } else {
                println!("requests:");
                for line in &review.requested {
                    println!("  {line}");
                }
            }
            let mut approval = Approval::default();
            for item in &grants {
                approval.add_item(item)?;
            }
            if yes {
                let all = Approval::everything_requested(&m.capabilities, &config);
                approval.http.extend(all.http);
                approval.kv |= all.kv;
                approval.workspace = approval.workspace.max(all.workspace);
            }
            let mut approve_changes = false;
            if let Some((installed, changes)) = runtime.upgrade_changes(m).await? {
                // An upgrade keeps each instance's grants; what the new version asks beyond
                // the installed one is the operator's to approve, for every instance.
                println!("upgrades the installed {installed}; every instance keeps its grants");
                if !changes.is_empty() {
                    println!("asks for more than {installed} was approved for:");
                    for line in &changes {
                        println!("  {line}");
                    }
                    let flag = format!(
                        "--yes to approve what the new version asks beyond {installed}, for every instance"
                    );
                    if !yes && !confirm("approve these for every instance?", &flag)? {
                        println!("not upgraded; {installed} keeps running");
                        return Ok(ExitCode::FAILURE);
                    }
                    approve_changes = true;
                }
            } else if !yes
                && grants.is_empty()
                && !review.requested.iter().all(|r| r.starts_with("secret:"))
            {
                if !confirm(
                    "approve these capabilities?",
                    "--yes to approve what it requests, or --grant for each capability",
                )? {
                    println!("not installed");
                    return Ok(ExitCode::FAILURE);
                }
                approval = Approval::everything_requested(&m.capabilities, &config);
            }
            let installed = runtime
                .install(
                    &bytes,
                    InstallOptions {
                        instance_id: instance,
                        config,
                        approval,
                        approve_changes,
                    },
                )
                .await?;
            println!(
                "installed {} {} as instance `{}`",
                installed.name, installed.version, installed.instance_id
            );
            if !installed.grants.is_empty() {
                println!("granted: {}", installed.grants.join(", "));
            }
            for tool in &installed.tools {
                println!(
                    "  tool {}/{} — {}",
                    installed.instance_id, tool.name, tool.description
                );
            }
        }
        PluginCommand::List => {
            let db = runtime.db();
            let instances = db.list_instances().await?;
            for plugin in db.list_plugins().await? {
                println!("{} {} ({})", plugin.name, plugin.version, plugin.kind);
                for i in instances.iter().filter(|i| i.plugin == plugin.name) {
                    println!(
                        "  instance {} [{}]",
                        i.id,
                        if i.enabled { "enabled" } else { "disabled" }
                    );
                }
            }
        }
        PluginCommand::Info { name } => {
            let db = runtime.db();
            let (plugin_name, instance_ids): (String, Vec<String>) =
                match db.get_plugin(&name).await? {
                    Some(p) => {
                        let ids = db
                            .list_instances()
                            .await?
                            .into_iter()
                            .filter(|i| i.plugin == p.name)
                            .map(|i| i.id)
                            .collect();
                        (p.name, ids)
                    }
                    None => match db.get_instance(&name).await? {
                        Some(i) => (i.plugin.clone(), vec![i.id]),
                        None => bail!("no plugin or instance `{name}`"),
                    },
                };
            let plugin = db
                .get_plugin(&plugin_name)
                .await?
                .context("plugin vanished")?;
            let manifest: serde_json::Value = serde_json::from_str(&plugin.manifest_json)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "name": plugin.name, "version": plugin.version, "kind": plugin.kind,
                    "digest": plugin.digest, "manifest": manifest,
                }))?
            );
            for id in instance_ids {
                runtime.load_instance(&id).await?;
                if let Some((_, enabled, grants, tools)) = runtime.instance_summary(&id) {
                    println!(
                        "instance {id} [{}]",
                        if enabled { "enabled" } else { "disabled" }
                    );
                    println!(
                        "  granted: {}",
                        if grants.is_empty() {
                            "nothing".into()
                        } else {
                            grants.join(", ")
                        }
                    );
                    for tool in tools {
                        println!("  tool {id}/{} — {}", tool.name, tool.description);
                    }
                }
            }
        }
        PluginCommand::Remove { name } => {
            if !runtime.remove(&name).await? {
                bail!("no plugin `{name}` (use the full name, e.g. local/hello)");
            }
            println!("removed {name}");
        }
        PluginCommand::Enable { instance } => {
            runtime.set_enabled(&instance, true).await?;
            println!("enabled {instance}");
        }
        PluginCommand::Disable { instance } => {
            runtime.set_enabled(&instance, false).await?;
            println!("disabled {instance}");
        }
        PluginCommand::Secret { instance, name } => {
            let mut value = String::new();
            if std::io::stdin().is_terminal() {
                eprint!("value for {name}: ");
            }
            std::io::stdin().read_to_string(&mut value)?;
            runtime
                .set_secret(&instance, &name, value.trim_end_matches(['\n', '\r']))
                .await?;
            println!("secret {name} set for {instance}");
        }
        PluginCommand::New { .. } | PluginCommand::Build { .. } => {
            unreachable!("handled before opening the data directory")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks `question` on the terminal; without one, fails naming the flag that answers it.
fn confirm(question: &str, flag: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("approval needed: pass {flag}");
    }
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

pub(super) async fn tool(cmd: ToolCommand, config: &Config, data_dir: &Path) -> Result<ExitCode> {
    let runtime = open(config, data_dir).await?;
    match cmd {
        ToolCommand::Call { target, input } => {
            let Some((instance, tool)) = target.split_once('/') else {
                bail!("name the tool as <instance>/<tool>, e.g. calc/calc");
            };
            runtime.load_instance(instance).await?;
            let workspace = runtime.default_workspace()?;
            match runtime
                .call_tool(instance, tool, &input, "local", Some(&workspace))
                .await
            {
                Ok(output) => {
                    println!("{output}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        ToolCommand::List => {
            let failures = runtime.load_all().await?;
            for (id, e) in failures {
                eprintln!("warning: instance {id} did not load: {e:#}");
            }
            for (instance, tool) in runtime.tools() {
                println!("{instance}/{} — {}", tool.name, tool.description);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
