//! The `channel` export: the WIT guest trait in terms of [`Channel`], and the conversions
//! between the WIT types and the SDK's.

use std::marker::PhantomData;

use super::*;
use crate::__private::bindings::channel_world::exports::kelp::plugin::channel as wit;
use crate::__private::bindings::wit::{HttpRequest, HttpResponse};

#[doc(hidden)]
pub struct ChannelExport<C>(PhantomData<C>);

impl<C: Channel> wit::Guest for ChannelExport<C> {
    fn describe() -> wit::Info {
        C::describe().into()
    }

    fn poll_request(
        cursor: Option<String>,
        wait_seconds: u32,
    ) -> Result<HttpRequest, wit::ChannelError> {
        C::poll_request(cursor, wait_seconds)
            .map(Into::into)
            .map_err(Into::into)
    }

    fn parse_poll(resp: HttpResponse) -> Result<wit::Batch, wit::ChannelError> {
        C::parse_poll(resp.into())
            .map(Into::into)
            .map_err(Into::into)
    }

    fn handle_webhook(req: HttpRequest) -> Result<wit::WebhookBatch, wit::ChannelError> {
        C::handle_webhook(req.into())
            .map(Into::into)
            .map_err(Into::into)
    }

    fn prepare(act: wit::Action) -> Result<Vec<HttpRequest>, wit::ChannelError> {
        C::prepare(act.into())
            .map(|requests| requests.into_iter().map(Into::into).collect())
            .map_err(Into::into)
    }

    fn read_response(act: wit::Action, index: u32, resp: HttpResponse) -> wit::Outcome {
        C::read_response(act.into(), index, resp.into()).into()
    }
}

// ---- from the plugin to the host ----

impl From<Info> for wit::Info {
    fn from(info: Info) -> Self {
        wit::Info {
            modes: info
                .modes
                .into_iter()
                .map(|mode| match mode {
                    Mode::Poll => wit::Mode::Poll,
                    Mode::Webhook => wit::Mode::Webhook,
                })
                .collect(),
            features: info.features.into(),
            max_text_units: info.max_text_units,
            min_edit_interval_ms: info.min_edit_interval_ms,
            typing_interval_ms: info.typing_interval_ms,
            max_poll_wait_s: info.max_poll_wait_s,
        }
    }
}

impl From<Features> for wit::Features {
    fn from(f: Features) -> Self {
        let mut flags = wit::Features::empty();
        for (on, flag) in [
            (f.edit, wit::Features::EDIT),
            (f.typing, wit::Features::TYPING),
            (f.buttons, wit::Features::BUTTONS),
            (f.threads, wit::Features::THREADS),
            (f.attachments, wit::Features::ATTACHMENTS),
            (f.markdown, wit::Features::MARKDOWN),
        ] {
            flags.set(flag, on);
        }
        flags
    }
}

impl From<Chat> for wit::Chat {
    fn from(chat: Chat) -> Self {
        wit::Chat {
            id: chat.id,
            thread: chat.thread,
        }
    }
}

impl From<Sender> for wit::Sender {
    fn from(s: Sender) -> Self {
        wit::Sender {
            id: s.id,
            name: s.name,
            handle: s.handle,
            is_bot: s.is_bot,
        }
    }
}

impl From<Attachment> for wit::Attachment {
    fn from(a: Attachment) -> Self {
        wit::Attachment {
            kind: match a.kind {
                AttachmentKind::Image => wit::AttachmentKind::Image,
                AttachmentKind::Document => wit::AttachmentKind::Document,
                AttachmentKind::Audio => wit::AttachmentKind::Audio,
                AttachmentKind::Voice => wit::AttachmentKind::Voice,
                AttachmentKind::Video => wit::AttachmentKind::Video,
                AttachmentKind::Sticker => wit::AttachmentKind::Sticker,
                AttachmentKind::Other => wit::AttachmentKind::Other,
            },
            locator: a.locator,
            name: a.name,
            mime_type: a.mime_type,
            size: a.size,
        }
    }
}

impl From<Message> for wit::Message {
    fn from(m: Message) -> Self {
        wit::Message {
            chat: m.chat.into(),
            chat_kind: match m.chat_kind {
                ChatKind::Direct => wit::ChatKind::Direct,
                ChatKind::Group => wit::ChatKind::Group,
                ChatKind::Broadcast => wit::ChatKind::Broadcast,
            },
            sender: m.sender.into(),
            id: m.id,
            text: m.text,
            addressed: m.addressed,
            command: m.command.map(|c| wit::Command {
                name: c.name,
                args: c.args,
            }),
            reply_to: m.reply_to,
            attachments: m.attachments.into_iter().map(Into::into).collect(),
            timestamp_ms: m.timestamp_ms,
        }
    }
}

impl From<Event> for wit::Event {
    fn from(e: Event) -> Self {
        let kind = match e.kind {
            EventKind::Message(m) => wit::EventKind::Message(m.into()),
            EventKind::Edited(m) => wit::EventKind::Edited(m.into()),
            EventKind::Press(p) => wit::EventKind::Press(wit::Press {
                id: p.id,
                chat: p.chat.into(),
                sender: p.sender.into(),
                message_id: p.message_id,
                data: p.data,
            }),
            EventKind::ChatMoved(m) => wit::EventKind::ChatMoved(wit::Moved {
                chat: m.chat.into(),
                to: m.to,
            }),
            EventKind::ChatClosed(chat) => wit::EventKind::ChatClosed(chat.into()),
            EventKind::Ignored(why) => wit::EventKind::Ignored(why),
        };
        wit::Event { id: e.id, kind }
    }
}

impl From<Batch> for wit::Batch {
    fn from(b: Batch) -> Self {
        wit::Batch {
            events: b.events.into_iter().map(Into::into).collect(),
            next_cursor: b.next_cursor,
        }
    }
}

impl From<WebhookBatch> for wit::WebhookBatch {
    fn from(b: WebhookBatch) -> Self {
        wit::WebhookBatch {
            events: b.events.into_iter().map(Into::into).collect(),
            response: b.response.into(),
        }
    }
}

impl From<Outcome> for wit::Outcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Done(id) => wit::Outcome::Done(id),
            Outcome::Identified(i) => wit::Outcome::Identified(wit::Identity {
                id: i.id,
                handle: i.handle,
                name: i.name,
            }),
            Outcome::RateLimited(secs) => wit::Outcome::RateLimited(secs),
            Outcome::BadFormat(m) => wit::Outcome::BadFormat(m),
            Outcome::ChatClosed(m) => wit::Outcome::ChatClosed(m),
            Outcome::ChatMoved(to) => wit::Outcome::ChatMoved(to),
            Outcome::Unauthorized(m) => wit::Outcome::Unauthorized(m),
            Outcome::Transient(m) => wit::Outcome::Transient(m),
            Outcome::Failed(m) => wit::Outcome::Failed(m),
            Outcome::Download(request) => wit::Outcome::Download(request.into()),
        }
    }
}

impl From<ChannelError> for wit::ChannelError {
    fn from(e: ChannelError) -> Self {
        match e {
            ChannelError::RateLimited(secs) => wit::ChannelError::RateLimited(secs),
            ChannelError::Unauthorized(m) => wit::ChannelError::Unauthorized(m),
            ChannelError::PollConflict(m) => wit::ChannelError::PollConflict(m),
            ChannelError::WebhookActive(m) => wit::ChannelError::WebhookActive(m),
            ChannelError::Invalid(m) => wit::ChannelError::Invalid(m),
            ChannelError::Transient(m) => wit::ChannelError::Transient(m),
            ChannelError::Other(m) => wit::ChannelError::Other(m),
        }
    }
}

// ---- from the host to the plugin ----

impl From<wit::Chat> for Chat {
    fn from(chat: wit::Chat) -> Self {
        Chat {
            id: chat.id,
            thread: chat.thread,
        }
    }
}

impl From<wit::TextFormat> for TextFormat {
    fn from(f: wit::TextFormat) -> Self {
        match f {
            wit::TextFormat::Plain => TextFormat::Plain,
            wit::TextFormat::Markdown => TextFormat::Markdown,
        }
    }
}

impl From<wit::Action> for Action {
    fn from(act: wit::Action) -> Self {
        match act {
            wit::Action::Send(out) => Action::Send(Outbound {
                chat: out.chat.into(),
                text: out.text,
                format: out.format.into(),
                reply_to: out.reply_to,
                buttons: out
                    .buttons
                    .into_iter()
                    .map(|row| {
                        row.into_iter()
                            .map(|b| Button {
                                label: b.label,
                                data: b.data,
                            })
                            .collect()
                    })
                    .collect(),
                idempotency_key: out.idempotency_key,
            }),
            wit::Action::Edit(edit) => Action::Edit(Edit {
                chat: edit.chat.into(),
                message_id: edit.message_id,
                text: edit.text,
                format: edit.format.into(),
            }),
            wit::Action::Typing(chat) => Action::Typing(chat.into()),
            wit::Action::AnswerPress(id) => Action::AnswerPress(id),
            wit::Action::Setup(setup) => Action::Setup(match setup {
                wit::Setup::Identify => Setup::Identify,
                wit::Setup::UsePolling => Setup::UsePolling,
                wit::Setup::UseWebhook(url) => Setup::UseWebhook(url),
            }),
            wit::Action::FetchFile(locator) => Action::FetchFile(locator),
        }
    }
}
