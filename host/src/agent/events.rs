//! Session events: numbered per session, fanned out to every subscriber, replayable.
//!
//! Boundary events (`run-start`, `tool-call`, `tool-result`, `step-finish`, `finish`,
//! `error`) are persisted with the step that produced them. Every event of a live run —
//! deltas included — is also kept in a bounded ring, so a client that reconnects with
//! `Last-Event-ID` gets exactly what it missed; if the ring no longer reaches back that far,
//! it gets a `snapshot` of the current step's text instead of the lost deltas.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::store::Db;
use crate::store::runs::EventRow;

/// One event of a session.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Per-session sequence number; the SSE `id`.
    pub seq: i64,
    pub run_id: String,
    /// `run-start`, `text-delta`, `tool-call`, `tool-result`, `step-finish`, `finish`,
    /// `error`, `snapshot`.
    pub kind: String,
    pub data: Value,
}

impl Event {
    /// Whether the event is stored (everything but deltas and snapshots).
    pub fn persisted(&self) -> bool {
        !matches!(self.kind.as_str(), "text-delta" | "snapshot")
    }

    /// Whether the run ends with this event.
    pub fn is_terminal(&self) -> bool {
        matches!(self.kind.as_str(), "finish" | "error")
    }

    /// The JSON clients see as the event's data: the payload plus `seq` and `run_id`.
    pub fn payload(&self) -> Value {
        let mut data = self.data.clone();
        if let Some(object) = data.as_object_mut() {
            object.insert("seq".into(), json!(self.seq));
            object.insert("run_id".into(), json!(self.run_id));
        }
        data
    }

    pub fn row(&self) -> EventRow {
        EventRow {
            seq: self.seq,
            run_id: self.run_id.clone(),
            kind: self.kind.clone(),
            data: self.data.clone(),
        }
    }
}

struct LiveRun {
    run_id: String,
    ring: VecDeque<Arc<Event>>,
    /// The ring dropped events of this run.
    evicted: bool,
    /// The current step's text so far, for snapshots.
    text: String,
    step: i64,
}

struct ChannelState {
    next_seq: i64,
    live: Option<LiveRun>,
}

/// The event stream of one session.
pub struct SessionChannel {
    session_id: String,
    tx: broadcast::Sender<Arc<Event>>,
    state: Mutex<ChannelState>,
    ring_capacity: usize,
}

/// What a subscriber gets: the events it missed, then the live receiver. Events on the
/// receiver with `seq <= last_seq` were already in the backlog and must be skipped.
pub struct Subscription {
    pub backlog: Vec<Arc<Event>>,
    pub live: broadcast::Receiver<Arc<Event>>,
    pub last_seq: i64,
}

impl SessionChannel {
    /// Emits an event: numbers it, keeps it for reconnects and sends it to subscribers.
    pub fn emit(&self, run_id: &str, kind: &str, data: Value) -> Arc<Event> {
        let event = self.reserve(run_id, kind, data);
        self.publish(&event);
        event
    }

    /// Sends a reserved event to subscribers (after it was stored, for boundary events: a
    /// client that sees `finish` and then reads the messages finds the answer there).
    pub fn publish(&self, event: &Arc<Event>) {
        let _ = self.tx.send(event.clone());
    }

    /// Numbers an event and keeps it for reconnects without sending it yet.
    pub fn reserve(&self, run_id: &str, kind: &str, data: Value) -> Arc<Event> {
        let mut state = self.state.lock().expect("channel lock");
        let event = Arc::new(Event {
            seq: state.next_seq,
            run_id: run_id.to_owned(),
            kind: kind.to_owned(),
            data,
        });
        state.next_seq += 1;
        if let Some(live) = state.live.as_mut().filter(|l| l.run_id == run_id) {
            match kind {
                "text-delta" => {
                    if let Some(text) = event.data.get("text").and_then(Value::as_str) {
                        live.text.push_str(text);
                    }
                }
                "step-finish" => {
                    live.text.clear();
                    live.step += 1;
                }
                _ => {}
            }
            if live.ring.len() == self.ring_capacity {
                live.ring.pop_front();
                live.evicted = true;
            }
            live.ring.push_back(event.clone());
        }
        if event.is_terminal() {
            state.live = None;
        }
        event
    }

    /// Marks `run_id` as the live run (its events go to the ring).
    pub fn begin_run(&self, run_id: &str) {
        self.state.lock().expect("channel lock").live = Some(LiveRun {
            run_id: run_id.to_owned(),
            ring: VecDeque::new(),
            evicted: false,
            text: String::new(),
            step: 1,
        });
    }

    /// Subscribes, with everything after `last_id` as backlog.
    pub async fn subscribe(&self, db: &Db, last_id: Option<i64>) -> anyhow::Result<Subscription> {
        // Receiver and ring copy are taken together, so nothing falls between them.
        let (live, ring, evicted, text, step, run_id, next_seq) = {
            let state = self.state.lock().expect("channel lock");
            let live_run = state.live.as_ref();
            (
                self.tx.subscribe(),
                live_run
                    .map(|l| l.ring.iter().cloned().collect::<Vec<_>>())
                    .unwrap_or_default(),
                live_run.is_some_and(|l| l.evicted),
                live_run.map(|l| l.text.clone()).unwrap_or_default(),
                live_run.map(|l| l.step).unwrap_or_default(),
                live_run.map(|l| l.run_id.clone()),
                state.next_seq,
            )
        };
        let Some(after) = last_id else {
            // A new subscriber without history: only what happens from now on, plus a
            // snapshot of a run in progress so a late page still shows the text so far.
            let mut backlog = Vec::new();
            if let Some(run_id) = run_id {
                backlog.push(Arc::new(Event {
                    seq: next_seq - 1,
                    run_id,
                    kind: "snapshot".into(),
                    data: json!({"step": step, "text": text}),
                }));
            }
            return Ok(Subscription {
                backlog,
                live,
                last_seq: next_seq - 1,
            });
        };
        let mut backlog: Vec<Arc<Event>> = db
            .events_after(&self.session_id, after, 10_000)
            .await?
            .into_iter()
            .map(|r| {
                Arc::new(Event {
                    seq: r.seq,
                    run_id: r.run_id,
                    kind: r.kind,
                    data: r.data,
                })
            })
            .collect();
        let ring_reaches = ring.first().is_none_or(|e| e.seq <= after + 1) || !evicted;
        let mut snapshot = None;
        if ring_reaches {
            backlog.extend(ring.into_iter().filter(|e| e.seq > after));
        } else if let Some(run_id) = run_id {
            // Deltas were lost to the ring's bound: boundary events of the current step
            // (not yet stored) still come from the ring, the text as one snapshot that
            // carries the id of the last event it covers.
            backlog.extend(
                ring.iter()
                    .filter(|e| e.seq > after && e.persisted())
                    .cloned(),
            );
            snapshot = Some(Arc::new(Event {
                seq: ring.last().map_or(after, |e| e.seq),
                run_id,
                kind: "snapshot".into(),
                data: json!({"step": step, "text": text}),
            }));
        }
        backlog.sort_by_key(|e| e.seq);
        backlog.dedup_by_key(|e| e.seq);
        backlog.extend(snapshot);
        let last_seq = backlog.last().map_or(after, |e| e.seq).max(next_seq - 1);
        Ok(Subscription {
            backlog,
            live,
            last_seq,
        })
    }
}

/// Every session's channel in this process.
pub struct EventHub {
    channels: Mutex<HashMap<String, Arc<SessionChannel>>>,
    ring_capacity: usize,
}

impl EventHub {
    pub fn new(ring_capacity: usize) -> EventHub {
        EventHub {
            channels: Mutex::new(HashMap::new()),
            ring_capacity: ring_capacity.max(16),
        }
    }

    /// The session's channel, created (numbered after its stored events) on first use.
    pub async fn channel(&self, db: &Db, session_id: &str) -> anyhow::Result<Arc<SessionChannel>> {
        if let Some(c) = self.channels.lock().expect("hub lock").get(session_id) {
            return Ok(c.clone());
        }
        let next_seq = db.last_event_seq(session_id).await? + 1;
        let mut channels = self.channels.lock().expect("hub lock");
        Ok(channels
            .entry(session_id.to_owned())
            .or_insert_with(|| {
                Arc::new(SessionChannel {
                    session_id: session_id.to_owned(),
                    tx: broadcast::channel(1024).0,
                    state: Mutex::new(ChannelState {
                        next_seq,
                        live: None,
                    }),
                    ring_capacity: self.ring_capacity,
                })
            })
            .clone())
    }

    /// Drops the channel of a session nobody listens to and no run uses.
    pub fn release(&self, session_id: &str) {
        let mut channels = self.channels.lock().expect("hub lock");
        if let Some(c) = channels.get(session_id) {
            let idle = c.state.lock().expect("channel lock").live.is_none();
            // The map's Arc plus the caller's, if any.
            if idle && c.tx.receiver_count() == 0 && Arc::strong_count(c) <= 2 {
                channels.remove(session_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite_in(dir.path()).await.unwrap();
        (dir, db)
    }

    #[tokio::test]
    async fn a_reconnect_past_the_ring_gets_a_snapshot_and_the_boundary_events() {
        let (_dir, db) = db().await;
        let hub = EventHub::new(16);
        let channel = hub.channel(&db, "s1").await.unwrap();
        channel.begin_run("r1");
        channel.emit("r1", "run-start", json!({}));
        let mut text = String::new();
        for i in 0..40 {
            let piece = format!("w{i} ");
            text.push_str(&piece);
            channel.emit("r1", "text-delta", json!({"text": piece}));
        }
        // Boundary events still in the ring (not yet stored) are replayed as events.
        let call = channel.emit("r1", "tool-call", json!({"name": "calc"}));
        let sub = channel.subscribe(&db, Some(1)).await.unwrap();
        let kinds: Vec<&str> = sub.backlog.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["tool-call", "snapshot"]);
        assert_eq!(sub.backlog[1].data["text"], text);
        assert_eq!(sub.last_seq, call.seq);

        // Within the ring's reach: the deltas themselves, in order, no snapshot.
        let recent = call.seq - 5;
        let sub = channel.subscribe(&db, Some(recent)).await.unwrap();
        let seqs: Vec<i64> = sub.backlog.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, ((recent + 1)..=call.seq).collect::<Vec<_>>());
        assert!(sub.backlog.iter().all(|e| e.kind != "snapshot"));
    }

    #[tokio::test]
    async fn numbering_continues_after_the_stored_events() {
        let (_dir, db) = db().await;
        let hub = EventHub::new(16);
        let channel = hub.channel(&db, "s1").await.unwrap();
        let e = channel.emit("r1", "finish", json!({}));
        assert_eq!(e.seq, 1);
        // A new process numbers after what is stored (here: nothing, so it starts at 1 too,
        // while a live channel keeps counting).
        assert_eq!(
            channel.emit("r1", "text-delta", json!({"text": "x"})).seq,
            2
        );
        let fresh = EventHub::new(16).channel(&db, "s1").await.unwrap();
        assert_eq!(fresh.emit("r2", "run-start", json!({})).seq, 1);
    }
}
