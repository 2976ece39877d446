//! Install, load and call plugins.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result, anyhow, bail};
use kelp_registry::manifest::{Manifest, PluginKind, WorkspaceAccess};
use kelp_registry::package::{Package, PackageLimits, read_package};
use semver::Version;
use serde::Serialize;
use tokio::sync::Semaphore;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use super::cache::CompileCache;
use super::contract::ContractUse;
use super::contract::channel::{ChannelInfo, ChannelPre};
use super::contract::dispatch::{ProviderPre, ToolPre};
use super::grants::{Approval, ApprovalNeeded, CapabilityChanges, GrantSet};
use super::settings::RuntimeSettings;
use super::state::{CallState, within_budget};
use super::workspace::WorkspaceQuotas;
use super::{InstanceContext, ToolFailure, ToolSpec};
use crate::net::{self, OutboundClient, OutboundPolicy, Redactor, Resolve};
use crate::schema::Schema;
use crate::secrets::SecretBox;
use crate::store::plugins::{InstanceRow, PluginRow, SecretWrites};
use crate::store::{Db, now_ms};

/// Why a call did not produce output. Each variant is one clear, user-facing reason.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no plugin instance `{0}`")]
    UnknownInstance(String),
    #[error("plugin instance `{0}` is disabled")]
    Disabled(String),
    #[error("plugin instance `{instance}` has no tool `{tool}` (it has: {available})")]
    UnknownTool {
        instance: String,
        tool: String,
        available: String,
    },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("the tool returned an error: {0}")]
    Tool(ToolFailure),
    #[error(
        "plugin `{instance}` exceeded its time budget of {budget_ms} ms of computation and was stopped"
    )]
    TimeBudget { instance: String, budget_ms: u64 },
    #[error(
        "plugin `{instance}` did not finish within the wall-clock limit of {limit_ms} ms and was stopped"
    )]
    WallTimeout { instance: String, limit_ms: u64 },
    #[error("plugin `{instance}` ran out of memory (limit {limit_mb} MiB) and was stopped")]
    OutOfMemory { instance: String, limit_mb: u64 },
    #[error("plugin `{instance}` exhausted its stack (unbounded recursion?) and was stopped")]
    StackOverflow { instance: String },
    /// Rust and C guests keep most of their stack in linear memory, below their data; when it
    /// overflows, the guest writes below address 0 and wasm traps as an out-of-bounds access.
    #[error(
        "plugin `{instance}` accessed memory out of bounds and was stopped (most often its stack \
         overflowed from unbounded recursion)"
    )]
    MemoryFault { instance: String },
    #[error("plugin `{instance}` crashed: {detail} (its log has the panic message, if any)")]
    Crashed { instance: String, detail: String },
    /// The output, or the message of an error the tool returned, was over the limit.
    #[error("plugin `{instance}` returned {size} bytes of output, over the limit of {limit} bytes")]
    OutputTooLarge {
        instance: String,
        size: usize,
        limit: u64,
    },
    #[error("{0}")]
    Kv(String),
    #[error("internal error running plugin `{instance}`: {detail}")]
    Internal { instance: String, detail: String },
}

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

/// The secret values an instance is built with.
#[derive(Debug, Clone, Copy)]
pub enum SecretValues<'a> {
    /// The stored ones, with these `(name, value)` instead where given.
    Stored(&'a [(String, String)]),
    /// Only these: nothing stored is used (credentials tried against another address must
    /// not take the stored key there).
    Only(&'a [(String, String)]),
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

/// A load that failed for a reason outside the instance: the database did not answer a read
/// of its row, package or secrets. The instance keeps what it had and the load is tried again
/// at the next catch-up, whereas a load that fails for the instance's own reasons (its config,
/// schema or grants, a component that does not start) replaces it with the error.
#[derive(Debug, thiserror::Error)]
#[error("reading the plugin from the database: {0:#}")]
struct StorageUnavailable(anyhow::Error);

fn unavailable(error: anyhow::Error) -> anyhow::Error {
    StorageUnavailable(error).into()
}

/// Whether a load failure is worth trying again rather than the instance's own.
fn retry_later(error: &anyhow::Error) -> bool {
    error.downcast_ref::<StorageUnavailable>().is_some()
}

/// The revision recorded for an instance that never loaded on this host because of a
/// [`StorageUnavailable`] failure: it matches no row, so the next catch-up tries again.
const NEVER_LOADED: i64 = i64::MIN;

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

pub(crate) struct LoadedInstance {
    /// The instance row's revision this was built from.
    revision: i64,
    pub(super) ctx: Arc<InstanceContext>,
    pub(super) kind: PluginKind,
    pub(super) enabled: bool,
    tools: Vec<ToolSpec>,
    /// Each tool's input schema, compiled once at load (same order as `tools`).
    schemas: Vec<Schema>,
    tool_pre: Option<ToolPre>,
    pub(super) provider_pre: Option<ProviderPre>,
    /// A channel's component and what it said of its platform at load.
    pub(super) channel: Option<(ChannelPre, ChannelInfo)>,
    /// How a channel's webhook deliveries are authenticated, and the secret's value (`None`:
    /// not set, so every delivery is refused).
    pub(super) webhook: Option<(kelp_registry::manifest::WebhookAuth, Option<String>)>,
    /// What a provider's `models()` listed at load.
    pub(super) models: Vec<crate::llm::ModelInfo>,
    /// A provider's `[provider]` manifest table.
    pub(super) provider_info: kelp_registry::manifest::ProviderInfo,
    /// The plugin's default config, for telling a configured base URL from the vendor's.
    pub(super) default_config: serde_json::Value,
}

/// The plugin runtime of one host process.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<CallState>,
    cache: CompileCache,
    settings: RuntimeSettings,
    pub(super) permits: Arc<Semaphore>,
    /// Taken by a provider stream before a pool slot, and held as long: fewer permits than
    /// the pool has slots, so streams that last minutes leave slots for short tool calls.
    pub(super) stream_permits: Arc<Semaphore>,
    /// Each owner's share of the slots for tool calls.
    owner_limits: super::fair::OwnerLimits,
    db: Db,
    secret_box: SecretBox,
    resolver: Arc<dyn Resolve>,
    workspaces: PathBuf,
    components: RwLock<HashMap<String, Component>>,
    pub(super) instances: RwLock<HashMap<String, Arc<LoadedInstance>>>,
    stats: CallStats,
    /// Why an instance did not load, with the revision of the row that failed.
    load_errors: RwLock<HashMap<String, (i64, String)>>,
    /// The plugin generation this host's instances reflect (see [`PluginRuntime::catch_up`]).
    seen_generation: AtomicI64,
    /// Held while what is loaded changes, so a reload that read older rows cannot land after
    /// one that read newer ones.
    reload: tokio::sync::Mutex<()>,
    /// Parsed `SKILL.md` of installed plugins with the digest of the package it came from:
    /// one entry per installed plugin at most (a removed plugin's goes at its next lookup).
    skills: RwLock<HashMap<String, (String, Option<kelp_registry::package::Skill>)>>,
    workspace_quotas: WorkspaceQuotas,
}

/// Counters of tool calls, for `/metrics`.
#[derive(Debug, Default)]
pub struct CallStats {
    pub ok: std::sync::atomic::AtomicU64,
    /// The plugin returned an error of its own.
    pub tool_errors: std::sync::atomic::AtomicU64,
    /// The host stopped the plugin: trap, budget, memory, timeout, output cap.
    pub stopped: std::sync::atomic::AtomicU64,
    /// Refused before running: unknown instance or tool, disabled, bad input.
    pub refused: std::sync::atomic::AtomicU64,
}

impl PluginRuntime {
    /// Creates the runtime for a data directory (compile cache, keys, workspaces) and database.
    pub fn new(settings: RuntimeSettings, data_dir: &Path, db: Db) -> Result<Arc<PluginRuntime>> {
        Self::with_resolver(settings, data_dir, db, Arc::new(net::SystemResolver))
    }

    /// Like [`PluginRuntime::new`] with a chosen DNS resolver (tests resolve fake names).
    pub fn with_resolver(
        settings: RuntimeSettings,
        data_dir: &Path,
        db: Db,
        resolver: Arc<dyn Resolve>,
    ) -> Result<Arc<PluginRuntime>> {
        let engine = super::engine::build_engine(&settings)?;
        super::engine::start_epoch_ticker(
            &engine,
            std::time::Duration::from_millis(settings.epoch_tick_ms.max(1)),
        );
        let mut linker = Linker::<CallState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("adding WASI to the linker")?;
        super::workspace::add_to_linker(&mut linker)
            .map_err(anyhow::Error::from)
            .context("adding the workspace quota")?;
        super::contract::add_to_linker(&mut linker)
            .map_err(anyhow::Error::from)
            .context("adding kelp imports to the linker")?;
        let cache = CompileCache::open(
            &engine,
            &data_dir.join("cache"),
            &data_dir.join("cache.key"),
        )?;
        let secret_box = SecretBox::from_env_or_file(&data_dir.join("master.key"))?;
        let slots = settings.max_concurrent_plugin_calls.max(1) as usize;
        let permits = Arc::new(Semaphore::new(slots));
        let stream_permits = Arc::new(Semaphore::new(stream_slots(slots)));
        let owner_limits =
            super::fair::OwnerLimits::new(settings.max_plugin_calls_per_user as usize);
        Ok(Arc::new(PluginRuntime {
            engine,
            linker,
            cache,
            settings,
            permits,
            stream_permits,
            owner_limits,
            db,
            secret_box,
            resolver,
            workspaces: data_dir.join("workspaces"),
            components: RwLock::new(HashMap::new()),
            instances: RwLock::new(HashMap::new()),
            stats: CallStats::default(),
            load_errors: RwLock::new(HashMap::new()),
            seen_generation: AtomicI64::new(0),
            reload: tokio::sync::Mutex::new(()),
            skills: RwLock::new(HashMap::new()),
            workspace_quotas: WorkspaceQuotas::default(),
        }))
    }

    /// The engine (benchmarks compare Kelp's call path against a bare wasmtime one).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn settings(&self) -> &RuntimeSettings {
        &self.settings
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

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

    /// Loads every instance from the database (`kelp serve` at start). An instance that fails
    /// to load is reported and skipped; the others still load.
    pub async fn load_all(&self) -> Result<Vec<(String, anyhow::Error)>> {
        let _reload = self.reload.lock().await;
        let generation = self.db.plugin_generation().await?;
        let rows = self.db.list_instances().await?;
        let mut failures = Vec::new();
        for row in &rows {
            if let Err(e) = self.load_row(row).await {
                tracing::error!(instance = %row.id, error = %format!("{e:#}"), "plugin instance failed to load");
                failures.push((row.id.clone(), e));
            }
        }
        self.forget_all_but(&rows);
        // A load the database failed is tried again at the first call.
        if !failures.iter().any(|(_, e)| retry_later(e)) {
            self.seen_generation.fetch_max(generation, Ordering::SeqCst);
        }
        Ok(failures)
    }

    /// Brings what this host has loaded up to date with the database. Installs, upgrades,
    /// removals, config, secret, grant and enable/disable changes — made through any host's
    /// API or by the `kelp` CLI, all of which bump the plugin generation in the transaction
    /// of the change — are in effect here once this returns. It costs one primary-key read
    /// when nothing changed, which is why every plugin call (tool calls, provider calls) and
    /// every listing of loaded instances starts with it; after a change it reloads only the
    /// instances whose revision moved.
    pub async fn catch_up(&self) -> Result<()> {
        self.catch_up_for(None).await
    }

    /// [`catch_up`](Self::catch_up) before a call to instance `only`: while another caller
    /// holds the reload (rebuilding what changed, which may mean compiling), a call to an
    /// instance whose row has not moved since it was loaded goes ahead — what it would wait
    /// for cannot change what it runs. A call to a changed instance waits, as every listing
    /// does.
    pub(super) async fn catch_up_for(&self, only: Option<&str>) -> Result<()> {
        let generation = self.db.plugin_generation().await?;
        if generation <= self.seen_generation.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _reload = match (self.reload.try_lock(), only) {
            (Ok(reload), _) => reload,
            (Err(_), Some(id)) => {
                // Every change to an instance stamps its row, and what is loaded is never
                // older than the revision it carries.
                let current = self.db.get_instance(id).await?.map(|row| row.revision);
                let loaded = self
                    .instances
                    .read()
                    .expect("instances lock")
                    .get(id)
                    .map(|i| i.revision);
                if current.is_some() && loaded == current {
                    return Ok(());
                }
                self.reload.lock().await
            }
            (Err(_), None) => self.reload.lock().await,
        };
        // Read again under the lock: a caller that waited for it may find the work done.
        let generation = self.db.plugin_generation().await?;
        if generation <= self.seen_generation.load(Ordering::SeqCst) {
            return Ok(());
        }
        let rows = self.db.list_instances().await?;
        let mut retry = false;
        for row in &rows {
            if self.loaded_revision(&row.id) != Some(row.revision)
                && let Err(e) = self.load_row(row).await
            {
                if retry_later(&e) {
                    retry = true;
                    tracing::warn!(instance = %row.id, error = %format!("{e:#}"), "plugin instance not reloaded; serving it as it was");
                } else {
                    tracing::warn!(instance = %row.id, error = %format!("{e:#}"), "not serving plugin instance");
                }
            }
        }
        self.forget_all_but(&rows);
        // Unseen, the generation makes the next call try the failed loads again.
        if !retry {
            self.seen_generation.fetch_max(generation, Ordering::SeqCst);
        }
        Ok(())
    }

    /// After this host made the change that started `generation` and put its result in
    /// place (`reloaded`): if it had seen every change before it, it has now seen this one
    /// too, and the next call need not reload — unless the reload failed for want of the
    /// database, which the next call then tries again. Called with `reload` held.
    fn caught_up(&self, generation: i64, reloaded: &Result<()>) {
        if reloaded.as_ref().is_err_and(retry_later) {
            return;
        }
        let _ = self.seen_generation.compare_exchange(
            generation - 1,
            generation,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// The revision of the row an instance's current state (loaded or failed) came from.
    fn loaded_revision(&self, id: &str) -> Option<i64> {
        let loaded = self
            .instances
            .read()
            .expect("instances lock")
            .get(id)
            .map(|i| i.revision);
        loaded.or_else(|| {
            self.load_errors
                .read()
                .expect("load errors lock")
                .get(id)
                .map(|(revision, _)| *revision)
        })
    }

    /// Drops every instance (and load error) whose row is not among `rows`.
    fn forget_all_but(&self, rows: &[InstanceRow]) {
        let present: std::collections::HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        self.instances
            .write()
            .expect("instances lock")
            .retain(|id, _| present.contains(id.as_str()));
        self.load_errors
            .write()
            .expect("load errors lock")
            .retain(|id, _| present.contains(id.as_str()));
    }

    fn forget(&self, id: &str) {
        self.instances.write().expect("instances lock").remove(id);
        self.load_errors
            .write()
            .expect("load errors lock")
            .remove(id);
    }

    /// Puts what building revision `revision` of instance `id` gave in place: the instance,
    /// served from now on, or why it did not load (and it is not served). A failure that is
    /// not the instance's own ([`StorageUnavailable`]) leaves what was there. Nothing replaces
    /// the state of a newer revision. Called with `reload` held.
    fn settle(&self, id: &str, revision: i64, built: Result<LoadedInstance>) -> Result<()> {
        if self
            .loaded_revision(id)
            .is_some_and(|loaded| loaded > revision)
        {
            return Ok(());
        }
        match built {
            Ok(mut loaded) => {
                loaded.revision = revision;
                self.instances
                    .write()
                    .expect("instances lock")
                    .insert(id.to_owned(), Arc::new(loaded));
                self.load_errors
                    .write()
                    .expect("load errors lock")
                    .remove(id);
                Ok(())
            }
            Err(e) if retry_later(&e) => {
                // Serving the instance as it was beats not serving it until a restart; the
                // revision stays unseen, so the next catch-up builds it again.
                if self.loaded_revision(id).is_none() {
                    self.load_errors
                        .write()
                        .expect("load errors lock")
                        .insert(id.to_owned(), (NEVER_LOADED, format!("{e:#}")));
                }
                Err(e)
            }
            Err(e) => {
                self.load_errors
                    .write()
                    .expect("load errors lock")
                    .insert(id.to_owned(), (revision, format!("{e:#}")));
                self.instances.write().expect("instances lock").remove(id);
                Err(e)
            }
        }
    }

    /// Builds a stored row and settles the result. Called with `reload` held.
    async fn load_row(&self, row: &InstanceRow) -> Result<()> {
        let built = self.build_row(row).await;
        // Disabling is the operator's off switch: an instance disabled since it was loaded
        // is not served as it was while the database fails its reload.
        if !row.enabled
            && built.as_ref().is_err_and(retry_later)
            && self
                .loaded_revision(&row.id)
                .is_some_and(|loaded| loaded < row.revision)
        {
            self.instances
                .write()
                .expect("instances lock")
                .remove(&row.id);
        }
        self.settle(&row.id, row.revision, built)
    }

    /// (Re)loads one instance from the database. A failure is remembered for
    /// [`PluginRuntime::load_error`] and the instance is not served.
    pub async fn load_instance(&self, id: &str) -> Result<()> {
        let _reload = self.reload.lock().await;
        self.load_instance_locked(id).await
    }

    async fn load_instance_locked(&self, id: &str) -> Result<()> {
        match self.db.get_instance(id).await.map_err(unavailable)? {
            Some(row) => self.load_row(&row).await,
            None => {
                self.forget(id);
                bail!("no plugin instance `{id}`")
            }
        }
    }

    /// Why an instance failed to load, if it did.
    pub fn load_error(&self, id: &str) -> Option<String> {
        self.load_errors
            .read()
            .expect("load errors lock")
            .get(id)
            .map(|(_, error)| error.clone())
    }

    /// Builds (compiles if needed, test-instantiates) an instance from a row that need not be
    /// stored yet, so a change can be tried before it is saved.
    async fn build_row(&self, row: &InstanceRow) -> Result<LoadedInstance> {
        self.build_row_with(row, SecretValues::Stored(&[])).await
    }

    /// [`build_row`](Self::build_row) with other secret values than the stored ones — for
    /// trying credentials before they are saved.
    pub(super) async fn build_row_with(
        &self,
        row: &InstanceRow,
        secret_values: SecretValues<'_>,
    ) -> Result<LoadedInstance> {
        let id = &row.id;
        let plugin = self
            .db
            .get_plugin(&row.plugin)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| anyhow!("instance `{id}` refers to missing plugin {}", row.plugin))?;
        let manifest: Manifest = Manifest::parse(&plugin.manifest_toml)?;
        let wasm = match &plugin.wasm_sha256 {
            Some(_) => {
                let bytes = self
                    .db
                    .get_package(&plugin.name)
                    .await
                    .map_err(unavailable)?
                    .ok_or_else(|| anyhow!("package missing"))?;
                read_package(&bytes, &PackageLimits::default())?.wasm
            }
            None => None,
        };
        let contract = match &plugin.contract {
            Some(v) => Some(
                Version::parse(v)
                    .with_context(|| format!("{}: stored contract version `{v}`", plugin.name))?,
            ),
            None => None,
        };
        self.build_instance(
            &manifest,
            component_of(wasm.as_deref(), plugin.wasm_sha256.as_deref(), &contract),
            row,
            secret_values,
        )
        .await
    }

    async fn component(&self, wasm: &[u8], wasm_sha256: &str) -> Result<Component> {
        if let Some(c) = self
            .components
            .read()
            .expect("components lock")
            .get(wasm_sha256)
        {
            return Ok(c.clone());
        }
        let engine = self.engine.clone();
        let cache_result = {
            let wasm = wasm.to_vec();
            let sha = wasm_sha256.to_owned();
            let cache = &self.cache;
            // Compilation is seconds of CPU: keep it off the async workers.
            tokio::task::block_in_place(|| cache.load_or_compile(&engine, &wasm, &sha))
        };
        let (component, outcome) = cache_result?;
        tracing::debug!(wasm_sha256, ?outcome, "component ready");
        self.components
            .write()
            .expect("components lock")
            .insert(wasm_sha256.to_owned(), component.clone());
        Ok(component)
    }

    async fn build_instance(
        &self,
        manifest: &Manifest,
        component: Option<ComponentSource<'_>>,
        row: &InstanceRow,
        secret_values: SecretValues<'_>,
    ) -> Result<LoadedInstance> {
        // A `[config]` schema that does not compile is a load error too, not only at the next
        // config change.
        config_schema(manifest)?;
        let config: serde_json::Value =
            serde_json::from_str(&row.config_json).context("instance config")?;
        let config = with_config_defaults(manifest, config);
        let approval: Approval =
            serde_json::from_str(&row.approval_json).context("instance approval")?;
        let grants = GrantSet::intersect(&manifest.capabilities, &approval, &config);
        let secrets = self
            .bound_secrets(manifest, &row.id, &config, secret_values)
            .await?;
        let redactor = Redactor::new(&secrets);
        let limits = self.settings.limits.lowered_by(&manifest.limits);
        let outbound = if grants.http.is_empty() {
            None
        } else {
            let policy = OutboundPolicy {
                grants: grants.http.clone(),
                secrets,
                max_response_bytes: limits.http_response_bytes,
                timeout: std::time::Duration::from_millis(limits.http_timeout_ms),
                user_agent: format!("kelp/{} ({})", env!("CARGO_PKG_VERSION"), manifest.name),
            };
            Some(Arc::new(OutboundClient::new(
                policy,
                self.resolver.clone(),
            )?))
        };
        let ctx = Arc::new(InstanceContext {
            plugin: manifest.name.to_string(),
            instance_id: row.id.clone(),
            config: config.as_object().cloned().unwrap_or_default(),
            grants,
            limits,
            outbound,
            redactor,
            db: self.db.clone(),
        });
        let mut loaded = LoadedInstance {
            revision: row.revision,
            ctx,
            kind: manifest.kind,
            enabled: row.enabled,
            tools: Vec::new(),
            schemas: Vec::new(),
            tool_pre: None,
            provider_pre: None,
            channel: None,
            webhook: None,
            models: Vec::new(),
            provider_info: manifest.provider.clone(),
            default_config: with_config_defaults(manifest, serde_json::json!({})),
        };
        let Some(ComponentSource {
            wasm,
            sha256,
            contract,
        }) = component
        else {
            return Ok(loaded);
        };
        let component = self.component(wasm, sha256).await?;
        let pre: InstancePre<CallState> = self
            .linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "{}: the component imports something this host does not provide",
                    manifest.name
                )
            })?;
        match manifest.kind {
            PluginKind::Tool | PluginKind::Skill => {
                let tool_pre = ToolPre::new(contract, pre)
                    .with_context(|| format!("{}: not a tool component", manifest.name))?;
                let (tools, schemas) = self.list_tools(&loaded.ctx, &tool_pre).await?;
                loaded.schemas = schemas;
                loaded.tools = tools;
                loaded.tool_pre = Some(tool_pre);
            }
            PluginKind::Provider => {
                let provider_pre = ProviderPre::new(contract, pre)
                    .with_context(|| format!("{}: not a provider component", manifest.name))?;
                loaded.models = self.list_models(&loaded.ctx, &provider_pre).await?;
                loaded.provider_pre = Some(provider_pre);
            }
            PluginKind::Channel => {
                let channel_pre = ChannelPre::new(contract, pre)
                    .with_context(|| format!("{}: not a channel component", manifest.name))?;
                // Instantiated and asked to describe its platform now, so a component that
                // cannot start is refused at install. The permit first: the store's clock
                // starts with it, and waiting in the queue is not the plugin's time.
                let _permit = self.permits.acquire().await?;
                let mut store = self.new_store(&loaded.ctx, "install", None)?;
                let clock = store.data().clock.clone();
                let info = tokio::time::timeout(
                    loaded.ctx.limits.wall_timeout(),
                    within_budget(clock, channel_pre.describe(&mut store)),
                )
                .await
                .map_err(|_| anyhow!("{}: describing its platform timed out", manifest.name))?
                .map_err(|e| {
                    anyhow!(
                        "{}: describing its platform failed: {}",
                        manifest.name,
                        classify(e, &loaded.ctx)
                    )
                })?;
                loaded.channel = Some((channel_pre, info));
                if let Some(auth) = &manifest.channel.webhook_auth {
                    let value = self
                        .secret_value(&row.id, &auth.secret, secret_values)
                        .await?;
                    loaded.webhook = Some((auth.clone(), value));
                }
            }
        }
        Ok(loaded)
    }

    /// The tools a component lists, sorted by name, each with its compiled input schema.
    async fn list_tools(
        &self,
        ctx: &Arc<InstanceContext>,
        pre: &ToolPre,
    ) -> Result<(Vec<ToolSpec>, Vec<Schema>)> {
        let _permit = self.permits.acquire().await?;
        let mut store = self.new_store(ctx, "install", None)?;
        let clock = store.data().clock.clone();
        let listed = tokio::time::timeout(
            ctx.limits.wall_timeout(),
            within_budget(clock, pre.list(&mut store)),
        )
        .await
        .map_err(|_| anyhow!("{}: listing its tools timed out", ctx.plugin))?
        .map_err(|e| {
            anyhow!(
                "{}: listing its tools failed: {}",
                ctx.plugin,
                classify(e, ctx)
            )
        })?;
        let mut tools = listed;
        for tool in &tools {
            if !valid_tool_name(&tool.name) {
                bail!(
                    "{}: tool name `{}` must match ^[a-zA-Z0-9_-]{{1,64}}$",
                    ctx.plugin,
                    tool.name
                );
            }
            let schema: serde_json::Value =
                serde_json::from_str(&tool.input_schema).with_context(|| {
                    format!(
                        "{}: tool `{}` has an input schema that is not JSON",
                        ctx.plugin, tool.name
                    )
                })?;
            if !schema.is_object() {
                bail!(
                    "{}: tool `{}`'s input schema must be a JSON object",
                    ctx.plugin,
                    tool.name
                );
            }
        }
        let count = tools.len();
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        tools.dedup_by(|a, b| a.name == b.name);
        if tools.len() != count {
            bail!("{}: two tools share a name", ctx.plugin);
        }
        // Compiled once here, at install and at every load: a schema the host cannot enforce
        // whole is refused rather than enforced in part.
        let schemas = tools
            .iter()
            .map(|tool| {
                let schema: serde_json::Value =
                    serde_json::from_str(&tool.input_schema).unwrap_or_default();
                Schema::compile(&schema).map_err(|e| {
                    anyhow!(
                        "{}: tool `{}` has an input schema that is not a valid JSON Schema: {e}",
                        ctx.plugin,
                        tool.name
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((tools, schemas))
    }

    async fn bound_secrets(
        &self,
        manifest: &Manifest,
        instance_id: &str,
        config: &serde_json::Value,
        secret_values: SecretValues<'_>,
    ) -> Result<Vec<net::BoundSecret>> {
        let (sealed, overrides) = match secret_values {
            SecretValues::Stored(overrides) => (
                self.db
                    .sealed_secrets(instance_id)
                    .await
                    .map_err(unavailable)?,
                overrides,
            ),
            SecretValues::Only(values) => (Vec::new(), values),
        };
        let mut values = Vec::new();
        for (name, sealed) in sealed {
            if overrides.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let value = self
                .secret_box
                .open(&secret_context(instance_id, &name), &sealed)?;
            values.push((name, value));
        }
        values.extend(overrides.iter().cloned());
        let mut out = Vec::new();
        for (name, value) in values {
            // A secret bound at several positions goes to each; one bound nowhere (a
            // webhook's secret the host only checks) goes nowhere.
            for binding in manifest
                .capabilities
                .secrets
                .iter()
                .filter(|b| b.name == name)
            {
                let is_prefix = matches!(
                    binding.position,
                    kelp_registry::manifest::SecretPosition::UrlPathPrefix(_)
                );
                let require_https = binding
                    .host
                    .as_deref()
                    .is_some_and(|h| super::grants::config_ref_requires_https(h, config));
                let host = match &binding.host {
                    // The prefix itself names the host.
                    Some(_) if is_prefix => None,
                    Some(h) => match super::grants::resolve_config_ref(h, config) {
                        Some(h) => Some(
                            h.parse()
                                .map_err(|e| anyhow!("secret {name}: host `{h}`: {e}"))?,
                        ),
                        // Bound to a config value that is not set: deliverable nowhere.
                        None => continue,
                    },
                    None => None,
                };
                let position = match &binding.position {
                    kelp_registry::manifest::SecretPosition::UrlPathPrefix(prefix) => {
                        match kelp_registry::manifest::config_prefix(prefix) {
                            Some((reference, path)) => {
                                // Unset: deliverable nowhere, as for a host of the config's.
                                let Some(base) = super::grants::config_ref_value(reference, config)
                                else {
                                    continue;
                                };
                                kelp_registry::manifest::SecretPosition::UrlPathPrefix(format!(
                                    "{}{path}",
                                    base.trim_end_matches('/')
                                ))
                            }
                            None => binding.position.clone(),
                        }
                    }
                    other => other.clone(),
                };
                out.push(net::BoundSecret {
                    name: name.clone(),
                    host,
                    position: position.into(),
                    require_https,
                    value: value.clone(),
                });
            }
        }
        Ok(out)
    }

    /// The value of one secret of an instance, as [`bound_secrets`](Self::bound_secrets)
    /// would take it.
    async fn secret_value(
        &self,
        instance_id: &str,
        name: &str,
        secret_values: SecretValues<'_>,
    ) -> Result<Option<String>> {
        let given = match secret_values {
            SecretValues::Stored(overrides) | SecretValues::Only(overrides) => {
                overrides.iter().find(|(n, _)| n == name)
            }
        };
        if let Some((_, value)) = given {
            return Ok(Some(value.clone()));
        }
        if matches!(secret_values, SecretValues::Only(_)) {
            return Ok(None);
        }
        let sealed = self
            .db
            .sealed_secrets(instance_id)
            .await
            .map_err(unavailable)?;
        sealed
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, sealed)| {
                self.secret_box
                    .open(&secret_context(instance_id, name), &sealed)
            })
            .transpose()
    }

    pub(super) fn new_store(
        &self,
        ctx: &Arc<InstanceContext>,
        owner: &str,
        workspace: Option<&Path>,
    ) -> Result<Store<CallState>> {
        let quota = self.settings.workspace_quota_bytes;
        let quota = match workspace {
            Some(dir) if quota > 0 && ctx.grants.workspace == WorkspaceAccess::Write => {
                Some(self.workspace_quotas.quota(dir, quota))
            }
            _ => None,
        };
        let state = CallState::new(ctx.clone(), owner, workspace, quota)?;
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            let clock = &ctx.data().clock;
            if clock.guest_time() > clock.budget {
                return Ok(UpdateDeadline::Interrupt);
            }
            // Yield through tokio's own yield on every tick: other tasks (and other plugins)
            // get the worker back within one tick of guest computation.
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });
        Ok(store)
    }

    /// Tool call counters since start.
    /// Owners (users) with tool calls running or waiting for their share.
    pub fn owners_with_calls(&self) -> usize {
        self.owner_limits.owners()
    }

    pub fn stats(&self) -> &CallStats {
        &self.stats
    }

    /// Calls tool `tool` of instance `instance_id` with `input` (JSON text) on behalf of
    /// `owner` (whose `kv` space the plugin sees). `workspace` is the directory the plugin
    /// sees as `/workspace` if its grant allows.
    pub async fn call_tool(
        &self,
        instance_id: &str,
        tool: &str,
        input: &str,
        owner: &str,
        workspace: Option<&Path>,
    ) -> Result<String, CallError> {
        use std::sync::atomic::Ordering::Relaxed;
        let result = self
            .run_tool(instance_id, tool, input, owner, workspace)
            .await;
        let counter = match &result {
            Ok(_) => &self.stats.ok,
            Err(CallError::Tool(_)) => &self.stats.tool_errors,
            Err(
                CallError::UnknownInstance(_)
                | CallError::Disabled(_)
                | CallError::UnknownTool { .. }
                | CallError::InvalidInput(_),
            ) => &self.stats.refused,
            Err(_) => &self.stats.stopped,
        };
        counter.fetch_add(1, Relaxed);
        result
    }

    async fn run_tool(
        &self,
        instance_id: &str,
        tool: &str,
        input: &str,
        owner: &str,
        workspace: Option<&Path>,
    ) -> Result<String, CallError> {
        self.catch_up_for(Some(instance_id))
            .await
            .map_err(|e| CallError::Internal {
                instance: instance_id.to_owned(),
                detail: format!("checking for plugin changes: {e:#}"),
            })?;
        let instance = self
            .instances
            .read()
            .expect("instances lock")
            .get(instance_id)
            .cloned()
            .ok_or_else(|| CallError::UnknownInstance(instance_id.to_owned()))?;
        if !instance.enabled {
            return Err(CallError::Disabled(instance_id.to_owned()));
        }
        let (Some(pre), Some(index)) = (
            &instance.tool_pre,
            instance.tools.iter().position(|t| t.name == tool),
        ) else {
            return Err(CallError::UnknownTool {
                instance: instance_id.to_owned(),
                tool: tool.to_owned(),
                available: instance
                    .tools
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let value = serde_json::from_str::<serde_json::Value>(input)
            .map_err(|e| CallError::InvalidInput(format!("input is not JSON: {e}")))?;
        // Checked here, before any instance is made: a model's malformed call costs nothing
        // and gets a message naming the field to fix.
        instance.schemas[index]
            .validate(&value, "input")
            .map_err(CallError::InvalidInput)?;
        let ctx = &instance.ctx;
        let internal = |e: anyhow::Error| CallError::Internal {
            instance: instance_id.to_owned(),
            detail: format!("{e:#}"),
        };
        // One owner's calls wait for each other before they wait for a slot, so a burst from one
        // user does not fill the queue for the slots ahead of everyone else.
        let _share = self.owner_limits.acquire(owner).await;
        // Queue here rather than fail in the pool: the semaphore has exactly as many permits
        // as the pool has slots.
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| internal(e.into()))?;
        let mut store = self.new_store(ctx, owner, workspace).map_err(internal)?;
        let clock = store.data().clock.clone();
        let outcome = tokio::time::timeout(
            ctx.limits.wall_timeout(),
            within_budget(clock, pre.call(&mut store, tool, input)),
        )
        .await;
        store.data().log.finish();
        let output = match outcome {
            Err(_) => {
                return Err(CallError::WallTimeout {
                    instance: instance_id.to_owned(),
                    limit_ms: ctx.limits.wall_timeout_ms,
                });
            }
            Ok(Err(trap)) => return Err(classify(trap, ctx)),
            Ok(Ok(Err(failure))) => {
                let size = match &failure {
                    ToolFailure::InvalidInput(m)
                    | ToolFailure::Denied(m)
                    | ToolFailure::Failed(m) => m.len(),
                };
                // An error message is output too: it goes to the model and the transcript.
                if size as u64 > ctx.limits.output_bytes {
                    return Err(CallError::OutputTooLarge {
                        instance: instance_id.to_owned(),
                        size,
                        limit: ctx.limits.output_bytes,
                    });
                }
                // The guest's libc reports a refused stream write as a plain I/O error; say
                // what it was.
                return Err(CallError::Tool(
                    match store.data().workspace_quota.as_ref().and_then(|q| q.refused()) {
                        Some(limit) => failure.noting(&format!(
                            "the workspace is full: a write was refused at its quota of {limit} bytes"
                        )),
                        None => failure,
                    },
                ));
            }
            Ok(Ok(Ok(output))) => output,
        };
        if output.len() as u64 > ctx.limits.output_bytes {
            return Err(CallError::OutputTooLarge {
                instance: instance_id.to_owned(),
                size: output.len(),
                limit: ctx.limits.output_bytes,
            });
        }
        store.data_mut().commit_kv().await.map_err(CallError::Kv)?;
        Ok(output)
    }

    /// The `SKILL.md` of installed plugin `plugin`, if it has one. Every run reads the skills
    /// of its agent, so a package is read, inflated, hashed and parsed once per digest (off the
    /// async workers) and then served from memory; each call costs one indexed read of the
    /// digest, which is what notices an upgrade, also one made by another host.
    pub async fn skill(&self, plugin: &str) -> Result<Option<kelp_registry::package::Skill>> {
        let Some(digest) = self.db.plugin_digest(plugin).await? else {
            self.skills.write().expect("skills lock").remove(plugin);
            return Ok(None);
        };
        if let Some((cached, skill)) = self.skills.read().expect("skills lock").get(plugin)
            && *cached == digest
        {
            return Ok(skill.clone());
        }
        let Some(bytes) = self.db.get_package(plugin).await? else {
            return Ok(None);
        };
        let package =
            tokio::task::spawn_blocking(move || read_package(&bytes, &PackageLimits::default()))
                .await
                .context("reading a skill")??;
        // Keyed by the digest of the bytes actually read: if the plugin was upgraded between
        // the two reads, the next call sees a digest mismatch and reads it again.
        self.skills
            .write()
            .expect("skills lock")
            .insert(plugin.to_owned(), (package.digest, package.skill.clone()));
        Ok(package.skill)
    }

    /// Every tool of every enabled instance, as `(instance id, spec)`, as loaded on this host
    /// (after [`catch_up`](Self::catch_up), what the database says).
    /// What channel instance `id`'s plugin said of its platform when it was loaded; `None`
    /// for an instance that is not a loaded channel.
    pub fn channel_info(&self, id: &str) -> Option<ChannelInfo> {
        let instances = self.instances.read().expect("instances lock");
        Some(instances.get(id)?.channel.as_ref()?.1.clone())
    }

    pub fn tools(&self) -> Vec<(String, ToolSpec)> {
        let instances = self.instances.read().expect("instances lock");
        let mut out: Vec<(String, ToolSpec)> = instances
            .iter()
            .filter(|(_, i)| i.enabled)
            .flat_map(|(id, i)| i.tools.iter().map(move |t| (id.clone(), t.clone())))
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1.name).cmp(&(&b.0, &b.1.name)));
        out
    }

    /// Kind and granted capabilities of a loaded instance.
    pub fn instance_summary(
        &self,
        id: &str,
    ) -> Option<(PluginKind, bool, Vec<String>, Vec<ToolSpec>)> {
        let instances = self.instances.read().expect("instances lock");
        instances
            .get(id)
            .map(|i| (i.kind, i.enabled, i.ctx.grants.describe(), i.tools.clone()))
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

    /// The workspace directory of a chat session (created if needed). Workspaces always live
    /// under the data directory: a user can never point one at an arbitrary host path.
    pub fn session_workspace(&self, session_id: &str) -> Result<PathBuf> {
        let dir = self.session_workspace_path(session_id)?;
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Where a session's workspace is, without creating it (listing sessions must not touch
    /// the file system once per row).
    pub fn session_workspace_path(&self, session_id: &str) -> Result<PathBuf> {
        anyhow::ensure!(
            !session_id.is_empty()
                && session_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "invalid session id for a workspace"
        );
        Ok(self.workspaces.join("sessions").join(session_id))
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

    /// The workspace of a user's direct tool calls (outside any session), created if needed:
    /// one per user, so one user's files are never another's.
    pub fn user_workspace(&self, user_id: &str) -> Result<PathBuf> {
        anyhow::ensure!(
            !user_id.is_empty()
                && user_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "invalid user id for a workspace"
        );
        let dir = self.workspaces.join("users").join(user_id);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Creates a workspace directory for callers that have none (CLI calls).
    pub fn default_workspace(&self) -> Result<PathBuf> {
        let dir = self.workspaces.join("default");
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
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

/// Pool slots provider streams may hold at once out of `slots`: all but a quarter (at least
/// one), which stays for tool calls. With a single slot there is nothing to share.
pub(super) fn stream_slots(slots: usize) -> usize {
    if slots < 2 {
        return slots;
    }
    slots - (slots / 4).max(1)
}

/// The manifest's `[config]` schema, compiled.
fn config_schema(manifest: &Manifest) -> Result<Option<Schema>> {
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

fn secret_context(instance_id: &str, name: &str) -> String {
    format!("kelp-secret-v1\0{instance_id}\0{name}")
}

fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
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

/// Turns a wasmtime error into the reason a user should read.
pub(super) fn classify(error: wasmtime::Error, ctx: &InstanceContext) -> CallError {
    let instance = ctx.instance_id.clone();
    if let Some(trap) = error.downcast_ref::<Trap>() {
        return match trap {
            Trap::Interrupt => CallError::TimeBudget {
                instance,
                budget_ms: ctx.limits.timeout_ms,
            },
            Trap::StackOverflow => CallError::StackOverflow { instance },
            Trap::MemoryOutOfBounds => CallError::MemoryFault { instance },
            Trap::UnreachableCodeReached => CallError::Crashed {
                instance,
                detail: "it panicked or aborted".into(),
            },
            other => CallError::Crashed {
                instance,
                detail: format!("wasm trap: {other}"),
            },
        };
    }
    let text = format!("{error:#}");
    // StoreLimits with trap_on_grow_failure reports a refused memory.grow this way.
    if text.contains("forcing trap when growing memory") {
        return CallError::OutOfMemory {
            instance,
            limit_mb: ctx.limits.memory_mb,
        };
    }
    CallError::Crashed {
        instance,
        detail: ctx.redactor.redact(&text).into_owned(),
    }
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

/// A plugin's component and the contract version it was built for: what an instance is
/// built from.
struct ComponentSource<'a> {
    wasm: &'a [u8],
    sha256: &'a str,
    contract: &'a Version,
}

/// The component of a package, if it has one (a skill of instructions only has none).
fn component_of<'a>(
    wasm: Option<&'a [u8]>,
    sha256: Option<&'a str>,
    contract: &'a Option<Version>,
) -> Option<ComponentSource<'a>> {
    match (wasm, sha256, contract) {
        (Some(wasm), Some(sha256), Some(contract)) => Some(ComponentSource {
            wasm,
            sha256,
            contract,
        }),
        _ => None,
    }
}
