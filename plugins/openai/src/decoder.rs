//! The Chat Completions stream: Server-Sent Events whose `data` is one JSON chunk each, ended
//! by `data: [DONE]`.

use kelp_sdk::provider::{
    Decoder, FinishReason, ProviderError, StreamEvent, ToolCallDelta, ToolCallStart, Usage,
};
use kelp_sdk::stream::SseParser;
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
    sse: SseParser,
    /// `data: [DONE]` arrived; whatever follows is not part of the response.
    done: bool,
    /// Choice 0 had a finish reason: the answer is complete.
    finished: bool,
    /// That reason, held back until the stream ends so that [`StreamEvent::Finish`] comes
    /// last, after the token counts that OpenAI sends in a chunk of their own.
    finish: Option<FinishReason>,
    saw_text: bool,
    saw_refusal: bool,
    calls: Vec<Call>,
}

/// A tool call of the response, by the vendor's index.
struct Call {
    index: u32,
    started: bool,
    /// Argument fragments that came before the call's name (no OpenAI stream does that, but
    /// a start event needs the name).
    pending: String,
}

#[derive(Deserialize)]
struct Chunk {
    choices: Option<Vec<Choice>>,
    usage: Option<WireUsage>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice {
    index: Option<u32>,
    delta: Option<Delta>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: Option<Vec<ToolCallFragment>>,
}

#[derive(Deserialize)]
struct ToolCallFragment {
    index: Option<u32>,
    id: Option<String>,
    function: Option<FunctionFragment>,
}

#[derive(Deserialize)]
struct FunctionFragment {
    name: Option<String>,
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Deserialize)]
struct PromptTokensDetails {
    cached_tokens: Option<u64>,
}

impl ChatDecoder {
    fn is_error_status(&self) -> bool {
        !(200..300).contains(&self.status)
    }

    fn decode(&mut self, data: &str) -> Result<Vec<StreamEvent>, ProviderError> {
        if self.done {
            return Ok(Vec::new());
        }
        if data.starts_with("[DONE]") {
            self.done = true;
            return Ok(self
                .finish
                .take()
                .map(StreamEvent::Finish)
                .into_iter()
                .collect());
        }
        let chunk: Chunk = serde_json::from_str(data)
            .map_err(|err| ProviderError::Other(format!("malformed stream chunk: {err}")))?;
        if let Some(error) = chunk.error.filter(|e| !e.is_null()) {
            return Err(error::from_error(None, &self.headers, &error));
        }

        let mut events = Vec::new();
        // With `n` > 1 the vendor interleaves several answers; the agent asked for one.
        for choice in chunk.choices.into_iter().flatten() {
            if choice.index.unwrap_or(0) == 0 {
                self.decode_choice(choice, &mut events);
            }
        }
        if let Some(usage) = chunk.usage {
            events.push(StreamEvent::Usage(Usage {
                input_tokens: usage.prompt_tokens.unwrap_or(0),
                output_tokens: usage.completion_tokens.unwrap_or(0),
                cache_read_tokens: usage
                    .prompt_tokens_details
                    .and_then(|d| d.cached_tokens)
                    .unwrap_or(0),
                cache_write_tokens: 0,
            }));
        }
        Ok(events)
    }

    fn decode_choice(&mut self, choice: Choice, events: &mut Vec<StreamEvent>) {
        if let Some(delta) = choice.delta {
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                self.saw_text = true;
                events.push(StreamEvent::TextDelta(text));
            }
            if let Some(text) = delta.refusal.filter(|t| !t.is_empty()) {
                self.saw_refusal = true;
                events.push(StreamEvent::RefusalDelta(text));
            }
            for (position, fragment) in delta.tool_calls.into_iter().flatten().enumerate() {
                self.decode_tool_call(position, fragment, events);
            }
        }
        if let Some(reason) = choice.finish_reason {
            self.finished = true;
            self.finish = Some(self.finish_reason(&reason));
        }
    }

    fn decode_tool_call(
        &mut self,
        position: usize,
        fragment: ToolCallFragment,
        events: &mut Vec<StreamEvent>,
    ) {
        // Servers that send every call whole in one chunk sometimes leave out `index`.
        let index = fragment
            .index
            .unwrap_or_else(|| u32::try_from(position).unwrap_or(u32::MAX));
        let (name, mut arguments) = match fragment.function {
            Some(f) => (f.name, f.arguments.unwrap_or_default()),
            None => (None, String::new()),
        };
        let call = match self.calls.iter().position(|c| c.index == index) {
            Some(i) => &mut self.calls[i],
            None => {
                self.calls.push(Call {
                    index,
                    started: false,
                    pending: String::new(),
                });
                self.calls.last_mut().expect("just pushed")
            }
        };
        if !call.started {
            let Some(name) = name.filter(|n| !n.is_empty()) else {
                call.pending.push_str(&arguments);
                return;
            };
            call.started = true;
            arguments.insert_str(0, &std::mem::take(&mut call.pending));
            events.push(StreamEvent::ToolCallStart(ToolCallStart {
                index,
                id: fragment
                    .id
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(|| format!("call_{index}")),
                name,
            }));
        }
        if !arguments.is_empty() {
            events.push(StreamEvent::ToolCallDelta(ToolCallDelta {
                index,
                arguments,
            }));
        }
    }

    fn finish_reason(&self, reason: &str) -> FinishReason {
        match reason {
            // A refusal ends with `stop` like an answer; what the model sent tells them apart.
            "stop" if self.saw_refusal && !self.saw_text && self.calls.is_empty() => {
                FinishReason::Refusal
            }
            "stop" => FinishReason::Stop,
            "length" => FinishReason::Length,
            // `function_call` is the deprecated single-function form of the same thing.
            "tool_calls" | "function_call" => FinishReason::ToolCalls,
            "content_filter" => FinishReason::ContentFilter,
            _ => FinishReason::Other,
        }
    }
}

impl Decoder for ChatDecoder {
    fn new(status: u16, headers: Vec<(String, String)>) -> Self {
        ChatDecoder {
            status,
            headers,
            error_body: Vec::new(),
            sse: SseParser::new(),
            done: false,
            finished: false,
            finish: None,
            saw_text: false,
            saw_refusal: false,
            calls: Vec::new(),
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
        for event in self.sse.finish() {
            // The server ends every event with a blank line, so one still open at the end was
            // cut off by the connection: half a chunk is not malformed, the stream is short,
            // and the check below says so unless the answer was already complete.
            if !event.data.starts_with("[DONE]")
                && serde_json::from_str::<IgnoredAny>(&event.data).is_err()
            {
                continue;
            }
            events.extend(self.decode(&event.data)?);
        }
        // The host tells a cut connection from a complete answer by this error.
        if !self.done && !self.finished {
            return Err(ProviderError::Other(CUT_STREAM.into()));
        }
        events.extend(self.finish.take().map(StreamEvent::Finish));
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
        let mut decoder = ChatDecoder::new(status, headers);
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

    fn start(index: u32, id: &str, name: &str) -> StreamEvent {
        StreamEvent::ToolCallStart(ToolCallStart {
            index,
            id: id.into(),
            name: name.into(),
        })
    }

    fn delta(index: u32, arguments: &str) -> StreamEvent {
        StreamEvent::ToolCallDelta(ToolCallDelta {
            index,
            arguments: arguments.into(),
        })
    }

    #[test]
    fn cached_tokens_are_cache_reads() {
        let events = decode(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}\n\n\
             data: {\"choices\":[],\"usage\":{\"prompt_tokens\":2006,\"completion_tokens\":300,\
             \"total_tokens\":2306,\"prompt_tokens_details\":{\"cached_tokens\":1920}}}\n\n\
             data: [DONE]\n\n",
        )
        .unwrap();
        assert_eq!(
            events,
            [
                StreamEvent::TextDelta("hi".into()),
                StreamEvent::Usage(Usage {
                    input_tokens: 2006,
                    output_tokens: 300,
                    cache_read_tokens: 1920,
                    cache_write_tokens: 0,
                }),
                StreamEvent::Finish(FinishReason::Stop),
            ]
        );
    }

    #[test]
    fn every_finish_reason() {
        for (reason, expected) in [
            ("stop", FinishReason::Stop),
            ("length", FinishReason::Length),
            ("tool_calls", FinishReason::ToolCalls),
            ("function_call", FinishReason::ToolCalls),
            ("content_filter", FinishReason::ContentFilter),
            ("something_new", FinishReason::Other),
        ] {
            let body = format!(
                "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"x\"}},\"finish_reason\":\"{reason}\"}}]}}\n\ndata: [DONE]\n\n"
            );
            assert_eq!(
                decode(&body).unwrap(),
                [
                    StreamEvent::TextDelta("x".into()),
                    StreamEvent::Finish(expected)
                ],
                "{reason}"
            );
        }
    }

    #[test]
    fn refusal_with_text_is_a_stop() {
        let events = decode(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Sure\",\"refusal\":\"but no\"}}]}\n\n\
             data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        )
        .unwrap();
        assert_eq!(
            events,
            [
                StreamEvent::TextDelta("Sure".into()),
                StreamEvent::RefusalDelta("but no".into()),
                StreamEvent::Finish(FinishReason::Stop),
            ]
        );
    }

    #[test]
    fn whole_tool_calls_in_one_chunk_and_unknown_fields() {
        // The shape of servers that emit each call complete, without `index` or `type`.
        let events = decode(
            "data: {\"new_field\":{\"x\":1},\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"tool_calls\":[\
             {\"id\":\"a\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}},\
             {\"id\":\"b\",\"function\":{\"name\":\"g\",\"arguments\":\"{\\\"x\\\":1}\"}}]},\
             \"finish_reason\":\"tool_calls\",\"extra\":true}]}\n\ndata: [DONE]\n\n",
        )
        .unwrap();
        assert_eq!(
            events,
            [
                start(0, "a", "f"),
                delta(0, "{}"),
                start(1, "b", "g"),
                delta(1, "{\"x\":1}"),
                StreamEvent::Finish(FinishReason::ToolCalls),
            ]
        );
    }

    #[test]
    fn arguments_before_the_name_wait_for_it() {
        let events = decode(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n\
             data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"f\",\"arguments\":\":1}\"}}]}}]}\n\n\
             data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        )
        .unwrap();
        assert_eq!(
            events,
            [
                start(0, "call_0", "f"),
                delta(0, "{\"a\":1}"),
                StreamEvent::Finish(FinishReason::ToolCalls),
            ]
        );
    }

    #[test]
    fn error_chunk_mid_stream() {
        let body = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n\
             data: {\"error\":{\"message\":\"The server had an error while processing your request.\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n";
        let mut decoder = ChatDecoder::new(200, Vec::new());
        assert_eq!(
            decoder.feed(&body.as_bytes()[..60]).unwrap(),
            [StreamEvent::TextDelta("Hel".into())]
        );
        assert_eq!(
            decoder.feed(&body.as_bytes()[60..]),
            Err(ProviderError::Other(
                "The server had an error while processing your request.".into()
            ))
        );
    }

    #[test]
    fn malformed_chunk() {
        for data in ["{\"choices\":[{\"index\":0,", "<html>", "{\"choices\":{}}"] {
            let err = decode(&format!("data: {data}\n\n")).unwrap_err();
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
        assert_eq!(
            decode("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n"),
            cut
        );
        // Cut inside an event: the parser's leftover is dispatched, then found unfinished.
        assert_eq!(
            decode("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}"),
            cut
        );
        // A finish reason without `[DONE]` is a complete answer (usage may be missing).
        assert_eq!(
            decode("data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}"),
            Ok(vec![StreamEvent::Finish(FinishReason::Length)])
        );
        // A cut in the usage chunk after the finish loses only the token counts.
        assert_eq!(
            decode(
                "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
                 data: {\"choices\":[],\"usage\":{\"prompt_"
            ),
            Ok(vec![StreamEvent::Finish(FinishReason::Stop)])
        );
        // So is `[DONE]` without one.
        assert_eq!(decode("data: [DONE]\n\n"), Ok(Vec::new()));
    }

    #[test]
    fn nothing_after_done_counts() {
        assert_eq!(
            decode(
                "data: [DONE]\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"late\"}}]}\n\ndata: junk\n\n"
            ),
            Ok(Vec::new())
        );
    }

    #[test]
    fn error_status_is_read_whole_in_finish() {
        let body = br#"{"error":{"message":"Rate limit reached for gpt-4o","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        for size in [1, 7, body.len()] {
            let mut decoder = ChatDecoder::new(429, vec![("retry-after".into(), "7".into())]);
            for piece in body.chunks(size) {
                assert_eq!(decoder.feed(piece), Ok(Vec::new()));
            }
            assert_eq!(decoder.finish(), Err(ProviderError::RateLimited(Some(7))));
        }
        assert_eq!(
            decode_in_chunks(401, &[], br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#, 5),
            Err(ProviderError::Auth("Incorrect API key provided".into()))
        );
    }
}
