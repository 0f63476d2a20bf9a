//! The server's configuration: one typed tree, built once at start-up from the embedded
//! defaults, an optional TOML file, `SWITCHYARD_*` environment variables and flags, then
//! validated. Every error names the key at fault.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use switchyard_signal::token::{ApiKeys, DEV_API_KEY, DEV_API_SECRET};
use switchyard_signal::{IceServer, SessionLimits};

/// The embedded default configuration (`config/switchyard.toml`).
pub const DEFAULT_CONFIG: &str = include_str!("../../../config/switchyard.toml");

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "SWITCHYARD_";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub rtc: RtcConfig,
    pub data: DataConfig,
    pub signal: SignalConfig,
    pub room: RoomConfig,
    pub api: ApiConfig,
    pub auth: AuthConfig,
    pub webhook: WebhookConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    pub shutdown_timeout_ms: u64,
    pub http_header_timeout_ms: u64,
    pub http_request_timeout_ms: u64,
    pub max_unauthenticated_per_ip: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtcConfig {
    pub udp_ip: IpAddr,
    pub udp_port: u16,
    pub announce_ips: Vec<IpAddr>,
    pub include_loopback: bool,
    pub keyframe_request_interval_ms: u64,
    pub nack_buffer_packets: u16,
    pub nack_buffer_max_age_ms: u64,
    pub resend_history_packets: usize,
    pub nack_max_packets_per_request: u32,
    pub nack_max_resends_per_second: u32,
    pub nack_resend_interval_ms: u64,
    pub max_remote_candidates: usize,
    pub ice_restart_min_interval_ms: u64,
    pub max_publish_sections: usize,
    pub udp_buffer_bytes: usize,
    pub ice_servers: Vec<IceServer>,
}

/// `[data]`: the data channels' limits (see `switchyard_router::DataLimits`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub max_message_bytes: usize,
    pub reliable_queue_bytes: usize,
    pub lossy_queue_bytes: usize,
    pub sender_bytes_per_second: usize,
    pub slow_receiver_grace_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalConfig {
    pub max_message_bytes: usize,
    pub max_room_name_bytes: usize,
    pub max_display_name_bytes: usize,
    pub max_identity_bytes: usize,
    pub messages_per_second: u32,
    pub message_burst: u32,
    pub publish_offers_per_minute: u32,
    pub publish_offer_burst: u32,
    pub join_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomConfig {
    pub max_participants: usize,
    pub empty_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub dev_mode: bool,
    pub keys: Vec<ApiKeyConfig>,
    pub dev_token_ttl_secs: u64,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub key: String,
    pub secret: String,
}

impl std::fmt::Debug for ApiKeyConfig {
    // --print-config and logs must never show a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyConfig")
            .field("key", &self.key)
            .field("secret", &"<hidden>")
            .finish()
    }
}

/// Shortest secret accepted for a configured API key (HS256 wants at least 256 bits).
pub const MIN_SECRET_LEN: usize = 32;

/// `[webhook]`: where events are POSTed and how hard to try (see `webhook.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub urls: Vec<String>,
    /// Empty: the first of `auth.keys`, or the development key when there is none.
    pub api_key: String,
    pub timeout_ms: u64,
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub queue_size: usize,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// Empty: no token required.
    pub bearer_token: String,
}

/// Says whether a token is set, never the token (`--print-config` output gets pasted into
/// issues).
impl std::fmt::Debug for MetricsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = if self.bearer_token.is_empty() {
            ""
        } else {
            "<redacted>"
        };
        f.debug_struct("MetricsConfig")
            .field("enabled", &self.enabled)
            .field("bearer_token", &token)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub lines_per_second: u32,
    pub line_burst: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("unknown config key `{0}`")]
    UnknownKey(String),
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("environment variable {0} names no config key")]
    UnknownEnv(String),
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

/// Command-line values that override the config (the highest precedence).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub bind: Option<SocketAddr>,
    pub udp_port: Option<u16>,
    pub announce_ips: Vec<IpAddr>,
}

impl Config {
    /// The embedded defaults alone.
    pub fn embedded_default() -> Config {
        Config::load(None, std::iter::empty(), &Overrides::default())
            .expect("the embedded default config is valid")
    }

    /// Defaults, then `file`, then `env` (name, value) pairs, then `overrides`; validated.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut tree: toml::Table = DEFAULT_CONFIG.parse().expect("embedded default parses");
        if let Some(path) = file {
            let display = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: display.clone(),
                source,
            })?;
            let table: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Parse {
                        path: display,
                        message: e.to_string(),
                    })?;
            merge(&mut tree, table, "")?;
        }
        apply_env(&mut tree, env)?;
        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(tree))
            .map_err(|e| ConfigError::Invalid {
                key: e.path().to_string(),
                message: e.inner().message().to_owned(),
            })?;
        if let Some(bind) = overrides.bind {
            config.server.bind = bind;
        }
        if let Some(port) = overrides.udp_port {
            config.rtc.udp_port = port;
        }
        if !overrides.announce_ips.is_empty() {
            config.rtc.announce_ips = overrides.announce_ips.clone();
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| {
            Err(ConfigError::Invalid {
                key: key.to_owned(),
                message: message.to_owned(),
            })
        };
        if self.server.http_header_timeout_ms == 0 || self.server.http_request_timeout_ms == 0 {
            return invalid(
                "server.http_header_timeout_ms",
                "HTTP timeouts must be at least 1",
            );
        }
        if self.signal.max_message_bytes < 1024 {
            return invalid(
                "signal.max_message_bytes",
                "must be at least 1024 (an SDP needs room)",
            );
        }
        if self.signal.max_room_name_bytes == 0
            || self.signal.max_display_name_bytes == 0
            || self.signal.max_identity_bytes == 0
        {
            return invalid(
                "signal.max_room_name_bytes",
                "name limits must be at least 1",
            );
        }
        if self.signal.messages_per_second == 0 || self.signal.message_burst == 0 {
            return invalid("signal.messages_per_second", "must be at least 1");
        }
        if self.signal.publish_offers_per_minute == 0 || self.signal.publish_offer_burst == 0 {
            return invalid("signal.publish_offers_per_minute", "must be at least 1");
        }
        if self.signal.join_timeout_ms == 0 {
            return invalid("signal.join_timeout_ms", "must be at least 1");
        }
        if self.room.max_participants == 0 {
            return invalid("room.max_participants", "must be at least 1");
        }
        if self.rtc.nack_buffer_packets > 32768 {
            return invalid("rtc.nack_buffer_packets", "must be at most 32768");
        }
        if !(100..=30_000).contains(&self.rtc.nack_buffer_max_age_ms) {
            return invalid("rtc.nack_buffer_max_age_ms", "must be from 100 to 30000");
        }
        if !(16..=32768).contains(&self.rtc.resend_history_packets) {
            return invalid("rtc.resend_history_packets", "must be from 16 to 32768");
        }
        if self.rtc.nack_max_packets_per_request == 0 {
            return invalid("rtc.nack_max_packets_per_request", "must be at least 1");
        }
        if self.rtc.nack_resend_interval_ms > 10_000 {
            return invalid("rtc.nack_resend_interval_ms", "must be at most 10000");
        }
        if !(1..=256).contains(&self.rtc.max_remote_candidates) {
            return invalid("rtc.max_remote_candidates", "must be from 1 to 256");
        }
        if !(1..=256).contains(&self.rtc.max_publish_sections) {
            return invalid("rtc.max_publish_sections", "must be from 1 to 256");
        }
        if !(1024..=65535).contains(&self.data.max_message_bytes) {
            return invalid(
                "data.max_message_bytes",
                "must be from 1024 to 65535 (webrtc-rs handles no larger message)",
            );
        }
        if self.data.reliable_queue_bytes < self.data.max_message_bytes
            || self.data.lossy_queue_bytes < self.data.max_message_bytes
        {
            return invalid(
                "data.reliable_queue_bytes",
                "the data queues must hold at least one message of data.max_message_bytes",
            );
        }
        if self.data.sender_bytes_per_second < self.data.max_message_bytes {
            return invalid(
                "data.sender_bytes_per_second",
                "must be at least data.max_message_bytes",
            );
        }
        for server in &self.rtc.ice_servers {
            if server.urls.is_empty() {
                return invalid("rtc.ice_servers", "every ICE server needs at least one URL");
            }
        }
        for key in &self.auth.keys {
            if key.key.is_empty() {
                return invalid("auth.keys", "every API key needs a non-empty `key`");
            }
            if key.secret.len() < MIN_SECRET_LEN {
                return Err(ConfigError::Invalid {
                    key: "auth.keys".into(),
                    message: format!(
                        "the secret of API key `{}` is shorter than {MIN_SECRET_LEN} characters",
                        key.key
                    ),
                });
            }
        }
        if !self.auth.dev_mode && self.auth.keys.is_empty() {
            return invalid(
                "auth.keys",
                "dev mode is off and no API key is configured: nobody could join",
            );
        }
        // RFC 6750's token68 is narrower, but anything a client can put in a header line
        // after `Bearer ` without quoting works; whitespace would never match.
        if !self
            .metrics
            .bearer_token
            .bytes()
            .all(|b| b.is_ascii_graphic())
        {
            return invalid(
                "metrics.bearer_token",
                "must be printable ASCII without spaces",
            );
        }
        if self.log.lines_per_second == 0 || self.log.line_burst == 0 {
            return invalid("log.lines_per_second", "must be at least 1");
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return invalid("log.level", &e.to_string());
        }
        self.validate_webhook()?;
        Ok(())
    }

    /// The keys tokens are checked against: the configured ones, and the development key
    /// in dev mode.
    pub fn api_keys(&self) -> ApiKeys {
        let dev = self
            .auth
            .dev_mode
            .then(|| (DEV_API_KEY.to_owned(), DEV_API_SECRET.to_owned()));
        ApiKeys::new(
            self.auth
                .keys
                .iter()
                .map(|k| (k.key.clone(), k.secret.clone()))
                .chain(dev),
        )
    }

    pub fn udp_bind(&self) -> SocketAddr {
        SocketAddr::new(self.rtc.udp_ip, self.rtc.udp_port)
    }

    pub fn session_limits(&self) -> SessionLimits {
        SessionLimits {
            max_message_bytes: self.signal.max_message_bytes,
            max_room_name_bytes: self.signal.max_room_name_bytes,
            max_display_name_bytes: self.signal.max_display_name_bytes,
            max_identity_bytes: self.signal.max_identity_bytes,
            messages_per_second: self.signal.messages_per_second,
            message_burst: self.signal.message_burst,
            publish_offers_per_minute: self.signal.publish_offers_per_minute,
            publish_offer_burst: self.signal.publish_offer_burst,
        }
    }

    pub fn rtc_settings(&self) -> switchyard_router::RtcSettings {
        switchyard_router::RtcSettings {
            udp_bind: self.udp_bind(),
            announce_ips: self.rtc.announce_ips.clone(),
            include_loopback: self.rtc.include_loopback,
            keyframe_request_interval: Duration::from_millis(self.rtc.keyframe_request_interval_ms),
            nack_buffer_packets: self.rtc.nack_buffer_packets,
            nack_buffer_max_age: Duration::from_millis(self.rtc.nack_buffer_max_age_ms),
            resend_history_packets: self.rtc.resend_history_packets,
            nack_max_packets_per_request: self.rtc.nack_max_packets_per_request,
            nack_max_resends_per_second: self.rtc.nack_max_resends_per_second,
            nack_resend_interval: Duration::from_millis(self.rtc.nack_resend_interval_ms),
            max_remote_candidates: self.rtc.max_remote_candidates,
            ice_restart_interval: Duration::from_millis(self.rtc.ice_restart_min_interval_ms),
            max_publish_sections: self.rtc.max_publish_sections,
            udp_buffer_bytes: self.rtc.udp_buffer_bytes,
            data: switchyard_router::DataLimits {
                max_message_bytes: self.data.max_message_bytes,
                reliable_queue_bytes: self.data.reliable_queue_bytes,
                lossy_queue_bytes: self.data.lossy_queue_bytes,
                sender_bytes_per_second: self.data.sender_bytes_per_second,
                slow_receiver_grace: Duration::from_millis(self.data.slow_receiver_grace_ms),
            },
        }
    }

    pub fn room_settings(&self) -> switchyard_router::RoomSettings {
        switchyard_router::RoomSettings {
            max_participants: self.room.max_participants,
            empty_timeout_secs: self.room.empty_timeout_secs,
            ice_servers: self.rtc.ice_servers.clone(),
        }
    }
}

impl Config {
    fn validate_webhook(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| {
            Err(ConfigError::Invalid {
                key: key.to_owned(),
                message,
            })
        };
        let w = &self.webhook;
        for url in &w.urls {
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
                Ok(_) => {
                    return invalid(
                        "webhook.urls",
                        format!("`{url}` is not an http:// or https:// URL"),
                    )
                }
                Err(e) => return invalid("webhook.urls", format!("`{url}` is not a URL: {e}")),
            }
        }
        // Checked even with no URL, so a typo shows before the day URLs are added.
        if !w.api_key.is_empty() && self.api_keys().secret(&w.api_key).is_none() {
            return invalid(
                "webhook.api_key",
                format!(
                    "`{}` is not a configured API key (auth.keys{})",
                    w.api_key,
                    if self.auth.dev_mode {
                        ", or `devkey` in dev mode"
                    } else {
                        ""
                    }
                ),
            );
        }
        if w.timeout_ms == 0 {
            return invalid("webhook.timeout_ms", "must be at least 1".into());
        }
        if w.max_attempts == 0 {
            return invalid("webhook.max_attempts", "must be at least 1".into());
        }
        if w.queue_size == 0 {
            return invalid("webhook.queue_size", "must be at least 1".into());
        }
        if w.initial_backoff_ms > w.max_backoff_ms {
            return invalid(
                "webhook.initial_backoff_ms",
                format!(
                    "must not exceed webhook.max_backoff_ms ({})",
                    w.max_backoff_ms
                ),
            );
        }
        Ok(())
    }

    /// The API key that signs webhook requests, and its secret: `webhook.api_key`, else
    /// the first of `auth.keys` in the order configured, else the development key (dev
    /// mode). `None` only for a config that failed validation.
    pub fn webhook_key(&self) -> Option<(String, String)> {
        let keys = self.api_keys();
        let key = if !self.webhook.api_key.is_empty() {
            self.webhook.api_key.as_str()
        } else if let Some(first) = self.auth.keys.first() {
            first.key.as_str()
        } else if self.auth.dev_mode {
            DEV_API_KEY
        } else {
            return None;
        };
        let secret = keys.secret(key)?.to_owned();
        Some((key.to_owned(), secret))
    }
}

/// Merges `over` into `base`, refusing keys the defaults do not have.
fn merge(base: &mut toml::Table, over: toml::Table, prefix: &str) -> Result<(), ConfigError> {
    for (key, value) in over {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (base.get_mut(&key), value) {
            (None, _) => return Err(ConfigError::UnknownKey(path)),
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o, &path)?,
            (Some(slot), value) => *slot = value,
        }
    }
    Ok(())
}

/// Applies `SWITCHYARD_<SECTION>_<KEY>` variables to the leaves of the tree, parsed as the
/// type the default has. A variable naming a known section but no key in it is refused: a
/// typo must not be silently ignored. Variables that name no section are left alone, since
/// orchestrators inject some of their own (Kubernetes adds `SWITCHYARD_SERVICE_HOST` for a
/// service named `switchyard`).
fn apply_env(
    tree: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let Some((section, key)) = tree.iter_mut().find_map(|(section, value)| {
            let key = rest.strip_prefix(section.as_str())?.strip_prefix('_')?;
            Some((value.as_table_mut()?, key))
        }) else {
            continue;
        };
        let Some(slot) = section.get_mut(key) else {
            return Err(ConfigError::UnknownEnv(var));
        };
        let env_error = |message: String| ConfigError::Env {
            var: var.clone(),
            message,
        };
        *slot = match slot {
            toml::Value::String(_) => toml::Value::String(raw),
            toml::Value::Integer(_) => toml::Value::Integer(
                raw.trim()
                    .parse()
                    .map_err(|e| env_error(format!("expected an integer: {e}")))?,
            ),
            toml::Value::Boolean(_) => toml::Value::Boolean(
                raw.trim()
                    .parse()
                    .map_err(|_| env_error("expected true or false".into()))?,
            ),
            toml::Value::Array(_) if raw.trim_start().starts_with('[') => {
                let json: serde_json::Value = serde_json::from_str(&raw)
                    .map_err(|e| env_error(format!("expected a JSON array: {e}")))?;
                toml::Value::try_from(json).map_err(|e| env_error(e.to_string()))?
            }
            toml::Value::Array(_) => toml::Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_owned()))
                    .collect(),
            ),
            other => {
                return Err(env_error(format!(
                    "cannot override a {} from the environment",
                    other.type_str()
                )))
            }
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded_default();
        assert_eq!(c.server.bind.port(), 7880);
        assert_eq!(c.rtc.udp_port, 7882);
        assert_eq!(c.signal.max_message_bytes, 65536);
    }

    #[test]
    fn file_overrides_and_unknown_keys_are_named() {
        let dir = std::env::temp_dir().join(format!("switchyard-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(&good, "[rtc]\nudp_port = 9000\n").unwrap();
        let c = Config::load(Some(&good), [], &Overrides::default()).unwrap();
        assert_eq!(c.rtc.udp_port, 9000);
        assert_eq!(
            c.server.bind.port(),
            7880,
            "untouched keys keep their default"
        );

        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[rtc]\nudp_prot = 9000\n").unwrap();
        let e = Config::load(Some(&bad), [], &Overrides::default()).unwrap_err();
        assert_eq!(e.to_string(), "unknown config key `rtc.udp_prot`");

        let bad_type = dir.join("bad_type.toml");
        std::fs::write(&bad_type, "[rtc]\nudp_port = \"x\"\n").unwrap();
        let e = Config::load(Some(&bad_type), [], &Overrides::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config key `rtc.udp_port`: invalid type: string \"x\", expected u16"
        );
    }

    #[test]
    fn env_overrides_typed_leaves() {
        let c = Config::load(
            None,
            env(&[
                ("SWITCHYARD_RTC_UDP_PORT", "9100"),
                ("SWITCHYARD_RTC_ANNOUNCE_IPS", "203.0.113.7, 198.51.100.2"),
                ("SWITCHYARD_RTC_INCLUDE_LOOPBACK", "false"),
                ("SWITCHYARD_SERVER_BIND", "127.0.0.1:1234"),
                ("SWITCHYARD_CONFIG", "ignored: it names the file"),
                ("SWITCHYARD_SERVICE_HOST", "10.0.0.1"),
                ("PATH", "/bin"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.rtc.udp_port, 9100);
        assert_eq!(c.rtc.announce_ips.len(), 2);
        assert!(!c.rtc.include_loopback);
        assert_eq!(c.server.bind.to_string(), "127.0.0.1:1234");

        let e = Config::load(
            None,
            env(&[("SWITCHYARD_RTC_UDP_PROT", "1")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("SWITCHYARD_RTC_UDP_PROT"), "{e}");
        let e = Config::load(
            None,
            env(&[("SWITCHYARD_RTC_UDP_PORT", "lots")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("SWITCHYARD_RTC_UDP_PORT"), "{e}");
    }

    #[test]
    fn metrics_token_from_the_environment_never_printed() {
        let c = Config::embedded_default();
        assert!(c.metrics.enabled);
        assert_eq!(c.metrics.bearer_token, "", "open by default");
        let c = Config::load(
            None,
            env(&[("SWITCHYARD_METRICS_BEARER_TOKEN", "s3cret-t0k")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.metrics.bearer_token, "s3cret-t0k");
        let printed = format!("{c:#?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("<redacted>"));
        let e = Config::load(
            None,
            env(&[("SWITCHYARD_METRICS_BEARER_TOKEN", "two words")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("metrics.bearer_token"), "{e}");
    }

    #[test]
    fn flags_win_and_validation_names_the_key() {
        let c = Config::load(
            None,
            env(&[("SWITCHYARD_RTC_UDP_PORT", "9100")]),
            &Overrides {
                udp_port: Some(0),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(c.rtc.udp_port, 0);
        let e = Config::load(
            None,
            env(&[("SWITCHYARD_ROOM_MAX_PARTICIPANTS", "0")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("room.max_participants"), "{e}");
    }

    #[test]
    fn api_keys_from_the_environment_and_their_rules() {
        let secret = "0123456789abcdef0123456789abcdef";
        let c = Config::load(
            None,
            env(&[
                ("SWITCHYARD_AUTH_DEV_MODE", "false"),
                (
                    "SWITCHYARD_AUTH_KEYS",
                    &format!(r#"[{{"key": "prod", "secret": "{secret}"}}]"#),
                ),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        let keys = c.api_keys();
        assert_eq!(keys.secret("prod"), Some(secret));
        assert_eq!(
            keys.secret(DEV_API_KEY),
            None,
            "no dev key outside dev mode"
        );
        assert!(!format!("{c:?}").contains(secret), "secrets never printed");

        let dev = Config::embedded_default();
        assert!(dev.auth.dev_mode);
        assert_eq!(dev.api_keys().secret(DEV_API_KEY), Some(DEV_API_SECRET));

        let short = Config::load(
            None,
            env(&[(
                "SWITCHYARD_AUTH_KEYS",
                r#"[{"key": "k", "secret": "short"}]"#,
            )]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(short.to_string().contains("auth.keys"), "{short}");
        let nobody = Config::load(
            None,
            env(&[("SWITCHYARD_AUTH_DEV_MODE", "false")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(nobody.to_string().contains("nobody could join"), "{nobody}");
    }

    #[test]
    fn webhook_section_from_the_environment_and_its_rules() {
        let off = Config::embedded_default();
        assert!(off.webhook.urls.is_empty(), "no webhooks unless configured");
        assert_eq!(
            off.webhook_key(),
            Some((DEV_API_KEY.to_owned(), DEV_API_SECRET.to_owned())),
            "dev mode with no keys signs with the dev key"
        );

        let c = Config::load(
            None,
            env(&[
                (
                    "SWITCHYARD_WEBHOOK_URLS",
                    "http://127.0.0.1:9/a, https://hooks.example.org/b",
                ),
                ("SWITCHYARD_WEBHOOK_MAX_ATTEMPTS", "3"),
                ("SWITCHYARD_WEBHOOK_QUEUE_SIZE", "8"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            c.webhook.urls,
            ["http://127.0.0.1:9/a", "https://hooks.example.org/b"]
        );
        assert_eq!((c.webhook.max_attempts, c.webhook.queue_size), (3, 8));

        // The first configured key signs, not the dev key, even in dev mode; or the one named.
        let keys = r#"[{"key": "zeta", "secret": "0123456789abcdef0123456789abcdef"},
                       {"key": "alpha", "secret": "fedcba9876543210fedcba9876543210"}]"#;
        let c = Config::load(
            None,
            env(&[("SWITCHYARD_AUTH_KEYS", keys)]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.webhook_key().unwrap().0, "zeta");
        let c = Config::load(
            None,
            env(&[
                ("SWITCHYARD_AUTH_KEYS", keys),
                ("SWITCHYARD_WEBHOOK_API_KEY", "alpha"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            c.webhook_key(),
            Some((
                "alpha".to_owned(),
                "fedcba9876543210fedcba9876543210".to_owned()
            ))
        );

        let refused = [
            (
                ("SWITCHYARD_WEBHOOK_URLS", "ftp://x.example/"),
                "webhook.urls",
            ),
            (("SWITCHYARD_WEBHOOK_URLS", "not a url"), "webhook.urls"),
            (("SWITCHYARD_WEBHOOK_API_KEY", "nokey"), "webhook.api_key"),
            (
                ("SWITCHYARD_WEBHOOK_MAX_ATTEMPTS", "0"),
                "webhook.max_attempts",
            ),
            (("SWITCHYARD_WEBHOOK_QUEUE_SIZE", "0"), "webhook.queue_size"),
            (("SWITCHYARD_WEBHOOK_TIMEOUT_MS", "0"), "webhook.timeout_ms"),
            (
                ("SWITCHYARD_WEBHOOK_INITIAL_BACKOFF_MS", "60000"),
                "webhook.initial_backoff_ms",
            ),
        ];
        for ((var, value), key) in refused {
            let e = Config::load(None, env(&[(var, value)]), &Overrides::default()).unwrap_err();
            assert!(e.to_string().contains(key), "{var}={value}: {e}");
        }
        let e = Config::load(
            None,
            env(&[("SWITCHYARD_WEBHOOK_URLS", "ftp://x.example/")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("ftp://x.example/"),
            "names the URL: {e}"
        );
    }
}
