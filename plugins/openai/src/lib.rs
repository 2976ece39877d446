//! `kelp/openai`: OpenAI Chat Completions, streamed, and Embeddings. The same wire format is
//! spoken by many other servers (OpenRouter, vLLM, llama.cpp, LM Studio, …), so one instance
//! per `base_url` covers them too.

// Public only for the fuzz targets in tests/fuzz, which feed it untrusted bytes natively.
#[doc(hidden)]
pub mod decoder;
mod embeddings;
mod error;
mod request;

#[cfg(test)]
mod fixtures;

use kelp_sdk::http::{Request, Response};
use kelp_sdk::provider::{
    ChatRequest, Embeddings, EmbeddingsRequest, ModelInfo, Provider, ProviderError,
};

use crate::decoder::ChatDecoder;

struct OpenAi;

/// Well-known models, so that a fresh instance has something to offer; any other model id the
/// endpoint accepts works as well.
const MODELS: &[(&str, u32, u32)] = &[
    // (id, context window, maximum output tokens)
    ("gpt-4.1", 1_047_576, 32_768),
    ("gpt-4.1-mini", 1_047_576, 32_768),
    ("gpt-4o", 128_000, 16_384),
    ("gpt-4o-mini", 128_000, 16_384),
    ("o4-mini", 200_000, 100_000),
];

impl Provider for OpenAi {
    type Decoder = ChatDecoder;

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
        Ok(request::chat_completions(&base_url()?, &request))
    }

    fn prepare_embeddings(request: EmbeddingsRequest) -> Result<Request, ProviderError> {
        embeddings::request(&base_url()?, &request)
    }

    fn parse_embeddings(response: Response) -> Result<Embeddings, ProviderError> {
        embeddings::parse(&response)
    }
}

fn base_url() -> Result<String, ProviderError> {
    // The host fills the schema's default into the configuration, and grants HTTP and the API
    // key by this same value: without it there is nowhere the request may go.
    kelp_sdk::config("base_url").ok_or_else(|| {
        ProviderError::InvalidRequest("the instance's config has no `base_url`".into())
    })
}

kelp_sdk::export_provider!(OpenAi);
