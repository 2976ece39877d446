//! Session events: numbered per session, fanned out to every subscriber, replayable.
//!
//! Boundary events (`run-start`, `tool-call`, `tool-result`, `step-finish`, `finish`,
//! `error`) are persisted with the step that produced them. Every event of a live run —
//! deltas included — is also kept in a bounded ring, so a client that reconnects with
//! `Last-Event-ID` gets exactly what it missed: the stored events (read page by page, however
//! far behind it is), then the ring; if the ring no longer reaches back that far, a
//! `snapshot` of the current step's text instead of the lost deltas.
//!
//! Only the host holding a session's claim (`store/claims.rs`) numbers its events, and it
//! starts each run after the last stored number, so hosts sharing a database never collide.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

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
    /// The run whose events go to the ring: from `begin_run` until its terminal event is
    /// published (not merely numbered: until then a new subscriber finds the terminal event
    /// in the ring, where it would otherwise find it neither stored yet nor still to come).
    live: Option<LiveRun>,
}

/// The channels of a hub, by session; an entry lives as long as its channel has holders.
type Channels = Mutex<HashMap<String, Weak<SessionChannel>>>;

/// The event stream of one session. It lives while something holds it — a run in progress,
/// a subscriber — and leaves its hub when the last holder lets go.
pub struct SessionChannel {
    session_id: String,
    tx: broadcast::Sender<Arc<Event>>,
    state: Mutex<ChannelState>,
    ring_capacity: usize,
    hub: Weak<Channels>,
}

impl Drop for SessionChannel {
    fn drop(&mut self) {
        let Some(channels) = self.hub.upgrade() else {
            return;
        };
        let mut channels = channels.lock().expect("hub lock");
        // A new channel for the session may already have replaced this one's entry.
        if channels
            .get(&self.session_id)
            .is_some_and(|c| c.strong_count() == 0)
        {
            channels.remove(&self.session_id);
        }
    }
}

/// What a subscriber gets: stored events to read first (numbered after `stored.0` and
/// before `stored.1`, read page by page by whoever consumes the subscription), then the
/// backlog, then the live receiver. Events on the receiver with `seq <= last_seq` were already
/// covered and must be skipped.
pub struct Subscription {
    pub stored: Option<(i64, i64)>,
    pub backlog: Vec<Arc<Event>>,
    pub live: broadcast::Receiver<Arc<Event>>,
    pub last_seq: i64,
}

impl SessionChannel {
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Emits an event: numbers it, keeps it for reconnects and sends it to subscribers.
    pub fn emit(&self, run_id: &str, kind: &str, data: Value) -> Arc<Event> {
        let event = self.reserve(run_id, kind, data);
        self.publish(&event);
        event
    }

    /// Sends a reserved event to subscribers (after it was stored, for boundary events: a
    /// client that sees `finish` and then reads the messages finds the answer there).
    pub fn publish(&self, event: &Arc<Event>) {
        if event.is_terminal() {
            let mut state = self.state.lock().expect("channel lock");
            if state
                .live
                .as_ref()
                .is_some_and(|l| l.run_id == event.run_id)
            {
                state.live = None;
            }
        }
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
        event
    }

    /// Marks `run_id` as the live run (its events go to the ring), numbering its events from
    /// `next_seq` on unless this channel has already numbered past it. A run passes the
    /// number after the session's last stored event, read once it holds the session's claim:
    /// a channel kept here while another host ran the session would otherwise reuse numbers.
    pub fn begin_run(&self, run_id: &str, next_seq: i64) {
        let mut state = self.state.lock().expect("channel lock");
        state.next_seq = state.next_seq.max(next_seq);
        state.live = Some(LiveRun {
            run_id: run_id.to_owned(),
            ring: VecDeque::new(),
            evicted: false,
            text: String::new(),
            step: 1,
        });
    }

    /// Subscribes, with everything after `last_id` to replay. A `last_id` beyond what this
    /// session has numbered (its numbering started over after a crash cut off a run whose
    /// last events were never stored) gets a `resync` event: the client must reload the
    /// session's messages, and its events go on from there.
    pub fn subscribe(&self, last_id: Option<i64>) -> Subscription {
        let state = self.state.lock().expect("channel lock");
        // Receiver and ring copy are taken together, so nothing falls between them.
        let live = self.tx.subscribe();
        let last = state.next_seq - 1;
        let run = state.live.as_ref();
        let snapshot = |seq: i64, run: &LiveRun| {
            Arc::new(Event {
                seq,
                run_id: run.run_id.clone(),
                kind: "snapshot".into(),
                data: json!({"step": run.step, "text": run.text}),
            })
        };
        let Some(after) = last_id else {
            // A new subscriber without history: only what happens from now on, plus a
            // snapshot of a run in progress so a late page still shows the text so far.
            return Subscription {
                stored: None,
                backlog: run.map(|r| snapshot(last, r)).into_iter().collect(),
                live,
                last_seq: last,
            };
        };
        if after > last {
            return Subscription {
                stored: None,
                backlog: vec![Arc::new(Event {
                    seq: last,
                    run_id: String::new(),
                    kind: "resync".into(),
                    data: json!({"last_event_id": last}),
                })],
                live,
                last_seq: last,
            };
        }
        let ring: Vec<Arc<Event>> = run
            .map(|r| r.ring.iter().cloned().collect())
            .unwrap_or_default();
        // Stored events come from the database up to where the ring starts; from there on the
        // ring has them all (boundary events not stored yet included).
        let ring_start = ring.first().map_or(state.next_seq, |e| e.seq);
        let stored = (after + 1 < ring_start).then_some((after, ring_start));
        let ring_reaches = run.is_none_or(|r| !r.evicted) || ring_start <= after + 1;
        let mut backlog: Vec<Arc<Event>> = if ring_reaches {
            ring.iter().filter(|e| e.seq > after).cloned().collect()
        } else {
            // Deltas were lost to the ring's bound: the boundary events it still holds, and
            // the text as one snapshot carrying the id of the last event it covers.
            ring.iter()
                .filter(|e| e.seq > after && e.persisted())
                .cloned()
                .collect()
        };
        if let (false, Some(run), Some(newest)) = (ring_reaches, run, ring.last()) {
            backlog.push(snapshot(newest.seq, run));
        }
        let last_seq = backlog.last().map_or(after, |e| e.seq).max(last);
        Subscription {
            stored,
            backlog,
            live,
            last_seq,
        }
    }
}

/// Every session channel of this process that something holds.
pub struct EventHub {
    channels: Arc<Channels>,
    ring_capacity: usize,
}

impl EventHub {
    pub fn new(ring_capacity: usize) -> EventHub {
        EventHub {
            channels: Arc::default(),
            ring_capacity: ring_capacity.max(16),
        }
    }

    /// How many channels are open (for `/metrics` and tests).
    pub fn len(&self) -> usize {
        self.channels.lock().expect("hub lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The session's channel, created (numbered after its stored events) if nothing holds
    /// one.
    pub async fn channel(&self, db: &Db, session_id: &str) -> anyhow::Result<Arc<SessionChannel>> {
        if let Some(c) = self.existing(session_id) {
            return Ok(c);
        }
        let next_seq = db.last_event_seq(session_id).await? + 1;
        Ok(self.channel_at(session_id, next_seq))
    }

    /// The session's channel; a new one numbers from `next_seq`.
    pub fn channel_at(&self, session_id: &str, next_seq: i64) -> Arc<SessionChannel> {
        let mut channels = self.channels.lock().expect("hub lock");
        if let Some(c) = channels.get(session_id).and_then(Weak::upgrade) {
            return c;
        }
        let channel = Arc::new(SessionChannel {
            session_id: session_id.to_owned(),
            tx: broadcast::channel(1024).0,
            state: Mutex::new(ChannelState {
                next_seq,
                live: None,
            }),
            ring_capacity: self.ring_capacity,
            hub: Arc::downgrade(&self.channels),
        });
        channels.insert(session_id.to_owned(), Arc::downgrade(&channel));
        channel
    }

    fn existing(&self, session_id: &str) -> Option<Arc<SessionChannel>> {
        self.channels
            .lock()
            .expect("hub lock")
            .get(session_id)
            .and_then(Weak::upgrade)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnect_past_the_ring_gets_a_snapshot_and_the_boundary_events() {
        let hub = EventHub::new(16);
        let channel = hub.channel_at("s1", 1);
        channel.begin_run("r1", 1);
        channel.emit("r1", "run-start", json!({}));
        let mut text = String::new();
        for i in 0..40 {
            let piece = format!("w{i} ");
            text.push_str(&piece);
            channel.emit("r1", "text-delta", json!({"text": piece}));
        }
        // Boundary events still in the ring (not yet stored) are replayed as events.
        let call = channel.emit("r1", "tool-call", json!({"name": "calc"}));
        let sub = channel.subscribe(Some(1));
        let kinds: Vec<&str> = sub.backlog.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["tool-call", "snapshot"]);
        assert_eq!(sub.backlog[1].data["text"], text);
        assert_eq!(sub.last_seq, call.seq);
        // What fell out of the ring is read from storage, up to where the ring starts.
        let ring_start = call.seq - 15;
        assert_eq!(sub.stored, Some((1, ring_start)));

        // Within the ring's reach: the deltas themselves, in order, no snapshot.
        let recent = call.seq - 5;
        let sub = channel.subscribe(Some(recent));
        let seqs: Vec<i64> = sub.backlog.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, ((recent + 1)..=call.seq).collect::<Vec<_>>());
        assert!(sub.backlog.iter().all(|e| e.kind != "snapshot"));
        assert_eq!(sub.stored, None);
    }

    #[test]
    fn numbering_never_goes_back_and_a_client_ahead_of_it_is_told_to_resync() {
        let hub = EventHub::new(16);
        let channel = hub.channel_at("s1", 5);
        channel.begin_run("r1", 3);
        assert_eq!(channel.emit("r1", "run-start", json!({})).seq, 5);
        // A run that learned of events stored by another host numbers after them.
        channel.begin_run("r2", 40);
        assert_eq!(channel.emit("r2", "run-start", json!({})).seq, 40);
        let sub = channel.subscribe(Some(99));
        assert_eq!(sub.backlog.len(), 1);
        assert_eq!(sub.backlog[0].kind, "resync");
        assert_eq!(sub.backlog[0].seq, 40);
        assert_eq!(sub.last_seq, 40);
    }

    #[test]
    fn a_channel_leaves_the_hub_with_its_last_holder() {
        let hub = EventHub::new(16);
        let channel = hub.channel_at("s1", 1);
        let sub = channel.subscribe(None);
        let again = hub.channel_at("s1", 1);
        assert!(Arc::ptr_eq(&channel, &again));
        assert_eq!(hub.len(), 1);
        drop((channel, again));
        // A subscription alone (its receiver) does not keep the channel: whoever follows
        // it holds the channel too.
        drop(sub);
        assert!(hub.is_empty());
        // A new channel after that numbers afresh from what it is told.
        assert_eq!(
            hub.channel_at("s1", 7).emit("r", "finish", json!({})).seq,
            7
        );
    }

    #[test]
    fn a_terminal_event_stays_replayable_until_it_is_published() {
        let hub = EventHub::new(16);
        let channel = hub.channel_at("s1", 1);
        channel.begin_run("r1", 1);
        channel.emit("r1", "run-start", json!({}));
        let finish = channel.reserve("r1", "finish", json!({}));
        // Numbered but not yet stored nor sent: a subscriber now must still get it.
        let sub = channel.subscribe(Some(1));
        assert_eq!(
            sub.backlog.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [finish.seq]
        );
        channel.publish(&finish);
        let sub = channel.subscribe(Some(1));
        assert!(sub.backlog.is_empty());
        assert_eq!(sub.stored, Some((1, finish.seq + 1)));
    }
}
