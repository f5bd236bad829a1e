//! `readwise-fetch-books`: on `readwise/fetch-books` `{userId, apiKey}`, one step per page of the
//! Readwise books API, then a step that posts the count to the app's callback URL.
//!
//! The API key travels only in the triggering event: no step output holds it, and nothing logs
//! event data. Configuration: `READWISE_BASE_URL` (default `https://readwise.io`) and
//! `READWISE_CALLBACK_URL` (where the count is posted).

use cairn::prelude::*;
use serde::{Deserialize, Serialize};

/// The triggering event.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchBooks {
    /// The app's user.
    pub user_id: String,
    /// The user's Readwise access token.
    pub api_key: String,
}

impl std::fmt::Debug for FetchBooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchBooks").field("user_id", &self.user_id).field("api_key", &"<redacted>").finish()
    }
}

impl EventData for FetchBooks {
    const NAME: &'static str = "readwise/fetch-books";
}

/// What one page step memoizes: counts, never the key or the books' content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// 1-based page number.
    pub page: u32,
    /// Books on this page.
    pub count: usize,
    /// Whether another page follows.
    pub more: bool,
}

#[derive(Deserialize)]
struct BooksPage {
    results: Vec<serde_json::Value>,
    next: Option<String>,
}

const PAGE_SIZE: u32 = 1000;

/// Where the function talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The Readwise API, `https://readwise.io` in production.
    pub base_url: String,
    /// Where the count is posted; `None` fails runs with a clear error.
    pub callback_url: Option<String>,
}

impl Config {
    /// `READWISE_BASE_URL` (default `https://readwise.io`) and `READWISE_CALLBACK_URL`.
    pub fn from_env() -> Self {
        Config {
            base_url: std::env::var("READWISE_BASE_URL").unwrap_or_else(|_| "https://readwise.io".into()),
            callback_url: std::env::var("READWISE_CALLBACK_URL").ok(),
        }
    }
}

async fn fetch_page(client: &reqwest::Client, base_url: &str, api_key: &str, page: u32) -> StepResult<Page> {
    let url = format!("{base_url}/api/v2/books/?page_size={PAGE_SIZE}&page={page}");
    let response = client.get(&url).header("Authorization", format!("Token {api_key}")).send().await?;
    match response.status() {
        status if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN => {
            Err(StepError::non_retriable(format!("Readwise refused the API key ({status})")))
        }
        status if status == reqwest::StatusCode::TOO_MANY_REQUESTS => {
            let wait = response
                .headers()
                .get("Retry-After")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(60);
            Err(StepError::retry_after("Readwise rate limit", std::time::Duration::from_secs(wait)))
        }
        status if !status.is_success() => Err(StepError::new(format!("Readwise answered {status} for page {page}"))),
        _ => {
            let body: BooksPage = response.json().await?;
            Ok(Page { page, count: body.results.len(), more: body.next.is_some() })
        }
    }
}

/// The function, configured from the environment.
pub fn function() -> Function {
    function_with(Config::from_env())
}

/// The function with an explicit configuration (tests point it at local stubs).
///
/// # Panics
/// Never: the definition is static and valid (its tests build it).
pub fn function_with(config: Config) -> Function {
    Function::on::<FetchBooks>("readwise-fetch-books")
        .name("Fetch Readwise books")
        .handler(move |event: Event<FetchBooks>, step: Step| {
            let config = config.clone();
            async move {
                let client = reqwest::Client::new();
                let FetchBooks { user_id, api_key } = event.data;
                let mut total = 0;
                let mut page = 1;
                loop {
                    let (client, api_key, base_url) = (&client, &api_key, config.base_url.as_str());
                    let fetched: Page = step
                        .run("fetch-page", || async move { fetch_page(client, base_url, api_key, page).await })
                        .await?;
                    total += fetched.count;
                    if !fetched.more {
                        break;
                    }
                    page += 1;
                }
                let callback = config
                    .callback_url
                    .clone()
                    .ok_or_else(|| StepError::non_retriable("READWISE_CALLBACK_URL is not set"))?;
                let body = json!({ "userId": user_id, "count": total });
                let client = &client;
                let posted: u16 = step
                    .run("post-count", || async move {
                        let response = client.post(&callback).json(&body).send().await?;
                        if !response.status().is_success() {
                            return Err(StepError::new(format!("the callback answered {}", response.status())));
                        }
                        Ok(response.status().as_u16())
                    })
                    .await?;
                Ok(json!({ "userId": user_id, "total": total, "callbackStatus": posted }))
            }
        })
        .expect("the readwise-fetch-books definition is valid")
}
