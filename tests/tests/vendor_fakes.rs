//! The fake LLM vendors themselves: each reply comes out in the vendor's wire format, read
//! with a plain HTTP client and a minimal SSE / NDJSON split.

use std::time::Duration;

use futures::StreamExt;
use kelp_tests::vendor::{FakeVendor, Flavor, Reply};
use reqwest::StatusCode;
use serde_json::{Value, json};

const FLAVORS: [Flavor; 3] = [Flavor::OpenAi, Flavor::Anthropic, Flavor::Ollama];

/// A chat request as each vendor's client sends it.
fn chat_body(flavor: Flavor, stream: bool) -> Value {
    let mut body = json!({
        "model": "test-model",
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "stream": stream,
    });
    match flavor {
        Flavor::OpenAi => body["stream_options"] = json!({"include_usage": true}),
        Flavor::Anthropic => body["max_tokens"] = json!(1024),
        Flavor::Ollama => {}
    }
    body
}

async fn chat(vendor: &FakeVendor, body: &Value) -> reqwest::Response {
    let request = reqwest::Client::new().post(vendor.chat_url()).json(body);
    let request = match vendor.flavor() {
        Flavor::OpenAi => request.bearer_auth("sk-test"),
        Flavor::Anthropic => request
            .header("x-api-key", "sk-ant-test")
            .header("anthropic-version", "2023-06-01"),
        Flavor::Ollama => request,
    };
    request.send().await.expect("the fake answers")
}

/// Sends a streamed chat request and returns the whole body, checking status and type.
async fn stream_text(vendor: &FakeVendor) -> String {
    let response = chat(vendor, &chat_body(vendor.flavor(), true)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    let expected = match vendor.flavor() {
        Flavor::OpenAi | Flavor::Anthropic => "text/event-stream",
        Flavor::Ollama => "application/x-ndjson",
    };
    assert!(content_type.starts_with(expected), "{content_type}");
    response.text().await.expect("a complete body")
}

/// One server-sent event.
#[derive(Debug)]
struct Event {
    name: Option<String>,
    data: String,
}

/// Splits an SSE body into events; every event must end with a blank line.
fn sse(body: &str) -> Vec<Event> {
    assert!(body.ends_with("\n\n"), "unterminated last event: {body:?}");
    body.split_terminator("\n\n")
        .map(|block| {
            let mut event = Event {
                name: None,
                data: String::new(),
            };
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event.name = Some(name.to_owned());
                } else if let Some(data) = line.strip_prefix("data: ") {
                    event.data = data.to_owned();
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            event
        })
        .collect()
}

/// Splits an NDJSON body into lines; every line must end with `\n`.
fn ndjson(body: &str) -> Vec<&str> {
    assert!(body.ends_with('\n'), "unterminated last line: {body:?}");
    body.split_terminator('\n').collect()
}

/// The event payloads of a stream, in order (OpenAI's `[DONE]` included as is).
fn payloads(flavor: Flavor, body: &str) -> Vec<String> {
    match flavor {
        Flavor::OpenAi | Flavor::Anthropic => sse(body).into_iter().map(|e| e.data).collect(),
        Flavor::Ollama => ndjson(body).into_iter().map(str::to_owned).collect(),
    }
}

fn parse(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json:?}"))
}

#[tokio::test]
async fn openai_streams_text_as_chunks_then_usage_then_done() {
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    vendor.push(Reply::text("Hello there, how are you today?"));
    let events = sse(&stream_text(&vendor).await);

    assert!(events.iter().all(|e| e.name.is_none()));
    let (done, chunks) = events.split_last().unwrap();
    assert_eq!(done.data, "[DONE]");
    let chunks: Vec<Value> = chunks.iter().map(|e| parse(&e.data)).collect();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], chunks[0]["id"]);
        assert_eq!(chunk["created"], chunks[0]["created"]);
        assert_eq!(chunk["model"], "test-model");
    }
    assert!(chunks[0]["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": "", "refusal": null})
    );
    let [.., finish, usage] = &chunks[..] else {
        panic!("too few chunks")
    };
    let deltas = &chunks[1..chunks.len() - 2];
    assert!(deltas.len() >= 3, "text in several deltas");
    let text: String = deltas
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Hello there, how are you today?");
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(usage["choices"], json!([]));
    let usage = &usage["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        )
    );

    // Without stream_options.include_usage there is no usage chunk.
    let mut body = chat_body(Flavor::OpenAi, true);
    body.as_object_mut().unwrap().remove("stream_options");
    let events = sse(&chat(&vendor, &body).await.text().await.unwrap());
    let last_chunk = parse(&events[events.len() - 2].data);
    assert_eq!(last_chunk["choices"][0]["finish_reason"], "stop");
    assert!(events.iter().all(|e| !e.data.contains("\"usage\"")));
}

#[tokio::test]
async fn openai_streams_parallel_tool_calls_as_indexed_fragments() {
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    vendor.push(Reply::tool_calls([
        ("get_weather", r#"{"city": "Paris", "unit": "c"}"#),
        ("get_time", r#"{"zone":"Europe/Paris"}"#),
    ]));
    let events = sse(&stream_text(&vendor).await);
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| parse(&e.data))
        .collect();
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": null, "refusal": null})
    );

    let mut calls: Vec<(String, String, String, usize)> = Vec::new();
    for chunk in &chunks[1..] {
        let Some(fragments) = chunk["choices"][0]["delta"]["tool_calls"].as_array() else {
            continue;
        };
        assert_eq!(fragments.len(), 1);
        let fragment = &fragments[0];
        let index = fragment["index"].as_u64().unwrap() as usize;
        if let Some(id) = fragment["id"].as_str() {
            assert_eq!(index, calls.len(), "a new call takes the next index");
            assert!(id.starts_with("call_"));
            assert_eq!(fragment["type"], "function");
            assert_eq!(fragment["function"]["arguments"], "");
            let name = fragment["function"]["name"].as_str().unwrap();
            calls.push((id.to_owned(), name.to_owned(), String::new(), 0));
        } else {
            assert_eq!(
                index + 1,
                calls.len(),
                "fragments follow their call's start"
            );
            let keys: Vec<&String> = fragment.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["function", "index"]);
            assert_eq!(fragment["function"].as_object().unwrap().len(), 1);
            calls[index].2 += fragment["function"]["arguments"].as_str().unwrap();
            calls[index].3 += 1;
        }
    }
    assert_eq!(calls.len(), 2);
    assert_ne!(calls[0].0, calls[1].0);
    assert_eq!(calls[0].1, "get_weather");
    assert_eq!(calls[0].2, r#"{"city": "Paris", "unit": "c"}"#);
    assert_eq!(calls[1].1, "get_time");
    assert_eq!(calls[1].2, r#"{"zone":"Europe/Paris"}"#);
    assert!(
        calls.iter().all(|c| c.3 >= 2),
        "arguments in several fragments"
    );

    let [.., finish, usage] = &chunks[..] else {
        panic!("too few chunks")
    };
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn anthropic_streams_text_as_a_block_of_deltas() {
    let vendor = FakeVendor::start(Flavor::Anthropic).await;
    vendor.push(Reply::text("Hello there, how are you today?"));
    let events = sse(&stream_text(&vendor).await);

    let names: Vec<&str> = events.iter().map(|e| e.name.as_deref().unwrap()).collect();
    let deltas = names.len() - 6;
    assert!(deltas >= 3, "text in several deltas: {names:?}");
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", deltas));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    let data: Vec<Value> = events.iter().map(|e| parse(&e.data)).collect();
    for (event, data) in events.iter().zip(&data) {
        assert_eq!(data["type"], event.name.as_deref().unwrap());
    }
    let message = &data[0]["message"];
    assert!(message["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(message["model"], "test-model");
    assert_eq!(message["content"], json!([]));
    assert!(message["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        data[1]["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = data[3..3 + deltas]
        .iter()
        .map(|d| {
            assert_eq!(d["index"], 0);
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap()
        })
        .collect();
    assert_eq!(text, "Hello there, how are you today?");
    let message_delta = &data[data.len() - 2];
    assert_eq!(message_delta["delta"]["stop_reason"], "end_turn");
    assert!(message_delta["usage"]["output_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn anthropic_streams_parallel_tool_use_blocks_after_text() {
    let vendor = FakeVendor::start(Flavor::Anthropic).await;
    vendor.push(Reply::ToolCalls {
        text: Some("Let me check both.".into()),
        calls: vec![
            ("get_weather".into(), r#"{"city": "Paris"}"#.into()),
            ("get_time".into(), r#"{"zone":"Europe/Paris"}"#.into()),
        ],
    });
    let events = sse(&stream_text(&vendor).await);
    let data: Vec<Value> = events.iter().map(|e| parse(&e.data)).collect();
    for (event, data) in events.iter().zip(&data) {
        assert_eq!(data["type"], event.name.as_deref().unwrap());
    }
    assert_eq!(data[0]["type"], "message_start");
    assert_eq!(data[data.len() - 1]["type"], "message_stop");
    let message_delta = &data[data.len() - 2];
    assert_eq!(message_delta["type"], "message_delta");
    assert_eq!(message_delta["delta"]["stop_reason"], "tool_use");

    // Blocks: each opens, gets its deltas and closes before the next opens.
    let mut blocks: Vec<(Value, String, Vec<String>)> = Vec::new();
    let mut open: Option<usize> = None;
    for d in &data[1..data.len() - 2] {
        match d["type"].as_str().unwrap() {
            "ping" => {}
            "content_block_start" => {
                assert_eq!(open, None);
                assert_eq!(d["index"], blocks.len());
                open = Some(blocks.len());
                blocks.push((d["content_block"].clone(), String::new(), Vec::new()));
            }
            "content_block_delta" => {
                let index = open.expect("a delta inside a block");
                assert_eq!(d["index"], index);
                let block = &mut blocks[index];
                match d["delta"]["type"].as_str().unwrap() {
                    "text_delta" => block.1 += d["delta"]["text"].as_str().unwrap(),
                    "input_json_delta" => {
                        let partial = d["delta"]["partial_json"].as_str().unwrap();
                        block.2.push(partial.to_owned());
                    }
                    other => panic!("unexpected delta {other}"),
                }
            }
            "content_block_stop" => {
                assert_eq!(d["index"], open.take().expect("an open block"));
            }
            other => panic!("unexpected event {other}"),
        }
    }
    assert_eq!(open, None);
    assert_eq!(blocks.len(), 3);
    assert_eq!(blocks[0].0, json!({"type": "text", "text": ""}));
    assert_eq!(blocks[0].1, "Let me check both.");
    for (block, (name, input)) in blocks[1..].iter().zip([
        ("get_weather", json!({"city": "Paris"})),
        ("get_time", json!({"zone": "Europe/Paris"})),
    ]) {
        assert_eq!(block.0["type"], "tool_use");
        assert!(block.0["id"].as_str().unwrap().starts_with("toolu_"));
        assert_eq!(block.0["name"], name);
        assert_eq!(block.0["input"], json!({}));
        assert_eq!(block.2[0], "", "the first input_json_delta is empty");
        assert!(block.2.len() >= 3, "input in several fragments");
        assert_eq!(parse(&block.2.concat()), input);
    }
    assert_ne!(blocks[1].0["id"], blocks[2].0["id"]);
}

#[tokio::test]
async fn ollama_streams_text_lines_then_a_done_line_with_counts() {
    let vendor = FakeVendor::start(Flavor::Ollama).await;
    vendor.push(Reply::text("Hello there, how are you today?"));
    let body = stream_text(&vendor).await;
    let lines: Vec<Value> = ndjson(&body).into_iter().map(parse).collect();
    let (done, deltas) = lines.split_last().unwrap();
    assert!(deltas.len() >= 3, "text in several lines");
    for line in &lines {
        assert_eq!(line["model"], "test-model");
        let created = line["created_at"].as_str().unwrap();
        assert!(
            created.starts_with("20") && created.ends_with('Z'),
            "{created}"
        );
        assert_eq!(line["message"]["role"], "assistant");
    }
    assert!(deltas.iter().all(|l| l["done"] == false));
    let text: String = deltas
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Hello there, how are you today?");
    assert_eq!(done["done"], true);
    assert_eq!(done["done_reason"], "stop");
    assert_eq!(done["message"]["content"], "");
    for counter in [
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ] {
        assert!(done[counter].as_u64().unwrap() > 0, "{counter}");
    }
}

#[tokio::test]
async fn ollama_sends_parallel_tool_calls_whole_with_object_arguments() {
    let vendor = FakeVendor::start(Flavor::Ollama).await;
    vendor.push(Reply::tool_calls([
        ("get_weather", r#"{"city": "Paris"}"#),
        ("get_time", r#"{"zone":"Europe/Paris"}"#),
    ]));
    let body = stream_text(&vendor).await;
    let lines: Vec<Value> = ndjson(&body).into_iter().map(parse).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["done"], false);
    assert_eq!(lines[0]["message"]["content"], "");
    assert_eq!(
        lines[0]["message"]["tool_calls"],
        json!([
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"function": {"name": "get_time", "arguments": {"zone": "Europe/Paris"}}},
        ])
    );
    assert_eq!(lines[1]["done"], true);
    assert_eq!(lines[1]["done_reason"], "stop");
}

#[test]
#[should_panic(expected = "JSON object")]
fn ollama_refuses_tool_arguments_it_could_not_have_parsed() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let vendor = runtime.block_on(FakeVendor::start(Flavor::Ollama));
    vendor.push(Reply::tool_call("get_weather", r#"{"city": "Par"#));
}

#[tokio::test]
async fn non_streamed_requests_get_one_json_document() {
    for flavor in FLAVORS {
        let vendor = FakeVendor::start(flavor).await;
        vendor.push(Reply::ToolCalls {
            text: Some("Checking.".into()),
            calls: vec![("get_weather".into(), r#"{"city": "Paris"}"#.into())],
        });
        let response = chat(&vendor, &chat_body(flavor, false)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("application/json"),
            "{content_type}"
        );
        let body: Value = response.json().await.unwrap();
        match flavor {
            Flavor::OpenAi => {
                assert_eq!(body["object"], "chat.completion");
                assert_eq!(body["model"], "test-model");
                let choice = &body["choices"][0];
                assert_eq!(choice["finish_reason"], "tool_calls");
                assert_eq!(choice["message"]["content"], "Checking.");
                let call = &choice["message"]["tool_calls"][0];
                assert!(call["id"].as_str().unwrap().starts_with("call_"));
                assert_eq!(call["function"]["name"], "get_weather");
                assert_eq!(call["function"]["arguments"], r#"{"city": "Paris"}"#);
                assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);
            }
            Flavor::Anthropic => {
                assert_eq!(body["type"], "message");
                assert_eq!(body["model"], "test-model");
                assert_eq!(body["stop_reason"], "tool_use");
                assert_eq!(
                    body["content"][0],
                    json!({"type": "text", "text": "Checking."})
                );
                assert_eq!(body["content"][1]["type"], "tool_use");
                assert_eq!(body["content"][1]["input"], json!({"city": "Paris"}));
                assert!(body["usage"]["output_tokens"].as_u64().unwrap() > 0);
            }
            Flavor::Ollama => {
                assert_eq!(body["done"], true);
                assert_eq!(body["message"]["content"], "Checking.");
                assert_eq!(
                    body["message"]["tool_calls"][0]["function"]["arguments"],
                    json!({"city": "Paris"})
                );
            }
        }
    }
}

#[tokio::test]
async fn errors_carry_the_vendors_status_body_and_retry_after() {
    for flavor in FLAVORS {
        let vendor = FakeVendor::start(flavor).await;
        vendor.push(Reply::status(401));
        vendor.push(Reply::rate_limited(7));
        vendor.push(Reply::status(500));
        for (status, kind) in [(401, "auth"), (429, "rate"), (500, "server")] {
            let response = chat(&vendor, &chat_body(flavor, true)).await;
            assert_eq!(response.status().as_u16(), status, "{flavor:?}");
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(
                retry_after.as_deref(),
                (status == 429).then_some("7"),
                "{flavor:?} {status}"
            );
            let content_type = response.headers()["content-type"].to_str().unwrap();
            assert!(
                content_type.starts_with("application/json"),
                "{content_type}"
            );
            let body: Value = response.json().await.unwrap();
            match flavor {
                Flavor::OpenAi => {
                    let error = &body["error"];
                    assert!(!error["message"].as_str().unwrap().is_empty());
                    assert!(error.get("param").is_some_and(Value::is_null));
                    let (kind, code) = match kind {
                        "auth" => ("invalid_request_error", json!("invalid_api_key")),
                        "rate" => ("requests", json!("rate_limit_exceeded")),
                        _ => ("server_error", Value::Null),
                    };
                    assert_eq!(error["type"], kind);
                    assert_eq!(error["code"], code);
                }
                Flavor::Anthropic => {
                    assert_eq!(body["type"], "error");
                    assert!(!body["error"]["message"].as_str().unwrap().is_empty());
                    let kind = match kind {
                        "auth" => "authentication_error",
                        "rate" => "rate_limit_error",
                        _ => "api_error",
                    };
                    assert_eq!(body["error"]["type"], kind);
                }
                Flavor::Ollama => {
                    assert_eq!(body.as_object().unwrap().len(), 1);
                    assert!(!body["error"].as_str().unwrap().is_empty());
                }
            }
        }
    }
}

#[tokio::test]
async fn vendor_specific_errors() {
    let openai = FakeVendor::start(Flavor::OpenAi).await;
    openai.push(Reply::error(
        400,
        "This model's maximum context length is 128000 tokens.",
    ));
    let response = chat(&openai, &chat_body(Flavor::OpenAi, true)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "context_length_exceeded");

    let anthropic = FakeVendor::start(Flavor::Anthropic).await;
    anthropic.push(Reply::status(529));
    let response = chat(&anthropic, &chat_body(Flavor::Anthropic, true)).await;
    assert_eq!(response.status().as_u16(), 529);
    let request_id = response.headers()["request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error");
    assert_eq!(body["request_id"], request_id.as_str());

    let ollama = FakeVendor::start(Flavor::Ollama).await;
    ollama.push(Reply::status(404));
    let response = chat(&ollama, &chat_body(Flavor::Ollama, true)).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": "model \"test-model\" not found, try pulling it first"})
    );
}

#[tokio::test]
async fn malformed_streams_break_only_the_second_event() {
    for flavor in FLAVORS {
        let vendor = FakeVendor::start(flavor).await;
        vendor.push(Reply::Malformed);
        let body = stream_text(&vendor).await;
        let payloads = payloads(flavor, &body);
        assert!(payloads.len() > 3, "{flavor:?}");
        for (n, payload) in payloads.iter().enumerate() {
            let valid = payload == "[DONE]" || serde_json::from_str::<Value>(payload).is_ok();
            assert_eq!(valid, n != 1, "{flavor:?} event {n}: {payload}");
        }
    }
}

#[tokio::test]
async fn cut_streams_end_in_a_body_error_after_the_deltas() {
    for flavor in FLAVORS {
        let vendor = FakeVendor::start(flavor).await;
        vendor.push(Reply::CutMidway("one two three".into()));
        let response = chat(&vendor, &chat_body(flavor, true)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.bytes_stream();
        let mut received = Vec::new();
        let failure = loop {
            match body.next().await {
                Some(Ok(chunk)) => received.extend_from_slice(&chunk),
                Some(Err(e)) => break e,
                None => panic!("{flavor:?}: the stream ended cleanly"),
            }
        };
        assert!(
            failure.is_body() || failure.is_decode(),
            "{flavor:?}: {failure:?}"
        );
        let received = String::from_utf8(received).unwrap();
        assert!(
            received.contains(" three"),
            "{flavor:?}: deltas before the cut"
        );
        for finish in [
            "[DONE]",
            "finish_reason\":\"stop",
            "message_stop",
            "\"done\":true",
        ] {
            assert!(
                !received.contains(finish),
                "{flavor:?}: {finish} after a cut"
            );
        }

        // An ordinary full read fails too.
        vendor.push(Reply::CutMidway("one two three".into()));
        let response = chat(&vendor, &chat_body(flavor, true)).await;
        assert!(response.bytes().await.is_err(), "{flavor:?}");
    }
}

#[tokio::test]
async fn mid_stream_errors_end_the_stream_in_the_vendors_format() {
    for flavor in FLAVORS {
        let vendor = FakeVendor::start(flavor).await;
        vendor.push(Reply::MidStreamError("Overloaded".into()));
        let body = stream_text(&vendor).await;
        match flavor {
            Flavor::OpenAi => {
                let events = sse(&body);
                let last = parse(&events.last().unwrap().data);
                assert_eq!(last["error"]["message"], "Overloaded");
                assert_eq!(last["error"]["type"], "server_error");
                assert_eq!(
                    parse(&events[0].data)["choices"][0]["delta"]["role"],
                    "assistant"
                );
            }
            Flavor::Anthropic => {
                let events = sse(&body);
                let last = events.last().unwrap();
                assert_eq!(last.name.as_deref(), Some("error"));
                assert_eq!(
                    parse(&last.data),
                    json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
                );
                assert_eq!(events[0].name.as_deref(), Some("message_start"));
            }
            Flavor::Ollama => {
                let lines = ndjson(&body);
                assert_eq!(parse(lines.last().unwrap()), json!({"error": "Overloaded"}));
            }
        }
    }
}

#[tokio::test]
async fn slow_streams_send_deltas_before_the_end_and_stop_when_the_client_leaves() {
    for flavor in FLAVORS {
        let vendor = FakeVendor::start(flavor).await;
        vendor.push(Reply::Slow {
            text: "first second third".into(),
            delay: Duration::from_secs(3600),
        });
        let response = chat(&vendor, &chat_body(flavor, true)).await;
        let mut body = response.bytes_stream();
        let mut received = Vec::new();
        while !String::from_utf8_lossy(&received).contains("first") {
            received.extend_from_slice(&body.next().await.unwrap().unwrap());
        }
        assert!(!String::from_utf8_lossy(&received).contains("second"));
        assert_eq!(vendor.open_streams(), 1);
        drop(body);
        // The vendor notices the disconnect long before the next delta is due.
        tokio::time::timeout(Duration::from_secs(30), async {
            while vendor.open_streams() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{flavor:?}: the slow stream outlived its client"));
    }
}

#[tokio::test]
async fn fixtures_replay_byte_for_byte() {
    let fixtures = |path: &str| {
        std::fs::read(format!("{}/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    let cases = [
        (Flavor::OpenAi, "openai-chat/parallel-tool-calls.sse", ""),
        // The Anthropic files end in three ways; the replay always ends with a blank line.
        (Flavor::Anthropic, "anthropic-messages/basic.sse", "\n\n"),
        (Flavor::Anthropic, "anthropic-messages/refusal.sse", "\n"),
        (
            Flavor::Anthropic,
            "anthropic-messages/fable-fallback-stream-b-fallback.sse",
            "",
        ),
    ];
    for (flavor, path, appended) in cases {
        let vendor = FakeVendor::start(flavor).await;
        vendor.push(Reply::Fixture(path));
        let response = chat(&vendor, &chat_body(flavor, true)).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let body = response.bytes().await.unwrap();
        let mut expected = fixtures(path);
        expected.extend_from_slice(appended.as_bytes());
        assert_eq!(body, expected, "{path}");
        // Every event is dispatched, the last one included.
        let events = sse(std::str::from_utf8(&body).unwrap());
        let last = &events.last().unwrap().data;
        assert!(
            last == "[DONE]" || parse(last)["type"] == "message_stop",
            "{path}"
        );
    }
}

#[tokio::test]
async fn requests_are_recorded_with_headers_and_json_bodies() {
    for flavor in FLAVORS {
        let vendor = FakeVendor::start(flavor).await;
        let body = chat_body(flavor, true);
        chat(&vendor, &body).await.bytes().await.unwrap();
        let not_json = reqwest::Client::new()
            .post(vendor.chat_url())
            .body("not json")
            .send()
            .await
            .unwrap();
        // The fallback answers whatever the body.
        assert_eq!(not_json.status(), StatusCode::OK);
        not_json.bytes().await.unwrap();

        assert_eq!(vendor.request_count(), 2);
        let requests = vendor.requests();
        assert_eq!(requests.len(), 2);
        let chat_path = match flavor {
            Flavor::OpenAi => "/v1/chat/completions",
            Flavor::Anthropic => "/v1/messages",
            Flavor::Ollama => "/api/chat",
        };
        assert_eq!(requests[0].method, "POST");
        assert_eq!(requests[0].path, chat_path);
        assert_eq!(requests[0].body, body);
        assert_eq!(requests[0].header("content-type"), Some("application/json"));
        match flavor {
            Flavor::OpenAi => {
                assert_eq!(requests[0].header("authorization"), Some("Bearer sk-test"))
            }
            Flavor::Anthropic => {
                assert_eq!(requests[0].header("x-api-key"), Some("sk-ant-test"));
                assert_eq!(requests[0].header("anthropic-version"), Some("2023-06-01"));
            }
            Flavor::Ollama => assert_eq!(requests[0].header("authorization"), None),
        }
        assert_eq!(requests[1].body, Value::Null);
        assert_eq!(requests[1].header("x-api-key"), None);

        vendor.set_recording(false);
        chat(&vendor, &body).await.bytes().await.unwrap();
        assert_eq!(vendor.request_count(), 3);
        assert_eq!(vendor.requests().len(), 2);
    }
}

#[tokio::test]
async fn the_script_is_played_in_order_then_the_fallback() {
    let vendor = FakeVendor::start(Flavor::OpenAi).await;
    let content = async |vendor: &FakeVendor| -> Value {
        let body: Value = chat(vendor, &chat_body(Flavor::OpenAi, false))
            .await
            .json()
            .await
            .unwrap();
        body["choices"][0]["message"]["content"].clone()
    };
    assert_eq!(content(&vendor).await, "ok", "the default fallback");
    vendor.push(Reply::text("first"));
    vendor.push(Reply::text("second"));
    vendor.set_fallback(Reply::text("again"));
    for expected in ["first", "second", "again", "again"] {
        assert_eq!(content(&vendor).await, expected);
    }
}

#[tokio::test]
async fn model_listings_and_unknown_routes_answer_like_the_vendor() {
    let http = reqwest::Client::new();
    for flavor in FLAVORS {
        let vendor = FakeVendor::start(flavor).await;
        vendor.push(Reply::text("kept for the chat request"));
        let base = vendor.base_url();
        let listing = match flavor {
            Flavor::OpenAi => format!("{base}/models"),
            Flavor::Anthropic => format!("{base}/v1/models"),
            Flavor::Ollama => format!("{base}/api/tags"),
        };
        let body: Value = http
            .get(&listing)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match flavor {
            Flavor::OpenAi => {
                assert_eq!(body["object"], "list");
                assert_eq!(body["data"][0]["object"], "model");
                assert!(body["data"][0]["id"].is_string());
                assert!(body["data"][0]["owned_by"].is_string());
                assert!(body["data"][0]["created"].is_u64());
            }
            Flavor::Anthropic => {
                assert_eq!(body["data"][0]["type"], "model");
                assert!(body["data"][0]["id"].is_string());
                assert_eq!(body["has_more"], false);
            }
            Flavor::Ollama => {
                assert!(body["models"][0]["name"].is_string());
                assert!(body["models"][0]["model"].is_string());
            }
        }

        let unknown = http.post(format!("{base}/nope")).send().await.unwrap();
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND, "{flavor:?}");
        let unknown = unknown.text().await.unwrap();
        match flavor {
            Flavor::OpenAi => assert!(
                parse(&unknown)["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("/v1/nope")
            ),
            Flavor::Anthropic => assert_eq!(parse(&unknown)["error"]["type"], "not_found_error"),
            Flavor::Ollama => assert_eq!(unknown, "404 page not found"),
        }

        // Neither took the scripted reply.
        let text = stream_text(&vendor).await;
        assert!(text.contains("kept"), "{flavor:?}");
        assert_eq!(vendor.request_count(), 3);
    }
}
