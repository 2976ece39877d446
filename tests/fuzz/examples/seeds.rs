//! Writes the seed corpus in `tests/fuzz/seeds/` from the repository's real inputs: the
//! vendor recordings in `tests/fixtures/`, the first-party plugins' and the templates'
//! `kelp.toml`, the skill template, and packages built with `write_package` the way the test
//! suite builds them. Run from the repository root after changing any of those:
//!
//!     cargo run --manifest-path tests/fuzz/Cargo.toml --example seeds

use std::fs;
use std::io::Read;
use std::path::Path;

use kelp_registry::package::write_package;

/// A valid component preamble: the package reader checks no more of `plugin.wasm`.
const COMPONENT: &[u8] = &[0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00, 0x01, 0x02];

/// Cut positions for stream seeds: one inside the body, one in the middle.
const CUTS: [u8; 4] = [0x35, 0x00, 0x00, 0x01];

/// `ollama serve`'s `/api/chat` streams (tests/fixtures has no Ollama recordings; these are the
/// ones the plugin's own tests use).
const OLLAMA: [(&str, &str); 3] = [
    (
        "text.ndjson",
        concat!(
            r#"{"model":"llama3.2","created_at":"2025-06-01T10:00:00.000000Z","message":{"role":"assistant","content":"The"},"done":false}"#,
            "\n",
            r#"{"model":"llama3.2","created_at":"2025-06-01T10:00:00.050000Z","message":{"role":"assistant","content":" sky is"},"done":false}"#,
            "\n",
            r#"{"model":"llama3.2","created_at":"2025-06-01T10:00:00.150000Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","total_duration":4883583458,"load_duration":1334875,"prompt_eval_count":26,"prompt_eval_duration":342546000,"eval_count":282,"eval_duration":4535599000}"#,
            "\n",
        ),
    ),
    (
        "tool-calls.ndjson",
        concat!(
            r#"{"model":"qwen3","created_at":"2025-06-01T10:00:00Z","message":{"role":"assistant","content":"","thinking":"The user wants weather.","tool_calls":[{"function":{"name":"get_weather","arguments":{"city":"Toronto","units":"c"}}}]},"done":false}"#,
            "\n",
            r#"{"model":"qwen3","created_at":"2025-06-01T10:00:01Z","message":{"role":"assistant","content":"","tool_calls":[{"id":"call_abc","function":{"index":1,"name":"get_time","arguments":{}}}]},"done":false}"#,
            "\r\n",
            r#"{"model":"qwen3","created_at":"2025-06-01T10:00:02Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":180,"eval_count":31}"#,
            "\n",
        ),
    ),
    (
        "error-mid-stream.ndjson",
        concat!(
            r#"{"model":"llama3.2","created_at":"2025-06-01T10:00:00Z","message":{"role":"assistant","content":"Hi"},"done":false}"#,
            "\n",
            r#"{"error":"an error was encountered while running the model: unexpected EOF"}"#,
            "\n",
        ),
    ),
];

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("tests/fuzz/seeds").join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

fn stream_seed(status_byte: Option<u8>, body: &[u8]) -> Vec<u8> {
    let mut seed: Vec<u8> = status_byte.into_iter().collect();
    seed.extend_from_slice(&CUTS);
    seed.extend_from_slice(body);
    seed
}

fn files(dir: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

fn main() {
    let _ = fs::remove_dir_all("tests/fuzz/seeds");

    // Provider streams: each recording as a 200 response (cut, and as SSE for the parser).
    for (vendor, target) in [
        ("openai-chat", "openai_decoder"),
        ("anthropic-messages", "anthropic_decoder"),
    ] {
        for (name, body) in files(&format!("tests/fixtures/{vendor}")) {
            write(target, &name, &stream_seed(Some(0), &body));
            write(
                "sse",
                &format!("{vendor}-{name}"),
                &stream_seed(None, &body),
            );
        }
    }
    for (name, body) in OLLAMA {
        write(
            "ollama_decoder",
            name,
            &stream_seed(Some(0), body.as_bytes()),
        );
        write("ndjson", name, &stream_seed(None, body.as_bytes()));
    }
    // Error documents at an error status (0xc0 + 12 selects 429, + 6 selects 401).
    for (target, body) in [
        (
            "openai_decoder",
            &br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#[..],
        ),
        (
            "anthropic_decoder",
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your rate limit"}}"#,
        ),
        ("ollama_decoder", br#"{"error":"model \"llama9\" not found, try pulling it first"}"#),
    ] {
        write(target, "error-429.json", &stream_seed(Some(0xc0 + 12), body));
        write(target, "error-401.html", &stream_seed(Some(0xc0 + 6), b"<html>Unauthorized</html>"));
    }

    // Manifests: the first-party plugins' and the templates'.
    let mut manifests = Vec::new();
    for dir in ["plugins", "sdk/templates"] {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path().join("kelp.toml");
            if let Ok(text) = fs::read_to_string(&path) {
                let name = path
                    .parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_string_lossy();
                let text = text.replace("{{name}}", "example");
                write(
                    "manifest",
                    &format!("{dir}-{name}.toml").replace('/', "-"),
                    text.as_bytes(),
                );
                manifests.push((name.into_owned(), text));
            }
        }
    }
    manifests.sort();

    // SKILL.md: the template, as written and filled in.
    let template = fs::read_to_string("sdk/templates/skill/SKILL.md").unwrap();
    let skill = template.replace("{{name}}", "example");
    write("skill_front_matter", "template.md", template.as_bytes());
    write("skill_front_matter", "filled.md", skill.as_bytes());
    write(
        "skill_front_matter",
        "quoted.md",
        b"---\nname: writing\ndescription: \"Use when writing \\\"prose\\\"\"\nallowed-tools:\n  - read\n---\n# Writing\nBe brief.\n",
    );

    // Packages: each manifest packed as the suite packs plugins (a skill with its SKILL.md),
    // as the archive (mode 0) and as its tar stream (mode 1), under both limits.
    for (name, manifest) in &manifests {
        let is_skill = manifest.contains("kind = \"skill\"");
        let wasm = (!is_skill).then_some(COMPONENT);
        let skill_md = is_skill.then_some(skill.as_str());
        let Ok(package) = write_package(manifest, wasm, skill_md, Some("# Example\n")) else {
            continue;
        };
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&package[..])
            .read_to_end(&mut tar)
            .unwrap();
        let mut entries = Vec::new();
        for entry in tar::Archive::new(&tar[..]).entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path_bytes().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            entries.push(b'0');
            entries.push(u8::try_from(path.len()).unwrap());
            entries.extend_from_slice(&path);
            entries.extend_from_slice(&u16::try_from(data.len()).unwrap().to_le_bytes());
            entries.extend_from_slice(&data);
        }
        for (mode, payload) in [
            (0u8, &package),
            (1, &tar),
            (2, &package),
            (3, &tar),
            (4, &entries),
            (6, &entries),
        ] {
            let mut seed = vec![mode];
            seed.extend_from_slice(payload);
            write("package_reader", &format!("{name}-mode{mode}"), &seed);
        }
    }
}
