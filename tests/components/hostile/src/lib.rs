//! `test/hostile`: every way a tool can misbehave, one tool each, driven by the input JSON, so
//! the host's tests can assert the exact outcome (interrupt, out of memory, trap, denial, cap).

use std::hint::black_box;

use kelp_sdk::http::{HttpError, Request};
use kelp_sdk::tool::{Tool, ToolError, ToolOutput, ToolSpec};
use kelp_sdk::{kv, log};
use serde_json::{Value, json};

struct Hostile;

const TOOLS: &[(&str, &str)] = &[
    ("echo", "Return the input unchanged"),
    ("now", "Call the host's now-ms once and return it"),
    ("spin", "Loop forever"),
    ("alloc", "Allocate 1 MiB blocks without bound"),
    ("recurse", "Recurse without bound"),
    ("panic", "Panic"),
    ("read_file", "std::fs::read_to_string({path})"),
    ("write_file", "std::fs::write({path}, {content})"),
    ("append_file", "Append {content} to {path}"),
    ("set_len", "Set the length of {path} to {bytes}"),
    (
        "http",
        "Send {method, url, headers?, body?} through the host",
    ),
    ("log_flood", "Log lines totalling {bytes}"),
    ("print_flood", "Print lines to stdout totalling {bytes}"),
    ("huge_output", "Return a string of {bytes} characters"),
    ("huge_error", "Fail with a message of {bytes} characters"),
    ("kv_set", "kv set {key} to {value}"),
    ("kv_get", "kv get {key}"),
    (
        "kv_cas",
        "kv compare-and-swap {key} from {expected?} to {new?}",
    ),
    (
        "kv_set_then_fail",
        "kv set {key} to {value}, then return an error",
    ),
    ("kv_set_then_trap", "kv set {key} to {value}, then panic"),
    ("kv_list", "kv list-keys starting with {prefix}"),
    ("config", "Return the instance config value of {key}"),
    (
        "sleep",
        "std::thread::sleep for {ms} milliseconds (WASI's monotonic clock), then return",
    ),
];

fn str_arg<'a>(input: &'a Value, name: &str) -> Result<&'a str, ToolError> {
    input[name]
        .as_str()
        .ok_or_else(|| ToolError::invalid(format!("`{name}` (string) is required")))
}

fn opt_str_arg<'a>(input: &'a Value, name: &str) -> Option<&'a str> {
    input.get(name).and_then(Value::as_str)
}

fn bytes_arg(input: &Value) -> Result<usize, ToolError> {
    input["bytes"]
        .as_u64()
        .map(|n| n as usize)
        .ok_or_else(|| ToolError::invalid("`bytes` (integer) is required"))
}

fn spin() -> ! {
    let mut counter = 0u64;
    loop {
        // black_box keeps the loop from being proven side-effect free and removed.
        counter = black_box(counter.wrapping_add(1));
    }
}

fn alloc() -> ! {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; 1 << 20];
        // Touch every page, so the memory is really committed, not just reserved.
        for byte in block.iter_mut().step_by(4096) {
            *byte = 1;
        }
        blocks.push(black_box(block));
    }
}

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    // The frame holds data used after the call, so the call is not in tail position and the
    // compiler cannot turn the recursion into a loop.
    let frame = black_box([depth; 32]);
    if black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(depth + 1).wrapping_add(frame[(depth % 32) as usize])
}

fn flood(bytes: usize, mut write: impl FnMut(&str)) -> usize {
    let line = "x".repeat(99);
    let mut written = 0;
    let mut lines = 0;
    while written < bytes {
        write(&line);
        written += line.len() + 1;
        lines += 1;
    }
    lines
}

fn http(input: &Value) -> Result<ToolOutput, ToolError> {
    let mut request = Request::new(
        opt_str_arg(input, "method").unwrap_or("GET"),
        str_arg(input, "url")?,
    );
    match input.get("headers") {
        Some(Value::Object(map)) => {
            for (name, value) in map {
                request = request.header(name, value.as_str().unwrap_or_default());
            }
        }
        Some(Value::Array(pairs)) => {
            for pair in pairs {
                let (Some(name), Some(value)) = (pair[0].as_str(), pair[1].as_str()) else {
                    return Err(ToolError::invalid("headers must be [name, value] pairs"));
                };
                request = request.header(name, value);
            }
        }
        _ => {}
    }
    if let Some(body) = opt_str_arg(input, "body") {
        request = request.body(body);
    }
    match request.send() {
        Ok(response) => Ok(json!({
            "status": response.status,
            "headers": response.headers,
            "body": response.text(),
        })
        .into()),
        // The variant name leads the message so tests can match on it.
        Err(HttpError::Denied(what)) => Err(ToolError::Denied(format!("denied: {what}"))),
        Err(err) => Err(ToolError::Failed(format!("{}: {err}", err.kind()))),
    }
}

fn kv_set(input: &Value) -> Result<(), ToolError> {
    kv::set(str_arg(input, "key")?, str_arg(input, "value")?)?;
    Ok(())
}

impl Tool for Hostile {
    fn tools() -> Vec<ToolSpec> {
        let mut tools: Vec<ToolSpec> = TOOLS
            .iter()
            .map(|(name, description)| {
                ToolSpec::new(*name, *description, json!({"type": "object"}))
            })
            .collect();
        // A schema using keywords beyond the basic ones, for the host to enforce whole.
        tools.push(ToolSpec::new(
            "strict",
            "Echo an input whose schema uses pattern, const, oneOf and a local $ref",
            json!({
                "type": "object",
                "$defs": {"slug": {"type": "string", "pattern": "^[a-z][a-z0-9-]*$"}},
                "properties": {
                    "id": {"$ref": "#/$defs/slug"},
                    "kind": {"const": "file"},
                    "size": {"oneOf": [{"type": "integer"}, {"type": "string", "pattern": "^[0-9]+[kKmM]$"}]}
                },
                "required": ["id"],
                "additionalProperties": false
            }),
        ));
        // With config `list_gate` (a URL), listing first fetches it: a test that holds the
        // answer holds every load of this instance right there.
        if let Some(url) = kelp_sdk::config::<String>("list_gate") {
            let _ = Request::new("GET", &url).send();
        }
        // With config `bad_schema`, a tool whose schema no validator can compile.
        if kelp_sdk::config::<bool>("bad_schema").unwrap_or(false) {
            tools.push(ToolSpec::new(
                "broken",
                "A tool with an invalid input schema",
                json!({"type": "object", "properties": {"a": {"type": "strin"}}}),
            ));
        }
        tools
    }

    fn call(name: &str, input: Value) -> Result<ToolOutput, ToolError> {
        match name {
            "echo" => Ok(input.into()),
            "now" => Ok(json!(kelp_sdk::now_ms()).into()),
            "spin" => spin(),
            "alloc" => alloc(),
            "recurse" => Ok(json!(recurse(0)).into()),
            "panic" => panic!("hostile panic requested"),
            "read_file" => std::fs::read_to_string(str_arg(&input, "path")?)
                .map(ToolOutput::Text)
                .map_err(|err| ToolError::failed(err.to_string())),
            "write_file" => {
                std::fs::write(str_arg(&input, "path")?, str_arg(&input, "content")?)
                    .map_err(|err| ToolError::failed(err.to_string()))?;
                Ok("ok".into())
            }
            "append_file" => {
                use std::io::Write;
                let content = str_arg(&input, "content")?;
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(str_arg(&input, "path")?)
                    .and_then(|mut f| f.write_all(content.as_bytes()))
                    .map_err(|err| ToolError::failed(err.to_string()))?;
                Ok("ok".into())
            }
            "set_len" => {
                let len = bytes_arg(&input)? as u64;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(str_arg(&input, "path")?)
                    .and_then(|f| f.set_len(len))
                    .map_err(|err| ToolError::failed(err.to_string()))?;
                Ok("ok".into())
            }
            "http" => http(&input),
            "log_flood" => {
                let lines = flood(bytes_arg(&input)?, |line| log::info(line));
                Ok(json!({ "lines": lines }).into())
            }
            "print_flood" => {
                let lines = flood(bytes_arg(&input)?, |line| println!("{line}"));
                Ok(json!({ "lines": lines }).into())
            }
            "huge_output" => Ok("x".repeat(bytes_arg(&input)?).into()),
            "huge_error" => Err(ToolError::failed("x".repeat(bytes_arg(&input)?))),
            "strict" => Ok(input.into()),
            "kv_set" => {
                kv_set(&input)?;
                Ok("ok".into())
            }
            "kv_get" => {
                let value = kv::get(str_arg(&input, "key")?)?;
                Ok(json!(value.map(|v| String::from_utf8_lossy(&v).into_owned())).into())
            }
            "kv_cas" => {
                let swapped = kv::compare_and_swap(
                    str_arg(&input, "key")?,
                    opt_str_arg(&input, "expected").map(str::as_bytes),
                    opt_str_arg(&input, "new").map(str::as_bytes),
                )?;
                Ok(json!({ "swapped": swapped }).into())
            }
            "kv_list" => Ok(json!(kv::list_keys(str_arg(&input, "prefix")?)?).into()),
            "kv_set_then_fail" => {
                kv_set(&input)?;
                Err(ToolError::failed("failing on purpose after kv set"))
            }
            "kv_set_then_trap" => {
                kv_set(&input)?;
                panic!("trapping on purpose after kv set")
            }
            "config" => {
                let value: Option<Value> = kelp_sdk::config(str_arg(&input, "key")?);
                Ok(value.unwrap_or(Value::Null).into())
            }
            "sleep" => {
                let ms = input["ms"]
                    .as_u64()
                    .ok_or_else(|| ToolError::invalid("`ms` (integer) is required"))?;
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Ok("slept".into())
            }
            other => Err(ToolError::unknown_tool(other)),
        }
    }
}

kelp_sdk::export_tool!(Hostile);
