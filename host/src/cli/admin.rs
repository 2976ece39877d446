//! Plugin administration and tool calls from the command line, through a running server's
//! API: what is installed, enabled or removed here is what that server serves at once.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use kelp_registry::package::{PackageLimits, read_package};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::client::{Refusal, Server, plugin_path, segment};
use super::input::{confirm, read_secret};
use super::{PluginCommand, ToolCommand};
use crate::plugins::grants::{Approval, GrantSet};
use crate::plugins::{Manifest, WorkspaceAccess, describe_requested, with_config_defaults};

pub(super) async fn plugin(cmd: PluginCommand, server: &Server) -> Result<ExitCode> {
    match cmd {
        PluginCommand::Install {
            file,
            yes,
            grants,
            instance,
            instance_config,
        } => {
            return install(
                server,
                &file,
                yes,
                &grants,
                instance.as_deref(),
                &instance_config,
            )
            .await;
        }
        PluginCommand::List => {
            let plugins = server.get_all("/api/plugins").await?;
            // Each instance's state is for admins; others see the ids of the instances whose
            // tools they can use.
            let instances = match server.get_all("/api/plugin-instances").await {
                Ok(instances) => instances,
                Err(e) if is_status(&e, StatusCode::FORBIDDEN) => Vec::new(),
                Err(e) => return Err(e),
            };
            if plugins.is_empty() {
                eprintln!("no plugins installed (`kelp plugin install FILE` installs one)");
            }
            for plugin in plugins {
                println!(
                    "{} {} ({})",
                    text(&plugin["name"]),
                    text(&plugin["version"]),
                    text(&plugin["kind"])
                );
                for id in strings(&plugin["instances"]) {
                    match instances.iter().find(|i| i["id"] == id.as_str()) {
                        Some(i) => println!("  instance {id} [{}]", status(i)),
                        None => println!("  instance {id}"),
                    }
                }
            }
        }
        PluginCommand::Info { name } => {
            // A name without a namespace is an instance id; show its plugin and that instance.
            let (plugin_name, only) = if name.contains('/') {
                (name.clone(), None)
            } else {
                let instance = server
                    .get(&format!("/api/plugin-instances/{}", segment(&name)))
                    .await
                    .map_err(|e| not_found_as(e, format!("no plugin or instance `{name}`")))?;
                (text(&instance["plugin"]).to_owned(), Some(name.clone()))
            };
            let plugin = server
                .get(&format!("/api/plugins/{}", plugin_path(&plugin_name)?))
                .await
                .map_err(|e| not_found_as(e, format!("no plugin `{plugin_name}`")))?;
            print_plugin(&plugin, only.as_deref());
        }
        PluginCommand::Remove { name } => {
            server
                .call(
                    Method::DELETE,
                    &format!("/api/plugins/{}", plugin_path(&name)?),
                    None,
                )
                .await
                .map_err(|e| not_found_as(e, format!("no plugin `{name}`")))?;
            println!("removed {name}");
        }
        PluginCommand::Enable { instance } => {
            switch(server, &instance, "enable").await?;
            println!("enabled {instance}");
        }
        PluginCommand::Disable { instance } => {
            switch(server, &instance, "disable").await?;
            println!("disabled {instance}");
        }
        PluginCommand::Secret { instance, name } => {
            let value = read_secret(&format!("value for {name}: "))?;
            if value.is_empty() {
                bail!("no value given for {name} (it is read from standard input)");
            }
            server
                .call(
                    Method::PUT,
                    &format!(
                        "/api/plugin-instances/{}/secrets/{}",
                        segment(&instance),
                        segment(&name)
                    ),
                    Some(&json!({"value": value})),
                )
                .await?;
            println!("secret {name} set for {instance}");
        }
        PluginCommand::New { .. } | PluginCommand::Build { .. } => {
            unreachable!("plugin new and build need no server")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Enables or disables an instance, or every instance of a plugin named `namespace/name`.
async fn switch(server: &Server, target: &str, action: &str) -> Result<()> {
    let path = if target.contains('/') {
        format!("/api/plugins/{}/{action}", plugin_path(target)?)
    } else {
        format!("/api/plugin-instances/{}/{action}", segment(target))
    };
    server
        .call(Method::POST, &path, None)
        .await
        .map_err(|e| not_found_as(e, format!("no plugin instance `{target}`")))?;
    Ok(())
}

async fn install(
    server: &Server,
    file: &Path,
    yes: bool,
    grants: &[String],
    instance: Option<&str>,
    instance_config: &str,
) -> Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    // Read here too, so the operator reviews what it asks for before anything is sent; the
    // server checks it again in full.
    let package = read_package(&bytes, &PackageLimits::default())
        .with_context(|| format!("reading the package {}", file.display()))?;
    let config: Value =
        serde_json::from_str(instance_config).context("--instance-config must be a JSON object")?;
    if !config.is_object() {
        bail!("--instance-config must be a JSON object");
    }
    let m = &package.manifest;
    println!("{} {} ({}) — {}", m.name, m.version, m.kind, m.description);
    println!("digest sha256:{}", package.digest);
    let requested = describe_requested(m);
    if requested.is_empty() {
        println!("requests no capabilities");
    } else {
        println!("requests:");
        for line in &requested {
            println!("  {line}");
        }
    }
    for item in grants {
        // Parsed here for a clear message before the upload; the server parses it again.
        if !grants_anything(m, &config, item)? {
            eprintln!(
                "warning: --grant {item}: {} does not request this, so it grants nothing",
                m.name
            );
        }
    }

    let installed = match server
        .get(&format!(
            "/api/plugins/{}",
            plugin_path(&m.name.to_string())?
        ))
        .await
    {
        Ok(plugin) => Some(text(&plugin["version"]).to_owned()),
        Err(e) if is_status(&e, StatusCode::NOT_FOUND) => None,
        Err(e) => return Err(e),
    };
    let mut approve = yes;
    if let Some(installed) = &installed {
        println!("upgrades the installed {installed}; every instance keeps its grants");
    } else if !yes && grants.is_empty() && !requested.iter().all(|r| r.starts_with("secret:")) {
        if !confirm(
            "approve these capabilities?",
            "--yes to approve what it requests, or --grant for each capability",
        )? {
            println!("not installed");
            return Ok(ExitCode::FAILURE);
        }
        approve = true;
    }
    let result = match upload(server, &bytes, approve, grants, instance, instance_config).await {
        Err(e) if is_code(&e, "approval_required") && !approve => {
            // An upgrade asking for more than the installed version was approved for: the
            // server names what is new; the operator decides for every instance.
            println!("{e}");
            let installed = installed.unwrap_or_default();
            let flag = format!(
                "--yes to approve what the new version asks beyond {installed}, for every instance"
            );
            if !confirm("approve these for every instance?", &flag)? {
                println!("not upgraded; {installed} keeps running");
                return Ok(ExitCode::FAILURE);
            }
            upload(server, &bytes, true, grants, instance, instance_config).await
        }
        other => other,
    }?;
    println!(
        "installed {} {} as instance `{}`",
        text(&result["name"]),
        text(&result["version"]),
        text(&result["instance"])
    );
    let granted = strings(&result["granted"]);
    if !granted.is_empty() {
        println!("granted: {}", granted.join(", "));
    }
    for tool in strings(&result["tools"]) {
        println!("  tool {tool}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `POST /api/plugins` with the package and the approval.
async fn upload(
    server: &Server,
    bytes: &[u8],
    approve: bool,
    grants: &[String],
    instance: Option<&str>,
    config: &str,
) -> Result<Value> {
    let mut query = vec![
        (
            "approve",
            if approve { "requested" } else { "none" }.to_owned(),
        ),
        ("config", config.to_owned()),
    ];
    if !grants.is_empty() {
        query.push(("grants", grants.join(",")));
    }
    if let Some(instance) = instance {
        query.push(("instance", instance.to_owned()));
    }
    let response = server
        .send(
            server
                .request(Method::POST, "/api/plugins")
                .query(&query)
                .header("content-type", "application/octet-stream")
                .body(bytes.to_vec()),
        )
        .await?;
    response.json().await.context("reading the install result")
}

/// Whether approving `item` gives an instance of `manifest` with `config` anything: an
/// approval the manifest does not ask for is dropped at the intersection, silently.
fn grants_anything(manifest: &Manifest, config: &Value, item: &str) -> Result<bool> {
    let mut approval = Approval::default();
    approval.add_item(item)?;
    if item == "workspace:none" {
        return Ok(true);
    }
    let config = with_config_defaults(manifest, config.clone());
    let granted = GrantSet::intersect(&manifest.capabilities, &approval, &config);
    Ok(!granted.http.is_empty() || granted.kv || granted.workspace != WorkspaceAccess::None)
}

fn print_plugin(plugin: &Value, only: Option<&str>) {
    println!(
        "{} {} ({}) — {}",
        text(&plugin["name"]),
        text(&plugin["version"]),
        text(&plugin["kind"]),
        text(&plugin["description"])
    );
    println!("digest sha256:{}", text(&plugin["digest"]));
    let requested = strings(&plugin["requested"]);
    if requested.is_empty() {
        println!("requests no capabilities");
    } else {
        println!("requests: {}", requested.join(", "));
    }
    for i in plugin["instance_details"].as_array().into_iter().flatten() {
        let id = text(&i["id"]);
        if only.is_some_and(|only| only != id) {
            continue;
        }
        println!("instance {id} [{}]", status(i));
        if let Some(error) = i["error"].as_str() {
            println!("  error: {error}");
        }
        // Admins see approvals, grants, config and secrets; other users only the tools.
        if i.get("granted").is_some() {
            let granted = strings(&i["granted"]);
            println!(
                "  granted: {}",
                if granted.is_empty() {
                    "nothing".to_owned()
                } else {
                    granted.join(", ")
                }
            );
            if i["config"].as_object().is_some_and(|c| !c.is_empty()) {
                println!("  config: {}", i["config"]);
            }
            for secret in i["secrets"].as_array().into_iter().flatten() {
                let set = if secret["set"] == true {
                    "set"
                } else {
                    "not set"
                };
                println!("  secret {}: {set}", text(&secret["name"]));
            }
        }
        for tool in strings(&i["tools"]) {
            println!("  tool {tool}");
        }
    }
}

pub(super) async fn tool(cmd: ToolCommand, server: &Server) -> Result<ExitCode> {
    match cmd {
        ToolCommand::Call { target, input } => {
            let Some((instance, tool)) = target.split_once('/') else {
                bail!("name the tool as <instance>/<tool>, e.g. calc/calc");
            };
            let input: Value = serde_json::from_str(&input)
                .with_context(|| format!("the input is not JSON: {input}"))?;
            let output = server
                .call(
                    Method::POST,
                    &format!("/api/tools/{}/{}", segment(instance), segment(tool)),
                    Some(&input),
                )
                .await?;
            println!("{}", text(&output["output"]));
        }
        ToolCommand::List => {
            let tools = server.get_all("/api/tools").await?;
            if tools.is_empty() {
                eprintln!("no tools: no enabled plugin instance offers one (`kelp plugin list`)");
            }
            for tool in tools {
                println!(
                    "{}/{} — {}",
                    text(&tool["instance"]),
                    text(&tool["name"]),
                    text(&tool["description"])
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An instance's state as the API reports it: `loaded`, `disabled` or `failed`.
fn status(instance: &Value) -> &str {
    match instance["status"].as_str() {
        Some(status) => status,
        None if instance["enabled"] == false => "disabled",
        None => "enabled",
    }
}

pub(super) fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

pub(super) fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

pub(super) fn is_status(e: &anyhow::Error, status: StatusCode) -> bool {
    e.downcast_ref::<Refusal>()
        .is_some_and(|r| r.status == status)
}

fn is_code(e: &anyhow::Error, code: &str) -> bool {
    e.downcast_ref::<Refusal>().is_some_and(|r| r.code == code)
}

/// A 404 said in the command's own words; any other error as it was.
pub(super) fn not_found_as(e: anyhow::Error, message: String) -> anyhow::Error {
    if is_status(&e, StatusCode::NOT_FOUND) {
        anyhow::anyhow!(message)
    } else {
        e
    }
}
