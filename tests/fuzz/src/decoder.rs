//! The check every provider decoder must pass, whatever the vendor (or a proxy, or an attacker
//! in its place) sends.

use kelp_sdk::provider::{Decoder, ProviderError, StreamEvent};

use crate::{Cut, assert_prefix};

/// Statuses other than 200 a response may have; 2xx ones must decode like 200.
const OTHER_STATUSES: [u16; 16] = [
    201, 204, 206, 299, 301, 400, 401, 403, 404, 408, 413, 422, 429, 500, 503, 529,
];

/// A response as the fuzzer made it.
///
/// Layout of the fuzzer's bytes: one status byte (below 0xc0 means 200, the rest pick one of
/// [`OTHER_STATUSES`]), then a [`Cut`] of the body.
pub struct Response<'a> {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub cut: Cut<'a>,
}

impl<'a> Response<'a> {
    pub fn new(data: &'a [u8]) -> Option<Response<'a>> {
        let (&selector, rest) = data.split_first()?;
        let status = match selector.checked_sub(0xc0) {
            None => 200,
            Some(i) => OTHER_STATUSES[usize::from(i) % OTHER_STATUSES.len()],
        };
        let headers = vec![
            ("content-type".to_owned(), "text/event-stream".to_owned()),
            ("retry-after".to_owned(), "7".to_owned()),
        ];
        Some(Response {
            status,
            headers,
            cut: Cut::new(rest)?,
        })
    }
}

/// What the host sees of one response: the events it was given, and the error that ended the
/// stream, if one did. The host stops calling the decoder at the first error.
#[derive(Debug, PartialEq)]
pub struct Outcome {
    pub events: Vec<StreamEvent>,
    pub error: Option<ProviderError>,
}

/// Feeds `pieces` to a fresh decoder the way the host does, then finishes it.
pub fn decode<'p, D: Decoder>(
    response: &Response,
    pieces: impl IntoIterator<Item = &'p [u8]>,
) -> Outcome {
    let mut decoder = D::new(response.status, response.headers.clone());
    let mut events = Vec::new();
    for piece in pieces {
        match decoder.feed(piece) {
            Ok(more) => events.extend(more),
            Err(error) => {
                return Outcome {
                    events,
                    error: Some(error),
                };
            }
        }
    }
    let error = match decoder.finish() {
        Ok(more) => {
            events.extend(more);
            None
        }
        Err(error) => Some(error),
    };
    Outcome { events, error }
}

/// Decodes the response whole, cut where the fuzzer chose and byte by byte, and asserts:
/// - a stream that decodes without error decodes to the same events in every chunking;
/// - one that fails, fails with the same error in every chunking, and the events delivered
///   before it are a prefix of those the byte-by-byte run delivered (a failing `feed` returns
///   no events, so a larger chunk may deliver fewer — never others);
/// - an error status is an error, with no events;
/// - a tool call's arguments never come before its start, and no text delta is empty.
pub fn check<D: Decoder>(data: &[u8]) {
    let Some(response) = Response::new(data) else {
        return;
    };
    let whole = decode::<D>(&response, [response.cut.body]);
    let cut = decode::<D>(&response, response.cut.pieces());
    let bytes = decode::<D>(&response, response.cut.bytes());

    for outcome in [&whole, &cut, &bytes] {
        check_events(&outcome.events);
    }
    if !(200..300).contains(&response.status) {
        assert!(
            whole.events.is_empty() && whole.error.is_some(),
            "HTTP {} decoded as {whole:?}",
            response.status
        );
    }
    if whole.error.is_none() {
        assert_eq!(cut, whole, "cut at the fuzzer's positions");
        assert_eq!(bytes, whole, "fed byte by byte");
    } else {
        assert_eq!(cut.error, whole.error, "cut at the fuzzer's positions");
        assert_eq!(bytes.error, whole.error, "fed byte by byte");
        assert_prefix(&whole.events, &bytes.events, "whole vs byte by byte");
        assert_prefix(&cut.events, &bytes.events, "cut vs byte by byte");
    }
}

fn check_events(events: &[StreamEvent]) {
    let mut started = Vec::new();
    for event in events {
        match event {
            StreamEvent::TextDelta(text) | StreamEvent::RefusalDelta(text) => {
                assert!(!text.is_empty(), "empty text delta in {events:?}");
            }
            StreamEvent::ToolCallStart(start) => started.push(start.index),
            StreamEvent::ToolCallDelta(delta) => assert!(
                started.contains(&delta.index),
                "arguments for call {} before its start: {events:?}",
                delta.index
            ),
            StreamEvent::Usage(_) | StreamEvent::Finish(_) => {}
        }
    }
}
