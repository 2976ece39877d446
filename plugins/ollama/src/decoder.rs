//! The `/api/chat` stream: one JSON object per line, the last with `"done": true`, the token
//! counts and why the model stopped.

use kelp_sdk::provider::{
    Decoder, FinishReason, ProviderError, StreamEvent, ToolCallDelta, ToolCallStart, Usage,
};
use kelp_sdk::stream::NdjsonParser;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use crate::error;

/// An error document is a few hundred bytes; anything past this is not worth keeping to quote.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

pub(crate) const CUT_STREAM: &str = "the stream ended before the response finished";

/// Decodes one response.
pub struct ChatDecoder {
    status: u16,
    headers: Vec<(String, String)>,
    error_body: Vec<u8>,
    lines: NdjsonParser,
    /// Tool calls so far; Ollama sends each whole and unnumbered, so this numbers them.
    calls: u32,
    /// The `done` line arrived.
    done: bool,
}

#[derive(Deserialize)]
struct Line {
    message: Option<WireMessage>,
    #[serde(default)]
    done: bool,
    done_reason: Option<String>,
    prompt_eval_count: Option<u64>,
    eval_count: Option<u64>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct WireMessage {
    content: Option<String>,
    // `thinking` (reasoning models) is not part of the answer and is left out.
    tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Deserialize)]
struct WireToolCall {
    id: Option<String>,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

impl ChatDecoder {
    fn is_error_status(&self) -> bool {
        !(200..300).contains(&self.status)
    }

    fn decode(&mut self, line: &str) -> Result<Vec<StreamEvent>, ProviderError> {
        let line: Line = serde_json::from_str(line)
            .map_err(|err| ProviderError::Other(format!("malformed stream chunk: {err}")))?;
        if let Some(value) = line.error {
            // Once streaming has begun the status is 200 and the text is all there is.
            let message = error::message(&value);
            return Err(if message.contains("not found") {
                ProviderError::InvalidRequest(message)
            } else {
                ProviderError::Other(message)
            });
        }

        let mut events = Vec::new();
        if let Some(message) = line.message {
            if let Some(text) = message.content.filter(|t| !t.is_empty()) {
                events.push(StreamEvent::TextDelta(text));
            }
            for call in message.tool_calls.into_iter().flatten() {
                let index = self.calls;
                self.calls += 1;
                events.push(StreamEvent::ToolCallStart(ToolCallStart {
                    index,
                    id: call
                        .id
                        .filter(|id| !id.is_empty())
                        .unwrap_or_else(|| format!("call_{index}")),
                    name: call.function.name,
                }));
                let arguments = match call.function.arguments {
                    Value::Null => "{}".to_owned(),
                    // Some models' templates yield the arguments as text already.
                    Value::String(text) => text,
                    other => other.to_string(),
                };
                events.push(StreamEvent::ToolCallDelta(ToolCallDelta {
                    index,
                    arguments,
                }));
            }
        }
        if line.done {
            self.done = true;
            events.push(StreamEvent::Usage(Usage {
                input_tokens: line.prompt_eval_count.unwrap_or(0),
                output_tokens: line.eval_count.unwrap_or(0),
                cache_read_tokens: 0,
                cache_write_tokens: 0,
            }));
            events.push(StreamEvent::Finish(self.finish_reason(line.done_reason)));
        }
        Ok(events)
    }

    fn finish_reason(&self, reason: Option<String>) -> FinishReason {
        match reason.as_deref() {
            // Ollama says `stop` after tool calls too; the agent needs to know to run them.
            Some("stop") | None if self.calls > 0 => FinishReason::ToolCalls,
            // Servers older than `done_reason` only ever stopped normally here.
            Some("stop") | None => FinishReason::Stop,
            Some("length") => FinishReason::Length,
            Some(_) => FinishReason::Other,
        }
    }
}

impl Decoder for ChatDecoder {
    fn new(status: u16, headers: Vec<(String, String)>) -> Self {
        ChatDecoder {
            status,
            headers,
            error_body: Vec::new(),
            lines: NdjsonParser::new(),
            calls: 0,
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
        for line in self.lines.feed(chunk) {
            events.extend(self.decode(&line)?);
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
        for line in self.lines.finish() {
            // Ollama ends every line with a newline, so a last line without one that is not
            // JSON was cut off by the connection: the check below reports the stream as short.
            if serde_json::from_str::<IgnoredAny>(&line).is_ok() {
                events.extend(self.decode(&line)?);
            }
        }
        // The host tells a cut connection from a complete answer by this error.
        if !self.done {
            return Err(ProviderError::Other(CUT_STREAM.into()));
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` to a decoder for `status` in pieces of `chunk_size` bytes, then finishes.
    fn decode_in_chunks(
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
        chunk_size: usize,
    ) -> Result<Vec<StreamEvent>, ProviderError> {
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut decoder = ChatDecoder::new(status, headers);
        let mut events = Vec::new();
        for piece in body.chunks(chunk_size.max(1)) {
            events.extend(decoder.feed(piece)?);
        }
        events.extend(decoder.finish()?);
        Ok(events)
    }

    /// Decodes `body` whole, in 7-byte and in 1-byte pieces, checks that all three agree and
    /// returns the events.
    fn decode(body: &str) -> Result<Vec<StreamEvent>, ProviderError> {
        let whole = decode_in_chunks(200, &[], body.as_bytes(), body.len());
        for size in [1, 7] {
            assert_eq!(
                decode_in_chunks(200, &[], body.as_bytes(), size),
                whole,
                "{size}-byte pieces"
            );
        }
        whole
    }

    fn usage(input_tokens: u64, output_tokens: u64) -> StreamEvent {
        StreamEvent::Usage(Usage {
            input_tokens,
            output_tokens,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
        })
    }

    fn text(t: &str) -> StreamEvent {
        StreamEvent::TextDelta(t.into())
    }

    // Lines as `ollama serve` writes them for `POST /api/chat` with `"stream": true`.
    const TEXT_STREAM: &str = concat!(
        r#"{"model":"llama3.2","created_at":"2025-06-01T10:00:00.000000Z","message":{"role":"assistant","content":"The"},"done":false}"#,
        "\n",
        r#"{"model":"llama3.2","created_at":"2025-06-01T10:00:00.050000Z","message":{"role":"assistant","content":" sky is"},"done":false}"#,
        "\n",
        r#"{"model":"llama3.2","created_at":"2025-06-01T10:00:00.100000Z","message":{"role":"assistant","content":" blue — usually."},"done":false}"#,
        "\n",
        r#"{"model":"llama3.2","created_at":"2025-06-01T10:00:00.150000Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","total_duration":4883583458,"load_duration":1334875,"prompt_eval_count":26,"prompt_eval_duration":342546000,"eval_count":282,"eval_duration":4535599000}"#,
        "\n",
    );

    #[test]
    fn text_stream() {
        assert_eq!(
            decode(TEXT_STREAM).unwrap(),
            [
                text("The"),
                text(" sky is"),
                text(" blue — usually."),
                usage(26, 282),
                StreamEvent::Finish(FinishReason::Stop),
            ]
        );
    }

    #[test]
    fn tool_calls_arrive_whole() {
        let body = concat!(
            r#"{"model":"qwen3","created_at":"2025-06-01T10:00:00Z","message":{"role":"assistant","content":"","thinking":"The user wants weather.","tool_calls":[{"function":{"name":"get_weather","arguments":{"city":"Toronto","units":"c"}}}]},"done":false}"#,
            "\n",
            r#"{"model":"qwen3","created_at":"2025-06-01T10:00:01Z","message":{"role":"assistant","content":"","tool_calls":[{"id":"call_abc","function":{"index":1,"name":"get_time","arguments":{}}}]},"done":false}"#,
            "\n",
            r#"{"model":"qwen3","created_at":"2025-06-01T10:00:02Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":180,"eval_count":31}"#,
            "\n",
        );
        let events = decode(body).unwrap();
        assert_eq!(
            events,
            [
                StreamEvent::ToolCallStart(ToolCallStart {
                    index: 0,
                    id: "call_0".into(),
                    name: "get_weather".into(),
                }),
                StreamEvent::ToolCallDelta(ToolCallDelta {
                    index: 0,
                    arguments: r#"{"city":"Toronto","units":"c"}"#.into(),
                }),
                StreamEvent::ToolCallStart(ToolCallStart {
                    index: 1,
                    id: "call_abc".into(),
                    name: "get_time".into(),
                }),
                StreamEvent::ToolCallDelta(ToolCallDelta {
                    index: 1,
                    arguments: "{}".into(),
                }),
                usage(180, 31),
                StreamEvent::Finish(FinishReason::ToolCalls),
            ]
        );
    }

    #[test]
    fn done_reasons() {
        for (reason, expected) in [
            (r#","done_reason":"stop""#, FinishReason::Stop),
            (r#","done_reason":"length""#, FinishReason::Length),
            (r#","done_reason":"unload""#, FinishReason::Other),
            ("", FinishReason::Stop),
        ] {
            let body = format!(
                "{{\"model\":\"llama3.2\",\"message\":{{\"role\":\"assistant\",\"content\":\"x\"}},\"done\":true{reason},\"eval_count\":1}}\n"
            );
            assert_eq!(
                decode(&body).unwrap(),
                [text("x"), usage(0, 1), StreamEvent::Finish(expected)],
                "{reason}"
            );
        }
    }

    #[test]
    fn last_line_without_newline() {
        let body = TEXT_STREAM.trim_end();
        assert_eq!(decode(body).unwrap().len(), 5);
    }

    #[test]
    fn error_statuses() {
        let none = &[];
        for (status, body, expected) in [
            (
                404,
                r#"{"error":"model \"llama9\" not found, try pulling it first"}"#,
                ProviderError::InvalidRequest(
                    "model \"llama9\" not found, try pulling it first".into(),
                ),
            ),
            (
                400,
                r#"{"error":"registry.ollama.ai/library/gemma:2b does not support tools"}"#,
                ProviderError::InvalidRequest(
                    "registry.ollama.ai/library/gemma:2b does not support tools".into(),
                ),
            ),
            (
                401,
                r#"{"error":"unauthorized"}"#,
                ProviderError::Auth("unauthorized".into()),
            ),
            (403, "Forbidden\n", ProviderError::Auth("Forbidden".into())),
            (
                429,
                r#"{"error":"too many requests"}"#,
                ProviderError::RateLimited(None),
            ),
            (
                500,
                r#"{"error":"llama runner process has terminated: signal: killed"}"#,
                ProviderError::Other(
                    "HTTP 500: llama runner process has terminated: signal: killed".into(),
                ),
            ),
            (
                503,
                r#"{"error":"server busy, please try again.  maximum pending requests exceeded"}"#,
                ProviderError::Overloaded,
            ),
        ] {
            for size in [1, 7, body.len()] {
                assert_eq!(
                    decode_in_chunks(status, none, body.as_bytes(), size),
                    Err(expected.clone()),
                    "{status} in {size}-byte pieces"
                );
            }
        }
        assert_eq!(
            decode_in_chunks(429, &[("Retry-After", "5")], b"{\"error\":\"busy\"}", 4),
            Err(ProviderError::RateLimited(Some(5)))
        );
    }

    #[test]
    fn error_line_mid_stream() {
        let body = concat!(
            r#"{"model":"llama3.2","created_at":"2025-06-01T10:00:00Z","message":{"role":"assistant","content":"Once"},"done":false}"#,
            "\n",
            r#"{"error":"an error was encountered while running the model: unexpected EOF"}"#,
            "\n",
        );
        let mut decoder = ChatDecoder::new(200, Vec::new());
        let split = body.find('\n').unwrap() + 1;
        assert_eq!(
            decoder.feed(&body.as_bytes()[..split]),
            Ok(vec![text("Once")])
        );
        assert_eq!(
            decoder.feed(&body.as_bytes()[split..]),
            Err(ProviderError::Other(
                "an error was encountered while running the model: unexpected EOF".into()
            ))
        );
        assert_eq!(
            decode("{\"error\":\"model 'nope' not found\"}\n"),
            Err(ProviderError::InvalidRequest(
                "model 'nope' not found".into()
            ))
        );
    }

    #[test]
    fn malformed_line() {
        for line in [
            "{\"model\":",
            "<html>",
            r#"{"message":{"tool_calls":[{"function":{}}]}}"#,
        ] {
            let err = decode(&format!("{line}\n")).unwrap_err();
            let ProviderError::Other(message) = &err else {
                panic!("expected Other, got {err:?}");
            };
            assert!(
                message.starts_with("malformed stream chunk: "),
                "{line}: {message}"
            );
        }
    }

    #[test]
    fn cut_streams() {
        let cut = Err(ProviderError::Other(CUT_STREAM.into()));
        let done_line = TEXT_STREAM.rfind("{\"model\"").unwrap();
        let done_end = TEXT_STREAM.len() - 1;
        for end in 0..done_end {
            if !TEXT_STREAM.is_char_boundary(end) {
                continue;
            }
            assert_eq!(decode(&TEXT_STREAM[..end]), cut, "cut at byte {end}");
        }
        assert!(done_line < done_end);
        assert_eq!(decode(&TEXT_STREAM[..done_end]).unwrap().len(), 5);
    }
}
