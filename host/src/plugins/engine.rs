//! The process-wide wasmtime `Engine`: component model, pooling allocator sized from one
//! capacity setting, epoch interruption driven by a ticker thread.

use std::time::Duration;

use anyhow::{Context, Result};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::settings::RuntimeSettings;

/// Core wasm instances one Rust `wasm32-wasip2` component needs (its module plus the shims
/// wit-component adds) is about 3; 8 leaves room for components built by other toolchains.
const CORE_INSTANCES_PER_COMPONENT: u32 = 8;
/// Linear memories per component: Rust guests have one; a few more allow multi-module guests.
const MEMORIES_PER_COMPONENT: u32 = 2;
/// Tables per component: the main module's function table plus shim tables.
const TABLES_PER_COMPONENT: u32 = 8;

/// Bytes of each memory and table slot kept resident between instances (see below).
const KEEP_RESIDENT_BYTES: usize = 256 << 10;

/// Builds the engine. The pool gets exactly the slots `max_concurrent_plugin_calls` stores
/// can use at once; a semaphore in front of instantiation (see `runtime.rs`) keeps callers
/// within that, so excess calls queue instead of failing for lack of a slot.
pub fn build_engine(settings: &RuntimeSettings) -> Result<Engine> {
    let capacity = settings.max_concurrent_plugin_calls.max(1);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(capacity)
        .total_core_instances(capacity * CORE_INSTANCES_PER_COMPONENT)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .total_memories(capacity * MEMORIES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .total_tables(capacity * TABLES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .total_stacks(capacity)
        .max_memory_size(settings.limits.memory_bytes())
        // Each call gets a fresh instance, so slots are recycled constantly. Resetting the first
        // pages of a slot with memset instead of returning them to the kernel saves a page
        // fault per touched page on the next call; beyond this the memory is released.
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_BYTES);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(usize::try_from(settings.max_wasm_stack_kib * 1024)?)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("creating the wasmtime engine")
}

/// Advances the engine's epoch every `tick` until the engine is dropped. A plain thread,
/// not a tokio task: a busy runtime must not delay the ticks that make guests yield to it.
pub fn start_epoch_ticker(engine: &Engine, tick: Duration) {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("kelp-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(tick);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        })
        .expect("spawning the epoch ticker thread");
}
