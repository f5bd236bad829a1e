//! Where a user's Readwise key lives: an SSM Parameter Store SecureString per user, read at run
//! time with the function's own role (template.yaml grants `ssm:GetParameter` on the prefix
//! only). Locally `cairn dev` answers the same API (`aws ssm put-parameter --endpoint-url
//! http://127.0.0.1:8288 ...`).

use cairn::StepError;
use std::sync::Arc;

/// The longest user id accepted (SSM names hold 2,048 characters, prefix included).
pub const MAX_USER_ID_LEN: usize = 128;
/// The prefix when `READWISE_KEY_PARAMETER_PREFIX` is unset: what template.yaml sets for a stack
/// named `cairn`, and where `cairn dev` (whose stack is `cairn`) keeps them locally.
pub const DEFAULT_KEY_PREFIX: &str = "/cairn/readwise/users/";

/// Where each user's key is read.
#[derive(Clone)]
pub enum KeyStore {
    /// The SecureString `<prefix><userId>`, decrypted; the client is made on first use.
    Ssm {
        /// e.g. `/my-stack/readwise/users/`.
        prefix: String,
        /// Shared by clones, so one invocation makes one client.
        client: Arc<tokio::sync::OnceCell<aws_sdk_ssm::Client>>,
    },
    /// No prefix configured: runs fail naming the variable.
    Unconfigured,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyStore::Ssm { prefix, .. } => f.debug_struct("Ssm").field("prefix", prefix).finish(),
            KeyStore::Unconfigured => f.write_str("Unconfigured"),
        }
    }
}

impl KeyStore {
    /// SSM under `prefix`, with a client from the environment (region, credentials, endpoint).
    pub fn ssm(prefix: impl Into<String>) -> Self {
        KeyStore::Ssm { prefix: prefix.into(), client: Arc::default() }
    }

    /// `READWISE_KEY_PARAMETER_PREFIX`, else [`DEFAULT_KEY_PREFIX`].
    pub fn from_env() -> Self {
        match std::env::var("READWISE_KEY_PARAMETER_PREFIX") {
            Ok(prefix) if !prefix.trim().is_empty() => Self::ssm(prefix.trim()),
            _ => Self::ssm(DEFAULT_KEY_PREFIX),
        }
    }

    /// The key of `user_id`.
    ///
    /// # Errors
    /// Non-retriable when the store is unconfigured, the user id could name another parameter,
    /// or no key is stored for the user; retriable for anything else SSM answers.
    pub async fn read(&self, user_id: &str) -> Result<String, StepError> {
        let KeyStore::Ssm { prefix, client } = self else {
            return Err(StepError::non_retriable("READWISE_KEY_PARAMETER_PREFIX is not set"));
        };
        let valid = !user_id.is_empty()
            && user_id.len() <= MAX_USER_ID_LEN
            && user_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'));
        if !valid || user_id.contains("..") {
            // Never a path: `a/../b` or `/other` must not reach another parameter.
            return Err(StepError::non_retriable(format!(
                "userId must be 1 to {MAX_USER_ID_LEN} letters, digits or `_-.@`"
            )));
        }
        let client =
            client.get_or_init(|| async { aws_sdk_ssm::Client::new(&aws_config::load_from_env().await) }).await;
        let name = format!("{prefix}{user_id}");
        match client.get_parameter().name(&name).with_decryption(true).send().await {
            Ok(answer) => answer
                .parameter
                .and_then(|p| p.value)
                .ok_or_else(|| StepError::new(format!("SSM parameter {name} has no value"))),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_parameter_not_found()) => {
                Err(StepError::non_retriable(format!("no Readwise key is stored for user {user_id} ({name})")))
            }
            Err(err) => {
                let reason = aws_sdk_ssm::error::DisplayErrorContext(&err);
                Err(StepError::new(format!("reading {name} from SSM: {reason}")))
            }
        }
    }
}
