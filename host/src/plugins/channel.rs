//! Calling channel plugins. Sans-IO, like providers: the guest turns a poll, a webhook
//! delivery or an action into the platform's HTTP and reads the answers; the host sends
//! through the instance's outbound client (which inserts the bot token the guest never sees)
//! and owns every wait. Each guest call runs in a fresh instance with its own budget, and no
//! pool slot is held while the platform keeps a long poll open.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::Store;

use super::contract::channel::Channel;
use super::contract::v0_2_0::types as wire;
use super::runtime::{LoadedInstance, PluginRuntime, classify};
use super::state::{CallState, within_budget};
use super::{InstanceContext, PluginKind};
use crate::channels::model::{Action, Batch, ChannelError, Outcome, WebhookBatch};
use crate::net::{OutboundError, OutboundRequest, OutboundResponse};
use crate::store::plugins::KvWrites;

/// How much longer than the wait it asked for a long poll may take before the host gives up
/// on it: the platform answers at the end of the wait, plus the network's time.
const POLL_GRACE: Duration = Duration::from_secs(15);

impl PluginRuntime {
    /// The loaded channel instance `id`, after catching up with changes made elsewhere (a
    /// new token, the instance disabled).
    async fn channel_instance(&self, id: &str) -> Result<Arc<LoadedInstance>, ChannelError> {
        self.catch_up_for(Some(id))
            .await
            .map_err(|e| ChannelError::Host(format!("checking for plugin changes: {e:#}")))?;
        let instance = self
            .instances
            .read()
            .expect("instances lock")
            .get(id)
            .cloned()
            .ok_or_else(|| ChannelError::Host(format!("no channel instance `{id}` is loaded")))?;
        if instance.kind != PluginKind::Channel || instance.channel.is_none() {
            return Err(ChannelError::Host(format!(
                "plugin instance `{id}` is not a channel"
            )));
        }
        if !instance.enabled {
            return Err(ChannelError::Host(format!(
                "channel instance `{id}` is disabled"
            )));
        }
        Ok(instance)
    }

    /// Runs one guest call on a fresh instance of channel `instance`, committing the kv
    /// writes it made if it succeeded.
    async fn channel_call<T>(
        &self,
        instance: &LoadedInstance,
        call: impl AsyncFnOnce(&Channel, &mut Store<CallState>) -> wasmtime::Result<T>,
    ) -> Result<T, ChannelError> {
        let (value, kv) = self.channel_call_deferring_kv(instance, call).await?;
        if let Some(kv) = kv {
            let applied = self
                .db()
                .kv_commit(&kv)
                .await
                .map_err(|e| ChannelError::Host(format!("kv: commit failed: {e:#}")))?;
            applied.into_result(kv.quota).map_err(ChannelError::Host)?;
        }
        Ok(value)
    }

    /// Runs one guest call as [`Self::channel_call`] does, but hands its kv writes back
    /// unapplied, for the caller to store with what the call returned.
    async fn channel_call_deferring_kv<T>(
        &self,
        instance: &LoadedInstance,
        call: impl AsyncFnOnce(&Channel, &mut Store<CallState>) -> wasmtime::Result<T>,
    ) -> Result<(T, Option<KvWrites>), ChannelError> {
        let ctx = &instance.ctx;
        let (pre, _) = instance
            .channel
            .as_ref()
            .expect("checked by channel_instance");
        let host_error =
            |e: anyhow::Error| ChannelError::Host(format!("{}: {e:#}", ctx.instance_id));
        // Queued here, as tool calls are: exactly as many permits as the pool has slots.
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| host_error(e.into()))?;
        let mut store = self.new_store(ctx, "channel", None).map_err(host_error)?;
        let clock = store.data().clock.clone();
        let outcome = tokio::time::timeout(
            ctx.limits.wall_timeout(),
            within_budget(clock, async {
                let channel = pre.instantiate(&mut store).await?;
                call(&channel, &mut store).await
            }),
        )
        .await;
        store.data().log.finish();
        let value = match outcome {
            Err(_) => {
                return Err(ChannelError::Host(format!(
                    "channel plugin `{}` did not answer within {} ms and was stopped",
                    ctx.instance_id, ctx.limits.wall_timeout_ms
                )));
            }
            Ok(Err(trap)) => return Err(ChannelError::Host(classify(trap, ctx).to_string())),
            Ok(Ok(value)) => value,
        };
        Ok((value, store.data_mut().take_kv()))
    }

    /// Asks the platform for the events after `cursor`, letting it hold the request up to
    /// `wait_s` seconds (capped at what the plugin says its platform takes). The kv writes
    /// the plugin made reading the answer come back in the batch, unapplied: the caller
    /// stores them with the batch.
    pub async fn channel_poll(
        &self,
        id: &str,
        cursor: Option<&str>,
        wait_s: u32,
    ) -> Result<Batch, ChannelError> {
        let instance = self.channel_instance(id).await?;
        let wait_s = wait_s.min(
            instance
                .channel
                .as_ref()
                .expect("a channel")
                .1
                .max_poll_wait_s,
        );
        let request = self
            .channel_call(&instance, async |channel, store| {
                channel.poll_request(store, cursor, wait_s).await
            })
            .await??;
        let response = send(
            &instance.ctx,
            request,
            Duration::from_secs(wait_s.into()) + POLL_GRACE,
        )
        .await?;
        // The kv writes parse-poll made are stored with the batch, in one transaction.
        let (batch, kv) = self
            .channel_call_deferring_kv(&instance, async |channel, store| {
                channel.parse_poll(store, response).await
            })
            .await?;
        Ok(Batch { kv, ..batch? })
    }

    /// Reads a webhook delivery to channel `id`: the header the manifest's `webhook-auth`
    /// names is checked against the instance's secret in constant time and stripped, and
    /// only then does the plugin see the request. A delivery that fails the check is
    /// `Unauthorized` and never reaches the plugin.
    pub async fn channel_webhook(
        &self,
        id: &str,
        mut request: OutboundRequest,
    ) -> Result<WebhookBatch, ChannelError> {
        let instance = self.channel_instance(id).await?;
        let Some((auth, secret)) = &instance.webhook else {
            return Err(ChannelError::Unauthorized(
                "this channel takes no webhooks: its plugin names no webhook-auth".into(),
            ));
        };
        let Some(secret) = secret else {
            return Err(ChannelError::Unauthorized(format!(
                "the channel's {} is not set, so no delivery can be verified",
                auth.secret
            )));
        };
        let given = request
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&auth.header))
            .map(|(_, value)| value.as_str());
        let body = request.body.as_deref().unwrap_or_default();
        if !webhook_authentic(auth.scheme, secret, given, body) {
            return Err(ChannelError::Unauthorized(format!(
                "the delivery's {} header is missing or wrong",
                auth.header
            )));
        }
        request
            .headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case(&auth.header));
        let request = wire::HttpRequest {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
        };
        let (batch, kv) = self
            .channel_call_deferring_kv(&instance, async |channel, store| {
                channel.handle_webhook(store, request).await
            })
            .await?;
        Ok(WebhookBatch { kv, ..batch? })
    }

    /// Carries out `action` on channel `id`: the plugin's requests in order, each answer read
    /// by the plugin. Returns the outcome of each request sent; it stops at the first that is
    /// neither `done` nor `identified`, as the later requests build on the earlier ones. An
    /// action that needs no request (a platform without typing) has no outcomes.
    pub async fn channel_act(
        &self,
        id: &str,
        action: &Action,
    ) -> Result<Vec<Outcome>, ChannelError> {
        let instance = self.channel_instance(id).await?;
        let requests = self
            .channel_call(&instance, async |channel, store| {
                channel.prepare(store, action).await
            })
            .await??;
        let mut outcomes = Vec::with_capacity(requests.len());
        for (index, request) in requests.into_iter().enumerate() {
            let response = send(&instance.ctx, request, Duration::ZERO).await?;
            let outcome = self
                .channel_call(&instance, async |channel, store| {
                    channel
                        .read_response(store, action, index as u32, response)
                        .await
                })
                .await?;
            let go_on = matches!(outcome, Outcome::Done(_) | Outcome::Identified(_));
            outcomes.push(outcome);
            if !go_on {
                break;
            }
        }
        Ok(outcomes)
    }
}

/// A file fetched from a channel's platform.
#[derive(Debug)]
pub struct FetchedFile {
    pub bytes: Vec<u8>,
    /// The `content-type` the platform gave, if any.
    pub content_type: Option<String>,
}

impl PluginRuntime {
    /// Downloads the file of an attachment on channel instance `id`'s platform: the plugin
    /// names the download (after asking the platform where the file is), and the host sends
    /// it through the instance's client, which inserts the bot token and caps the size at
    /// the instance's `max_response_bytes`.
    pub async fn channel_fetch_file(
        &self,
        id: &str,
        locator: &str,
    ) -> Result<FetchedFile, ChannelError> {
        let action = Action::FetchFile {
            locator: locator.to_owned(),
        };
        let outcomes = self.channel_act(id, &action).await?;
        let request = match outcomes.into_iter().last() {
            Some(Outcome::Download(request)) => request,
            Some(Outcome::RateLimited(s)) => return Err(ChannelError::RateLimited(s)),
            Some(Outcome::Transient(why)) => return Err(ChannelError::Transient(why)),
            Some(other) => {
                return Err(ChannelError::Other(format!(
                    "the platform did not give the file: {other:?}"
                )));
            }
            None => {
                return Err(ChannelError::Other(
                    "this channel's plugin cannot fetch files".into(),
                ));
            }
        };
        let instance = self.channel_instance(id).await?;
        let ctx = &instance.ctx;
        let Some(client) = ctx.outbound.clone() else {
            return Err(ChannelError::Host(format!(
                "channel `{id}` may not reach any host: approve its http capability"
            )));
        };
        let response = client.send(request.into()).await.map_err(|e| {
            ChannelError::Transient(ctx.redactor.redact(&e.to_string()).into_owned())
        })?;
        if !(200..300).contains(&response.status) {
            return Err(ChannelError::Other(format!(
                "the platform answered the download with HTTP {}",
                response.status
            )));
        }
        let content_type = response
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            .map(|(_, value)| value.clone());
        Ok(FetchedFile {
            bytes: response.body,
            content_type,
        })
    }
}

/// Sends a request the plugin built, and hands the answer back as the guest reads it: with
/// the instance's secrets redacted, as a platform's error page may quote the request.
async fn send(
    ctx: &InstanceContext,
    request: OutboundRequest,
    hold: Duration,
) -> Result<wire::HttpResponse, ChannelError> {
    let Some(client) = ctx.outbound.clone() else {
        return Err(ChannelError::Host(format!(
            "channel `{}` may not reach any host: approve its http capability",
            ctx.instance_id
        )));
    };
    let answer = if hold.is_zero() {
        client.send(request).await
    } else {
        client.send_held(request, hold).await
    };
    match answer {
        Ok(OutboundResponse {
            status,
            headers,
            body,
        }) => Ok(wire::HttpResponse {
            status,
            headers: headers
                .into_iter()
                .map(|(name, value)| (name, ctx.redactor.redact(&value).into_owned()))
                .collect(),
            body: ctx.redactor.redact_bytes(body),
        }),
        Err(e) => {
            let text = ctx.redactor.redact(&e.to_string()).into_owned();
            Err(match e {
                OutboundError::Timeout | OutboundError::Connection(_) => {
                    ChannelError::Transient(format!("{}: {text}", ctx.instance_id))
                }
                _ => ChannelError::Host(format!("{}: {text}", ctx.instance_id)),
            })
        }
    }
}

/// Whether a webhook's header proves the delivery came from the platform. Compared in
/// constant time: a byte-by-byte early exit would let a caller find the secret a byte at a
/// time.
fn webhook_authentic(
    scheme: kelp_registry::manifest::WebhookScheme,
    secret: &str,
    given: Option<&str>,
    body: &[u8],
) -> bool {
    use hmac::{Hmac, Mac};
    use kelp_registry::manifest::WebhookScheme;
    use sha2::{Digest, Sha256};
    let Some(given) = given else {
        return false;
    };
    match scheme {
        WebhookScheme::Token => {
            // Hashed first, so the comparison takes as long whatever the lengths.
            let (a, b) = (
                Sha256::digest(given.as_bytes()),
                Sha256::digest(secret.as_bytes()),
            );
            a.iter()
                .zip(b.iter())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0
        }
        WebhookScheme::HmacSha256 => {
            let hex = given.trim();
            let hex = hex.strip_prefix("sha256=").unwrap_or(hex);
            let Ok(tag) = hex::decode(hex) else {
                return false;
            };
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                .expect("HMAC takes any key length");
            mac.update(body);
            // `verify_slice` compares in constant time.
            mac.verify_slice(&tag).is_ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::webhook_authentic;
    use hmac::{Hmac, Mac};
    use kelp_registry::manifest::WebhookScheme;
    use sha2::Sha256;

    #[test]
    fn webhook_headers_are_checked() {
        let token = WebhookScheme::Token;
        assert!(webhook_authentic(token, "s3cret", Some("s3cret"), b""));
        assert!(!webhook_authentic(token, "s3cret", Some("s3cre"), b""));
        assert!(!webhook_authentic(token, "s3cret", Some("s3cret "), b""));
        assert!(!webhook_authentic(token, "s3cret", None, b""));
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap();
        mac.update(b"{\"id\":1}");
        let tag = hex::encode(mac.finalize().into_bytes());
        let hmac = WebhookScheme::HmacSha256;
        assert!(webhook_authentic(
            hmac,
            "key",
            Some(&format!("sha256={tag}")),
            b"{\"id\":1}"
        ));
        assert!(webhook_authentic(hmac, "key", Some(&tag), b"{\"id\":1}"));
        assert!(!webhook_authentic(hmac, "key", Some(&tag), b"{\"id\":2}"));
        assert!(!webhook_authentic(hmac, "other", Some(&tag), b"{\"id\":1}"));
        assert!(!webhook_authentic(
            hmac,
            "key",
            Some("sha256=zz"),
            b"{\"id\":1}"
        ));
    }
}
