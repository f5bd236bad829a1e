//! `serve`: every workflow of functions/ over the Inngest SDK protocol at `/api/inngest` (app id
//! `cairn`), with event ingest at `/api/inngest/send` and `/api/inngest/e/{key}`.
//!
//! Under Lambda (a Function URL in `RESPONSE_STREAM` mode) it runs on `lambda_http`; anywhere
//! else it listens on 127.0.0.1:$PORT (default 3000), for Vercel-style and container hosts.
//! Configuration: INNGEST_DEV, INNGEST_SIGNING_KEY(_FALLBACK), INNGEST_STREAMING, INNGEST_EVENT_KEY
//! / CAIRN_EVENT_KEYS (ingest), CAIRN_BUS (where ingested events go; logged when unset).

use cairn_aws::{AnyBus, EventBridgeBus};

fn functions() -> Vec<cairn::Function> {
    vec![hello::function(), readwise_fetch_books::function(), readwise_daily_sync::function()]
}

async fn app() -> anyhow::Result<axum::Router> {
    let registry = cairn::Registry::new(functions())?;
    let config = cairn_http::ServeConfig::from_env("cairn").map_err(anyhow::Error::msg)?;
    let bus = match std::env::var("CAIRN_BUS") {
        Ok(name) if !name.is_empty() => {
            let aws = aws_config::load_from_env().await;
            AnyBus::EventBridge(EventBridgeBus::new(aws_sdk_eventbridge::Client::new(&aws), name))
        }
        _ => AnyBus::Log,
    };
    let endpoint =
        cairn_http::serve(config, registry).merge(cairn_http::ingest(cairn_http::IngestConfig::from_env(), bus));
    Ok(axum::Router::new().nest("/api/inngest", endpoint))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cairn_aws::logging::init();
    let app = app().await?;
    if std::env::var("AWS_LAMBDA_RUNTIME_API").is_ok() {
        lambda_http::run_with_streaming_response(app).await.map_err(|err| anyhow::anyhow!(err))?;
        return Ok(());
    }
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    tracing::info!(port, "serving /api/inngest");
    axum::serve(listener, app).await?;
    Ok(())
}
