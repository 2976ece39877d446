//! What runs: the engine and linker, instances loaded from what is installed (and kept up to
//! date with changes made on any host), and calls under their limits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result, anyhow, bail};
use kelp_registry::manifest::{Manifest, PluginKind, WorkspaceAccess};
use kelp_registry::package::{PackageLimits, read_package};
use semver::Version;
use tokio::sync::Semaphore;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use super::cache::CompileCache;
use super::contract::channel::{ChannelInfo, ChannelPre};
use super::contract::dispatch::{ProviderPre, ToolPre};
use super::grants::{Approval, GrantSet};
use super::installed::{config_schema, with_config_defaults};
use super::settings::RuntimeSettings;
use super::state::{CallState, within_budget};
use super::workspace::WorkspaceQuotas;
use super::{InstanceContext, ToolFailure, ToolSpec};
use crate::net::{self, OutboundClient, OutboundPolicy, Redactor, Resolve};
use crate::schema::Schema;
use crate::secrets::SecretBox;
use crate::store::Db;
use crate::store::plugins::InstanceRow;

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

/// The secret values an instance is built with.
#[derive(Debug, Clone, Copy)]
pub enum SecretValues<'a> {
    /// The stored ones, with these `(name, value)` instead where given.
    Stored(&'a [(String, String)]),
    /// Only these: nothing stored is used (credentials tried against another address must
    /// not take the stored key there).
    Only(&'a [(String, String)]),
}

/// A load that failed for a reason outside the instance: the database did not answer a read
/// of its row, package or secrets. The instance keeps what it had and the load is tried again
/// at the next catch-up, whereas a load that fails for the instance's own reasons (its config,
/// schema or grants, a component that does not start) replaces it with the error.
#[derive(Debug, thiserror::Error)]
#[error("reading the plugin from the database: {0:#}")]
struct StorageUnavailable(anyhow::Error);

pub(super) fn unavailable(error: anyhow::Error) -> anyhow::Error {
    StorageUnavailable(error).into()
}

/// Whether a load failure is worth trying again rather than the instance's own.
pub(super) fn retry_later(error: &anyhow::Error) -> bool {
    error.downcast_ref::<StorageUnavailable>().is_some()
}

/// The revision recorded for an instance that never loaded on this host because of a
/// [`StorageUnavailable`] failure: it matches no row, so the next catch-up tries again.
const NEVER_LOADED: i64 = i64::MIN;

pub(crate) struct LoadedInstance {
    /// The instance row's revision this was built from.
    revision: i64,
    pub(super) ctx: Arc<InstanceContext>,
    pub(super) kind: PluginKind,
    pub(super) enabled: bool,
    pub(super) tools: Vec<ToolSpec>,
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
    pub(super) engine: Engine,
    pub(super) linker: Linker<CallState>,
    pub(super) cache: CompileCache,
    pub(super) settings: RuntimeSettings,
    pub(super) permits: Arc<Semaphore>,
    /// Taken by a provider stream before a pool slot, and held as long: fewer permits than
    /// the pool has slots, so streams that last minutes leave slots for short tool calls.
    pub(super) stream_permits: Arc<Semaphore>,
    /// Each owner's share of the slots for tool calls.
    pub(super) owner_limits: super::fair::OwnerLimits,
    pub(super) db: Db,
    pub(super) secret_box: SecretBox,
    pub(super) resolver: Arc<dyn Resolve>,
    pub(super) workspaces: PathBuf,
    pub(super) components: RwLock<HashMap<String, Component>>,
    pub(super) instances: RwLock<HashMap<String, Arc<LoadedInstance>>>,
    pub(super) stats: CallStats,
    /// Why an instance did not load, with the revision of the row that failed.
    pub(super) load_errors: RwLock<HashMap<String, (i64, String)>>,
    /// The plugin generation this host's instances reflect (see [`PluginRuntime::catch_up`]).
    pub(super) seen_generation: AtomicI64,
    /// Held while what is loaded changes, so a reload that read older rows cannot land after
    /// one that read newer ones.
    pub(super) reload: tokio::sync::Mutex<()>,
    /// Parsed `SKILL.md` of installed plugins with the digest of the package it came from:
    /// one entry per installed plugin at most (a removed plugin's goes at its next lookup).
    pub(super) skills: RwLock<HashMap<String, (String, Option<kelp_registry::package::Skill>)>>,
    pub(super) workspace_quotas: WorkspaceQuotas,
    /// Set by `kelp serve`: where components are compiled instead of in this process.
    compile_worker: std::sync::OnceLock<super::cache::CompileWorker>,
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
            compile_worker: std::sync::OnceLock::new(),
        }))
    }

    /// Compiles components in child processes of `exe` (`kelp compile-worker`) from now on,
    /// rather than in this process (see [`super::cache::CompileWorker`]). `kelp serve` does.
    pub fn compile_in_child_processes(&self, exe: PathBuf) {
        let _ = self.compile_worker.set(super::cache::CompileWorker { exe });
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
    pub(super) fn caught_up(&self, generation: i64, reloaded: &Result<()>) {
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
    pub(super) fn loaded_revision(&self, id: &str) -> Option<i64> {
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
    pub(super) fn forget_all_but(&self, rows: &[InstanceRow]) {
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

    pub(super) fn forget(&self, id: &str) {
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
    pub(super) fn settle(
        &self,
        id: &str,
        revision: i64,
        built: Result<LoadedInstance>,
    ) -> Result<()> {
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
    pub(super) async fn load_row(&self, row: &InstanceRow) -> Result<()> {
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

    pub(super) async fn load_instance_locked(&self, id: &str) -> Result<()> {
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
    pub(super) async fn build_row(&self, row: &InstanceRow) -> Result<LoadedInstance> {
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

    pub(super) async fn component(&self, wasm: &[u8], wasm_sha256: &str) -> Result<Component> {
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
            tokio::task::block_in_place(|| {
                if let Some(worker) = self.compile_worker.get()
                    && !cache.has_entry(&sha)
                    && let Err(e) = worker.compile(&self.settings, cache, &wasm, &sha)
                {
                    // Compiled here instead: slower to give the memory back, but working.
                    tracing::warn!(wasm_sha256 = %sha, "compiling in a child process failed: {e:#}");
                }
                cache.load_or_compile(&engine, &wasm, &sha)
            })
        };
        let (component, outcome) = cache_result?;
        tracing::debug!(wasm_sha256, ?outcome, "component ready");
        self.components
            .write()
            .expect("components lock")
            .insert(wasm_sha256.to_owned(), component.clone());
        Ok(component)
    }

    pub(super) async fn build_instance(
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
    pub(super) async fn list_tools(
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

    pub(super) async fn bound_secrets(
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
    pub(super) async fn secret_value(
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

    pub(super) async fn run_tool(
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
}

/// Pool slots provider streams may hold at once out of `slots`: all but a quarter (at least
/// one), which stays for tool calls. With a single slot there is nothing to share.
pub(super) fn stream_slots(slots: usize) -> usize {
    if slots < 2 {
        return slots;
    }
    slots - (slots / 4).max(1)
}

pub(super) fn secret_context(instance_id: &str, name: &str) -> String {
    format!("kelp-secret-v1\0{instance_id}\0{name}")
}

fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
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

/// A plugin's component and the contract version it was built for: what an instance is
/// built from.
pub(super) struct ComponentSource<'a> {
    wasm: &'a [u8],
    sha256: &'a str,
    contract: &'a Version,
}

/// The component of a package, if it has one (a skill of instructions only has none).
pub(super) fn component_of<'a>(
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
