//! `GET /metrics`: Prometheus text exposition of HTTP requests and latency and plugin calls.
//! Hand-written: a few counters and one histogram do not need a metrics framework.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct RouteStats {
    by_status: BTreeMap<Cow<'static, str>, u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
}

/// HTTP request metrics. Every label comes from a fixed set, because anyone can send a
/// request: the method from [`method_label`], the route as the matched template (never the
/// raw path, whose ids would make the label set unbounded) or `unmatched`, and the status
/// from [`status_label`]. The map therefore has at most (methods × routes) entries whatever
/// clients send.
#[derive(Default)]
pub struct HttpMetrics {
    routes: Mutex<BTreeMap<(&'static str, String), RouteStats>>,
}

/// The standard methods by name; any other token (HTTP allows arbitrary ones, of any
/// length) is counted as `other`.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map(Method::as_str)
        .unwrap_or("other")
}

/// The status as its code when it is one HTTP names (a fixed list of about sixty), else its
/// class (`1xx` … `5xx`): a status is chosen by Kelp's own code today, but the label set
/// should not depend on every handler staying that way.
fn status_label(status: StatusCode) -> Cow<'static, str> {
    if status.canonical_reason().is_some() {
        Cow::Owned(status.as_u16().to_string())
    } else {
        Cow::Borrowed(match status.as_u16() / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        })
    }
}

impl HttpMetrics {
    fn record(&self, method: &'static str, route: &str, status: StatusCode, seconds: f64) {
        let mut routes = self.routes.lock().expect("metrics lock");
        let stats = routes.entry((method, route.to_owned())).or_default();
        *stats.by_status.entry(status_label(status)).or_default() += 1;
        stats.count += 1;
        stats.sum_seconds += seconds;
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                stats.buckets[i] += 1;
            }
        }
    }
}

/// Middleware recording each request.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    state.metrics.record(
        method,
        &route,
        response.status(),
        start.elapsed().as_secs_f64(),
    );
    response
}

/// The exposition.
pub async fn render(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    out.push_str("# HELP kelp_http_requests_total HTTP requests by method, route and status.\n");
    out.push_str("# TYPE kelp_http_requests_total counter\n");
    let routes = state.metrics.routes.lock().expect("metrics lock");
    for ((method, route), stats) in routes.iter() {
        for (status, n) in &stats.by_status {
            let _ = writeln!(
                out,
                "kelp_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
    }
    out.push_str(
        "# HELP kelp_http_request_duration_seconds HTTP request latency by method and route.\n",
    );
    out.push_str("# TYPE kelp_http_request_duration_seconds histogram\n");
    for ((method, route), stats) in routes.iter() {
        let labels = format!("method=\"{method}\",route=\"{route}\"");
        for (bound, n) in BUCKETS.iter().zip(stats.buckets) {
            let _ = writeln!(
                out,
                "kelp_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "kelp_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
            stats.count
        );
        let _ = writeln!(
            out,
            "kelp_http_request_duration_seconds_sum{{{labels}}} {}",
            stats.sum_seconds
        );
        let _ = writeln!(
            out,
            "kelp_http_request_duration_seconds_count{{{labels}}} {}",
            stats.count
        );
    }
    drop(routes);
    let calls = state.runtime.stats();
    out.push_str("# HELP kelp_plugin_calls_total Tool calls by outcome: ok, tool_error (the plugin's own), stopped (trap or limit), refused.\n");
    out.push_str("# TYPE kelp_plugin_calls_total counter\n");
    for (outcome, n) in [
        ("ok", &calls.ok),
        ("tool_error", &calls.tool_errors),
        ("stopped", &calls.stopped),
        ("refused", &calls.refused),
    ] {
        let _ = writeln!(
            out,
            "kelp_plugin_calls_total{{outcome=\"{outcome}\"}} {}",
            n.load(Relaxed)
        );
    }
    out.push_str(
        "# HELP kelp_plugin_traps_total Tool calls the host stopped (traps, budgets, limits).\n",
    );
    out.push_str("# TYPE kelp_plugin_traps_total counter\n");
    let _ = writeln!(
        out,
        "kelp_plugin_traps_total {}",
        calls.stopped.load(Relaxed)
    );
    out.push_str("# HELP kelp_runs_total Agent runs started since the process started.\n");
    out.push_str("# TYPE kelp_runs_total counter\n");
    let _ = writeln!(out, "kelp_runs_total {}", state.agent.runs_total());
    let (kept, read) = state.agent.history_sources();
    out.push_str(
        "# HELP kelp_run_history_total Runs by where their conversation came from: kept in \
         memory from the session's last run, or read from the database.\n",
    );
    out.push_str("# TYPE kelp_run_history_total counter\n");
    let _ = writeln!(out, "kelp_run_history_total{{source=\"memory\"}} {kept}");
    let _ = writeln!(out, "kelp_run_history_total{{source=\"database\"}} {read}");
    out.push_str(
        "# HELP kelp_event_channels Session event channels open: sessions with a run in \
         progress on this host or a subscriber.\n",
    );
    out.push_str("# TYPE kelp_event_channels gauge\n");
    let _ = writeln!(out, "kelp_event_channels {}", state.agent.open_channels());
    if let Some(waited) = state.agent.db().sqlite_writes_waited() {
        out.push_str(
            "# HELP kelp_sqlite_writes_waited_total Agent-loop writes that found SQLite's write \
             lock held by another connection and waited for it off the async runtime.\n",
        );
        out.push_str("# TYPE kelp_sqlite_writes_waited_total counter\n");
        let _ = writeln!(out, "kelp_sqlite_writes_waited_total {waited}");
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
