//! Answering a chat message with the agent, and carrying actions out on the platform.
//!
//! The reply streams where the platform can edit: the first text sends a message, later text
//! edits it no more often than the plugin's minimum interval, and a reply that outgrows one
//! message spills into the next. Typing is shown while the agent works. Where the platform
//! cannot edit, the whole reply is sent once, when the run ends.
//!
//! An outbox records each message of a reply with the platform's id for it: after a crash,
//! the event that was being answered is answered again (its run was cut off with the host),
//! and the messages already out are edited to the new answer rather than sent again. Only a
//! crash between a send and its record sends that part twice — Telegram takes no idempotency
//! key, so no host can close that window.
//!
//! The platform's answers are acted on: a rate limit is waited out before the next call to
//! that chat; formatting the platform cannot read is sent again as plain text; a chat that
//! blocked the bot is marked closed and the reply given up; a chat that moved is followed.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use tokio::time::Instant;

use super::manager::ChannelManager;
use super::model::{Action, Chat, Edit, Outbound, Outcome, TextFormat};
use crate::agent::StartError;
use crate::plugins::ChannelInfo;
use crate::store::channels::ChannelRow;

/// Attempts of one action through rate limits, moves and transient failures.
const MAX_ATTEMPTS: usize = 5;

/// How long a message waits for one of its owner's run slots before it is told to try later.
const RUN_SLOT_WAIT: Duration = Duration::from_secs(60);

/// Why an action was given up.
#[derive(Debug, thiserror::Error)]
pub(super) enum ActError {
    #[error("the chat is closed to the bot: {0}")]
    ChatClosed(String),
    #[error("{0}")]
    Other(String),
}

impl From<crate::channels::model::ChannelError> for ActError {
    fn from(e: crate::channels::model::ChannelError) -> Self {
        ActError::Other(e.to_string())
    }
}

/// Carries `action` out, through its rate limits and the like; the platform's id of what it
/// created (a sent message), if any.
pub(super) async fn act(
    mgr: &ChannelManager,
    channel: &ChannelRow,
    mut action: Action,
) -> Result<Option<String>> {
    for _ in 0..MAX_ATTEMPTS {
        let outcomes = mgr
            .runtime
            .channel_act(&channel.instance_id, &action)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        match outcomes.last() {
            None => return Ok(None),
            Some(Outcome::Done(id)) => return Ok(id.clone()),
            Some(Outcome::Identified(_) | Outcome::Download(_)) => return Ok(None),
            Some(Outcome::RateLimited(s)) => {
                // Nothing goes to the platform before it said it would take more.
                tokio::time::sleep(Duration::from_secs((*s).into())).await;
            }
            Some(Outcome::BadFormat(_)) => match &mut action {
                Action::Send(out) if out.format != TextFormat::Plain => {
                    out.format = TextFormat::Plain
                }
                Action::Edit(edit) if edit.format != TextFormat::Plain => {
                    edit.format = TextFormat::Plain
                }
                _ => bail!("the platform refused the text even as plain text"),
            },
            Some(Outcome::ChatClosed(why)) => {
                if let Some(chat) = chat_of(&action) {
                    super::manager::set_chat_state(mgr, channel, &chat, "closed").await?;
                }
                return Err(ActError::ChatClosed(why.clone()).into());
            }
            Some(Outcome::ChatMoved(to)) => {
                let Some(chat) = chat_of(&action) else {
                    bail!("the platform moved a chat the action does not name");
                };
                super::manager::move_chat(mgr, channel, &chat, to).await?;
                set_chat(&mut action, to);
            }
            Some(Outcome::Transient(_)) => tokio::time::sleep(Duration::from_secs(1)).await,
            Some(Outcome::Unauthorized(why)) => bail!("the platform refused the bot: {why}"),
            Some(Outcome::Failed(why)) => bail!("{why}"),
        }
    }
    Err(ActError::Other(format!("gave up after {MAX_ATTEMPTS} attempts")).into())
}

fn chat_of(action: &Action) -> Option<Chat> {
    match action {
        Action::Send(out) => Some(out.chat.clone()),
        Action::Edit(edit) => Some(edit.chat.clone()),
        Action::Typing(chat) => Some(chat.clone()),
        Action::AnswerPress { .. } | Action::Setup(_) | Action::FetchFile { .. } => None,
    }
}

fn set_chat(action: &mut Action, to: &str) {
    match action {
        Action::Send(out) => out.chat.id = to.to_owned(),
        Action::Edit(edit) => edit.chat.id = to.to_owned(),
        Action::Typing(chat) => chat.id = to.to_owned(),
        Action::AnswerPress { .. } | Action::Setup(_) | Action::FetchFile { .. } => {}
    }
}

/// Splits `text` into parts of at most `max` UTF-16 units, at the last line break or space
/// before the limit where there is one, never inside a character.
pub(super) fn split(text: &str, max: usize) -> Vec<String> {
    let max = max.max(2);
    let mut parts = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let mut units = 0;
        let mut end = rest.len();
        for (at, ch) in rest.char_indices() {
            units += ch.len_utf16();
            if units > max {
                end = at;
                break;
            }
        }
        // A cut that falls on a space or line break is already a good one; else back to the
        // last one before it.
        if end < rest.len() && !rest[end..].starts_with(char::is_whitespace) {
            let window = &rest[..end];
            if let Some(cut) = window
                .rfind('\n')
                .or_else(|| window.rfind(' '))
                .filter(|&c| c > 0)
            {
                end = cut;
            }
        }
        parts.push(rest[..end].trim_end().to_owned());
        rest = rest[end..].trim_start();
    }
    parts
}

/// The reply being written to one chat: the messages sent so far and their text.
struct Outgoing<'a> {
    mgr: &'a ChannelManager,
    channel: &'a ChannelRow,
    info: &'a ChannelInfo,
    chat: Chat,
    key: String,
    /// Each message of the reply: its platform id and the text it shows.
    sent: Vec<(String, String)>,
    last_sync: Option<Instant>,
}

impl Outgoing<'_> {
    fn format(&self) -> TextFormat {
        if self.info.markdown {
            TextFormat::Markdown
        } else {
            TextFormat::Plain
        }
    }

    /// Brings the messages on the platform up to `text`: edits those whose part changed,
    /// sends the parts that have no message yet.
    async fn sync(&mut self, text: &str) -> Result<()> {
        let parts = split(text, self.info.max_text_units as usize);
        for (i, part) in parts.iter().enumerate() {
            match self.sent.get(i) {
                Some((_, shown)) if shown == part => {}
                Some((id, _)) => {
                    let action = Action::Edit(Edit {
                        chat: self.chat.clone(),
                        message_id: id.clone(),
                        text: part.clone(),
                        format: self.format(),
                    });
                    act(self.mgr, self.channel, action).await?;
                    self.sent[i].1 = part.clone();
                    self.record(i).await?;
                }
                None => {
                    let action = Action::Send(Outbound {
                        chat: self.chat.clone(),
                        text: part.clone(),
                        format: self.format(),
                        reply_to: None,
                        buttons: Vec::new(),
                        idempotency_key: format!("{}:{i}", self.key),
                    });
                    let id = act(self.mgr, self.channel, action).await?;
                    // A platform that names no id cannot edit it: the part stays as sent.
                    self.sent.push((id.unwrap_or_default(), part.clone()));
                    // Recorded at once: between the send and this write is the one window
                    // in which a crash makes the reply go out twice (platforms like Telegram
                    // take no idempotency key).
                    self.record(i).await?;
                }
            }
        }
        self.last_sync = Some(Instant::now());
        Ok(())
    }

    async fn record(&self, part: usize) -> Result<()> {
        let (id, text) = &self.sent[part];
        self.mgr
            .db()
            .record_outbox(&self.channel.id, &self.key, part as i64, id, text)
            .await
    }

    /// Whether streamed text may go out now: the platform edits, and its minimum interval
    /// since the last change has passed.
    fn may_stream(&self) -> bool {
        self.info.edit
            && self.last_sync.is_none_or(|at| {
                at.elapsed() >= Duration::from_millis(self.info.min_edit_interval_ms.into())
            })
    }
}

/// Runs the agent on `text` in `session_id` and writes its reply to `chat`.
pub(super) async fn answer(
    mgr: &ChannelManager,
    channel: &ChannelRow,
    info: &ChannelInfo,
    chat: &Chat,
    session_id: &str,
    event_id: &str,
    text: &str,
) -> Result<()> {
    let events = mgr.agent.channel(session_id).await?;
    // Subscribed before the run starts, so its first delta cannot be missed.
    let mut sub = events.subscribe(None);
    let wait_for_slot = Instant::now() + RUN_SLOT_WAIT;
    let started = loop {
        match mgr
            .agent
            .start(&channel.owner_id, session_id, text.to_owned())
            .await
        {
            Ok(started) => break started,
            // The owner's other runs (the API's, another channel's) hold every slot. The
            // message is stored, so it waits its turn rather than being turned away.
            Err(StartError::TooManyRuns(_)) if Instant::now() < wait_for_slot => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(
                refused
                @ (StartError::Busy(_) | StartError::TooManyRuns(_) | StartError::Budget(_)),
            ) => {
                let why = match refused {
                    StartError::Busy(_) => {
                        "I am still answering your last message; send this one again when I am done."
                            .to_owned()
                    }
                    other => format!("I cannot answer right now: {other}"),
                };
                super::manager::send_plain(
                    mgr,
                    channel,
                    chat,
                    &why,
                    &format!("{event_id}:refused"),
                )
                .await?;
                return Ok(());
            }
            Err(e) => return Err(anyhow!("starting the agent: {e}")),
        }
    };
    let mut done = started.done.clone();
    let mut out = Outgoing {
        mgr,
        channel,
        info,
        chat: chat.clone(),
        key: event_id.to_owned(),
        // A reply a crash cut off: its messages are edited to the new answer, not sent again.
        sent: mgr.db().outbox(&channel.id, event_id).await?,
        last_sync: None,
    };
    let typing_every = Duration::from_millis(u64::from(info.typing_interval_ms.max(1000)) * 4 / 5);
    let mut next_typing = Instant::now();
    let mut streamed = String::new();
    loop {
        if done.borrow().is_some() {
            break;
        }
        tokio::select! {
            event = sub.live.recv() => match event {
                Ok(event) if event.run_id == started.run_id => match event.kind.as_str() {
                    "text-delta" => {
                        streamed.push_str(event.data["text"].as_str().unwrap_or_default());
                        if !streamed.trim().is_empty() && out.may_stream() {
                            out.sync(&streamed).await?;
                        }
                    }
                    // A new step starts a new text: what streamed before was the model's
                    // words before a tool call, which the next step's text replaces.
                    "step-finish" => streamed.clear(),
                    "finish" | "error" => break,
                    _ => {}
                },
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            _ = tokio::time::sleep_until(next_typing), if info.typing => {
                // Typing is a courtesy: a failure to show it does not fail the reply.
                if let Err(e) = act(mgr, channel, Action::Typing(chat.clone())).await {
                    tracing::debug!(channel = %channel.id, "typing: {e:#}");
                }
                next_typing = Instant::now() + typing_every;
            }
            changed = done.changed() => if changed.is_err() { break },
        }
    }
    let outcome = loop {
        if let Some(outcome) = done.borrow().clone() {
            break outcome;
        }
        if done.changed().await.is_err() {
            bail!("the run ended without an outcome");
        }
    };
    let mut final_text = outcome.text.trim().to_owned();
    if outcome.status == "failed" {
        let why = outcome
            .error
            .as_ref()
            .and_then(|e| e["message"].as_str())
            .unwrap_or("the agent failed");
        if final_text.is_empty() {
            final_text = format!("Sorry, I could not answer: {why}");
        }
    }
    if final_text.is_empty() {
        final_text = "(no answer)".into();
    }
    // The final text replaces whatever streamed; the rate limit between edits does not hold
    // the last one back.
    out.sync(&final_text).await
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn split_keeps_parts_under_the_limit_at_spaces() {
        assert_eq!(split("aaa bbb ccc", 7), ["aaa bbb", "ccc"]);
        assert_eq!(split("abcdefgh", 3), ["abc", "def", "gh"]);
        assert_eq!(split("line one\nline two", 12), ["line one", "line two"]);
        // An emoji is two UTF-16 units and is never cut.
        assert_eq!(split("😀😀😀", 4), ["😀😀", "😀"]);
        assert!(split("   ", 10).is_empty());
        let long = "word ".repeat(2000);
        for part in split(&long, 4096) {
            assert!(part.encode_utf16().count() <= 4096);
        }
    }
}
