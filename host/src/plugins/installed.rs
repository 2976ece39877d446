//! What is installed: packages reviewed and stored, instances with their configuration,
//! approvals and secrets. Every change is one transaction that starts a new plugin generation,
//! and is in effect on every host before its next call (the running side, `runtime.rs`,
//! catches up).

use anyhow::{Context, Result, anyhow, bail};
use kelp_registry::manifest::{Manifest, PluginKind};
use kelp_registry::package::{Package, PackageLimits, read_package};
use semver::Version;
use serde::Serialize;

use super::ToolSpec;
use super::contract::ContractUse;
use super::grants::{Approval, ApprovalNeeded, CapabilityChanges};
use super::runtime::{
    LoadedInstance, PluginRuntime, SecretValues, component_of, retry_later, secret_context,
};
use crate::schema::Schema;
use crate::store::now_ms;
use crate::store::plugins::{InstanceRow, PluginRow, SecretWrites};

/// What an operator sees before approving an install.
#[derive(Debug, Clone, Serialize)]
pub struct PackageReview {
    pub manifest: Manifest,
    pub digest: String,
    pub contract: Option<Version>,
    /// Requested capabilities, one line each (`http:api.x.com`, `kv`, `secret:API_KEY → header x-api-key on api.x.com`).
    pub requested: Vec<String>,
}

/// Result of an install.
#[derive(Debug, Clone, Serialize)]
pub struct InstalledPlugin {
    pub name: String,
    pub version: String,
    pub kind: PluginKind,
    pub instance_id: String,
    pub tools: Vec<ToolSpec>,
    pub grants: Vec<String>,
}

/// What a reconfiguration ([`PluginRuntime::update_instance_with`]) does with the instance's
/// stored secrets, in the same transaction as its config.
#[derive(Debug, Clone, Copy)]
pub enum SecretUpdate<'a> {
    /// Sets these `(name, value)`, keeping the other stored ones.
    Set(&'a [(String, String)]),
    /// The instance's secrets become exactly these: every other stored one is removed.
    Replace(&'a [(String, String)]),
}

/// Options of an install.
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// Id of the first instance; default: the plugin's short name.
    pub instance_id: Option<String>,
    pub config: serde_json::Value,
    pub approval: Approval,
    /// For an upgrade: the operator approves, for every instance, what the new version asks
    /// beyond the installed one (new capabilities, secrets that go elsewhere). Without it such
    /// an upgrade is refused with [`ApprovalNeeded`](super::grants::ApprovalNeeded).
    pub approve_changes: bool,
}

impl PluginRuntime {
    /// Reads and checks a package without installing it: the strict archive reader, the
    /// manifest, and the contract versions the component uses.
    pub fn review(&self, package: &[u8]) -> Result<(PackageReview, Package)> {
        let package =
            read_package(package, &PackageLimits::default()).context("reading the package")?;
        let contract = match &package.wasm {
            Some(wasm) => Some(ContractUse::read(wasm)?.check(&package.manifest)?),
            None => None,
        };
        let review = PackageReview {
            requested: describe_requested(&package.manifest),
            manifest: package.manifest.clone(),
            digest: package.digest.clone(),
            contract,
        };
        Ok((review, package))
    }

    /// The requested capabilities of a manifest, one line each.
    pub fn review_manifest(&self, manifest: &Manifest) -> Vec<String> {
        describe_requested(manifest)
    }

    /// Installs (or upgrades) a package: checks it, compiles it, test-instantiates it with the
    /// given approval, stores it and its first instance, and loads that instance.
    pub async fn install(&self, bytes: &[u8], options: InstallOptions) -> Result<InstalledPlugin> {
        let (review, package) = self.review(bytes)?;
        let contract = review.contract;
        let manifest = package.manifest.clone();
        let instance_id = options
            .instance_id
            .clone()
            .unwrap_or_else(|| manifest.name.name().to_owned());
        validate_instance_id(&instance_id)?;
        let existing = self.db.get_instance(&instance_id).await?;
        if let Some(existing) = &existing
            && existing.plugin != manifest.name.to_string()
        {
            bail!(
                "instance id `{instance_id}` is taken by plugin {}; choose another with --instance",
                existing.plugin
            );
        }
        let approvals = self
            .approve_upgrade(&manifest, options.approve_changes)
            .await?;
        let row = PluginRow {
            name: manifest.name.to_string(),
            version: manifest.version.to_string(),
            kind: manifest.kind.to_string(),
            digest: package.digest.clone(),
            wasm_sha256: package.wasm_sha256.clone(),
            contract: contract.as_ref().map(ToString::to_string),
            manifest_json: serde_json::to_string(&manifest)?,
            manifest_toml: package.manifest_text.clone(),
            installed_at_ms: now_ms(),
        };
        // An upgrade keeps the instance as the operator configured and approved it (change
        // those through the instance itself, or approve what the new version asks beyond the
        // installed one); only a first install takes them from `options`.
        let instance = match existing {
            Some(existing) => InstanceRow {
                approval_json: approvals
                    .iter()
                    .find(|(id, _)| *id == existing.id)
                    .map_or(existing.approval_json.clone(), |(_, a)| a.clone()),
                ..existing
            },
            None => InstanceRow {
                id: instance_id.clone(),
                plugin: row.name.clone(),
                config_json: serde_json::to_string(&options.config)?,
                approval_json: serde_json::to_string(&options.approval)?,
                enabled: true,
                created_at_ms: now_ms(),
                revision: 0,
            },
        };
        let config: serde_json::Value = serde_json::from_str(&instance.config_json)?;
        validate_config(&manifest, &config)?;
        // Test-instantiate before anything is stored: a package that cannot start never lands.
        let loaded = self
            .build_instance(
                &manifest,
                component_of(
                    package.wasm.as_deref(),
                    row.wasm_sha256.as_deref(),
                    &contract,
                ),
                &instance,
                SecretValues::Stored(&[]),
            )
            .await?;
        let generation = self
            .db
            .put_plugin(&row, bytes, &instance, &approvals)
            .await?;
        {
            // An upgrade reloads every instance of the plugin against the new package; one
            // that no longer loads shows that in its status rather than failing the install.
            let _reload = self.reload.lock().await;
            let mut reloaded = Ok(());
            for other in self.db.list_instances().await? {
                if other.plugin == row.name
                    && let Err(e) = self.load_row(&other).await
                    && retry_later(&e)
                {
                    reloaded = Err(e);
                }
            }
            self.caught_up(generation, &reloaded);
        }
        let grants = loaded.ctx.grants.describe();
        Ok(InstalledPlugin {
            name: row.name,
            version: row.version,
            kind: manifest.kind,
            instance_id,
            tools: loaded.tools.clone(),
            grants,
        })
    }

    /// For a package of an installed plugin: the installed version, and what the package asks
    /// beyond it (one line each; empty if nothing). `None` for a plugin not installed.
    pub async fn upgrade_changes(
        &self,
        manifest: &Manifest,
    ) -> Result<Option<(String, Vec<String>)>> {
        let Some(installed) = self.db.get_plugin(&manifest.name.to_string()).await? else {
            return Ok(None);
        };
        let installed = Manifest::parse(&installed.manifest_toml)?;
        let changes = CapabilityChanges::between(&installed.capabilities, &manifest.capabilities);
        Ok(Some((installed.version.to_string(), changes.describe())))
    }

    /// What the new version of an installed plugin asks beyond the installed one, as it
    /// would be approved for each of its instances: `(instance id, approval JSON)`. Nothing for
    /// a first install or an upgrade that asks for nothing new; an error naming the changes
    /// when they are not approved.
    async fn approve_upgrade(
        &self,
        manifest: &Manifest,
        approved: bool,
    ) -> Result<Vec<(String, String)>> {
        let name = manifest.name.to_string();
        let Some(installed) = self.db.get_plugin(&name).await? else {
            return Ok(Vec::new());
        };
        let installed = Manifest::parse(&installed.manifest_toml)?;
        let changes = CapabilityChanges::between(&installed.capabilities, &manifest.capabilities);
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        if !approved {
            return Err(ApprovalNeeded::new(&installed, manifest, &changes).into());
        }
        let mut approvals = Vec::new();
        for instance in self.db.list_instances().await? {
            if instance.plugin != name {
                continue;
            }
            let approval: Approval = serde_json::from_str(&instance.approval_json)?;
            let config =
                with_config_defaults(manifest, serde_json::from_str(&instance.config_json)?);
            let approval = changes.approve(approval, &installed.capabilities, &config);
            approvals.push((instance.id, serde_json::to_string(&approval)?));
        }
        Ok(approvals)
    }

    /// Removes a plugin, its instances, their secrets and data.
    pub async fn remove(&self, name: &str) -> Result<bool> {
        let (removed, generation) = self.db.delete_plugin(name).await?;
        self.skills.write().expect("skills lock").remove(name);
        let _reload = self.reload.lock().await;
        let rows = self.db.list_instances().await?;
        self.forget_all_but(&rows);
        self.caught_up(generation, &Ok(()));
        Ok(removed)
    }

    pub async fn set_enabled(&self, instance_id: &str, enabled: bool) -> Result<()> {
        let Some(generation) = self.db.set_instance_enabled(instance_id, enabled).await? else {
            bail!("no plugin instance `{instance_id}`");
        };
        let _reload = self.reload.lock().await;
        let loaded = self.load_instance_locked(instance_id).await;
        self.caught_up(generation, &loaded);
        loaded
    }

    /// Stores (sealed) a secret for an instance and reloads it. Only names the manifest
    /// declares are accepted.
    pub async fn set_secret(&self, instance_id: &str, name: &str, value: &str) -> Result<()> {
        let row = self
            .db
            .get_instance(instance_id)
            .await?
            .ok_or_else(|| anyhow!("no plugin instance `{instance_id}`"))?;
        let plugin = self
            .db
            .get_plugin(&row.plugin)
            .await?
            .ok_or_else(|| anyhow!("plugin missing"))?;
        check_secret(&Manifest::parse(&plugin.manifest_toml)?, name, value)?;
        let sealed = self
            .secret_box
            .seal(&secret_context(instance_id, name), value)?;
        let generation = self.db.put_secret(instance_id, name, &sealed).await?;
        let _reload = self.reload.lock().await;
        let loaded = self.load_instance_locked(instance_id).await;
        self.caught_up(generation, &loaded);
        loaded
    }

    /// Creates another instance of an installed plugin.
    pub async fn create_instance(
        &self,
        plugin: &str,
        id: &str,
        config: serde_json::Value,
        approval: Approval,
    ) -> Result<()> {
        validate_instance_id(id)?;
        // Read before anything the build reads (see `settle_change`).
        let before = self.db.plugin_generation().await?;
        let stored = self
            .db
            .get_plugin(plugin)
            .await?
            .ok_or_else(|| anyhow!("plugin {plugin} is not installed"))?;
        validate_config(&Manifest::parse(&stored.manifest_toml)?, &config)?;
        let row = InstanceRow {
            id: id.to_owned(),
            plugin: plugin.to_owned(),
            config_json: serde_json::to_string(&config)?,
            approval_json: serde_json::to_string(&approval)?,
            enabled: true,
            created_at_ms: now_ms(),
            revision: 0,
        };
        // Built before it is stored: an instance that cannot load is never created.
        let loaded = self.build_row(&row).await?;
        let generation = self.db.insert_instance(&row).await?;
        self.settle_change(id, before, generation, loaded).await;
        Ok(())
    }

    /// Puts in place the instance a change built before writing itself — `built`, from
    /// reads made after the plugin generation was `before` — now that the write started
    /// `generation`.
    async fn settle_change(&self, id: &str, before: i64, generation: i64, built: LoadedInstance) {
        let _reload = self.reload.lock().await;
        let reloaded = if generation == before + 1 {
            // No other change committed between the build's reads and this write: what was
            // built is what the database now holds.
            self.settle(id, generation, Ok(built))
        } else {
            // Another change landed in between (on another host, by the CLI, or a concurrent
            // request here): the package or secrets the build read may be older than this
            // write, and an instance stamped newer than what it holds would never be rebuilt.
            // The build was the check; load what is stored.
            drop(built);
            self.load_instance_locked(id).await
        };
        if let Err(e) = &reloaded {
            tracing::warn!(instance = %id, error = %format!("{e:#}"), "plugin instance changed but did not reload");
        }
        self.caught_up(generation, &reloaded);
    }

    /// Replaces an instance's configuration and approval (validated first) and reloads it.
    pub async fn update_instance(
        &self,
        id: &str,
        config: serde_json::Value,
        approval: Approval,
    ) -> Result<()> {
        self.update_instance_with(id, config, approval, SecretUpdate::Set(&[]))
            .await
            .map(drop)
    }

    /// [`update_instance`](Self::update_instance) that also writes secrets, in the same
    /// transaction: every host loads the new config with the new secrets, never one without
    /// the other. Returns the names of stored secrets it removed.
    pub async fn update_instance_with(
        &self,
        id: &str,
        config: serde_json::Value,
        approval: Approval,
        secrets: SecretUpdate<'_>,
    ) -> Result<Vec<String>> {
        // Read before anything the build reads (see `settle_change`).
        let before = self.db.plugin_generation().await?;
        let row = self
            .db
            .get_instance(id)
            .await?
            .ok_or_else(|| anyhow!("no plugin instance `{id}`"))?;
        let plugin = self
            .db
            .get_plugin(&row.plugin)
            .await?
            .ok_or_else(|| anyhow!("plugin missing"))?;
        let manifest = Manifest::parse(&plugin.manifest_toml)?;
        validate_config(&manifest, &config)?;
        let (values, replace) = match secrets {
            SecretUpdate::Set(values) => (values, false),
            SecretUpdate::Replace(values) => (values, true),
        };
        let mut sealed = Vec::new();
        for (name, value) in values {
            check_secret(&manifest, name, value)?;
            sealed.push((
                name.clone(),
                self.secret_box.seal(&secret_context(id, name), value)?,
            ));
        }
        let changed = InstanceRow {
            config_json: serde_json::to_string(&config)?,
            approval_json: serde_json::to_string(&approval)?,
            ..row
        };
        // Try the change first: a configuration the instance cannot load with is refused and
        // nothing is stored, so the running instance keeps working.
        let trial = if replace {
            SecretValues::Only(values)
        } else {
            SecretValues::Stored(values)
        };
        let loaded = self.build_row_with(&changed, trial).await?;
        let writes = if replace {
            SecretWrites::Replace(&sealed)
        } else {
            SecretWrites::Put(&sealed)
        };
        let Some((generation, removed)) = self
            .db
            .reconfigure_instance(id, &changed.config_json, &changed.approval_json, writes)
            .await?
        else {
            bail!("no plugin instance `{id}`");
        };
        self.settle_change(id, before, generation, loaded).await;
        Ok(removed)
    }

    /// Deletes an instance with its secrets and kv data.
    pub async fn delete_instance(&self, id: &str) -> Result<bool> {
        let (deleted, generation) = self.db.delete_instance(id).await?;
        let _reload = self.reload.lock().await;
        self.forget(id);
        self.caught_up(generation, &Ok(()));
        Ok(deleted)
    }

    /// Removes a secret of an instance and reloads it.
    pub async fn delete_secret(&self, instance_id: &str, name: &str) -> Result<bool> {
        let (deleted, generation) = self.db.delete_secret(instance_id, name).await?;
        // Without the secret the instance may no longer load; that is its status to report,
        // not a failure of the delete.
        let _reload = self.reload.lock().await;
        let reloaded = self.load_instance_locked(instance_id).await;
        self.caught_up(generation, &reloaded);
        Ok(deleted)
    }
}

/// Checks an instance configuration against the manifest's `[config]` schema.
/// `config` with the manifest's schema defaults filled in for keys it does not set, so a
/// provider works out of the box against its vendor's public endpoint, and grants written as
/// `{config.base_url}` resolve before the operator changed anything.
pub fn with_config_defaults(
    manifest: &Manifest,
    mut config: serde_json::Value,
) -> serde_json::Value {
    let (Some(object), Some(properties)) = (
        config.as_object_mut(),
        manifest
            .config_schema
            .as_ref()
            .and_then(|s| s.get("properties"))
            .and_then(|p| p.as_object()),
    ) else {
        return config;
    };
    for (key, schema) in properties {
        if let (false, Some(default)) = (object.contains_key(key), schema.get("default")) {
            object.insert(key.clone(), default.clone());
        }
    }
    config
}

fn validate_config(manifest: &Manifest, config: &serde_json::Value) -> Result<()> {
    if !config.is_object() {
        bail!("config must be a JSON object");
    }
    if let Some(schema) = config_schema(manifest)? {
        let config = with_config_defaults(manifest, config.clone());
        schema
            .validate(&config, "config")
            .map_err(|e| anyhow!("{}: {e}", manifest.name))?;
    }
    Ok(())
}

/// The manifest's `[config]` schema, compiled.
pub(super) fn config_schema(manifest: &Manifest) -> Result<Option<Schema>> {
    manifest
        .config_schema
        .as_ref()
        .map(|schema| {
            Schema::compile(schema).map_err(|e| {
                anyhow!(
                    "{}: the [config] schema is not a valid JSON Schema: {e}",
                    manifest.name
                )
            })
        })
        .transpose()
}

/// Checks that `manifest` declares secret `name` and that `value` is one.
fn check_secret(manifest: &Manifest, name: &str, value: &str) -> Result<()> {
    let declared = manifest.secret_names();
    if !declared.contains(&name) {
        if declared.is_empty() {
            bail!("{} declares no secrets", manifest.name);
        }
        bail!(
            "{} declares no secret `{name}` (it declares: {})",
            manifest.name,
            declared.join(", ")
        );
    }
    if value.is_empty() {
        bail!("secret `{name}` must not be empty");
    }
    Ok(())
}

fn validate_instance_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        bail!("instance id `{id}` must be 1-64 characters of a-z, 0-9, - and _");
    }
    Ok(())
}

/// What a manifest asks for, one line each, as an operator reviews it before approving.
pub fn describe_requested(manifest: &Manifest) -> Vec<String> {
    let caps = &manifest.capabilities;
    let mut out: Vec<String> = caps.http.iter().map(|h| format!("http:{h}")).collect();
    if caps.kv {
        out.push("kv".into());
    }
    if caps.workspace != kelp_registry::manifest::WorkspaceAccess::None {
        out.push(format!("workspace:{}", caps.workspace));
    }
    for s in &caps.secrets {
        out.push(format!("secret:{} ({})", s.name, describe_position(s)));
    }
    out
}

/// Where a secret goes, for the operator: `header `x-api-key` on api.x.com`.
pub(super) fn describe_position(binding: &kelp_registry::manifest::SecretBinding) -> String {
    use kelp_registry::manifest::SecretPosition;
    let host = binding.host.as_deref().unwrap_or("its URL's host");
    match &binding.position {
        SecretPosition::Header { name, .. } => format!("header `{name}` on {host}"),
        SecretPosition::UrlPathPrefix(prefix) => format!("URL path prefix {prefix}"),
        SecretPosition::Query(name) => format!("query parameter `{name}` on {host}"),
        SecretPosition::FormField(name) => format!("form field `{name}` on {host}"),
    }
}
