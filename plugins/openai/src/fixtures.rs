//! Replays every recorded OpenAI stream in `tests/fixtures/openai-chat/` (see the README there)
//! through the decoder, fed in pieces of several sizes, and checks what a user would see: the
//! text, the refusal, the tool calls, the token counts and why the model stopped.

use std::collections::BTreeMap;
use std::path::Path;

use kelp_sdk::provider::{FinishReason, ProviderError, StreamEvent, Usage};

use crate::decoder::CUT_STREAM;
use crate::decoder::tests::decode_in_chunks;

const DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/openai-chat"
);

/// What a stream adds up to.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    text: String,
    refusal: String,
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

fn calls(calls: &[(u32, &str, &str, &str)], usage: Option<Usage>) -> Outcome {
    Outcome {
        calls: calls
            .iter()
            .map(|&(i, id, name, args)| (i, (id.into(), name.into(), args.into())))
            .collect(),
        usage,
        finish: Some(FinishReason::ToolCalls),
        ..Outcome::default()
    }
}

fn expected(file: &str) -> Outcome {
    use FinishReason::*;
    match file {
        "plain-text.sse" => text(
            "I'm unable to provide real-time weather updates. To get the current weather in San \
             Francisco, I recommend checking a reliable weather website or a weather app.",
            usage(14, 30),
            Stop,
        ),
        "content-logprobs.sse" => text("Foo!", usage(9, 2), Stop),
        "finish-reason-length.sse" => text("{\"", usage(79, 1), Length),
        "structured-output-json-schema.sse" => text(
            r#"{"city":"San Francisco","temperature":61,"units":"f"}"#,
            usage(79, 14),
            Stop,
        ),
        // Only choice 0 of three; the usage counts all three.
        "n3-multiple-choices.sse" => text(
            r#"{"city":"San Francisco","temperature":65,"units":"f"}"#,
            usage(79, 42),
            Stop,
        ),
        "json-object-response-format.sse" => text(
            "\n  {\n    \"location\": \"San Francisco, CA\",\n    \"weather\": {\n      \
             \"temperature\": \"18°C\",\n      \"condition\": \"Partly Cloudy\",\n      \
             \"humidity\": \"72%\",\n      \"windSpeed\": \"15 km/h\",\n      \
             \"windDirection\": \"NW\"\n    },\n    \"forecast\": [\n      {\n        \
             \"day\": \"Monday\",\n        \"high\": \"20°C\",\n        \"low\": \"14°C\",\n        \
             \"condition\": \"Sunny\"\n      },\n      {\n        \"day\": \"Tuesday\",\n        \
             \"high\": \"19°C\",\n        \"low\": \"15°C\",\n        \
             \"condition\": \"Mostly Cloudy\"\n      },\n      {\n        \
             \"day\": \"Wednesday\",\n        \"high\": \"18°C\",\n        \"low\": \"14°C\",\n        \
             \"condition\": \"Cloudy\"\n      }\n    ]\n  }\n",
            usage(19, 177),
            Stop,
        ),
        "refusal.sse" => Outcome {
            refusal: "I'm sorry, I can't assist with that request.".into(),
            usage: usage(79, 11),
            finish: Some(Refusal),
            ..Outcome::default()
        },
        "refusal-logprobs.sse" => Outcome {
            refusal: "I'm very sorry, but I can't assist with that.".into(),
            usage: usage(79, 12),
            finish: Some(Refusal),
            ..Outcome::default()
        },
        "single-tool-call.sse" => calls(
            &[(
                0,
                "call_c91SqDXlYFuETYv8mUHzz6pp",
                "GetWeatherArgs",
                r#"{"city":"Edinburgh","country":"UK","units":"c"}"#,
            )],
            usage(76, 24),
        ),
        "parallel-tool-calls.sse" => calls(
            &[
                (
                    0,
                    "call_JMW1whyEaYG438VE1OIflxA2",
                    "GetWeatherArgs",
                    r#"{"city": "Edinburgh", "country": "GB", "units": "c"}"#,
                ),
                (
                    1,
                    "call_DNYTawLBoN8fj3KN6qU9N1Ou",
                    "get_stock_price",
                    r#"{"ticker": "AAPL", "exchange": "NASDAQ"}"#,
                ),
            ],
            usage(149, 60),
        ),
        "strict-tool-call.sse" => calls(
            &[(
                0,
                "call_CTf1nWJLqSeRgDqaCG27xZ74",
                "get_weather",
                r#"{"city":"San Francisco","state":"CA"}"#,
            )],
            usage(48, 19),
        ),
        "non-strict-tool-call.sse" => calls(
            &[(
                0,
                "call_4XzlGBLtUe9dy3GVNV4jhq7h",
                "get_weather",
                r#"{"city":"New York City"}"#,
            )],
            usage(44, 16),
        ),
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
            StreamEvent::RefusalDelta(t) => outcome.refusal.push_str(t),
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
    assert_eq!(files.len(), 12, "the README lists twelve recordings");

    for path in &files {
        let file = Path::new(path).file_name().unwrap().to_str().unwrap();
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
        for (id, name, arguments) in outcome.calls.values() {
            let parsed: serde_json::Value = serde_json::from_str(arguments)
                .unwrap_or_else(|err| panic!("{file}: {id} {name}: {err}"));
            assert!(parsed.is_object(), "{file}: {id}: {arguments}");
        }
    }
}

#[test]
fn recorded_stream_cut_short() {
    // Every prefix that stops before the finish chunk is complete is reported as cut, never as
    // an answer or as a malformed chunk, wherever the connection broke.
    let body = std::fs::read(Path::new(DIR).join("single-tool-call.sse")).unwrap();
    let finish = find(&body, b"\"finish_reason\":\"tool_calls\"");
    let finish_chunk_end = finish + find(&body[finish..], b"\n");
    for end in 0..finish_chunk_end {
        assert_eq!(
            decode_in_chunks(200, &[], &body[..end], 64),
            Err(ProviderError::Other(CUT_STREAM.into())),
            "cut at byte {end}"
        );
    }
    let events = decode_in_chunks(200, &[], &body[..finish_chunk_end], 64).unwrap();
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
