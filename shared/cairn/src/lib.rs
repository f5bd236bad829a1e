//! # Cairn
//!
//! Durable, event-driven workflows in Rust. A workflow is an async function that calls step
//! tools; each completed step is memoized, so a run survives crashes, timeouts and redeploys and
//! resumes where it stopped. It is Inngest's programming model (and its step ids), built to run
//! on AWS Lambda with DynamoDB and EventBridge, or anywhere over the Inngest HTTP protocol.
//!
//! - [`Function`]: id, triggers (events, crons), retries, `on_failure`, typed events ([`EventData`]).
//! - [`Step`]: `run`, `sleep`, `sleep_until`, `wait_for_event`, `send_event`, `invoke`; parallel
//!   steps with [`join!`](futures::join) or [`try_join_all`](futures::future::try_join_all).
//! - [`engine`]: the sans-IO engine ([`Execution`], [`Outcome`]) every driver shares.
//! - [`RunStore`] with [`MemoryStore`] and `SqliteStore` (feature `sqlite`, off by default so
//!   Lambda binaries do not link SQLite); [`Bus`] and [`Timer`]; the [`Runner`].
//! - `testing` feature: [`testing::TestRun`] and `ManualClock` for millisecond-fast workflow tests.
//!
//! ```
//! use cairn::prelude::*;
//!
//! pub fn function() -> Function {
//!     Function::new("hello")
//!         .on_event("app/my.event")
//!         .handler(|_event: Event, step: Step| async move {
//!             let result: serde_json::Value = step.run("step-name", || async { Ok(json!({"success": true})) }).await?;
//!             step.sleep("wait", "1h").await?;
//!             Ok(result)
//!         })
//!         .expect("a valid definition")
//! }
//! # assert_eq!(function().id(), "hello");
//! ```

mod backoff;
mod bus;
mod clock;
mod duration;
pub mod engine;
mod error;
mod event;
mod expr;
pub mod flow;
mod function;
mod id;
pub mod lifecycle;
mod op;
mod record;
mod runner;
mod state;
mod step;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use backoff::{Backoff, RetryPolicy, backoff};
pub use bus::{Bus, BusError, MemoryBus, MemoryTimer, Timer, send_signal};
#[cfg(feature = "testing")]
pub use clock::ManualClock;
pub use clock::{Clock, SystemClock};
pub use duration::{IntoDuration, format_duration, parse_duration};
pub use engine::{Execution, ExecutionPolicy, Op, OpKind, Outcome};
pub use error::{
    BackoffError, CronError, DefinitionError, DurationError, EngineError, EventError, ExprError, ResultExt, StepError,
    StepResult,
};
pub use error::{MAX_RETRY_AFTER, MIN_RETRY_AFTER};
pub use event::{
    CANCELLED_EVENT, Event, EventData, EventPayload, FAILED_EVENT, FINISHED_EVENT, INVOKED_EVENT, MAX_EVENT_ID_LEN,
    MAX_EVENT_NAME_LEN, RESERVED_PREFIXES, SCHEDULED_EVENT, SIGNAL_EVENT, is_reserved_name, redact_serde_error, signal,
};
pub use expr::{ExprValue, MAX_EXPRESSION_BYTES, MatchExpr};
pub use function::{
    CronSchedule, DEFAULT_RETRIES, FailureData, Function, FunctionBuilder, MAX_RETRIES, Registry, Trigger,
};
pub use id::{RunId, StepId, new_event_id};
pub use record::{
    InvokedBy, Journal, Lease, Millis, Queued, RunMeta, RunStatus, SkipReason, Skipped, StepKind, StepRecord,
    StepState, Wait, WaitKey,
};
pub use runner::{
    Accepted, Drive, Progress, ProgressSink, RECONCILE_BATCH, Reconciled, Runner, RunnerConfig, RunnerError,
};
pub use step::{IntoEvents, Invoke, MAX_WAIT, SendResult, Signal, Step, StepOptions, WaitFor};
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
pub use store::{MemoryStore, RunStore, StoreError};

/// What a workflow file needs: `use cairn::prelude::*;`.
pub mod prelude {
    pub use crate::flow::{BatchEvents, CancelOn, Concurrency, Debounce, RateLimit, Singleton, Throttle, Timeouts};
    pub use crate::{
        Backoff, Event, EventData, EventPayload, FailureData, Function, Invoke, ResultExt, SendResult, Signal, Step,
        StepError, StepOptions, StepResult, WaitFor,
    };
    pub use futures::future::try_join_all;
    pub use futures::join;
    pub use serde_json::json;
}
