//! `kelp/ollama`: a local Ollama server through its native `/api/chat`, streamed as NDJSON,
//! with tool calls, and `/api/embed` for embeddings.

// Public only for the fuzz targets in tests/fuzz, which feed it untrusted bytes natively.
#[doc(hidden)]
pub mod decoder;
mod embeddings;
mod error;
mod request;

use kelp_sdk::http::{Request, Response};
use kelp_sdk::provider::{ChatRequest, Embeddings, EmbeddingsRequest, Provider, ProviderError};

use crate::decoder::ChatDecoder;

struct Ollama;

impl Provider for Ollama {
    type Decoder = ChatDecoder;

    // `models` keeps the default empty list: the models are whatever the server has pulled,
    // and the operator names one.

    fn prepare(request: ChatRequest) -> Result<Request, ProviderError> {
        Ok(request::chat(&base_url()?, &request))
    }

    fn prepare_embeddings(request: EmbeddingsRequest) -> Result<Request, ProviderError> {
        embeddings::request(&base_url()?, &request)
    }

    fn parse_embeddings(response: Response) -> Result<Embeddings, ProviderError> {
        embeddings::parse(&response)
    }
}

fn base_url() -> Result<String, ProviderError> {
    // The host fills the schema's default into the configuration, and grants HTTP by this same
    // value: without it there is nowhere the request may go.
    kelp_sdk::config("base_url").ok_or_else(|| {
        ProviderError::InvalidRequest("the instance's config has no `base_url`".into())
    })
}

kelp_sdk::export_provider!(Ollama);
