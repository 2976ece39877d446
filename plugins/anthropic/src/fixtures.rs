//! Replays every recorded Anthropic stream in `tests/fixtures/anthropic-messages/` (see the
//! README there) through the decoder, fed in pieces of several sizes, and checks what a user
//! would see: the text, the tool calls, the token counts and why the model stopped.

use std::collections::BTreeMap;
use std::path::Path;

use kelp_sdk::provider::{FinishReason, ProviderError, StreamEvent, Usage};

use crate::decoder::CUT_STREAM;
use crate::decoder::tests::decode_in_chunks;

const DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/anthropic-messages"
);

/// What a stream adds up to.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    text: String,
    /// index → (id, name, arguments).
    calls: BTreeMap<u32, (String, String, String)>,
    usage: Option<Usage>,
    finish: Option<FinishReason>,
}

fn usage(input_tokens: u64, output_tokens: u64) -> Option<Usage> {
    Some(Usage {
        input_tokens,
        output_tokens,
        cache_read_tokens: 0,
        cache_write_tokens: 0,
    })
}

fn text(text: &str, usage: Option<Usage>, finish: FinishReason) -> Outcome {
    Outcome {
        text: text.into(),
        usage,
        finish: Some(finish),
        ..Outcome::default()
    }
}

fn expected(file: &str) -> Outcome {
    use FinishReason::*;
    match file {
        "basic.sse" => text("Hello there!", usage(11, 6), Stop),
        // The compaction summary is the vendor's bookkeeping, not part of the answer.
        "compaction.sse" => text("Hello there!", usage(30, 8), Stop),
        // So is the fallback block that relabels the model.
        "fallback.sse" => text("Hello there!", usage(25, 8), Stop),
        "fallback-credit.sse" => text("Hello there!", usage(25, 8), Stop),
        "refusal.sse" => text("", usage(20, 0), Refusal),
        // The thinking block stays out of the text.
        "fable-fallback-stream-a-refusal.sse" => text("Hi", usage(28, 106), Refusal),
        // A server tool (web search) is run by Anthropic: no tool call for the agent. The
        // message_delta's input count replaces message_start's (612).
        "fable-fallback-stream-a-toolrefusal.sse" => text(
            "Here's a summary of this year's solar eclipses and how",
            usage(28, 106),
            Refusal,
        ),
        "fable-fallback-stream-b-fallback.sse" => text(
            " there! Happy to explain.\n\n**Solar eclipses** happen when the Moon passes \
             between the Sun and the Earth, casting a shadow that blocks some or all of the \
             Sun's light for viewers inside it. They're one of the most dramatic sights in the \
             sky.\n\nSome key points:\n\n**The three main types:**\n- Total (the Moon completely \
             covers the Sun's disk)\n- Partial (only part of the Sun is covered)\n- Annular (the \
             famous *ring of fire*)\n\n**Why they're so striking:**\n- Totality can turn day \
             into twilight (for a few minutes), and the Sun's corona becomes visible to the \
             naked eye\n- Temperatures can drop noticeably while the shadow passes over\n- \
             Animals sometimes behave as if night has fallen\n\n**Viewing safely:**\n- \
             **Certified eclipse glasses** are a must for looking at the Sun directly. Ordinary \
             sunglasses are not safe, even very dark ones.\n- A pinhole projector is an easy, \
             safe alternative.\n\n**Why they're rare:**\nThe Moon's shadow traces a (narrow) \
             path across the Earth, so any given spot sees a total eclipse only about once \
             every few centuries. That rarity is a big part of the excitement.\n\nIs there a \
             particular angle you're curious about? For example, I'd be happy to go deeper on \
             the history, the science of totality, safe viewing, or how they're portrayed in \
             fiction. Just let me know what's sparking your interest!",
            usage(31, 547),
            Stop,
        ),
        "tool-use.sse" => Outcome {
            text: "I'll check the current weather in Paris for you.".into(),
            calls: BTreeMap::from([(
                1,
                (
                    "toolu_01NRLabsLyVHZPKxbKvkfSMn".into(),
                    "get_weather".into(),
                    r#"{"location": "Paris"}"#.into(),
                ),
            )]),
            usage: usage(377, 65),
            finish: Some(ToolCalls),
        },
        // Cut off by max_tokens in the middle of the arguments: they are passed on as they
        // came, and the finish reason says why they are incomplete.
        "incomplete-partial-json.sse" => Outcome {
            text: "I'll create a comprehensive tax guide for someone with multiple W2s and save \
                   it in a file called taxes.txt. Let me do that for you now."
                .into(),
            calls: BTreeMap::from([(
                1,
                (
                    "toolu_01EKqbqmZrGRXy18eN7m9kvY".into(),
                    "make_file".into(),
                    "{\"filename\": \"taxes.txt\", \"lines_of_text\": [\n\"# COMPREHENSIVE TAX \
                     GUIDE FOR INDIVIDUALS WITH MULTIPLE W-2s\",\n\"\",\n\"## INTRODUCTION\",\n\
                     \"\",\n\"Filing taxes"
                        .into(),
                ),
            )]),
            usage: usage(450, 124),
            finish: Some(Length),
        },
        other => panic!("{other} has no expected outcome here: add one"),
    }
}

/// Adds the events up, checking the order rules a consumer relies on along the way.
fn outcome(file: &str, events: &[StreamEvent]) -> Outcome {
    let mut outcome = Outcome::default();
    for event in events {
        assert!(
            outcome.finish.is_none(),
            "{file}: {event:?} after the finish"
        );
        match event {
            StreamEvent::TextDelta(t) => {
                assert!(!t.is_empty(), "{file}: empty text delta");
                outcome.text.push_str(t);
            }
            StreamEvent::RefusalDelta(t) => panic!("{file}: Anthropic has no refusal text: {t}"),
            StreamEvent::ToolCallStart(start) => {
                let previous = outcome.calls.insert(
                    start.index,
                    (start.id.clone(), start.name.clone(), String::new()),
                );
                assert!(
                    previous.is_none(),
                    "{file}: call {} started twice",
                    start.index
                );
            }
            StreamEvent::ToolCallDelta(delta) => {
                let call = outcome.calls.get_mut(&delta.index);
                let call = call.unwrap_or_else(|| panic!("{file}: delta before start"));
                assert!(!delta.arguments.is_empty(), "{file}: empty arguments delta");
                call.2.push_str(&delta.arguments);
            }
            StreamEvent::Usage(usage) => outcome.usage = Some(*usage),
            StreamEvent::Finish(reason) => outcome.finish = Some(*reason),
        }
    }
    outcome
}

#[test]
fn every_recorded_stream() {
    let mut files: Vec<_> = std::fs::read_dir(DIR)
        .unwrap_or_else(|err| panic!("{DIR}: {err}"))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "sse"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 10, "the README lists ten recordings");

    for path in &files {
        let file = path.file_name().unwrap().to_str().unwrap();
        let body = std::fs::read(path).unwrap();
        let whole = decode_in_chunks(200, &[], &body, body.len())
            .unwrap_or_else(|err| panic!("{file}: {err:?}"));
        for size in [1, 7] {
            let pieces = decode_in_chunks(200, &[], &body, size)
                .unwrap_or_else(|err| panic!("{file} in {size}-byte pieces: {err:?}"));
            assert_eq!(pieces, whole, "{file} in {size}-byte pieces");
        }

        let outcome = outcome(file, &whole);
        assert_eq!(outcome, expected(file), "{file}");
        if outcome.finish == Some(FinishReason::ToolCalls) {
            for (id, name, arguments) in outcome.calls.values() {
                let parsed: serde_json::Value = serde_json::from_str(arguments)
                    .unwrap_or_else(|err| panic!("{file}: {id} {name}: {err}"));
                assert!(parsed.is_object(), "{file}: {id}: {arguments}");
            }
        }
    }
}

#[test]
fn recorded_stream_cut_short() {
    // Every prefix that stops before the stop reason is complete is reported as cut, never as
    // an answer or as a malformed chunk, wherever the connection broke.
    let body = std::fs::read(Path::new(DIR).join("tool-use.sse")).unwrap();
    let stop = find(&body, b"\"stop_reason\":\"tool_use\"");
    let stop_event_end = stop + find(&body[stop..], b"\n");
    for end in 0..stop_event_end {
        assert_eq!(
            decode_in_chunks(200, &[], &body[..end], 64),
            Err(ProviderError::Other(CUT_STREAM.into())),
            "cut at byte {end}"
        );
    }
    let events = decode_in_chunks(200, &[], &body[..stop_event_end], 64).unwrap();
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Finish(FinishReason::ToolCalls))
    );
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
        .unwrap()
}
