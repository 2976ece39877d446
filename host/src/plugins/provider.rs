//! Calling provider plugins. Sans-IO: the guest builds the request and decodes the body; the
//! host sends it through the instance's outbound client (which inserts the API key the guest
//! never sees), streams the body into the guest's decoder, and owns every timeout.
//!
//! One store per response stream: the decoder is a guest resource that lives as long as the
//! stream. Each guest call (`prepare`, each `feed`, `finish`) gets its own computation budget,
//! because the time between chunks is the vendor's, not the plugin's.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use tokio::sync::OwnedSemaphorePermit;
use wasmtime::Store;
use wasmtime::component::ResourceAny;

use super::contract::dispatch::{Provider, ProviderPre};
use super::runtime::{PluginRuntime, classify};
use super::state::{CallState, within_budget};
use super::{InstanceContext, PluginKind};
use crate::llm::{
    ChatRequest, Embeddings, EmbeddingsRequest, FailureKind, ModelInfo, ProviderFailure,
    StreamEvent,
};
use crate::net::{OutboundError, OutboundRequest, StreamRedactor};

/// Most of an error body the host reads before handing it to the decoder: error documents
/// are small, and a vendor that streams megabytes with a 500 is not saying anything useful.
const MAX_ERROR_BODY: usize = 64 * 1024;

fn plugin_failure(message: impl Into<String>) -> ProviderFailure {
    ProviderFailure::new(FailureKind::Plugin, message)
}

impl PluginRuntime {
    pub(super) async fn list_models(
        &self,
        ctx: &Arc<InstanceContext>,
        pre: &ProviderPre,
    ) -> Result<Vec<ModelInfo>> {
        let _permit = self.permits.acquire().await?;
        let mut store = self.new_store(ctx, "install", None)?;
        let clock = store.data().clock.clone();
        let listed = tokio::time::timeout(
            ctx.limits.wall_timeout(),
            within_budget(clock, async {
                let provider = pre.instantiate(&mut store).await?;
                provider.models(&mut store).await
            }),
        )
        .await
        .map_err(|_| anyhow!("{}: listing its models timed out", ctx.plugin))?
        .map_err(|e| {
            anyhow!(
                "{}: listing its models failed: {}",
                ctx.plugin,
                classify(e, ctx)
            )
        })?;
        Ok(listed)
    }

    /// The models of provider instance `id`: what the plugin lists, plus any the operator
    /// named in the instance's `models` config (a local server's models are the operator's
    /// to know).
    pub fn provider_models(&self, id: &str) -> Result<Vec<ModelInfo>, ProviderFailure> {
        let instance = self.provider_instance(id)?;
        let mut models = instance.models.clone();
        if let Some(extra) = instance.ctx.config.get("models").and_then(|v| v.as_array()) {
            for name in extra.iter().filter_map(|v| v.as_str()) {
                if !models.iter().any(|m| m.id == name) {
                    models.push(ModelInfo {
                        id: name.to_owned(),
                        context_window: None,
                        max_output_tokens: None,
                    });
                }
            }
        }
        Ok(models)
    }

    /// Where provider instance `id` sends its requests, as this host has it loaded; `None`
    /// if no such instance is loaded.
    pub fn provider_address(&self, id: &str) -> Option<ProviderAddress> {
        let instance = self
            .instances
            .read()
            .expect("instances lock")
            .get(id)
            .cloned()?;
        let base_url = instance
            .ctx
            .config
            .get("base_url")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let default_base_url = instance
            .default_config
            .get("base_url")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let parsed = base_url.as_deref().and_then(|u| url::Url::parse(u).ok());
        let (mut local, mut approved) = (false, false);
        if let Some(url) = &parsed
            && let (Some(host), Some(port)) = (url.host(), url.port_or_known_default())
        {
            let literal_private = crate::net::is_private_url_host(&host);
            let host = url.host_str().unwrap_or_default();
            let grants: Vec<_> = instance
                .ctx
                .grants
                .http
                .iter()
                .filter(|g| g.pattern.matches(host, port))
                .collect();
            // A name approved as private (`gpu-box.lan`) is a local server as much as
            // 127.0.0.1 is.
            local = literal_private || grants.iter().any(|g| g.allow_private);
            approved = grants.iter().any(|g| g.allow_private || !literal_private);
        }
        Some(ProviderAddress {
            base_url,
            default_base_url,
            local,
            approved,
        })
    }

    /// Asks provider instance `id`'s server for its model list (the `[provider] models-url`
    /// of its manifest), through the instance's own grants and key, and says what came back.
    /// A quick check: at most [`PROBE_TIMEOUT`].
    pub async fn probe_provider(&self, id: &str) -> Probe {
        let Some(instance) = self
            .instances
            .read()
            .expect("instances lock")
            .get(id)
            .cloned()
        else {
            return Probe::NotChecked;
        };
        let Some(request) = models_request(&instance) else {
            return Probe::NotChecked;
        };
        let Some(client) = instance.ctx.outbound.clone() else {
            return Probe::Denied;
        };
        match tokio::time::timeout(PROBE_TIMEOUT, client.send(request)).await {
            Err(_) | Ok(Err(OutboundError::Timeout)) => {
                Probe::Unreachable("it did not answer in time".into())
            }
            Ok(Err(OutboundError::Denied(_))) => Probe::Denied,
            Ok(Err(e)) => {
                Probe::Unreachable(instance.ctx.redactor.redact(&e.to_string()).into_owned())
            }
            Ok(Ok(response)) => Probe::Answered(response.status),
        }
    }

    /// The models provider instance `id`'s server says it serves (`GET` of its manifest's
    /// `[provider] models-url`, through the instance's grants and key). `Ok(None)` when the
    /// plugin names no such address.
    pub async fn server_models(&self, id: &str) -> Result<Option<Vec<String>>, ProviderFailure> {
        let instance = self.provider_instance(id)?;
        let Some(request) = models_request(&instance) else {
            return Ok(None);
        };
        let Some(client) = instance.ctx.outbound.clone() else {
            return Err(ProviderFailure::new(
                FailureKind::InvalidRequest,
                format!("provider `{id}` may not reach any host: its address is not approved"),
            ));
        };
        let response = tokio::time::timeout(MODELS_TIMEOUT, client.send(request))
            .await
            .map_err(|_| {
                ProviderFailure::new(
                    FailureKind::Transport,
                    format!("provider `{id}`: the server did not list its models in time"),
                )
            })?
            .map_err(|e| transport_failure(&instance.ctx, e))?;
        let failure = |kind, what: &str| {
            let mut f = ProviderFailure::new(
                kind,
                format!(
                    "provider `{id}`: the server answered its model list with HTTP {}{what}",
                    response.status
                ),
            );
            f.status = Some(response.status);
            f
        };
        match response.status {
            200..=299 => {}
            401 | 403 => {
                return Err(failure(
                    FailureKind::Auth,
                    " (the key is missing or refused)",
                ));
            }
            429 => return Err(failure(FailureKind::RateLimited, "")),
            500.. => return Err(failure(FailureKind::Overloaded, "")),
            _ => return Err(failure(FailureKind::Other, "")),
        }
        let listed = serde_json::from_slice::<serde_json::Value>(&response.body)
            .ok()
            .and_then(|body| model_ids(&body))
            .ok_or_else(|| {
                ProviderFailure::new(
                    FailureKind::Other,
                    format!(
                        "provider `{id}`: the server's model list is neither \
                         {{\"data\": [{{\"id\"}}]}} nor {{\"models\": [{{\"name\"}}]}}"
                    ),
                )
            })?;
        Ok(Some(listed))
    }

    fn provider_instance(
        &self,
        id: &str,
    ) -> Result<Arc<super::runtime::LoadedInstance>, ProviderFailure> {
        let instance = self
            .instances
            .read()
            .expect("instances lock")
            .get(id)
            .cloned()
            .ok_or_else(|| {
                ProviderFailure::new(
                    FailureKind::InvalidRequest,
                    format!("no provider `{id}` is installed"),
                )
            })?;
        if instance.kind != PluginKind::Provider || instance.provider_pre.is_none() {
            return Err(ProviderFailure::new(
                FailureKind::InvalidRequest,
                format!("plugin instance `{id}` is not a provider"),
            ));
        }
        if !instance.enabled {
            return Err(ProviderFailure::new(
                FailureKind::InvalidRequest,
                format!("provider `{id}` is disabled"),
            ));
        }
        Ok(instance)
    }

    /// Embeds `request.inputs` with provider instance `id`: one vector per input, in their
    /// order. The whole exchange is short, so it holds an ordinary pool slot, not a stream's.
    pub async fn embed(
        &self,
        id: &str,
        request: &EmbeddingsRequest,
    ) -> Result<Embeddings, ProviderFailure> {
        self.catch_up_for(Some(id))
            .await
            .map_err(|e| plugin_failure(format!("checking for plugin changes: {e:#}")))?;
        let instance = self.provider_instance(id)?;
        let pre = instance
            .provider_pre
            .as_ref()
            .expect("checked by provider_instance");
        let ctx = instance.ctx.clone();
        let internal = |e: anyhow::Error| plugin_failure(format!("provider `{id}`: {e:#}"));
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| internal(e.into()))?;
        let mut store = self.new_store(&ctx, "provider", None).map_err(internal)?;
        let wall = ctx.limits.wall_timeout();
        let provider = guest_call(&ctx, &mut store, wall, async |store| {
            pre.instantiate(&mut *store).await
        })
        .await?;
        let prepared = guest_call(&ctx, &mut store, wall, async |store| {
            provider.prepare_embeddings(&mut *store, request).await
        })
        .await??;
        let Some(client) = ctx.outbound.clone() else {
            return Err(ProviderFailure::new(
                FailureKind::InvalidRequest,
                format!("provider `{id}` may not reach any host: set its base URL"),
            ));
        };
        let response = client
            .send(prepared)
            .await
            .map_err(|e| transport_failure(&ctx, e))?;
        let status = response.status;
        // As with chat: what the vendor echoes of the key must not reach the guest.
        let headers: Vec<(String, String)> = response
            .headers
            .into_iter()
            .map(|(name, value)| (name, ctx.redactor.redact(&value).into_owned()))
            .collect();
        let retry_after = retry_after(&headers);
        let body = ctx.redactor.redact_bytes(response.body);
        let parsed = guest_call(&ctx, &mut store, wall, async |store| {
            provider
                .parse_embeddings(&mut *store, status, headers, body)
                .await
        })
        .await?;
        let embeddings = parsed.map_err(|mut failure| {
            failure.status = Some(status);
            if failure.retry_after.is_none() {
                failure.retry_after = retry_after;
            }
            failure.message = ctx.redactor.redact(&failure.message).into_owned();
            failure
        })?;
        // The plugin reads only the response; whether the vendor answered every input is
        // the host's to check, as a short answer would pair texts with the wrong vectors.
        if embeddings.vectors.len() != request.inputs.len() {
            return Err(plugin_failure(format!(
                "provider `{id}` returned {} vectors for {} inputs",
                embeddings.vectors.len(),
                request.inputs.len()
            )));
        }
        Ok(embeddings)
    }

    /// Sends `request` through provider instance `id` and returns the response stream once
    /// the vendor's headers arrived. `idle_timeout` bounds the wait for each body chunk.
    pub async fn start_provider(
        &self,
        id: &str,
        request: &ChatRequest,
        idle_timeout: Duration,
    ) -> Result<ProviderStream, ProviderFailure> {
        // The instance's base URL, key and grants as the database has them now: a change made
        // on another host must not send this request (and its key) to the old address.
        self.catch_up_for(Some(id)).await.map_err(|e| {
            plugin_failure(format!(
                "provider `{id}`: checking for plugin changes: {e:#}"
            ))
        })?;
        let instance = self.provider_instance(id)?;
        self.start_loaded(id, instance, request, idle_timeout).await
    }

    /// Sends `request` through provider instance `id` as it would be with `config`,
    /// `approval` and `secrets` instead of what is stored — to check credentials before
    /// saving them. Nothing is stored.
    pub async fn try_provider(
        &self,
        id: &str,
        config: serde_json::Value,
        approval: &super::grants::Approval,
        secrets: super::SecretValues<'_>,
        request: &ChatRequest,
        idle_timeout: Duration,
    ) -> Result<ProviderStream, ProviderFailure> {
        let internal = |e: anyhow::Error| plugin_failure(format!("provider `{id}`: {e:#}"));
        let mut row = self
            .db()
            .get_instance(id)
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                ProviderFailure::new(
                    FailureKind::InvalidRequest,
                    format!("no provider `{id}` is installed"),
                )
            })?;
        row.config_json = config.to_string();
        row.approval_json = serde_json::to_string(approval).map_err(|e| internal(e.into()))?;
        let loaded = self
            .build_row_with(&row, secrets)
            .await
            .map_err(|e| ProviderFailure::new(FailureKind::InvalidRequest, format!("{e:#}")))?;
        if loaded.provider_pre.is_none() {
            return Err(ProviderFailure::new(
                FailureKind::InvalidRequest,
                format!("plugin instance `{id}` is not a provider"),
            ));
        }
        self.start_loaded(id, Arc::new(loaded), request, idle_timeout)
            .await
    }

    async fn start_loaded(
        &self,
        id: &str,
        instance: Arc<super::runtime::LoadedInstance>,
        request: &ChatRequest,
        idle_timeout: Duration,
    ) -> Result<ProviderStream, ProviderFailure> {
        let pre = instance.provider_pre.as_ref().expect("checked above");
        let ctx = instance.ctx.clone();
        let internal = |e: anyhow::Error| plugin_failure(format!("provider `{id}`: {e:#}"));
        // The pool slot stays taken for the stream's life: the decoder lives in it. A stream
        // first needs one of the fewer stream permits, so streams never take every slot.
        let stream_permit = self
            .stream_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| internal(e.into()))?;
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| internal(e.into()))?;
        let mut store = self.new_store(&ctx, "provider", None).map_err(internal)?;
        let wall = ctx.limits.wall_timeout();
        let bindings = guest_call(&ctx, &mut store, wall, async |store| {
            pre.instantiate(&mut *store).await
        })
        .await?;
        let prepared = guest_call(&ctx, &mut store, wall, async |store| {
            bindings.prepare(&mut *store, request).await
        })
        .await??;
        let Some(client) = ctx.outbound.clone() else {
            return Err(ProviderFailure::new(
                FailureKind::InvalidRequest,
                format!(
                    "provider `{id}` may not reach any host: set its base URL \
                     (PUT /api/providers/{id}/auth)"
                ),
            ));
        };
        let response = client
            .send_streaming(prepared)
            .await
            .map_err(|e| transport_failure(&ctx, e))?;
        let status = response.status;
        // A vendor (or a proxy before it) that echoes the request's credentials in a header
        // would otherwise hand the guest the key it must never see.
        let headers: Vec<(String, String)> = response
            .headers
            .into_iter()
            .map(|(name, value)| {
                let value = ctx.redactor.redact(&value).into_owned();
                (name, value)
            })
            .collect();
        let decoder = guest_call(&ctx, &mut store, wall, async |store| {
            bindings.decoder(&mut *store, status, &headers).await
        })
        .await?;
        let mut stream = ProviderStream {
            store,
            bindings,
            decoder,
            ctx: ctx.clone(),
            body: Some(response.body),
            redaction: ctx.redactor.stream(),
            idle_timeout,
            status,
            retry_after: retry_after(&headers),
            saw_finish: false,
            held: None,
            _permits: (stream_permit, permit),
        };
        if !(200..300).contains(&status) {
            return Err(stream.read_error().await);
        }
        Ok(stream)
    }
}

/// How long the status check of a provider waits for its server: it runs on every provider
/// listing, which must stay quick even when a vendor is down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long listing a server's models waits for it.
const MODELS_TIMEOUT: Duration = Duration::from_secs(15);

/// Where a provider instance sends its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderAddress {
    /// The effective base URL (the plugin's default filled in); `None` if it has none.
    pub base_url: Option<String>,
    /// The plugin's default base URL: the vendor's own API.
    pub default_base_url: Option<String>,
    /// The base URL's host is a loopback, private or link-local address, or approved as a
    /// private host: a server on the operator's own machines.
    pub local: bool,
    /// The instance's grants cover the base URL's host and port (as a private host where it
    /// is one).
    pub approved: bool,
}

/// What asking a provider's server for its model list showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The server answered with this HTTP status.
    Answered(u16),
    /// No answer: why (connection refused, timed out, name unknown, …).
    Unreachable(String),
    /// The instance may not reach its base URL: the address is not approved.
    Denied,
    /// Nothing was asked: the plugin names no model list address, or the instance is not
    /// loaded.
    NotChecked,
}

/// The `GET` of an instance's model list: its manifest's `models-url` with `{config.KEY}`
/// filled in from the instance's config.
fn models_request(instance: &super::runtime::LoadedInstance) -> Option<OutboundRequest> {
    let template = instance.provider_info.models_url.as_deref()?;
    let mut url = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{config.") {
        url.push_str(&rest[..start]);
        let after = &rest[start + "{config.".len()..];
        let end = after.find('}')?;
        let value = instance.ctx.config.get(&after[..end])?.as_str()?;
        // `{config.base_url}/models` must not become `…/v1//models`.
        url.push_str(value.trim_end_matches('/'));
        rest = &after[end + 1..];
    }
    url.push_str(rest);
    Some(OutboundRequest {
        method: "GET".into(),
        url,
        headers: instance.provider_info.models_headers.clone(),
        body: None,
    })
}

/// Model ids from a model list: `{"data": [{"id"}]}` (OpenAI and the servers that copy it,
/// Anthropic) or `{"models": [{"name"}]}` (Ollama's `/api/tags`).
fn model_ids(body: &serde_json::Value) -> Option<Vec<String>> {
    let (list, key) = match (body.get("data"), body.get("models")) {
        (Some(data), _) => (data.as_array()?, "id"),
        (None, Some(models)) => (models.as_array()?, "name"),
        (None, None) => return None,
    };
    Some(
        list.iter()
            .filter_map(|m| m.get(key).and_then(|v| v.as_str()))
            .map(str::to_owned)
            .collect(),
    )
}

/// Runs one guest call with a fresh computation budget under the wall-clock ceiling.
async fn guest_call<T>(
    ctx: &InstanceContext,
    store: &mut Store<CallState>,
    wall: Duration,
    call: impl AsyncFnOnce(&mut Store<CallState>) -> wasmtime::Result<T>,
) -> Result<T, ProviderFailure> {
    store.data_mut().restart_clock();
    let clock = store.data().clock.clone();
    let outcome = tokio::time::timeout(wall, within_budget(clock, call(store))).await;
    store.data().log.finish();
    match outcome {
        Err(_) => Err(plugin_failure(format!(
            "provider plugin `{}` did not answer within {} ms and was stopped",
            ctx.instance_id, ctx.limits.wall_timeout_ms
        ))),
        Ok(Err(trap)) => Err(plugin_failure(classify(trap, ctx).to_string())),
        Ok(Ok(value)) => Ok(value),
    }
}

fn transport_failure(ctx: &InstanceContext, e: OutboundError) -> ProviderFailure {
    let text = ctx.redactor.redact(&e.to_string()).into_owned();
    match e {
        OutboundError::Denied(_) | OutboundError::InvalidRequest(_) => ProviderFailure::new(
            FailureKind::InvalidRequest,
            format!("provider `{}`: {text}", ctx.instance_id),
        ),
        OutboundError::Timeout => ProviderFailure::new(
            FailureKind::Transport,
            format!(
                "provider `{}`: the vendor did not answer in time",
                ctx.instance_id
            ),
        ),
        OutboundError::TooLarge(_) => ProviderFailure::new(
            FailureKind::Other,
            format!("provider `{}`: {text}", ctx.instance_id),
        ),
        OutboundError::Connection(_) => ProviderFailure::new(
            FailureKind::Transport,
            format!("provider `{}`: {text}", ctx.instance_id),
        ),
    }
}

fn retry_after(headers: &[(String, String)]) -> Option<u32> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("retry-after"))
        .and_then(|(_, v)| v.trim().parse::<u32>().ok())
}

/// A provider's response being decoded.
pub struct ProviderStream {
    store: Store<CallState>,
    bindings: Provider,
    decoder: ResourceAny,
    ctx: Arc<InstanceContext>,
    body: Option<BoxStream<'static, Result<Bytes, OutboundError>>>,
    /// Redaction of the body across chunk boundaries: the decoder joins chunks, so redacting
    /// each batch alone would let a key split between two batches through.
    redaction: StreamRedactor,
    idle_timeout: Duration,
    status: u16,
    retry_after: Option<u32>,
    saw_finish: bool,
    /// The end of the body or an error, found while gathering chunks, for the next call.
    held: Option<Option<Result<Bytes, OutboundError>>>,
    /// A stream permit and the pool slot the decoder lives in.
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

impl ProviderStream {
    /// The next decoded events (possibly none for a chunk that completed nothing); `None`
    /// once the response is complete.
    pub async fn next(&mut self) -> Result<Option<Vec<StreamEvent>>, ProviderFailure> {
        let Some(body) = self.body.as_mut() else {
            return Ok(None);
        };
        let next = match self.held.take() {
            Some(held) => Ok(held),
            None => tokio::time::timeout(self.idle_timeout, body.next()).await,
        };
        let chunk = match next {
            Err(_) => {
                self.body = None;
                return Err(ProviderFailure::new(
                    FailureKind::Transport,
                    format!(
                        "provider `{}`: the vendor sent nothing for {} s",
                        self.ctx.instance_id,
                        self.idle_timeout.as_secs()
                    ),
                ));
            }
            Ok(next) => next,
        };
        match chunk {
            Some(Ok(bytes)) => {
                let mut bytes = bytes.to_vec();
                // Chunks that have arrived already go to the decoder in one call: every guest
                // call has a fixed cost, and vendors send each event as a chunk of its own.
                while bytes.len() < 64 * 1024 {
                    match body.next().now_or_never() {
                        Some(Some(Ok(more))) => bytes.extend_from_slice(&more),
                        Some(other) => {
                            self.held = Some(other);
                            break;
                        }
                        None => break,
                    }
                }
                let bytes = self.redaction.push(&bytes);
                if bytes.is_empty() {
                    // All of it may be the start of a secret: wait for the rest.
                    return Ok(Some(Vec::new()));
                }
                let events = self.feed(bytes).await?;
                Ok(Some(events))
            }
            Some(Err(e)) => {
                self.body = None;
                let mut failure = transport_failure(&self.ctx, e);
                failure.message = format!("{} (the response broke off)", failure.message);
                Err(failure)
            }
            None => {
                self.body = None;
                let held = self.redaction.finish();
                let mut events = if held.is_empty() {
                    Vec::new()
                } else {
                    self.feed(held).await?
                };
                events.extend(self.finish().await?);
                if !self.saw_finish {
                    return Err(ProviderFailure::new(
                        FailureKind::Transport,
                        format!(
                            "provider `{}`: the response ended before the model finished",
                            self.ctx.instance_id
                        ),
                    ));
                }
                Ok(Some(events))
            }
        }
    }

    async fn feed(&mut self, chunk: Vec<u8>) -> Result<Vec<StreamEvent>, ProviderFailure> {
        let wall = self.ctx.limits.wall_timeout();
        let (bindings, decoder) = (&self.bindings, self.decoder);
        let result = guest_call(&self.ctx, &mut self.store, wall, async |store| {
            bindings.feed(&mut *store, decoder, &chunk).await
        })
        .await?;
        self.events(result)
    }

    async fn finish(&mut self) -> Result<Vec<StreamEvent>, ProviderFailure> {
        let wall = self.ctx.limits.wall_timeout();
        let (bindings, decoder) = (&self.bindings, self.decoder);
        let result = guest_call(&self.ctx, &mut self.store, wall, async |store| {
            bindings.finish(&mut *store, decoder).await
        })
        .await?;
        self.events(result)
    }

    fn events(
        &mut self,
        result: Result<Vec<StreamEvent>, ProviderFailure>,
    ) -> Result<Vec<StreamEvent>, ProviderFailure> {
        match result {
            Ok(events) => {
                self.saw_finish |= events.iter().any(|e| matches!(e, StreamEvent::Finish(_)));
                Ok(events)
            }
            Err(mut failure) => {
                self.body = None;
                failure.status = Some(self.status);
                if failure.retry_after.is_none() {
                    failure.retry_after = self.retry_after;
                }
                failure.message = self.ctx.redactor.redact(&failure.message).into_owned();
                Err(failure)
            }
        }
    }

    /// Reads an error response whole and lets the plugin name the error.
    async fn read_error(&mut self) -> ProviderFailure {
        // Redacted before it is cut: cutting first could leave the start of a key at the end,
        // where no redactor recognises it any more.
        let mut body = Vec::new();
        let mut complete = false;
        if let Some(stream) = self.body.as_mut() {
            loop {
                match tokio::time::timeout(self.idle_timeout, stream.next()).await {
                    Ok(Some(Ok(chunk))) => {
                        body.extend(self.redaction.push(&chunk));
                        if body.len() >= MAX_ERROR_BODY {
                            break;
                        }
                    }
                    Ok(None) => {
                        complete = true;
                        break;
                    }
                    Ok(Some(Err(_))) | Err(_) => break,
                }
            }
        }
        if complete {
            body.extend(self.redaction.finish());
        }
        body.truncate(MAX_ERROR_BODY);
        self.body = None;
        let status = self.status;
        let decoded = match self.feed(body).await {
            Ok(_) => self.finish().await,
            Err(e) => Err(e),
        };
        let mut failure = match decoded {
            Err(failure) => failure,
            // The plugin saw nothing wrong with an error status: name the status ourselves.
            Ok(_) => ProviderFailure::new(
                FailureKind::Other,
                format!(
                    "provider `{}`: the vendor answered HTTP {status}",
                    self.ctx.instance_id
                ),
            ),
        };
        failure.status = Some(status);
        if failure.kind == FailureKind::Other && status == 429 {
            failure.kind = FailureKind::RateLimited;
        }
        if failure.retry_after.is_none() {
            failure.retry_after = self.retry_after;
        }
        failure
    }
}
