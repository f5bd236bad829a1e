//! `serve`: every workflow of the project's one list (`cairn_functions`) over the Inngest SDK protocol at `/api/inngest` (app id
//! `cairn`), with event ingest at `/api/inngest/send` and `/api/inngest/e/{key}`.
//!
//! Under Lambda (a Function URL in `RESPONSE_STREAM` mode) it runs on `lambda_http`; anywhere
//! else it listens on 127.0.0.1:$PORT (default 3000), for Vercel-style and container hosts.
//! Configuration: INNGEST_DEV, INNGEST_SIGNING_KEY(_FALLBACK) (required outside dev mode),
//! INNGEST_SERVE_ORIGIN (else, on Lambda, the Function URL's own https domain), INNGEST_STREAMING,
//! INNGEST_EVENT_KEY (what `send_event` sends with), CAIRN_EVENT_KEYS (what ingest accepts),
//! CAIRN_BUS (where ingested events go; logged when unset).

async fn app() -> anyhow::Result<axum::Router> {
    let registry = cairn::Registry::new(cairn_functions::functions())?;
    let config = cairn_http::ServeConfig::from_env("cairn")?;
    let endpoint = cairn_http::endpoint(
        config,
        registry,
        cairn_http::IngestConfig::from_env(),
        cairn_aws::AnyBus::from_env().await,
    );
    Ok(endpoint.layer(axum::middleware::from_fn(vouch_function_url)))
}

/// On a Lambda Function URL, the URL's own domain as AWS reports it in the request context
/// (the `Host` header is the caller's to choose): what a sync registers with Inngest.
async fn vouch_function_url(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use lambda_http::request::RequestContext;
    let domain = match request.extensions().get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV2(context)) => context.domain_name.clone(),
        _ => None,
    };
    if let Some(domain) = domain {
        request.extensions_mut().insert(cairn_http::ServeOrigin(format!("https://{domain}")));
    }
    next.run(request).await
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
