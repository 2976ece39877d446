//! Bindings of the current contract `kelp:plugin@0.2.0`, generated from the working `wit/`
//! (until 0.2.0 is released; then it gets a frozen copy like 0.1.0's). The host imports are
//! implemented against these types (`plugins/state.rs`); older versions convert onto them.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "tool-plugin",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use kelp::plugin::{host as host_import, http as http_import, kv as kv_import, types};

/// The provider world. Its imports are the interfaces the tool world generated, so one
/// linker (and one set of host-import implementations) serves every world.
pub mod provider_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "provider-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "kelp:plugin/types": super::kelp::plugin::types,
            "kelp:plugin/host": super::kelp::plugin::host,
        },
    });
}

/// The channel world.
pub mod channel_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "channel-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "kelp:plugin/types": super::kelp::plugin::types,
            "kelp:plugin/host": super::kelp::plugin::host,
            "kelp:plugin/kv": super::kelp::plugin::kv,
        },
    });
}

pub use channel_world::ChannelPluginPre;
pub use provider_world::{ProviderPlugin, ProviderPluginPre};

super::convert::shared_conversions!(self::types, provider_error: {
    types::ProviderError::Unsupported(m) => (K::Unsupported, m, None),
});

impl From<&crate::llm::EmbeddingsRequest> for types::EmbeddingsRequest {
    fn from(r: &crate::llm::EmbeddingsRequest) -> Self {
        types::EmbeddingsRequest {
            model: r.model.clone(),
            inputs: r.inputs.clone(),
            dimensions: r.dimensions,
        }
    }
}
