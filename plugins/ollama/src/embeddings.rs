//! `POST /api/embed`: the request, and the whole response read into vectors.

use kelp_sdk::http::{Request, Response};
use kelp_sdk::provider::{Embeddings, EmbeddingsRequest, ProviderError};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error;

/// Builds the request that embeds `request.inputs` against `base_url` (e.g.
/// `http://127.0.0.1:11434`).
pub(crate) fn request(
    base_url: &str,
    request: &EmbeddingsRequest,
) -> Result<Request, ProviderError> {
    // Ollama answers an empty `input` with no vectors after loading the model for nothing.
    if request.inputs.is_empty() {
        return Err(ProviderError::InvalidRequest("no inputs to embed".into()));
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(request.model));
    // Always a list, even of one: the answer has one vector per item either way.
    body.insert("input".into(), json!(request.inputs));
    if let Some(dimensions) = request.dimensions {
        body.insert("dimensions".into(), json!(dimensions));
    }
    Ok(
        Request::post(format!("{}/api/embed", base_url.trim_end_matches('/')))
            .json(&Value::Object(body)),
    )
}

#[derive(Deserialize)]
struct Body {
    /// One per input, in the inputs' order.
    embeddings: Vec<Vec<f32>>,
    prompt_eval_count: Option<u64>,
}

/// Reads the response to [`request`], error statuses included.
pub(crate) fn parse(response: &Response) -> Result<Embeddings, ProviderError> {
    if !response.is_success() {
        return Err(error::from_response(
            response.status,
            &response.headers,
            &response.body,
        ));
    }
    let body: Body = serde_json::from_slice(&response.body)
        .map_err(|err| ProviderError::Other(format!("malformed embeddings response: {err}")))?;
    Ok(Embeddings {
        vectors: body.embeddings,
        input_tokens: body.prompt_eval_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embeddings_request(inputs: &[&str], dimensions: Option<u32>) -> EmbeddingsRequest {
        EmbeddingsRequest {
            model: "all-minilm".into(),
            inputs: inputs.iter().map(|&i| i.to_owned()).collect(),
            dimensions,
        }
    }

    fn body(request: &Request) -> Value {
        serde_json::from_slice(request.body.as_deref().unwrap()).unwrap()
    }

    #[test]
    fn request_url_and_body() {
        for base in ["http://127.0.0.1:11434", "http://127.0.0.1:11434/"] {
            let built =
                request(base, &embeddings_request(&["Why is the sky blue?"], None)).unwrap();
            assert_eq!(built.method, "POST");
            assert_eq!(built.url, "http://127.0.0.1:11434/api/embed");
            assert_eq!(
                built.headers,
                [("content-type".to_owned(), "application/json".to_owned())]
            );
            assert_eq!(
                body(&built),
                json!({ "model": "all-minilm", "input": ["Why is the sky blue?"] })
            );
        }
        let built = request(
            "http://gpu-box.lan:11434",
            &embeddings_request(&["one", "two"], Some(256)),
        )
        .unwrap();
        assert_eq!(
            body(&built),
            json!({ "model": "all-minilm", "input": ["one", "two"], "dimensions": 256 })
        );
        assert_eq!(
            request("http://127.0.0.1:11434", &embeddings_request(&[], None)),
            Err(ProviderError::InvalidRequest("no inputs to embed".into()))
        );
    }

    #[test]
    fn vectors_and_token_count() {
        // As `ollama serve` answers, with the vectors shortened.
        let body = r#"{
          "model": "all-minilm",
          "embeddings": [[0.010071029, -0.0017594862, 0.05007221], [0.5, 0.25, -1]],
          "total_duration": 14143917,
          "load_duration": 1019500,
          "prompt_eval_count": 8
        }"#;
        assert_eq!(
            parse(&Response::new(200, body)),
            Ok(Embeddings {
                vectors: vec![
                    vec![0.010071029, -0.0017594862, 0.05007221],
                    vec![0.5, 0.25, -1.0],
                ],
                input_tokens: Some(8),
            })
        );
    }

    #[test]
    fn malformed_answers() {
        for body in [
            r#"{"embedding": [0.1, 0.2]}"#,
            r#"{"embeddings": [0.1]}"#,
            "<html>",
        ] {
            assert!(
                matches!(
                    parse(&Response::new(200, body)),
                    Err(ProviderError::Other(m)) if m.starts_with("malformed embeddings response: ")
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn errors_as_for_chat() {
        assert_eq!(
            parse(&Response::new(
                404,
                r#"{"error":"model \"nomic-embed-text\" not found, try pulling it first"}"#
            )),
            Err(ProviderError::InvalidRequest(
                "model \"nomic-embed-text\" not found, try pulling it first".into()
            ))
        );
        assert_eq!(
            parse(&Response::new(
                400,
                r#"{"error":"\"llama3.2\" does not support embeddings"}"#
            )),
            Err(ProviderError::InvalidRequest(
                "\"llama3.2\" does not support embeddings".into()
            ))
        );
        assert_eq!(
            parse(&Response::new(500, "Internal Server Error\n")),
            Err(ProviderError::Other(
                "HTTP 500: Internal Server Error".into()
            ))
        );
        let busy = Response::new(429, r#"{"error":"busy"}"#).with_header("Retry-After", "4");
        assert_eq!(parse(&busy), Err(ProviderError::RateLimited(Some(4))));
    }
}
