//! `GET /metrics`: the Prometheus text exposition of the router's counters, optionally
//! behind a bearer token (`metrics.bearer_token`).

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::AppState;

pub async fn scrape(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let expected = &state.config.metrics.bearer_token;
    if !expected.is_empty() && !authorized(&headers, expected) {
        return (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                "Bearer realm=\"switchyard metrics\"",
            )],
            "a bearer token is required\n",
        )
            .into_response();
    }
    // The process collector reads /proc: keep that file I/O off the async workers.
    let metrics = state.metrics.clone();
    match tokio::task::spawn_blocking(move || metrics.render()).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                switchyard_stats::metrics::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// `Authorization: Bearer <expected>` (the scheme is case-insensitive, RFC 7235 2.1).
fn authorized(headers: &HeaderMap, expected: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && constant_time_eq(token.trim(), expected)
}

/// Compares without stopping at the first difference, so response timing does not reveal
/// how much of a guess was right.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn bearer_token_check() {
        assert!(authorized(&with_auth("Bearer t0k"), "t0k"));
        assert!(authorized(&with_auth("bearer t0k"), "t0k"));
        assert!(!authorized(&with_auth("Bearer t0k2"), "t0k"));
        assert!(!authorized(&with_auth("Bearer t0"), "t0k"));
        assert!(!authorized(&with_auth("Basic dDBr"), "t0k"));
        assert!(!authorized(&with_auth("t0k"), "t0k"));
        assert!(!authorized(&HeaderMap::new(), "t0k"));
    }
}
