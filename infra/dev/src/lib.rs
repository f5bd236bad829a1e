//! # cairn-dev
//!
//! `cairn dev`: the local stand-in for EventBridge and EventBridge Scheduler (the same wire APIs,
//! routing read from `template.yaml`), which invokes the functions under `cargo lambda watch`
//! exactly as AWS would, logs every event, and serves a dashboard on http://localhost:8288. The
//! CLI's `cairn send` and `cairn runs` talk to it.

pub mod api;
pub mod app_api;
pub mod aws;
pub mod cli;
pub mod console;
pub mod control;
pub mod dev;
pub mod devdb;
pub mod error;
pub mod generate;
pub mod host;
pub mod inngest;
pub mod loopback;
pub mod pattern;
pub mod scaffold;
pub mod schedule;
pub mod server;
pub mod sqs;
pub mod sqs_delivery;
pub mod ssm;
pub mod template;
pub mod wire;

pub use error::DevError;
