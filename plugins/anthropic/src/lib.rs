//! `kelp/anthropic`: the Anthropic Messages API, streamed.

// Public only for the fuzz targets in tests/fuzz, which feed it untrusted bytes natively.
#[doc(hidden)]
pub mod decoder;
mod error;
mod request;

#[cfg(test)]
mod fixtures;

use kelp_sdk::http::Request;
use kelp_sdk::provider::{ChatRequest, ModelInfo, Provider, ProviderError};

use crate::decoder::MessagesDecoder;

struct Anthropic;

/// Current models by their aliases, so that a fresh instance has something to offer; any other
/// model id the API accepts works as well.
const MODELS: &[(&str, u32, u32)] = &[
    // (id, context window, maximum output tokens)
    ("claude-opus-4-1", 200_000, 32_000),
    ("claude-sonnet-4-5", 200_000, 64_000),
    ("claude-haiku-4-5", 200_000, 64_000),
    ("claude-3-5-haiku-latest", 200_000, 8_192),
];

impl Provider for Anthropic {
    type Decoder = MessagesDecoder;

    fn models() -> Vec<ModelInfo> {
        MODELS
            .iter()
            .map(|&(id, context, output)| ModelInfo {
                id: id.to_owned(),
                context_window: Some(context),
                max_output_tokens: Some(output),
            })
            .collect()
    }

    fn prepare(request: ChatRequest) -> Result<Request, ProviderError> {
        // The host fills the schema's default into the configuration, and grants HTTP and the
        // API key by this same value: without it there is nowhere the request may go.
        let base_url: String = kelp_sdk::config("base_url").ok_or_else(|| {
            ProviderError::InvalidRequest("the instance's config has no `base_url`".into())
        })?;
        Ok(request::messages(&base_url, &request))
    }

    // `prepare_embeddings` and `parse_embeddings` keep their defaults, which answer
    // `unsupported`: Anthropic has no embeddings API.
}

kelp_sdk::export_provider!(Anthropic);
