//! The Messages stream: Server-Sent Events `message_start`, then per content block
//! `content_block_start`, `content_block_delta`…, `content_block_stop`, then `message_delta`
//! (stop reason, usage) and `message_stop`, with `ping`s anywhere.

use kelp_sdk::provider::{
    Decoder, FinishReason, ProviderError, StreamEvent, ToolCallDelta, ToolCallStart, Usage,
};
use kelp_sdk::stream::SseParser;
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::error::{self, ApiError};

/// An error document is a few hundred bytes; anything past this is not worth keeping to quote.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

pub(crate) const CUT_STREAM: &str = "the stream ended before the response finished";

/// Decodes one response.
pub struct MessagesDecoder {
    status: u16,
    headers: Vec<(String, String)>,
    error_body: Vec<u8>,
    sse: SseParser,
    /// Content blocks that are client tool calls, with whether any arguments came for them.
    tool_blocks: Vec<(u32, bool)>,
    tokens: Tokens,
    stopped: bool,
    /// `message_stop` arrived.
    done: bool,
}

/// Token counts as Anthropic reports them: `input` excludes the cached part.
#[derive(Default)]
struct Tokens {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write: u64,
}

impl Tokens {
    /// Every count present replaces the one before: `message_delta` counts are cumulative.
    fn update(&mut self, usage: &WireUsage) {
        let fields = [
            (&mut self.input, usage.input_tokens),
            (&mut self.output, usage.output_tokens),
            (&mut self.cache_read, usage.cache_read_input_tokens),
            (&mut self.cache_write, usage.cache_creation_input_tokens),
        ];
        for (field, value) in fields {
            if let Some(value) = value {
                *field = value;
            }
        }
    }

    fn usage(&self) -> Usage {
        Usage {
            // Kelp counts every prompt token as input, cached or not.
            input_tokens: self.input + self.cache_read + self.cache_write,
            output_tokens: self.output,
            cache_read_tokens: self.cache_read,
            cache_write_tokens: self.cache_write,
        }
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event {
    MessageStart {
        message: StartedMessage,
    },
    ContentBlockStart {
        index: u32,
        content_block: Block,
    },
    ContentBlockDelta {
        index: u32,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: MessageDelta,
        usage: Option<WireUsage>,
    },
    MessageStop,
    Error {
        error: ApiError,
    },
    // `ping`, and whatever Anthropic adds later.
    #[serde(other)]
    Ignored,
}

#[derive(Deserialize)]
struct StartedMessage {
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
    },
    // Thinking, server tools and their results, compaction, … are not for the agent.
    #[serde(other)]
    Ignored,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Ignored,
}

#[derive(Deserialize)]
struct MessageDelta {
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

impl MessagesDecoder {
    fn is_error_status(&self) -> bool {
        !(200..300).contains(&self.status)
    }

    fn decode(&mut self, data: &str) -> Result<Vec<StreamEvent>, ProviderError> {
        let event: Event = serde_json::from_str(data)
            .map_err(|err| ProviderError::Other(format!("malformed stream chunk: {err}")))?;
        let mut events = Vec::new();
        match event {
            Event::MessageStart { message } => {
                if let Some(usage) = message.usage {
                    self.tokens.update(&usage);
                }
            }
            Event::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                Block::Text { text } if !text.is_empty() => {
                    events.push(StreamEvent::TextDelta(text));
                }
                Block::ToolUse { id, name } => {
                    self.tool_blocks.push((index, false));
                    events.push(StreamEvent::ToolCallStart(ToolCallStart {
                        index,
                        id,
                        name,
                    }));
                }
                Block::Text { .. } | Block::Ignored => {}
            },
            Event::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } if !text.is_empty() => {
                    events.push(StreamEvent::TextDelta(text));
                }
                BlockDelta::InputJsonDelta { partial_json } if !partial_json.is_empty() => {
                    // Server tools (web search, …) stream their input too; Anthropic runs
                    // those itself, so only client tool calls go to the agent.
                    if let Some((_, seen)) = self.tool_blocks.iter_mut().find(|(i, _)| *i == index)
                    {
                        *seen = true;
                        events.push(StreamEvent::ToolCallDelta(ToolCallDelta {
                            index,
                            arguments: partial_json,
                        }));
                    }
                }
                _ => {}
            },
            Event::ContentBlockStop { index } => {
                // A call of a tool without parameters may stream no input at all; its
                // arguments are still an object.
                if self.tool_blocks.contains(&(index, false)) {
                    events.push(StreamEvent::ToolCallDelta(ToolCallDelta {
                        index,
                        arguments: "{}".into(),
                    }));
                }
            }
            Event::MessageDelta { delta, usage } => {
                if let Some(usage) = usage {
                    self.tokens.update(&usage);
                    events.push(StreamEvent::Usage(self.tokens.usage()));
                }
                if let Some(reason) = delta.stop_reason {
                    self.stopped = true;
                    events.push(StreamEvent::Finish(finish_reason(&reason)));
                }
            }
            Event::MessageStop => self.done = true,
            Event::Error { error } => {
                return Err(error::from_api_error(error, None).unwrap_or_else(ProviderError::Other));
            }
            Event::Ignored => {}
        }
        Ok(events)
    }
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::Refusal,
        // `pause_turn`: a server tool loop paused; the agent cannot resume it as a tool call.
        _ => FinishReason::Other,
    }
}

impl Decoder for MessagesDecoder {
    fn new(status: u16, headers: Vec<(String, String)>) -> Self {
        MessagesDecoder {
            status,
            headers,
            error_body: Vec::new(),
            sse: SseParser::new(),
            tool_blocks: Vec::new(),
            tokens: Tokens::default(),
            stopped: false,
            done: false,
        }
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<StreamEvent>, ProviderError> {
        // An error status carries an error document, not a stream; it is read whole in
        // `finish`.
        if self.is_error_status() {
            let room = MAX_ERROR_BODY_BYTES.saturating_sub(self.error_body.len());
            self.error_body
                .extend_from_slice(&chunk[..chunk.len().min(room)]);
            return Ok(Vec::new());
        }
        let mut events = Vec::new();
        for event in self.sse.feed(chunk) {
            events.extend(self.decode(&event.data)?);
        }
        Ok(events)
    }

    fn finish(&mut self) -> Result<Vec<StreamEvent>, ProviderError> {
        if self.is_error_status() {
            return Err(error::from_response(
                self.status,
                &self.headers,
                &self.error_body,
            ));
        }
        let mut events = Vec::new();
        // Anthropic's own recordings may end without the blank line after `message_stop`, so
        // the last event is taken as complete when its data is. Data that is not JSON there
        // was cut off by the connection: the check below reports the stream as short.
        for event in self.sse.finish() {
            if serde_json::from_str::<IgnoredAny>(&event.data).is_ok() {
                events.extend(self.decode(&event.data)?);
            }
        }
        // The host tells a cut connection from a complete answer by this error.
        if !self.done && !self.stopped {
            return Err(ProviderError::Other(CUT_STREAM.into()));
        }
        Ok(events)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Feeds `body` to a decoder for `status` in pieces of `chunk_size` bytes, then finishes.
    pub(crate) fn decode_in_chunks(
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
        chunk_size: usize,
    ) -> Result<Vec<StreamEvent>, ProviderError> {
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut decoder = MessagesDecoder::new(status, headers);
        let mut events = Vec::new();
        for piece in body.chunks(chunk_size.max(1)) {
            events.extend(decoder.feed(piece)?);
        }
        events.extend(decoder.finish()?);
        Ok(events)
    }

    fn decode(body: &str) -> Result<Vec<StreamEvent>, ProviderError> {
        decode_in_chunks(200, &[], body.as_bytes(), body.len())
    }

    /// An SSE event the way Anthropic writes it: the name, then the data with the same type.
    fn event(data: &str) -> String {
        let kind: serde_json::Value = serde_json::from_str(data).unwrap();
        format!(
            "event: {}\ndata: {data}\n\n",
            kind["type"].as_str().unwrap()
        )
    }

    const START: &str = r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"output_tokens":1}}}"#;

    fn stop(reason: &str) -> String {
        event(&format!(
            r#"{{"type":"message_delta","delta":{{"stop_reason":"{reason}","stop_sequence":null}},"usage":{{"output_tokens":9}}}}"#
        )) + &event(r#"{"type":"message_stop"}"#)
    }

    #[test]
    fn cache_tokens_count_as_input() {
        let body = event(START) + &stop("end_turn");
        assert_eq!(
            decode(&body).unwrap(),
            [
                StreamEvent::Usage(Usage {
                    input_tokens: 2112,
                    output_tokens: 9,
                    cache_read_tokens: 2000,
                    cache_write_tokens: 100,
                }),
                StreamEvent::Finish(FinishReason::Stop),
            ]
        );
    }

    #[test]
    fn every_stop_reason() {
        for (reason, expected) in [
            ("end_turn", FinishReason::Stop),
            ("stop_sequence", FinishReason::Stop),
            ("max_tokens", FinishReason::Length),
            ("tool_use", FinishReason::ToolCalls),
            ("refusal", FinishReason::Refusal),
            ("pause_turn", FinishReason::Other),
            ("model_context_window_exceeded", FinishReason::Length),
            ("something_new", FinishReason::Other),
        ] {
            let events = decode(&(event(START) + &stop(reason))).unwrap();
            assert_eq!(
                events.last(),
                Some(&StreamEvent::Finish(expected)),
                "{reason}"
            );
        }
    }

    #[test]
    fn tool_without_input_gets_an_empty_object() {
        let body = event(START)
            + &event(
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"now","input":{}}}"#,
            )
            + &event(
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":""}}"#,
            )
            + &event(r#"{"type":"content_block_stop","index":0}"#)
            + &stop("tool_use");
        let events = decode(&body).unwrap();
        assert_eq!(
            events[..2],
            [
                StreamEvent::ToolCallStart(ToolCallStart {
                    index: 0,
                    id: "toolu_1".into(),
                    name: "now".into(),
                }),
                StreamEvent::ToolCallDelta(ToolCallDelta {
                    index: 0,
                    arguments: "{}".into(),
                }),
            ]
        );
    }

    #[test]
    fn initial_block_text_and_unknown_events() {
        let body = event(START)
            + &event(
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":"Hel"}}"#,
            )
            + &event(
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"citations_delta","citation":{}}}"#,
            )
            + &event(
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"lo"}}"#,
            )
            + &event(r#"{"type":"brand_new_event","whatever":[1,2]}"#)
            + ": a comment\n\n"
            + &event(r#"{"type": "ping"}"#)
            + &stop("end_turn");
        let events = decode(&body).unwrap();
        assert_eq!(
            events[..2],
            [
                StreamEvent::TextDelta("Hel".into()),
                StreamEvent::TextDelta("lo".into()),
            ]
        );
        assert_eq!(events.len(), 4);
    }

    #[test]
    fn error_events_mid_stream() {
        for (error, expected) in [
            (
                r#"{"type":"overloaded_error","message":"Overloaded"}"#,
                ProviderError::Overloaded,
            ),
            (
                r#"{"type":"rate_limit_error","message":"slow"}"#,
                ProviderError::RateLimited(None),
            ),
            (
                r#"{"type":"authentication_error","message":"bad key"}"#,
                ProviderError::Auth("bad key".into()),
            ),
            (
                r#"{"type":"permission_error","message":"no"}"#,
                ProviderError::Auth("no".into()),
            ),
            (
                r#"{"type":"invalid_request_error","message":"prompt is too long: 201000 tokens > 200000 maximum"}"#,
                ProviderError::ContextLength(
                    "prompt is too long: 201000 tokens > 200000 maximum".into(),
                ),
            ),
            (
                r#"{"type":"invalid_request_error","message":"bad"}"#,
                ProviderError::InvalidRequest("bad".into()),
            ),
            (
                r#"{"type":"api_error","message":"Internal server error"}"#,
                ProviderError::Other("Internal server error".into()),
            ),
            (
                r#"{"type":"novel_error","message":"huh"}"#,
                ProviderError::Other("huh".into()),
            ),
        ] {
            let body = event(START)
                + &event(
                    r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
                )
                + &event(&format!(r#"{{"type":"error","error":{error}}}"#));
            let mut decoder = MessagesDecoder::new(200, Vec::new());
            assert_eq!(decoder.feed(body.as_bytes()), Err(expected), "{error}");
        }
    }

    #[test]
    fn malformed_chunk() {
        for data in [
            "{\"type\":\"message_start\",",
            "<html>",
            r#"{"type":"content_block_delta"}"#,
        ] {
            let body = format!("event: x\ndata: {data}\n\n");
            let err = decode(&body).unwrap_err();
            let ProviderError::Other(message) = &err else {
                panic!("expected Other, got {err:?}");
            };
            assert!(
                message.starts_with("malformed stream chunk: "),
                "{data}: {message}"
            );
        }
    }

    #[test]
    fn cut_streams() {
        let cut = Err(ProviderError::Other(CUT_STREAM.into()));
        assert_eq!(decode(""), cut);
        assert_eq!(decode(&event(START)), cut);
        let text = event(START)
            + &event(
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            )
            + &event(
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            );
        assert_eq!(decode(&text), cut);
        // Cut inside the data line of the stop reason.
        let partial = text.clone()
            + "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_re";
        assert_eq!(decode(&partial), cut);
        // A stop reason without `message_stop` is a complete answer.
        let stopped = text
            + &event(
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":3}}"#,
            );
        assert_eq!(
            decode(&stopped).unwrap().last(),
            Some(&StreamEvent::Finish(FinishReason::Stop))
        );
    }

    #[test]
    fn error_status_is_read_whole_in_finish() {
        let body = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}"#;
        for size in [1, 7, body.len()] {
            let mut decoder = MessagesDecoder::new(529, Vec::new());
            for piece in body.chunks(size) {
                assert_eq!(decoder.feed(piece), Ok(Vec::new()));
            }
            assert_eq!(decoder.finish(), Err(ProviderError::Overloaded));
        }
        assert_eq!(
            decode_in_chunks(
                429,
                &[("retry-after", "30")],
                br#"{"type":"error","error":{"type":"rate_limit_error","message":"rate limited"}}"#,
                3
            ),
            Err(ProviderError::RateLimited(Some(30)))
        );
    }
}
