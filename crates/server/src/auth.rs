//! Who may do what: turning access tokens into a join (identity, name, permissions) or an
//! admin caller, and development mode's token route.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use switchyard_router::{Joiner, Permissions};
use switchyard_signal::token::{
    mint, unix_now, ApiKeys, Claims, Grant, DEV_API_KEY, DEV_API_SECRET,
};
use switchyard_signal::{validate_display_name, validate_identity, ErrorCode, SessionLimits};

use crate::AppState;

/// Why a join was refused, as the client hears it.
#[derive(Debug)]
pub struct JoinRefused {
    pub code: ErrorCode,
    pub message: String,
}

/// Checks a `join`'s token for `room` and says who joins: the identity is the token's
/// `sub`, the name its `name` claim or else the one in the message.
pub fn authorize_join(
    keys: &ApiKeys,
    token: Option<&str>,
    room: &str,
    name: &str,
    limits: &SessionLimits,
    now: u64,
) -> Result<Joiner, JoinRefused> {
    let unauthorized = |message: String| JoinRefused {
        code: ErrorCode::Unauthorized,
        message,
    };
    let token = token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthorized("`join` needs an access token (`token`)".into()))?;
    let claims = keys
        .verify(token, now)
        .map_err(|e| unauthorized(e.to_string()))?;
    if !claims.grant.allows_join(room) {
        return Err(unauthorized(format!(
            "the token does not grant joining room `{room}`"
        )));
    }
    if claims.sub.is_empty() {
        return Err(unauthorized("the token has no identity (`sub`)".into()));
    }
    // Claims reach every participant's screen and the logs: the same rules as typed names.
    validate_identity(&claims.sub, limits.max_identity_bytes)
        .map_err(|e| unauthorized(format!("the token's identity (`sub`) {e}")))?;
    let name = match claims.name.filter(|n| !n.trim().is_empty()) {
        Some(claimed) => {
            validate_display_name(&claimed, limits.max_display_name_bytes)
                .map_err(|e| unauthorized(format!("the token's `name` {e}")))?;
            claimed
        }
        None => name.to_owned(),
    };
    Ok(Joiner {
        local: false,
        name,
        identity: claims.sub,
        permissions: Permissions {
            can_publish: claims.grant.can_publish,
            can_subscribe: claims.grant.can_subscribe,
            can_publish_data: claims.grant.can_publish_data,
        },
    })
}

#[derive(Debug, Deserialize)]
pub struct DevTokenQuery {
    room: Option<String>,
    identity: Option<String>,
    name: Option<String>,
}

/// `GET /dev/token?room=R&identity=I[&name=N]` (development mode only): a join token
/// signed with the well-known development key.
pub async fn dev_token(
    State(app): State<AppState>,
    Query(query): Query<DevTokenQuery>,
) -> Response {
    let (Some(room), Some(identity)) = (
        query.room.filter(|r| !r.is_empty()),
        query.identity.filter(|i| !i.is_empty()),
    ) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": {
                "code": "bad_request",
                "message": "query parameters `room` and `identity` are required",
            }})),
        )
            .into_response();
    };
    let limits = app.config.session_limits();
    let name = query.name.filter(|n| !n.trim().is_empty());
    let checked = validate_identity(&identity, limits.max_identity_bytes)
        .map_err(|e| format!("`identity` {e}"))
        .and_then(|()| match &name {
            Some(name) => validate_display_name(name, limits.max_display_name_bytes)
                .map_err(|e| format!("`name` {e}")),
            None => Ok(()),
        });
    if let Err(message) = checked {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": {"code": "bad_request", "message": message}})),
        )
            .into_response();
    }
    let mut claims = Claims::new(
        DEV_API_KEY,
        &identity,
        unix_now(),
        app.config.auth.dev_token_ttl_secs,
    )
    .with_grant(Grant::join(room.clone()));
    claims.name = name;
    let token = mint(&claims, DEV_API_SECRET);
    Json(serde_json::json!({
        "token": token,
        "room": room,
        "identity": identity,
        "expires_at": claims.exp,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_900_000_000;

    fn keys() -> ApiKeys {
        ApiKeys::new([("k".to_owned(), "s".repeat(32))])
    }

    fn token(grant: Grant, name: Option<&str>) -> String {
        let mut claims = Claims::new("k", "ada", NOW, 60).with_grant(grant);
        claims.name = name.map(str::to_owned);
        mint(&claims, &"s".repeat(32))
    }

    #[test]
    fn a_good_token_says_who_joins() {
        let joiner = authorize_join(
            &keys(),
            Some(&token(Grant::join("r"), Some("Ada L."))),
            "r",
            "typed",
            &SessionLimits::default(),
            NOW,
        )
        .unwrap();
        assert_eq!(joiner.identity, "ada");
        assert_eq!(joiner.name, "Ada L.");
        assert_eq!(joiner.permissions, Permissions::default());
        let joiner = authorize_join(
            &keys(),
            Some(&token(Grant::join("r"), None)),
            "r",
            "typed",
            &SessionLimits::default(),
            NOW,
        )
        .unwrap();
        assert_eq!(
            joiner.name, "typed",
            "the message's name without a name claim"
        );
        let no_publish = Grant {
            can_publish: false,
            ..Grant::join("r")
        };
        let joiner = authorize_join(
            &keys(),
            Some(&token(no_publish, None)),
            "r",
            "x",
            &SessionLimits::default(),
            NOW,
        )
        .unwrap();
        assert!(!joiner.permissions.can_publish && joiner.permissions.can_subscribe);
    }

    #[test]
    fn refusals_are_unauthorized_and_say_why() {
        let cases = [
            (None, "needs an access token"),
            (
                Some(token(Grant::join("other"), None)),
                "does not grant joining room `r`",
            ),
            (
                Some(token(
                    Grant {
                        room_join: false,
                        ..Grant::join("r")
                    },
                    None,
                )),
                "does not grant joining",
            ),
            (Some("garbage".to_owned()), "not a well-formed JWT"),
        ];
        for (token, why) in cases {
            let e = authorize_join(
                &keys(),
                token.as_deref(),
                "r",
                "x",
                &SessionLimits::default(),
                NOW,
            )
            .unwrap_err();
            assert_eq!(e.code, ErrorCode::Unauthorized);
            assert!(e.message.contains(why), "{} / {why}", e.message);
        }
        let expired = authorize_join(
            &keys(),
            Some(&token(Grant::join("r"), None)),
            "r",
            "x",
            &SessionLimits::default(),
            NOW + 61,
        )
        .unwrap_err();
        assert!(expired.message.contains("expired"), "{}", expired.message);
    }

    #[test]
    fn claims_obey_the_rules_of_typed_names() {
        let limits = SessionLimits::default();
        let signed = |identity: &str, name: Option<&str>| {
            let mut claims = Claims::new("k", identity, NOW, 60).with_grant(Grant::join("r"));
            claims.name = name.map(str::to_owned);
            mint(&claims, &"s".repeat(32))
        };
        let refused = [
            signed("ada", Some(&"x".repeat(40_000))),
            signed("ada", Some("Ada\nadmin joined")),
            signed("ada", Some("\u{1b}[2J\u{1b}[31mAda")),
            signed("ada\nfake log line", None),
            signed("a\u{1b}[0m", None),
            signed(&"a".repeat(129), None),
        ];
        for token in refused {
            let e = authorize_join(&keys(), Some(&token), "r", "typed", &limits, NOW).unwrap_err();
            assert_eq!(e.code, ErrorCode::Unauthorized);
            assert!(e.message.contains("the token's"), "{}", e.message);
        }
        let fine = signed("ada@example.org", Some("Ada L."));
        assert!(authorize_join(&keys(), Some(&fine), "r", "typed", &limits, NOW).is_ok());
    }
}
