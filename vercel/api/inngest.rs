//! The Vercel Function at `/api/inngest`: Vercel's Rust runtime serves the router (the route
//! keeps its full path) through its axum layer, which streams JSON answers.

use tower::Layer;

#[tokio::main]
async fn main() -> Result<(), vercel_runtime::Error> {
    cairn_aws::logging::init();
    let app = cairn_vercel::app().await?;
    vercel_runtime::run(vercel_runtime::axum::VercelLayer::new().layer(app)).await
}
