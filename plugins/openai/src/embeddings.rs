//! `POST /embeddings`: the request, and the whole response read into vectors.

use kelp_sdk::http::{Request, Response};
use kelp_sdk::provider::{Embeddings, EmbeddingsRequest, ProviderError};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error;

/// Builds the request that embeds `request.inputs` against `base_url` (e.g.
/// `https://api.openai.com/v1`). As for chat, no `authorization` header: the host adds the key
/// where the manifest binds it.
pub(crate) fn request(
    base_url: &str,
    request: &EmbeddingsRequest,
) -> Result<Request, ProviderError> {
    // OpenAI refuses an empty `input`; saying so here names the cause instead of quoting it.
    if request.inputs.is_empty() {
        return Err(ProviderError::InvalidRequest("no inputs to embed".into()));
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(request.model));
    // Always a list, even of one: the answer then has the same shape for any number.
    body.insert("input".into(), json!(request.inputs));
    if let Some(dimensions) = request.dimensions {
        body.insert("dimensions".into(), json!(dimensions));
    }
    Ok(
        Request::post(format!("{}/embeddings", base_url.trim_end_matches('/')))
            .json(&Value::Object(body)),
    )
}

#[derive(Deserialize)]
struct Body {
    data: Vec<Item>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Item {
    /// Which input this vector is for. OpenAI always sends it; a compatible server that does
    /// not is taken to answer in order.
    index: Option<usize>,
    /// Floats: the request asks for no `encoding_format`, and `float` is the default.
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct WireUsage {
    prompt_tokens: Option<u64>,
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
    let document: Value = serde_json::from_slice(&response.body).map_err(malformed)?;
    // Some compatible servers answer an error with a 200 and the error document.
    if let Some(error) = document.get("error").filter(|e| !e.is_null()) {
        return Err(error::from_error(None, &response.headers, error));
    }
    let body: Body = serde_json::from_value(document).map_err(malformed)?;

    // `data` is documented in input order, but each item names its input: trust the name, and
    // refuse an answer in which an input has no vector or two, rather than misattribute one.
    let count = body.data.len();
    let mut vectors: Vec<Option<Vec<f32>>> = vec![None; count];
    for (position, item) in body.data.into_iter().enumerate() {
        let index = item.index.unwrap_or(position);
        let slot = vectors.get_mut(index).ok_or_else(|| {
            ProviderError::Other(format!(
                "the embeddings response has a vector for input {index} among {count} vectors"
            ))
        })?;
        if slot.replace(item.embedding).is_some() {
            return Err(ProviderError::Other(format!(
                "the embeddings response has two vectors for input {index}"
            )));
        }
    }
    // Every index is below `count` and none repeats, so every slot is filled.
    let vectors = vectors.into_iter().flatten().collect();
    Ok(Embeddings {
        vectors,
        input_tokens: body.usage.and_then(|u| u.prompt_tokens),
    })
}

fn malformed(err: serde_json::Error) -> ProviderError {
    ProviderError::Other(format!("malformed embeddings response: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embeddings_request(inputs: &[&str], dimensions: Option<u32>) -> EmbeddingsRequest {
        EmbeddingsRequest {
            model: "text-embedding-3-small".into(),
            inputs: inputs.iter().map(|&i| i.to_owned()).collect(),
            dimensions,
        }
    }

    fn body(request: &Request) -> Value {
        serde_json::from_slice(request.body.as_deref().unwrap()).unwrap()
    }

    #[test]
    fn request_url_and_body() {
        for base in ["https://api.openai.com/v1", "https://api.openai.com/v1/"] {
            let built =
                request(base, &embeddings_request(&["The food was delicious"], None)).unwrap();
            assert_eq!(built.method, "POST");
            assert_eq!(built.url, "https://api.openai.com/v1/embeddings");
            assert_eq!(
                built.headers,
                [("content-type".to_owned(), "application/json".to_owned())]
            );
            assert_eq!(
                body(&built),
                json!({ "model": "text-embedding-3-small", "input": ["The food was delicious"] })
            );
        }
        let built = request(
            "http://127.0.0.1:8000/v1",
            &embeddings_request(&["one", "two"], Some(256)),
        )
        .unwrap();
        assert_eq!(built.url, "http://127.0.0.1:8000/v1/embeddings");
        assert_eq!(
            body(&built),
            json!({ "model": "text-embedding-3-small", "input": ["one", "two"], "dimensions": 256 })
        );
    }

    #[test]
    fn nothing_to_embed_is_refused() {
        assert_eq!(
            request("https://api.openai.com/v1", &embeddings_request(&[], None)),
            Err(ProviderError::InvalidRequest("no inputs to embed".into()))
        );
    }

    #[test]
    fn vectors_in_input_order() {
        // As the API documents it, but with the items out of order.
        let body = r#"{
          "object": "list",
          "data": [
            { "object": "embedding", "index": 1, "embedding": [0.5, -1.25] },
            { "object": "embedding", "index": 0, "embedding": [0.0023064255, -0.009327292] }
          ],
          "model": "text-embedding-3-small",
          "usage": { "prompt_tokens": 8, "total_tokens": 8 }
        }"#;
        assert_eq!(
            parse(&Response::new(200, body)),
            Ok(Embeddings {
                vectors: vec![vec![0.0023064255, -0.009327292], vec![0.5, -1.25]],
                input_tokens: Some(8),
            })
        );
        // Without indexes or usage, as some compatible servers answer.
        let body = r#"{ "data": [ { "embedding": [1] }, { "embedding": [2] } ] }"#;
        assert_eq!(
            parse(&Response::new(200, body)),
            Ok(Embeddings {
                vectors: vec![vec![1.0], vec![2.0]],
                input_tokens: None,
            })
        );
    }

    #[test]
    fn vectors_that_do_not_match_the_inputs_are_an_error() {
        // Input 1 has no vector: the answer skips from 0 to 2.
        let missing =
            r#"{ "data": [ { "index": 0, "embedding": [1] }, { "index": 2, "embedding": [3] } ] }"#;
        assert_eq!(
            parse(&Response::new(200, missing)),
            Err(ProviderError::Other(
                "the embeddings response has a vector for input 2 among 2 vectors".into()
            ))
        );
        let twice =
            r#"{ "data": [ { "index": 0, "embedding": [1] }, { "index": 0, "embedding": [2] } ] }"#;
        assert_eq!(
            parse(&Response::new(200, twice)),
            Err(ProviderError::Other(
                "the embeddings response has two vectors for input 0".into()
            ))
        );
    }

    #[test]
    fn malformed_answers() {
        let base64 = r#"{ "data": [ { "index": 0, "embedding": "AAAAAA==" } ] }"#;
        assert!(matches!(
            parse(&Response::new(200, base64)),
            Err(ProviderError::Other(m)) if m.starts_with("malformed embeddings response: ")
        ));
        assert!(matches!(
            parse(&Response::new(200, "<html>")),
            Err(ProviderError::Other(m)) if m.starts_with("malformed embeddings response: ")
        ));
    }

    #[test]
    fn errors_as_for_chat() {
        let error = |kind: &str, code: Option<&str>, message: &str| {
            json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })
                .to_string()
        };
        assert_eq!(
            parse(&Response::new(
                401,
                error(
                    "invalid_request_error",
                    Some("invalid_api_key"),
                    "Incorrect API key provided"
                )
            )),
            Err(ProviderError::Auth("Incorrect API key provided".into()))
        );
        assert_eq!(
            parse(&Response::new(
                400,
                error(
                    "invalid_request_error",
                    None,
                    "This model does not support specifying dimensions."
                )
            )),
            Err(ProviderError::InvalidRequest(
                "This model does not support specifying dimensions.".into()
            ))
        );
        let limited = Response::new(
            429,
            error(
                "requests",
                Some("rate_limit_exceeded"),
                "Rate limit reached",
            ),
        )
        .with_header("retry-after", "17");
        assert_eq!(parse(&limited), Err(ProviderError::RateLimited(Some(17))));
        assert_eq!(
            parse(&Response::new(503, "")),
            Err(ProviderError::Overloaded)
        );
        // An error document that came with a 200.
        assert_eq!(
            parse(&Response::new(
                200,
                error("invalid_request_error", None, "input is too long")
            )),
            Err(ProviderError::InvalidRequest("input is too long".into()))
        );
    }
}
