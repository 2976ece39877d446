//! One face for a plugin of any served contract version: the runtime holds a [`ToolPre`]
//! or [`ProviderPre`] and calls it in the host's own types, and each method
//! converts to and from the version the plugin was built for.

use anyhow::{Result, bail};
use semver::Version;
use wasmtime::Store;
use wasmtime::component::{InstancePre, ResourceAny};

use super::{v0_1_0, v0_2_0};
use crate::llm::{
    ChatRequest, Embeddings, EmbeddingsRequest, FailureKind, ModelInfo, ProviderFailure,
    StreamEvent,
};
use crate::net::OutboundRequest;
use crate::plugins::state::CallState;
use crate::plugins::{ToolFailure, ToolSpec};

type Outcome<T> = wasmtime::Result<T>;

fn is(version: &Version, major: u64, minor: u64) -> bool {
    version.major == major && version.minor == minor
}

/// A tool component, ready to instantiate.
pub enum ToolPre {
    V0_1(v0_1_0::ToolPluginPre<CallState>),
    V0_2(v0_2_0::ToolPluginPre<CallState>),
}

impl ToolPre {
    pub fn new(version: &Version, pre: InstancePre<CallState>) -> Result<ToolPre> {
        Ok(if is(version, 0, 1) {
            ToolPre::V0_1(v0_1_0::ToolPluginPre::new(pre)?)
        } else if is(version, 0, 2) {
            ToolPre::V0_2(v0_2_0::ToolPluginPre::new(pre)?)
        } else {
            bail!("no tool bindings for kelp:plugin@{version}")
        })
    }

    /// Instantiates the component and lists its tools.
    pub async fn list(&self, store: &mut Store<CallState>) -> Outcome<Vec<ToolSpec>> {
        Ok(match self {
            ToolPre::V0_1(pre) => {
                let tools = pre.instantiate_async(&mut *store).await?;
                let listed = tools.kelp_plugin_tool().call_list(&mut *store).await?;
                listed.into_iter().map(Into::into).collect()
            }
            ToolPre::V0_2(pre) => {
                let tools = pre.instantiate_async(&mut *store).await?;
                let listed = tools.kelp_plugin_tool().call_list(&mut *store).await?;
                listed.into_iter().map(Into::into).collect()
            }
        })
    }

    /// Instantiates the component and calls tool `name`.
    pub async fn call(
        &self,
        store: &mut Store<CallState>,
        name: &str,
        input: &str,
    ) -> Outcome<Result<String, ToolFailure>> {
        Ok(match self {
            ToolPre::V0_1(pre) => {
                let tools = pre.instantiate_async(&mut *store).await?;
                let result = tools.kelp_plugin_tool();
                let result = result.call_call(&mut *store, name, input).await?;
                result.map_err(Into::into)
            }
            ToolPre::V0_2(pre) => {
                let tools = pre.instantiate_async(&mut *store).await?;
                let result = tools.kelp_plugin_tool();
                let result = result.call_call(&mut *store, name, input).await?;
                result.map_err(Into::into)
            }
        })
    }
}

/// A provider component, ready to instantiate.
pub enum ProviderPre {
    V0_1(v0_1_0::ProviderPluginPre<CallState>),
    V0_2(v0_2_0::ProviderPluginPre<CallState>),
}

/// An instantiated provider component.
pub enum Provider {
    V0_1(v0_1_0::ProviderPlugin),
    V0_2(v0_2_0::ProviderPlugin),
}

impl ProviderPre {
    pub fn new(version: &Version, pre: InstancePre<CallState>) -> Result<ProviderPre> {
        Ok(if is(version, 0, 1) {
            ProviderPre::V0_1(v0_1_0::ProviderPluginPre::new(pre)?)
        } else if is(version, 0, 2) {
            ProviderPre::V0_2(v0_2_0::ProviderPluginPre::new(pre)?)
        } else {
            bail!("no provider bindings for kelp:plugin@{version}")
        })
    }

    pub async fn instantiate(&self, store: &mut Store<CallState>) -> Outcome<Provider> {
        Ok(match self {
            ProviderPre::V0_1(pre) => Provider::V0_1(pre.instantiate_async(store).await?),
            ProviderPre::V0_2(pre) => Provider::V0_2(pre.instantiate_async(store).await?),
        })
    }
}

impl Provider {
    pub async fn models(&self, store: &mut Store<CallState>) -> Outcome<Vec<ModelInfo>> {
        match self {
            Provider::V0_1(p) => {
                let listed = p.kelp_plugin_provider().call_models(store).await?;
                Ok(listed.into_iter().map(Into::into).collect())
            }
            Provider::V0_2(p) => {
                let listed = p.kelp_plugin_provider().call_models(store).await?;
                Ok(listed.into_iter().map(Into::into).collect())
            }
        }
    }

    /// The request for `req`, as the plugin built it.
    pub async fn prepare(
        &self,
        store: &mut Store<CallState>,
        req: &ChatRequest,
    ) -> Outcome<Result<OutboundRequest, ProviderFailure>> {
        Ok(match self {
            Provider::V0_1(p) => {
                let wire: v0_1_0::types::ChatRequest = req.into();
                let prepared = p.kelp_plugin_provider().call_prepare(store, &wire).await?;
                prepared.map(Into::into).map_err(Into::into)
            }
            Provider::V0_2(p) => {
                let wire: v0_2_0::types::ChatRequest = req.into();
                let prepared = p.kelp_plugin_provider().call_prepare(store, &wire).await?;
                prepared.map(Into::into).map_err(Into::into)
            }
        })
    }

    /// A decoder for one response with `status` and `headers`.
    pub async fn decoder(
        &self,
        store: &mut Store<CallState>,
        status: u16,
        headers: &[(String, String)],
    ) -> Outcome<ResourceAny> {
        match self {
            Provider::V0_1(p) => {
                let api = p.kelp_plugin_provider().decoder();
                api.call_constructor(store, status, headers).await
            }
            Provider::V0_2(p) => {
                let api = p.kelp_plugin_provider().decoder();
                api.call_constructor(store, status, headers).await
            }
        }
    }

    pub async fn feed(
        &self,
        store: &mut Store<CallState>,
        decoder: ResourceAny,
        chunk: &[u8],
    ) -> Outcome<Result<Vec<StreamEvent>, ProviderFailure>> {
        Ok(match self {
            Provider::V0_1(p) => {
                let api = p.kelp_plugin_provider().decoder();
                let fed = api.call_feed(store, decoder, chunk).await?;
                fed.map(|events| events.into_iter().map(Into::into).collect())
                    .map_err(Into::into)
            }
            Provider::V0_2(p) => {
                let api = p.kelp_plugin_provider().decoder();
                let fed = api.call_feed(store, decoder, chunk).await?;
                fed.map(|events| events.into_iter().map(Into::into).collect())
                    .map_err(Into::into)
            }
        })
    }

    pub async fn finish(
        &self,
        store: &mut Store<CallState>,
        decoder: ResourceAny,
    ) -> Outcome<Result<Vec<StreamEvent>, ProviderFailure>> {
        Ok(match self {
            Provider::V0_1(p) => {
                let api = p.kelp_plugin_provider().decoder();
                let done = api.call_finish(store, decoder).await?;
                done.map(|events| events.into_iter().map(Into::into).collect())
                    .map_err(Into::into)
            }
            Provider::V0_2(p) => {
                let api = p.kelp_plugin_provider().decoder();
                let done = api.call_finish(store, decoder).await?;
                done.map(|events| events.into_iter().map(Into::into).collect())
                    .map_err(Into::into)
            }
        })
    }

    /// The request for embedding `req.inputs`. A 0.1.0 plugin has no embeddings call.
    pub async fn prepare_embeddings(
        &self,
        store: &mut Store<CallState>,
        req: &EmbeddingsRequest,
    ) -> Outcome<Result<OutboundRequest, ProviderFailure>> {
        match self {
            Provider::V0_1(_) => Ok(Err(ProviderFailure::new(
                FailureKind::Unsupported,
                "the plugin is built for kelp:plugin@0.1.0, which has no embeddings; \
                 a build for 0.2.0 may offer them",
            ))),
            Provider::V0_2(p) => {
                let wire: v0_2_0::types::EmbeddingsRequest = req.into();
                let api = p.kelp_plugin_provider();
                let prepared = api.call_prepare_embeddings(store, &wire).await?;
                Ok(prepared.map(Into::into).map_err(Into::into))
            }
        }
    }

    /// Reads the whole response to [`prepare_embeddings`](Self::prepare_embeddings)'s
    /// request.
    pub async fn parse_embeddings(
        &self,
        store: &mut Store<CallState>,
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Outcome<Result<Embeddings, ProviderFailure>> {
        match self {
            Provider::V0_1(_) => Ok(Err(ProviderFailure::new(
                FailureKind::Unsupported,
                "the plugin is built for kelp:plugin@0.1.0, which has no embeddings",
            ))),
            Provider::V0_2(p) => {
                let response = v0_2_0::types::HttpResponse {
                    status,
                    headers,
                    body,
                };
                let api = p.kelp_plugin_provider();
                let parsed = api.call_parse_embeddings(store, &response).await?;
                Ok(parsed
                    .map(|e| Embeddings {
                        vectors: e.vectors,
                        input_tokens: e.input_tokens,
                    })
                    .map_err(Into::into))
            }
        }
    }
}
