//! # cairn-aws
//!
//! Cairn on AWS: [`DynamoDbStore`] (steps memoized in one table), [`EventBridgeBus`] (events out,
//! routed by `detail-type`), [`QueueTimer`] (wake-ups to the second on the function's SQS timer
//! queue, handed over from a [`SchedulerTimer`] schedule beyond 15 minutes), and the
//! [`LambdaDriver`] every function binary runs:
//!
//! ```no_run
//! use cairn::prelude::*;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), lambda_runtime::Error> {
//!     let hello = Function::new("hello")
//!         .on_event("app/my.event")
//!         .handler(|_: Event, _: Step| async move { Ok(()) })
//!         .expect("a valid definition");
//!     cairn_aws::run(vec![hello]).await
//! }
//! ```

mod any;
mod cron;
mod deploy;
mod driver;
mod dynamodb;
mod env;
mod eventbridge;
pub mod logging;
pub mod metrics;
mod scheduler;
mod timer;
mod wire;

pub use any::{AnyBus, AnyStore, AnyTimer};
pub use cron::schedule_expression;
pub use deploy::{EnvValue, Lambda};
pub use driver::{DriverConfig, DriverError, DriverResponse, Invocation, LambdaDriver, NDJSON, classify, run};
pub use dynamodb::{
    CHUNK_BYTES, DUE_INDEX, DynamoDbStore, InvalidScope, MAX_HEAD_BYTES, MAX_OUTPUT_BYTES, MAX_SCOPE_LEN, RUNS_INDEX,
    check_scope,
};
pub use env::{EnvError, runner_from_env, store_from_env};
pub use eventbridge::{EventBridgeBus, MAX_BATCH, MAX_ENTRY_BYTES};
pub use metrics::{Metric, Metrics};
pub use scheduler::{RESUME_EVENT, SchedulerTimer};
pub use timer::{HANDOVER_MS, MAX_QUEUE_DELAY_MS, QueueTimer};
pub use wire::{ControlMessage, CronFiring, Resume, WireError};
