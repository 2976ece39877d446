//! A reply, as a request to the service's `reply_url`, and what the service answered.
//!
//! `POST {reply_url}` with `idempotency-key: <key>` and
//!
//! ```json
//! {"chat": "c-1", "text": "...", "reply_to": null, "thread": "t-1", "idempotency_key": "..."}
//! ```
//!
//! A 2xx answer is success; its JSON `id`, if any, is the id of the message the service made.

use kelp_sdk::channel::{Action, ChannelError, Outcome};
use kelp_sdk::http::{Request, Response};
use serde_json::{Value, json};

/// Longest part of a service's error body kept in an outcome's text.
const MAX_DESCRIPTION_CHARS: usize = 300;

/// The requests that carry out `action`: one for a send, none for anything else.
pub fn prepare(action: &Action, reply_url: Option<&str>) -> Result<Vec<Request>, ChannelError> {
    let Action::Send(outbound) = action else {
        // `describe` offers no edits, typing or buttons, so the host does not ask for them; and
        // the service is set up by its operator, not through an API, so setting up is nothing.
        return Ok(Vec::new());
    };
    let reply_url = reply_url
        .ok_or_else(|| ChannelError::Invalid("the instance's config has no `reply_url`".into()))?;
    let body = json!({
        "chat": outbound.chat.id,
        "text": outbound.text,
        "reply_to": outbound.reply_to,
        "thread": outbound.chat.thread,
        "idempotency_key": outbound.idempotency_key,
    });
    Ok(vec![
        Request::post(reply_url)
            .header("idempotency-key", outbound.idempotency_key.as_str())
            .json(&body),
    ])
}

/// What the service's answer to a reply means.
pub fn read_response(response: &Response) -> Outcome {
    if response.is_success() {
        let id = response
            .json::<Value>()
            .ok()
            .and_then(|answer| match answer.get("id")? {
                Value::String(id) => Some(id.clone()),
                Value::Number(id) => Some(id.to_string()),
                _ => None,
            });
        return Outcome::Done(id);
    }
    let retry_after = response
        .header("retry-after")
        .and_then(|value| value.trim().parse().ok());
    Outcome::from_status(response.status, retry_after, &shorten(&response.text()))
}

/// `text` on one line, cut to [`MAX_DESCRIPTION_CHARS`].
fn shorten(text: &str) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(MAX_DESCRIPTION_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use kelp_sdk::channel::{Button, Chat, Edit, Outbound, Setup, TextFormat};

    use super::*;

    const URL: &str = "https://chat.example.com/kelp/replies";

    fn reply() -> Action {
        Action::Send(Outbound {
            chat: Chat {
                id: "c-1".into(),
                thread: Some("t-9".into()),
            },
            text: "a < b & c".into(),
            format: TextFormat::Plain,
            reply_to: Some("m-1".into()),
            buttons: vec![vec![Button {
                label: "ignored".into(),
                data: "x".into(),
            }]],
            idempotency_key: "run-5/part-0".into(),
        })
    }

    #[test]
    fn a_reply_is_one_post_with_its_idempotency_key() {
        let requests = prepare(&reply(), Some(URL)).unwrap();
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert_eq!(
            (request.method.as_str(), request.url.as_str()),
            ("POST", URL)
        );
        assert_eq!(
            request.headers,
            [
                ("idempotency-key".to_owned(), "run-5/part-0".to_owned()),
                ("content-type".to_owned(), "application/json".to_owned()),
            ]
        );
        let body: Value = serde_json::from_slice(request.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({
                "chat": "c-1",
                "text": "a < b & c",
                "reply_to": "m-1",
                "thread": "t-9",
                "idempotency_key": "run-5/part-0",
            })
        );

        let Action::Send(mut plain) = reply() else {
            unreachable!()
        };
        plain.chat.thread = None;
        plain.reply_to = None;
        let request = &prepare(&Action::Send(plain), Some(URL)).unwrap()[0];
        let body: Value = serde_json::from_slice(request.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            (&body["reply_to"], &body["thread"]),
            (&Value::Null, &Value::Null)
        );

        assert!(matches!(
            prepare(&reply(), None),
            Err(ChannelError::Invalid(why)) if why.contains("reply_url")
        ));
    }

    #[test]
    fn nothing_else_sends_anything() {
        for action in [
            Action::Edit(Edit {
                chat: Chat::new("c-1"),
                message_id: "r-1".into(),
                text: "more".into(),
                format: TextFormat::Plain,
            }),
            Action::Typing(Chat::new("c-1")),
            Action::AnswerPress("p-1".into()),
            Action::Setup(Setup::Identify),
            Action::Setup(Setup::UsePolling),
            Action::Setup(Setup::UseWebhook(
                "https://kelp.example/hooks/channels/2".into(),
            )),
        ] {
            assert_eq!(prepare(&action, None).unwrap(), Vec::new(), "{action:?}");
        }
    }

    #[test]
    fn answers() {
        let answer = |status, body: &str| read_response(&Response::new(status, body));
        assert_eq!(
            answer(200, r#"{"id": "r-7"}"#),
            Outcome::Done(Some("r-7".into()))
        );
        assert_eq!(answer(201, r#"{"id": 8}"#), Outcome::Done(Some("8".into())));
        assert_eq!(answer(204, ""), Outcome::Done(None));
        assert_eq!(answer(200, "thanks"), Outcome::Done(None));
        assert_eq!(
            read_response(&Response::new(429, "slow down").with_header("Retry-After", " 30 ")),
            Outcome::RateLimited(30)
        );
        assert_eq!(
            answer(401, "bad token"),
            Outcome::Unauthorized("HTTP 401: bad token".into())
        );
        assert_eq!(
            answer(503, "<html>\n  <h1>Unavailable</h1>\n</html>"),
            Outcome::Transient("HTTP 503: <html> <h1>Unavailable</h1> </html>".into())
        );
        assert_eq!(
            answer(422, r#"{"error": "unknown chat"}"#),
            Outcome::Failed(r#"HTTP 422: {"error": "unknown chat"}"#.into())
        );
        let long = answer(500, &"x".repeat(5000));
        assert!(
            matches!(&long, Outcome::Transient(text) if text.chars().count() < 320),
            "{long:?}"
        );
    }
}
