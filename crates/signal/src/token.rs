//! Access tokens: JWTs (HS256) signed with the secret of an API key, in the spirit of
//! LiveKit's. The issuer (`iss`) names the API key, so a server with several keys knows
//! which secret checks the signature; `sub` is the participant's identity; the `grant`
//! says what the holder may do.
//!
//! Sans-IO like the rest of this crate: minting and checking take `now` (Unix seconds)
//! from the caller, so tests cover expiry without waiting.

use std::collections::BTreeMap;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The key name and secret of development mode: well known, so never for production.
pub const DEV_API_KEY: &str = "devkey";
pub const DEV_API_SECRET: &str = "secret";

/// What a token allows. `can_publish`, `can_subscribe` and `can_publish_data` default to
/// true when absent (a plain join token publishes and subscribes); the rest to false.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Grant {
    /// The room this grant is for (`room_join`, `room_admin`). With `room_admin` and no
    /// room, the holder administers every room.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    pub room_join: bool,
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub can_publish_data: bool,
    /// Manage participants and tracks of `room` through the admin API.
    pub room_admin: bool,
    /// Create and delete rooms.
    pub room_create: bool,
    /// List rooms and read their details.
    pub room_list: bool,
}

impl Default for Grant {
    fn default() -> Self {
        Grant {
            room: None,
            room_join: false,
            can_publish: true,
            can_subscribe: true,
            can_publish_data: true,
            room_admin: false,
            room_create: false,
            room_list: false,
        }
    }
}

impl Grant {
    /// Joining `room`, publishing and subscribing.
    pub fn join(room: impl Into<String>) -> Grant {
        Grant {
            room: Some(room.into()),
            room_join: true,
            ..Grant::default()
        }
    }

    /// Whether this grant lets its holder join `room`.
    pub fn allows_join(&self, room: &str) -> bool {
        self.room_join && self.room.as_deref() == Some(room)
    }

    /// Whether this grant administers `room` (its participants and tracks).
    pub fn administers(&self, room: &str) -> bool {
        self.room_admin && self.room.as_deref().is_none_or(|r| r == room)
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The API key whose secret signed the token.
    pub iss: String,
    /// The participant's identity (unique within a room). Empty for tokens that only
    /// call the admin API.
    #[serde(default)]
    pub sub: String,
    /// Display name; the `join` message's name is used when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Expiry and start of validity, Unix seconds.
    pub exp: u64,
    #[serde(default)]
    pub nbf: u64,
    #[serde(default)]
    pub grant: Grant,
    /// Webhook requests: hex SHA-256 of the body this token vouches for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl Claims {
    /// Claims for `identity`, valid from `now` for `ttl_secs`, granting nothing beyond
    /// the defaults until a grant is set.
    pub fn new(api_key: &str, identity: &str, now: u64, ttl_secs: u64) -> Claims {
        Claims {
            iss: api_key.to_owned(),
            sub: identity.to_owned(),
            name: None,
            exp: now.saturating_add(ttl_secs),
            nbf: now,
            grant: Grant::default(),
            sha256: None,
        }
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Claims {
        self.name = Some(name.into());
        self
    }

    pub fn with_grant(mut self, grant: Grant) -> Claims {
        self.grant = grant;
        self
    }
}

/// Why a token was refused. The message is safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT: {0}")]
    Malformed(String),
    #[error("the token must be signed with HS256")]
    UnsupportedAlgorithm,
    #[error("the token's issuer `{0}` is not a configured API key")]
    UnknownKey(String),
    #[error("the token's signature does not match its API key")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
}

/// Signs `claims` with `secret` (the secret of the API key named in `claims.iss`).
pub fn mint(claims: &Claims, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing of serializable claims cannot fail")
}

/// The configured API keys (key name to secret); checks tokens against them.
#[derive(Clone, Default)]
pub struct ApiKeys {
    secrets: BTreeMap<String, String>,
}

impl std::fmt::Debug for ApiKeys {
    // Never print secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.secrets.keys()).finish()
    }
}

impl ApiKeys {
    pub fn new(keys: impl IntoIterator<Item = (String, String)>) -> ApiKeys {
        ApiKeys {
            secrets: keys.into_iter().collect(),
        }
    }

    pub fn secret(&self, key: &str) -> Option<&str> {
        self.secrets.get(key).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Any one key, for what the server signs itself (webhooks): the first by name.
    pub fn first(&self) -> Option<(&str, &str)> {
        self.secrets
            .iter()
            .next()
            .map(|(k, s)| (k.as_str(), s.as_str()))
    }

    /// Checks `token`'s signature against the secret of its issuer and its validity at
    /// `now` (Unix seconds), and returns its claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        // Read the issuer first (unverified) to know which secret to check with.
        let mut peek = Validation::new(Algorithm::HS256);
        peek.insecure_disable_signature_validation();
        peek.validate_exp = false;
        peek.required_spec_claims.clear();
        let unverified =
            jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&[]), &peek)
                .map_err(|e| TokenError::Malformed(e.to_string()))?;
        let issuer = unverified.claims.iss;
        let secret = self
            .secret(&issuer)
            .ok_or_else(|| TokenError::UnknownKey(issuer.clone()))?;

        // Times are checked below against the caller's `now`, with distinct errors.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(secret.as_bytes()),
            &validation,
        )
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
            _ => TokenError::Malformed(e.to_string()),
        })?
        .claims;
        if now >= claims.exp {
            return Err(TokenError::Expired);
        }
        if now < claims.nbf {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }
}

/// Seconds since the Unix epoch, for callers that use the real clock.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn keys() -> ApiKeys {
        ApiKeys::new([
            ("k1".to_owned(), "secret-one".to_owned()),
            ("k2".to_owned(), "secret-two".to_owned()),
        ])
    }

    fn token(key: &str, secret: &str, nbf: u64, exp: u64) -> String {
        let mut claims = Claims::new(key, "alice", nbf, exp - nbf)
            .with_name("Alice")
            .with_grant(Grant::join("r1"));
        claims.nbf = nbf;
        mint(&claims, secret)
    }

    #[test]
    fn round_trip_with_either_key() {
        for (key, secret) in [("k1", "secret-one"), ("k2", "secret-two")] {
            let claims = keys()
                .verify(&token(key, secret, NOW - 10, NOW + 60), NOW)
                .unwrap();
            assert_eq!(claims.iss, key);
            assert_eq!(claims.sub, "alice");
            assert_eq!(claims.name.as_deref(), Some("Alice"));
            assert!(claims.grant.allows_join("r1"));
            assert!(!claims.grant.allows_join("r2"));
            assert!(claims.grant.can_publish && claims.grant.can_subscribe);
            assert!(!claims.grant.room_admin);
        }
    }

    #[test]
    fn each_kind_of_bad_token_has_its_error() {
        let keys = keys();
        let cases = [
            (
                token("k1", "secret-one", NOW - 100, NOW - 1),
                TokenError::Expired,
            ),
            (
                token("k1", "secret-one", NOW + 30, NOW + 90),
                TokenError::NotYetValid,
            ),
            (
                token("k1", "secret-two", NOW - 1, NOW + 60),
                TokenError::BadSignature,
            ),
            (
                token("nobody", "secret-one", NOW - 1, NOW + 60),
                TokenError::UnknownKey("nobody".into()),
            ),
        ];
        for (token, want) in cases {
            assert_eq!(keys.verify(&token, NOW), Err(want));
        }
        assert!(matches!(
            keys.verify("not.a.jwt", NOW),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            keys.verify("", NOW),
            Err(TokenError::Malformed(_))
        ));
        // A token with its payload swapped keeps its signature but no longer matches it.
        let good = token("k1", "secret-one", NOW - 1, NOW + 60);
        let other = mint(
            &Claims::new("k1", "mallory", NOW, 60).with_grant(Grant::join("r1")),
            "guess",
        );
        let parts: Vec<&str> = good.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            other.split('.').nth(1).unwrap(),
            parts[2]
        );
        assert_eq!(keys.verify(&forged, NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn missing_grant_fields_take_their_defaults() {
        let grant: Grant = serde_json::from_str(r#"{"room": "r", "room_join": true}"#).unwrap();
        assert!(grant.can_publish && grant.can_subscribe && grant.can_publish_data);
        assert!(!grant.room_admin && !grant.room_create && !grant.room_list);
        let grant: Grant = serde_json::from_str(r#"{"can_publish": false}"#).unwrap();
        assert!(!grant.can_publish && !grant.room_join);
    }

    #[test]
    fn room_admin_scope() {
        let everywhere = Grant {
            room_admin: true,
            ..Grant::default()
        };
        assert!(everywhere.administers("a") && everywhere.administers("b"));
        let one = Grant {
            room: Some("a".into()),
            room_admin: true,
            ..Grant::default()
        };
        assert!(one.administers("a") && !one.administers("b"));
        assert!(!Grant::join("a").administers("a"));
    }

    #[test]
    fn debug_never_shows_secrets() {
        assert!(!format!("{:?}", keys()).contains("secret"));
    }
}
