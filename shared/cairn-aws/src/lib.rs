//! # cairn-aws
//!
//! Cairn on AWS: [`DynamoDbStore`] (steps memoized in one table), [`EventBridgeBus`] (events out,
//! routed by `detail-type`), [`SchedulerTimer`] (long sleeps, back-offs and timeouts as one-time
//! schedules), and the [`LambdaDriver`] every function binary runs:
//!
//! ```no_run
//! #[tokio::main]
//! async fn main() -> Result<(), lambda_runtime::Error> {
//!     # let function = || -> cairn::Function { unimplemented!() };
//!     cairn_aws::run(vec![function()]).await
//! }
//! ```

mod any;
mod driver;
mod dynamodb;
mod eventbridge;
pub mod logging;
mod scheduler;

pub use any::{AnyBus, AnyStore, AnyTimer};
pub use driver::{DriverConfig, DriverError, Invocation, LambdaDriver, classify, run, runner_from_env};
pub use dynamodb::{CHUNK_BYTES, DynamoDbStore, MAX_OUTPUT_BYTES};
pub use eventbridge::{EventBridgeBus, MAX_BATCH, MAX_ENTRY_BYTES};
pub use scheduler::{RESUME_EVENT, SchedulerTimer};
