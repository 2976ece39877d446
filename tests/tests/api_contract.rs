//! The OpenAPI document is the contract: what every route answers to the bad requests any
//! client can send — a body that is not JSON, not `application/json`, or not of the shape; a
//! query parameter that is not a number or out of range; a path segment that is not UTF-8 —
//! is a status the document lists for that route, with the error envelope. The same classes
//! `scripts/api-fuzz.sh` (schemathesis) found undocumented; this test keeps them documented
//! without Python.

use kelp_tests::server::{Backend, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A request to try: URL, body (content type and text), and what is wrong with it.
type Probe = (String, Option<(&'static str, &'static str)>, &'static str);

/// Each operation of the document: method, path template and the operation object.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            out.push((method.to_uppercase(), path.clone(), operation.clone()));
        }
    }
    out
}

/// The path with every `{param}` replaced by `segment`.
fn fill(path: &str, segment: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}').unwrap() + start;
        out.push_str(&rest[..start]);
        out.push_str(segment);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn documented(operation: &Value, status: StatusCode) -> bool {
    operation["responses"].get(status.as_str()).is_some()
}

async fn send_raw(
    s: &TestServer,
    method: &str,
    url: &str,
    token: &str,
    body: Option<(&str, &str)>,
) -> (StatusCode, Value) {
    let mut req = s
        .http
        .request(method.parse().unwrap(), url)
        .bearer_auth(token);
    if let Some((content_type, body)) = body {
        req = req
            .header("content-type", content_type)
            .body(body.to_owned());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{method} {url} answered {status} without JSON: {text:?}"));
    (status, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_of_a_malformed_request_is_documented_for_its_route() {
    let s = TestServer::start(Backend::Sqlite).await;
    let token = s.setup_admin().await;
    let (_, doc) = s.send("GET", "/openapi.json", None, None).await;
    let mut checked = 0;
    for (method, path, operation) in operations(&doc) {
        // A path whose parameters are not valid UTF-8 (`%FF`), and one that is ordinary.
        let has_path_params = path.contains('{');
        let ordinary = s.url(&fill(&path, "x"));
        let mut probes: Vec<Probe> = Vec::new();
        if has_path_params {
            probes.push((
                s.url(&fill(&path, "%FF")),
                None,
                "a path segment that is not UTF-8",
            ));
        }
        let has_query = operation["parameters"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["in"] == "query"));
        if has_query {
            for parameter in operation["parameters"].as_array().unwrap() {
                if parameter["in"] != "query" {
                    continue;
                }
                let name = parameter["name"].as_str().unwrap();
                let bad = match parameter["schema"]["type"].as_str() {
                    Some("integer") => "-99999999999999999999999",
                    Some("boolean") => "maybe",
                    _ => continue,
                };
                probes.push((
                    format!("{ordinary}?{name}={bad}"),
                    None,
                    "a malformed query parameter",
                ));
            }
        }
        let has_json_body = operation["requestBody"]["content"]
            .get("application/json")
            .is_some();
        if has_json_body {
            probes.push((
                ordinary.clone(),
                Some(("application/json", "{")),
                "a body that is not JSON",
            ));
            probes.push((
                ordinary.clone(),
                Some(("text/plain", "{}")),
                "a body that is not application/json",
            ));
            probes.push((
                ordinary.clone(),
                Some(("application/json", "[null, null]")),
                "a body that is not an object",
            ));
            probes.push((
                ordinary.clone(),
                Some(("application/json", "{\"no such field\": 1}")),
                "a body of the wrong shape",
            ));
        }
        for (url, body, what) in probes {
            let (status, answer) = send_raw(&s, &method, &url, &token, body).await;
            if status.is_success() || status == StatusCode::SWITCHING_PROTOCOLS {
                // Some routes take any object (settings patch with no keys is refused, a
                // tool's input is the tool's to judge): a success is not a refusal to check.
                continue;
            }
            assert!(
                !status.is_server_error(),
                "{method} {path} with {what}: {status} {answer}"
            );
            assert!(
                documented(&operation, status),
                "{method} {path} with {what} answered {status}, which its document does not list: {answer}"
            );
            assert!(
                answer["error"]["code"].is_string() && answer["error"]["request_id"].is_string(),
                "{method} {path} with {what}: not the error envelope: {answer}"
            );
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} refusals checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_states_the_limits_the_handlers_enforce() {
    let s = TestServer::start(Backend::Sqlite).await;
    let token = s.setup_admin().await;
    // Page sizes are 1–200 as documented: out of range is refused, not quietly clamped.
    for query in [
        "limit=0",
        "limit=201",
        "offset=-1",
        "offset=9223372036854775808",
    ] {
        let (status, body) = s
            .send("GET", &format!("/api/agents?{query}"), Some(&token), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["code"], "invalid_query", "{body}");
    }
    let (status, body) = s
        .send("GET", "/api/agents?limit=200&offset=0", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, doc) = s.send("GET", "/openapi.json", None, None).await;
    let limit = doc["paths"]["/api/agents"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap()
        .clone();
    assert_eq!(limit["schema"]["minimum"], 1, "{limit}");
    assert_eq!(limit["schema"]["maximum"], 200, "{limit}");
    // What creating an agent refuses, the document says.
    let agent = &doc["components"]["schemas"]["NewAgentBody"]["properties"];
    assert_eq!(agent["name"]["maxLength"], 64, "{agent}");
    assert_eq!(agent["max_steps"]["minimum"], 1, "{agent}");
    assert_eq!(agent["max_steps"]["maximum"], 100, "{agent}");
    assert_eq!(agent["tools"]["uniqueItems"], true, "{agent}");
    let credentials = &doc["components"]["schemas"]["Credentials"]["properties"];
    assert_eq!(credentials["password"]["minLength"], 8, "{credentials}");
    assert_eq!(credentials["username"]["pattern"], "^[a-z0-9._-]{1,64}$");
    // The settings patch is the settings schema, not any object.
    let patch = &doc["paths"]["/api/settings"]["patch"]["requestBody"]["content"]["application/json"]
        ["schema"];
    assert_eq!(
        patch["$ref"], "#/components/schemas/SettingsPatch",
        "{patch}"
    );
    assert_eq!(
        doc["components"]["schemas"]["SettingsPatch"]["additionalProperties"],
        false
    );
    // JSON Schema counts 2.0 as an integer, so the API does.
    let (status, body) = s
        .send(
            "POST",
            "/api/invites/batch",
            Some(&token),
            Some(json!({"count": 2.0, "max_uses": 1.0})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 2, "{body}");
    let (status, _) = s
        .send(
            "POST",
            "/api/invites/batch",
            Some(&token),
            Some(json!({"count": 2.5})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // A display name at setup is checked like every other (it used to be stored unchecked).
    let fresh = TestServer::start(Backend::Sqlite).await;
    let (status, body) = fresh
        .send(
            "POST",
            "/api/auth/setup",
            None,
            Some(json!({"username": "admin", "password": "admin-password", "display_name": "x".repeat(101)})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}
