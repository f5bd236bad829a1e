//! Errors: the user-facing [`StepError`], definition-time [`DefinitionError`], and the engine's
//! [`EngineError`] (determinism violations).

use crate::id::StepId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// The longest delay [`StepError::retry_after`] may ask for: Inngest's executor clamps
/// `Retry-After` to [1 s, 24 h], and an unclamped one could land past the end of time.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);
/// The shortest delay [`StepError::retry_after`] may ask for (Inngest's).
pub const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The error of a step or of a whole function.
///
/// Any `E: std::error::Error` converts into a *retriable* `StepError` with `?`. Opt out with
/// [`StepError::non_retriable`], or ask for a specific delay with [`StepError::retry_after`].
/// A step that finally fails is memoized with its error, so replaying the run fails identically.
/// The serialized form is Inngest's error object (`name`, `message`, `stack`).
///
/// ```
/// use cairn::StepError;
/// let err: StepError = "not a number".parse::<u32>().unwrap_err().into();
/// assert!(err.is_retriable());
/// assert_eq!(err.message, "invalid digit found in string");
/// assert!(!StepError::non_retriable("nope").is_retriable());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    /// Error class: `Error`, `NonRetriableError` or `RetryAfterError`, as Inngest names them.
    pub name: String,
    /// Human-readable message.
    pub message: String,
    /// Optional detail (a source chain or stack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// Whether another attempt may succeed.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub retriable: bool,
    /// The delay asked for by [`StepError::retry_after`], in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

fn yes() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

/// `Result<T, StepError>`: what steps and handlers return.
pub type StepResult<T> = Result<T, StepError>;

impl StepError {
    /// A retriable error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        StepError { name: "Error".into(), message: message.into(), stack: None, retriable: true, retry_after_ms: None }
    }

    /// An error that fails the step (or function) at once, without further attempts.
    pub fn non_retriable(message: impl Into<String>) -> Self {
        StepError { name: "NonRetriableError".into(), retriable: false, ..StepError::new(message) }
    }

    /// What an invoke step fails with when the invoked function has not finished by its
    /// timeout (Inngest's `InngestInvokeTimeoutError`), on every driver.
    pub fn invoke_timeout() -> Self {
        StepError {
            name: "InngestInvokeTimeoutError".into(),
            ..StepError::non_retriable("Timed out waiting for invoked function to complete")
        }
    }

    /// A retriable error whose next attempt should wait `delay` instead of the back-off,
    /// clamped to Inngest's [1 s, 24 h] ([`MIN_RETRY_AFTER`],
    /// [`MAX_RETRY_AFTER`]).
    pub fn retry_after(message: impl Into<String>, delay: Duration) -> Self {
        let delay = delay.clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER);
        StepError {
            name: "RetryAfterError".into(),
            retry_after_ms: Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
            ..StepError::new(message)
        }
    }

    /// Whether another attempt may succeed.
    pub fn is_retriable(&self) -> bool {
        self.retriable
    }

    /// The same error marked non-retriable (its name is kept).
    pub(crate) fn into_final(mut self) -> Self {
        self.retriable = false;
        self
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for StepError {
    fn from(err: E) -> Self {
        let mut chain = Vec::new();
        let mut source = err.source();
        while let Some(cause) = source {
            chain.push(cause.to_string());
            source = cause.source();
        }
        let stack = (!chain.is_empty()).then(|| format!("caused by: {}", chain.join(": ")));
        StepError { stack, ..StepError::new(err.to_string()) }
    }
}

/// Extension for `Result`: turn any error into a non-retriable [`StepError`].
pub trait ResultExt<T> {
    /// Maps the error to [`StepError::non_retriable`] with the error's message.
    fn non_retriable(self) -> Result<T, StepError>;
}

impl<T, E: fmt::Display> ResultExt<T> for Result<T, E> {
    fn non_retriable(self) -> Result<T, StepError> {
        self.map_err(|err| StepError::non_retriable(err.to_string()))
    }
}

/// A function definition that cannot work: reported when it is built, before anything runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DefinitionError {
    /// The function id is empty.
    #[error("function id must not be empty")]
    EmptyFunctionId,
    /// A function id is not kebab-case-safe.
    #[error("function id `{0}` may only contain letters, digits, '-', '_' and '.'")]
    InvalidFunctionId(String),
    /// Two functions of one registry share an id.
    #[error("duplicate function id `{0}`: every function of an app needs its own id")]
    DuplicateFunctionId(String),
    /// The function has no trigger.
    #[error("function `{0}` has no trigger: add an event or a cron")]
    NoTrigger(String),
    /// An event name is empty.
    #[error("function `{function}`: event trigger name must not be empty")]
    EmptyEventName {
        /// The function.
        function: String,
    },
    /// A cron expression cannot be parsed.
    #[error("function `{function}`: invalid cron `{cron}`: {reason}")]
    InvalidCron {
        /// The function.
        function: String,
        /// The expression as written.
        cron: String,
        /// What is wrong.
        reason: String,
    },
    /// A retry count above Inngest's cap of 20.
    #[error("function `{function}`: retries must be at most 20, got {retries}")]
    TooManyRetries {
        /// The function.
        function: String,
        /// The requested count.
        retries: u32,
    },
    /// A trigger's `if` expression is not valid CEL.
    #[error("function `{function}`: invalid expression `{expression}`: {reason}")]
    InvalidExpression {
        /// The function.
        function: String,
        /// The expression.
        expression: String,
        /// The parser's message.
        reason: String,
    },
    /// A `.sends(...)` declaration that cannot be allowed.
    #[error("function `{function}`: cannot declare `.sends(\"{event}\")`: {reason}")]
    InvalidSend {
        /// The function.
        function: String,
        /// The declared name.
        event: String,
        /// Why not.
        reason: String,
    },
    /// A flow-control option Inngest would refuse (a bad period, too many limits, a bad key).
    #[error("function `{function}`: invalid `{option}`: {reason}")]
    InvalidFlowControl {
        /// The function.
        function: String,
        /// The option, as the builder names it (`throttle`, `rate_limit`, ...).
        option: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The builder was finished without a handler.
    #[error("function `{0}` has no handler")]
    NoHandler(String),
}

/// The engine cannot continue a run: the code no longer matches the run's journal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The journal holds a step at a position where the code now asks for a different one.
    #[error(
        "determinism mismatch at step position {position}: the journal recorded {recorded_kind} `{recorded_name}` \
         ({recorded_id}) but the code now asks for {found_kind} `{found_name}` ({found_id}); \
         the code changed while the run was in flight"
    )]
    Mismatch {
        /// The position (order of step calls) where the two differ.
        position: u32,
        /// The recorded step's name.
        recorded_name: String,
        /// The recorded step's kind.
        recorded_kind: String,
        /// The recorded step's id.
        recorded_id: StepId,
        /// The step the code asks for.
        found_name: String,
        /// Its kind.
        found_kind: String,
        /// Its id.
        found_id: StepId,
    },
    /// The function finished although the journal holds steps the code never asked for.
    #[error(
        "determinism mismatch: the journal recorded {recorded_kind} `{recorded_name}` at position {position} \
         but the code never asked for it; the code changed while the run was in flight"
    )]
    StepRemoved {
        /// Its position.
        position: u32,
        /// The recorded step's name.
        recorded_name: String,
        /// Its kind.
        recorded_kind: String,
    },
}

impl EngineError {
    /// The error the run is failed with (non-retriable: replaying again cannot help).
    pub fn to_step_error(&self) -> StepError {
        StepError { name: "DeterminismError".into(), ..StepError::non_retriable(self.to_string()) }
    }
}

/// The message a caught panic carries (`panic!("...")` or a formatted one).
pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Declares an input error: a message that names the input and what is wrong with it, as a type
/// of its own (so a caller can tell which parse failed) that converts to and from a `String`.
macro_rules! input_error {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
        #[error("{0}")]
        pub struct $name(String);

        impl $name {
            /// What is wrong, naming the input.
            pub fn message(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(message: String) -> Self {
                $name(message)
            }
        }

        impl From<&str> for $name {
            fn from(message: &str) -> Self {
                $name(message.to_string())
            }
        }

        impl From<$name> for String {
            fn from(error: $name) -> String {
                error.0
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        /// Reads as its message (`starts_with`, `contains`, ...).
        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }
    };
}

input_error!(
    /// A duration that does not parse (`parse_duration`).
    DurationError
);
input_error!(
    /// A back-off table that is empty or holds an entry that is not a duration
    /// (`Backoff::table`).
    BackoffError
);
input_error!(
    /// A CEL expression that does not parse or evaluate (`MatchExpr`).
    ExprError
);
input_error!(
    /// A cron expression that does not parse (`CronSchedule::parse`).
    CronError
);
input_error!(
    /// An event Inngest's event API would refuse, or data that does not fit a function's type.
    EventError
);
