//! # cairn-http
//!
//! Cairn functions served over the Inngest SDK protocol, so Inngest Cloud or an Inngest-speaking
//! executor can drive them: an axum [`Router`](axum::Router) for `/api/inngest` that answers
//! `GET` introspection and `POST` calls (memo decoding, one new step per request, parallel plans,
//! sleeps, waits, invokes, step errors with `X-Inngest-No-Retry` / `Retry-After`), and checks and
//! sends `X-Inngest-Signature` in cloud mode.
//!
//! ```no_run
//! # async fn demo(functions: Vec<cairn::Function>) -> Result<(), Box<dyn std::error::Error>> {
//! let registry = cairn::Registry::new(functions)?;
//! let app = axum::Router::new().nest("/api/inngest", cairn_http::serve(cairn_http::ServeConfig::from_env("my-app")?, registry));
//! # Ok(()) }
//! ```

pub mod call;
pub mod config;
pub mod ingest;
pub mod opcode;
mod response;
mod router;
pub mod signing;
pub mod sync;

pub use config::{ConfigError, DEFAULT_MAX_BODY, ServeConfig};
pub use ingest::{IngestConfig, ingest, ingest_with_clock};
pub use response::{REQ_VERSION, SDK, ServeOrigin};
pub use router::{endpoint, serve, serve_with_clock};
pub use signing::SigningKey;
