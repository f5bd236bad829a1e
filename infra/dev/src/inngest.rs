//! `cairn dev -u URL`: the dev server as an Inngest executor for apps that speak the Inngest SDK
//! protocol (the official TypeScript SDK's included).

use crate::dev::Dev;
use crate::devdb::Invocation;
use serde_json::Value;

/// The Inngest-protocol apps the dev server drives.
#[derive(Debug, Default)]
pub struct InngestApps {
    urls: Vec<String>,
}

impl InngestApps {
    /// Apps served at `urls`.
    pub fn new(urls: Vec<String>) -> Self {
        InngestApps { urls }
    }

    /// Function ids triggered by events named `name`.
    pub fn triggered_by(&self, _name: &str) -> Vec<String> {
        Vec::new()
    }

    /// Whether a function with this id is registered.
    pub fn has_function(&self, _id: &str) -> bool {
        false
    }

    /// The first event trigger of a function.
    pub fn first_trigger(&self, _id: &str) -> Option<String> {
        None
    }

    /// The functions, as `GET /api/functions` lists them.
    pub fn functions_json(&self) -> Vec<Value> {
        Vec::new()
    }

    /// Keeps the apps registered.
    pub async fn sync_forever(&self, _dev: &Dev) {
        let _ = &self.urls;
    }

    /// Executes one queued invocation.
    ///
    /// # Errors
    /// The app could not be reached or answered an error.
    pub async fn execute(&self, _dev: &Dev, target: &str, _invocation: &Invocation) -> Result<Value, String> {
        Err(format!("no Inngest app serves `{target}`"))
    }
}

/// The routes an Inngest app calls on its dev server.
pub fn routes() -> axum::Router<std::sync::Arc<Dev>> {
    axum::Router::new()
}
