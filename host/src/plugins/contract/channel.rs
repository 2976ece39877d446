//! Channel components. Channels came with 0.2.0: no earlier version has a channel interface
//! a host could drive, so there is one binding here, and conversions between it and the
//! host's own types (`channels::model`).

use anyhow::{Result, bail};
use semver::Version;
use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::v0_2_0;
use super::v0_2_0::channel_world::exports::kelp::plugin::channel as wit;
use crate::channels::model as m;
use crate::plugins::state::CallState;

type Outcome<T> = wasmtime::Result<T>;

/// A channel component, ready to instantiate.
pub struct ChannelPre(v0_2_0::ChannelPluginPre<CallState>);

/// An instantiated channel component.
pub struct Channel(v0_2_0::channel_world::ChannelPlugin);

impl ChannelPre {
    pub fn new(version: &Version, pre: InstancePre<CallState>) -> Result<ChannelPre> {
        if (version.major, version.minor) != (0, 2) {
            bail!(
                "channel plugins need kelp:plugin@0.2.0 (built against kelp:plugin@{version}, \
                 whose channel interface was a placeholder no host drives)"
            );
        }
        Ok(ChannelPre(v0_2_0::ChannelPluginPre::new(pre)?))
    }

    pub async fn instantiate(&self, store: &mut Store<CallState>) -> Outcome<Channel> {
        Ok(Channel(self.0.instantiate_async(store).await?))
    }

    /// Instantiates the component and reads what it says of its platform.
    pub async fn describe(&self, store: &mut Store<CallState>) -> Outcome<ChannelInfo> {
        let channel = self.instantiate(&mut *store).await?;
        let api = channel.0.kelp_plugin_channel();
        Ok(ChannelInfo::from(api.call_describe(&mut *store).await?))
    }
}

impl Channel {
    pub async fn poll_request(
        &self,
        store: &mut Store<CallState>,
        cursor: Option<&str>,
        wait_s: u32,
    ) -> Outcome<Result<crate::net::OutboundRequest, m::ChannelError>> {
        let api = self.0.kelp_plugin_channel();
        let asked = api.call_poll_request(store, cursor, wait_s).await?;
        Ok(asked.map(Into::into).map_err(Into::into))
    }

    pub async fn parse_poll(
        &self,
        store: &mut Store<CallState>,
        response: v0_2_0::types::HttpResponse,
    ) -> Outcome<Result<m::Batch, m::ChannelError>> {
        let api = self.0.kelp_plugin_channel();
        let parsed = api.call_parse_poll(store, &response).await?;
        Ok(parsed
            .map(|b| m::Batch {
                events: b.events.into_iter().map(Into::into).collect(),
                next_cursor: b.next_cursor,
                kv: None,
            })
            .map_err(Into::into))
    }

    pub async fn handle_webhook(
        &self,
        store: &mut Store<CallState>,
        request: v0_2_0::types::HttpRequest,
    ) -> Outcome<Result<m::WebhookBatch, m::ChannelError>> {
        let api = self.0.kelp_plugin_channel();
        let handled = api.call_handle_webhook(store, &request).await?;
        Ok(handled
            .map(|b| m::WebhookBatch {
                events: b.events.into_iter().map(Into::into).collect(),
                status: b.response.status,
                headers: b.response.headers,
                body: b.response.body,
                kv: None,
            })
            .map_err(Into::into))
    }

    pub async fn prepare(
        &self,
        store: &mut Store<CallState>,
        action: &m::Action,
    ) -> Outcome<Result<Vec<crate::net::OutboundRequest>, m::ChannelError>> {
        let api = self.0.kelp_plugin_channel();
        let prepared = api.call_prepare(store, &action.into()).await?;
        Ok(prepared
            .map(|requests| requests.into_iter().map(Into::into).collect())
            .map_err(Into::into))
    }

    pub async fn read_response(
        &self,
        store: &mut Store<CallState>,
        action: &m::Action,
        index: u32,
        response: v0_2_0::types::HttpResponse,
    ) -> Outcome<m::Outcome> {
        let api = self.0.kelp_plugin_channel();
        let read = api
            .call_read_response(store, &action.into(), index, &response)
            .await?;
        Ok(read.into())
    }
}

/// What a channel plugin says of its platform (its `describe`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChannelInfo {
    /// `poll` and/or `webhook`, preferred first.
    pub modes: Vec<m::Mode>,
    pub edit: bool,
    pub typing: bool,
    pub buttons: bool,
    pub threads: bool,
    pub attachments: bool,
    pub markdown: bool,
    pub max_text_units: u32,
    pub min_edit_interval_ms: u32,
    pub typing_interval_ms: u32,
    pub max_poll_wait_s: u32,
}

impl From<wit::Info> for ChannelInfo {
    fn from(info: wit::Info) -> Self {
        use wit::Features as F;
        ChannelInfo {
            modes: info
                .modes
                .iter()
                .map(|mode| match mode {
                    wit::Mode::Poll => m::Mode::Poll,
                    wit::Mode::Webhook => m::Mode::Webhook,
                })
                .collect(),
            edit: info.features.contains(F::EDIT),
            typing: info.features.contains(F::TYPING),
            buttons: info.features.contains(F::BUTTONS),
            threads: info.features.contains(F::THREADS),
            attachments: info.features.contains(F::ATTACHMENTS),
            markdown: info.features.contains(F::MARKDOWN),
            max_text_units: info.max_text_units,
            min_edit_interval_ms: info.min_edit_interval_ms,
            typing_interval_ms: info.typing_interval_ms,
            max_poll_wait_s: info.max_poll_wait_s,
        }
    }
}

// ---- from the guest ----

impl From<wit::Chat> for m::Chat {
    fn from(c: wit::Chat) -> Self {
        m::Chat {
            id: c.id,
            thread: c.thread,
        }
    }
}

impl From<wit::Sender> for m::Sender {
    fn from(s: wit::Sender) -> Self {
        m::Sender {
            id: s.id,
            name: s.name,
            handle: s.handle,
            is_bot: s.is_bot,
        }
    }
}

impl From<wit::Message> for m::Message {
    fn from(msg: wit::Message) -> Self {
        m::Message {
            chat: msg.chat.into(),
            chat_kind: match msg.chat_kind {
                wit::ChatKind::Direct => m::ChatKind::Direct,
                wit::ChatKind::Group => m::ChatKind::Group,
                wit::ChatKind::Broadcast => m::ChatKind::Broadcast,
            },
            sender: msg.sender.into(),
            id: msg.id,
            text: msg.text,
            addressed: msg.addressed,
            command: msg.command.map(|c| m::Command {
                name: c.name,
                args: c.args,
            }),
            reply_to: msg.reply_to,
            attachments: msg
                .attachments
                .into_iter()
                .map(|a| m::Attachment {
                    kind: match a.kind {
                        wit::AttachmentKind::Image => m::AttachmentKind::Image,
                        wit::AttachmentKind::Document => m::AttachmentKind::Document,
                        wit::AttachmentKind::Audio => m::AttachmentKind::Audio,
                        wit::AttachmentKind::Voice => m::AttachmentKind::Voice,
                        wit::AttachmentKind::Video => m::AttachmentKind::Video,
                        wit::AttachmentKind::Sticker => m::AttachmentKind::Sticker,
                        wit::AttachmentKind::Other => m::AttachmentKind::Other,
                    },
                    locator: a.locator,
                    name: a.name,
                    mime_type: a.mime_type,
                    size: a.size,
                })
                .collect(),
            timestamp_ms: msg.timestamp_ms,
        }
    }
}

impl From<wit::Event> for m::Event {
    fn from(e: wit::Event) -> Self {
        m::Event {
            id: e.id,
            kind: match e.kind {
                wit::EventKind::Message(msg) => m::EventKind::Message(msg.into()),
                wit::EventKind::Edited(msg) => m::EventKind::Edited(msg.into()),
                wit::EventKind::Press(p) => m::EventKind::Press(m::Press {
                    id: p.id,
                    chat: p.chat.into(),
                    sender: p.sender.into(),
                    message_id: p.message_id,
                    data: p.data,
                }),
                wit::EventKind::ChatMoved(moved) => m::EventKind::ChatMoved {
                    chat: moved.chat.into(),
                    to: moved.to,
                },
                wit::EventKind::ChatClosed(chat) => m::EventKind::ChatClosed(chat.into()),
                wit::EventKind::Ignored(reason) => m::EventKind::Ignored { reason },
            },
        }
    }
}

impl From<wit::ChannelError> for m::ChannelError {
    fn from(e: wit::ChannelError) -> Self {
        match e {
            wit::ChannelError::RateLimited(s) => m::ChannelError::RateLimited(s),
            wit::ChannelError::Unauthorized(t) => m::ChannelError::Unauthorized(t),
            wit::ChannelError::PollConflict(t) => m::ChannelError::PollConflict(t),
            wit::ChannelError::WebhookActive(t) => m::ChannelError::WebhookActive(t),
            wit::ChannelError::Invalid(t) => m::ChannelError::Invalid(t),
            wit::ChannelError::Transient(t) => m::ChannelError::Transient(t),
            wit::ChannelError::Other(t) => m::ChannelError::Other(t),
        }
    }
}

impl From<wit::Outcome> for m::Outcome {
    fn from(o: wit::Outcome) -> Self {
        match o {
            wit::Outcome::Done(id) => m::Outcome::Done(id),
            wit::Outcome::Identified(i) => m::Outcome::Identified(m::Identity {
                id: i.id,
                handle: i.handle,
                name: i.name,
            }),
            wit::Outcome::RateLimited(s) => m::Outcome::RateLimited(s),
            wit::Outcome::BadFormat(t) => m::Outcome::BadFormat(t),
            wit::Outcome::ChatClosed(t) => m::Outcome::ChatClosed(t),
            wit::Outcome::ChatMoved(to) => m::Outcome::ChatMoved(to),
            wit::Outcome::Unauthorized(t) => m::Outcome::Unauthorized(t),
            wit::Outcome::Transient(t) => m::Outcome::Transient(t),
            wit::Outcome::Failed(t) => m::Outcome::Failed(t),
            wit::Outcome::Download(r) => m::Outcome::Download(m::Request {
                method: r.method,
                url: r.url,
                headers: r.headers,
                body: r.body,
            }),
        }
    }
}

// ---- to the guest ----

impl From<&m::Chat> for wit::Chat {
    fn from(c: &m::Chat) -> Self {
        wit::Chat {
            id: c.id.clone(),
            thread: c.thread.clone(),
        }
    }
}

fn format(f: m::TextFormat) -> wit::TextFormat {
    match f {
        m::TextFormat::Plain => wit::TextFormat::Plain,
        m::TextFormat::Markdown => wit::TextFormat::Markdown,
    }
}

impl From<&m::Action> for wit::Action {
    fn from(a: &m::Action) -> Self {
        match a {
            m::Action::Send(out) => wit::Action::Send(wit::Outbound {
                chat: (&out.chat).into(),
                text: out.text.clone(),
                format: format(out.format),
                reply_to: out.reply_to.clone(),
                buttons: out
                    .buttons
                    .iter()
                    .map(|row| {
                        row.iter()
                            .map(|b| wit::Button {
                                label: b.label.clone(),
                                data: b.data.clone(),
                            })
                            .collect()
                    })
                    .collect(),
                idempotency_key: out.idempotency_key.clone(),
            }),
            m::Action::Edit(edit) => wit::Action::Edit(wit::Edit {
                chat: (&edit.chat).into(),
                message_id: edit.message_id.clone(),
                text: edit.text.clone(),
                format: format(edit.format),
            }),
            m::Action::Typing(chat) => wit::Action::Typing(chat.into()),
            m::Action::AnswerPress { id } => wit::Action::AnswerPress(id.clone()),
            m::Action::Setup(setup) => wit::Action::Setup(match setup {
                m::Setup::Identify => wit::Setup::Identify,
                m::Setup::UsePolling => wit::Setup::UsePolling,
                m::Setup::UseWebhook(url) => wit::Setup::UseWebhook(url.clone()),
            }),
            m::Action::FetchFile { locator } => wit::Action::FetchFile(locator.clone()),
        }
    }
}
