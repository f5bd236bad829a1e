//! How the endpoint runs ([`ServeConfig`]) and why a configuration is refused ([`ConfigError`]).
//! Outside dev mode nothing a user can leave at its default opens the endpoint: an empty signing
//! key is a missing key, and the URL registered with Inngest is only an `https` origin the
//! operator configured (or the host adapter vouches for), never the request's `Host`.

use crate::signing::SigningKey;
use std::time::Duration;

/// Default largest request body (Inngest's executor switches to its API above 4 MiB).
pub const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;
/// Shortest signing key accepted, without its `signkey-<env>-` prefix (Inngest's are 64 hex
/// characters): a short key is guessable, and an empty one would let anyone sign.
pub const MIN_SIGNING_KEY_LEN: usize = 32;
/// Timeouts of Cairn's own outbound calls (Inngest's event API and `/fn/register`), well under
/// Inngest's call timeout and any host's deadline.
pub const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// See [`HTTP_CONNECT_TIMEOUT`].
pub const HTTP_TOTAL_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the endpoint refuses to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Cloud mode without a signing key (unset, empty or whitespace).
    #[error("{variable} is required outside dev mode and must not be empty (set INNGEST_DEV=1 for local work)")]
    MissingSigningKey {
        /// The variable (or parameter) that is missing.
        variable: &'static str,
    },
    /// A signing key too short to be secret.
    #[error(
        "{variable} is too short: {length} characters after its signkey- prefix, at least {MIN_SIGNING_KEY_LEN} needed"
    )]
    WeakSigningKey {
        /// The variable holding the key.
        variable: &'static str,
        /// Its length without the prefix.
        length: usize,
    },
    /// A serve origin that is not `https://host[:port]` outside dev mode.
    #[error("INNGEST_SERVE_ORIGIN must be an https:// origin outside dev mode, got `{origin}`")]
    InsecureServeOrigin {
        /// What was configured.
        origin: String,
    },
}

/// How the endpoint runs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The app id (function ids on the wire are `<app>-<function>`).
    pub app_id: String,
    /// Dev mode: no signatures checked or sent (`INNGEST_DEV`).
    pub dev: bool,
    /// The signing key, then the fallback (cloud mode).
    pub keys: Vec<SigningKey>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Where `step.send_event` sends (`{event_api}/e/{event_key}`), as the SDKs do.
    pub event_api: String,
    /// The event key; `None` makes sends fail with a message saying so.
    pub event_key: Option<String>,
    /// Inngest's API, where a sync registers the functions (`{api_base}/fn/register`).
    pub api_base: String,
    /// The origin registered in a sync (`INNGEST_SERVE_ORIGIN`). Without it, cloud mode uses
    /// the origin the host adapter vouches for ([`ServeOrigin`](crate::ServeOrigin)), and dev
    /// mode the request's host.
    pub serve_origin: Option<String>,
    /// Answer calls with `201` at once, a space every `heartbeat` while the call runs, then
    /// the answer wrapped in a JSON envelope, so a long step outlives a host's response
    /// timeout (`INNGEST_STREAMING`, the SDKs' `streaming: "force"`).
    pub streaming: bool,
    /// The keep-alive interval of streamed answers (3 s, as the TypeScript SDK).
    pub heartbeat: Duration,
    /// Total timeout of Cairn's own calls to Inngest (the event API, `/fn/register`).
    pub http_timeout: Duration,
}

impl ServeConfig {
    /// Dev mode: nothing signed.
    pub fn dev(app_id: impl Into<String>) -> Self {
        ServeConfig {
            app_id: app_id.into(),
            dev: true,
            keys: Vec::new(),
            max_body_bytes: DEFAULT_MAX_BODY,
            event_api: "http://localhost:8288".into(),
            event_key: Some("NO_EVENT_KEY_SET".into()),
            api_base: "http://localhost:8288".into(),
            serve_origin: None,
            streaming: false,
            heartbeat: Duration::from_secs(3),
            http_timeout: HTTP_TOTAL_TIMEOUT,
        }
    }

    /// Cloud mode with a signing key and an optional fallback (an empty fallback is none).
    ///
    /// # Errors
    /// An empty, whitespace or short key ([`ConfigError::MissingSigningKey`],
    /// [`ConfigError::WeakSigningKey`]).
    pub fn cloud(app_id: impl Into<String>, key: &str, fallback: Option<&str>) -> Result<Self, ConfigError> {
        let mut keys = vec![signing_key("INNGEST_SIGNING_KEY", key)?];
        if let Some(fallback) = fallback.filter(|f| !f.trim().is_empty()) {
            keys.push(signing_key("INNGEST_SIGNING_KEY_FALLBACK", fallback)?);
        }
        Ok(ServeConfig {
            app_id: app_id.into(),
            dev: false,
            keys,
            max_body_bytes: DEFAULT_MAX_BODY,
            event_api: "https://inn.gs".into(),
            event_key: None,
            api_base: "https://api.inngest.com".into(),
            serve_origin: None,
            streaming: false,
            heartbeat: Duration::from_secs(3),
            http_timeout: HTTP_TOTAL_TIMEOUT,
        })
    }

    /// From `INNGEST_DEV` (`1`, `true` or a URL: dev mode), `INNGEST_SIGNING_KEY`,
    /// `INNGEST_SIGNING_KEY_FALLBACK`, `INNGEST_SERVE_ORIGIN`, `INNGEST_STREAMING`, the event and
    /// API base URLs and `INNGEST_EVENT_KEY` (the key `step.send_event` sends with).
    ///
    /// # Errors
    /// Cloud mode without a usable signing key, or with a serve origin that is not https.
    pub fn from_env(app_id: impl Into<String>) -> Result<Self, ConfigError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let dev_url = var("INNGEST_DEV").filter(|v| v.starts_with("http"));
        let dev = var("INNGEST_DEV").is_some_and(|v| matches!(v.as_str(), "1" | "true")) || dev_url.is_some();
        let mut config = if dev {
            Self::dev(app_id)
        } else {
            let key =
                var("INNGEST_SIGNING_KEY").ok_or(ConfigError::MissingSigningKey { variable: "INNGEST_SIGNING_KEY" })?;
            Self::cloud(app_id, &key, var("INNGEST_SIGNING_KEY_FALLBACK").as_deref())?
        };
        // The event API: its own variable, else the base URL, else INNGEST_DEV's URL.
        if let Some(url) = var("INNGEST_EVENT_API_BASE_URL").or_else(|| var("INNGEST_BASE_URL")).or(dev_url.clone()) {
            config.event_api = url.trim_end_matches('/').to_string();
        }
        if let Some(key) = var("INNGEST_EVENT_KEY") {
            config.event_key = Some(key);
        }
        if let Some(url) = var("INNGEST_API_BASE_URL").or_else(|| var("INNGEST_BASE_URL")).or(dev_url) {
            config.api_base = url.trim_end_matches('/').to_string();
        }
        if let Some(origin) = var("INNGEST_SERVE_ORIGIN") {
            config = config.serve_origin(&origin)?;
        }
        config.streaming =
            var("INNGEST_STREAMING").is_some_and(|v| matches!(v.as_str(), "true" | "1" | "allow" | "force"));
        Ok(config)
    }

    /// Registers `origin` in syncs.
    ///
    /// # Errors
    /// [`ConfigError::InsecureServeOrigin`] outside dev mode for anything but an `https` origin.
    pub fn serve_origin(mut self, origin: &str) -> Result<Self, ConfigError> {
        let origin = origin.trim().trim_end_matches('/');
        if !self.dev && !is_https_origin(origin) {
            return Err(ConfigError::InsecureServeOrigin { origin: origin.to_string() });
        }
        self.serve_origin = Some(origin.to_string());
        Ok(self)
    }

    /// Streams call answers (see [`ServeConfig::streaming`]) with this keep-alive interval.
    pub fn streaming(mut self, heartbeat: Duration) -> Self {
        self.streaming = true;
        self.heartbeat = heartbeat;
        self
    }

    /// Sets the body limit.
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = limit;
        self
    }
}

fn signing_key(variable: &'static str, value: &str) -> Result<SigningKey, ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::MissingSigningKey { variable });
    }
    let key = SigningKey::new(value);
    match key.material_len() {
        length if length < MIN_SIGNING_KEY_LEN => Err(ConfigError::WeakSigningKey { variable, length }),
        _ => Ok(key),
    }
}

/// `https://host[:port]` with nothing after it: what may be registered with Inngest.
pub(crate) fn is_https_origin(origin: &str) -> bool {
    origin.strip_prefix("https://").is_some_and(|host| {
        !host.is_empty() && !host.contains(['/', '?', '#', '@', ' ']) && http::uri::Authority::try_from(host).is_ok()
    })
}
