//! A stand-in model server for trying Kelp without a real model: an OpenAI-compatible (or
//! Anthropic, or Ollama) endpoint on loopback that calls the `calc` tool for a question with
//! arithmetic in it and then answers with the tool's result. The same fake the test suite
//! uses, with a rule instead of a script.
//!
//! `cargo run --release -p kelp-fake-vendor -- [openai|anthropic|ollama] [ADDRESS]`
//! (default `openai 127.0.0.1:8000`; the OpenAI base URL is then `http://127.0.0.1:8000/v1`).

use kelp_fake_vendor::{Flavor, stand_in};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let flavor = match args.next().as_deref() {
        None | Some("openai") => Flavor::OpenAi,
        Some("anthropic") => Flavor::Anthropic,
        Some("ollama") => Flavor::Ollama,
        Some(other) => {
            eprintln!("fake-llm: unknown flavor `{other}` (openai, anthropic or ollama)");
            std::process::exit(2);
        }
    };
    let address = args.next().unwrap_or_else(|| "127.0.0.1:8000".into());
    let vendor = stand_in::start(flavor, &address).await;
    println!("fake-llm: base URL {}", vendor.base_url());
    let _ = tokio::signal::ctrl_c().await;
}
