//! # cairn-vercel
//!
//! The project's workflows (functions/registry) over the Inngest protocol at `/api/inngest`,
//! deployed as a Vercel Function with Vercel's official Rust runtime (`vercel_runtime` and its
//! axum layer): Inngest Cloud syncs and drives it, exactly as it drives the `serve` Lambda.
//! `api/inngest.rs` is the Function; [`app`] is its router, shared with the tests.

use cairn_http::{IngestConfig, ServeConfig};

/// The endpoint for `config` and `ingest`, sending events to `bus`.
///
/// # Errors
/// Two functions of the list share an id.
pub fn app_with(
    config: ServeConfig,
    ingest: IngestConfig,
    bus: cairn_aws::AnyBus,
) -> Result<axum::Router, cairn::DefinitionError> {
    let registry = cairn::Registry::new(cairn_functions::functions())?;
    Ok(cairn_http::endpoint(config, registry, ingest, bus))
}

/// The endpoint configured from the environment Vercel gives the Function: `INNGEST_SIGNING_KEY`
/// (required unless `INNGEST_DEV`), `INNGEST_SERVE_ORIGIN`, `CAIRN_EVENT_KEYS` and `CAIRN_BUS`
/// (where ingested and sent events go; logged when unset), as for `serve`.
///
/// # Errors
/// A missing or malformed signing key, or a bad list of functions, named.
pub async fn app() -> Result<axum::Router, vercel_runtime::Error> {
    let config = ServeConfig::from_env("cairn")?;
    Ok(app_with(config, IngestConfig::from_env(), cairn_aws::AnyBus::from_env().await)?)
}
