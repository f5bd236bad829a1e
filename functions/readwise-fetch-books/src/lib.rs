//! `readwise-fetch-books`: on `readwise/fetch-books` `{userId}`, one step per page of the
//! Readwise books API, then a step that posts the count to the app's callback URL.
//!
//! The user's Readwise key is never in an event: the page step reads it at run time from SSM
//! Parameter Store (the SecureString `<READWISE_KEY_PARAMETER_PREFIX><userId>`), so no event,
//! step output, dead-letter message or dashboard view holds it, and nothing logs it.
//! Configuration: `READWISE_BASE_URL` (default `https://readwise.io`), `READWISE_CALLBACK_URL`
//! (where the count is posted) and `READWISE_KEY_PARAMETER_PREFIX`.

mod keys;

pub use keys::{DEFAULT_KEY_PREFIX, KeyStore, MAX_USER_ID_LEN};

use cairn::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The triggering event: who to fetch for, never their key.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchBooks {
    /// The app's user.
    pub user_id: String,
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
/// Connect timeout of every call to Readwise and the callback.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Total timeout of every call: under the 30 s the template keeps between the last step start
/// and the Lambda deadline (`CAIRN_DEADLINE_MARGIN_SECS`), so a hung call fails its attempt
/// (and is retried) instead of being killed with the invocation.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest `Retry-After` honoured; a larger (or absurd) value waits this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);
/// The most pages fetched for one user (a million books): a `next` link that never ends
/// fails the run instead of looping for ever.
pub const MAX_PAGES: u32 = 1000;

/// Where the function talks to.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Readwise API, `https://readwise.io` in production.
    pub base_url: String,
    /// Where the count is posted; `None` fails runs with a clear error.
    pub callback_url: Option<String>,
    /// Where each user's Readwise key is read.
    pub keys: KeyStore,
    /// Total timeout of each call ([`TOTAL_TIMEOUT`] unless a test shortens it).
    pub timeout: Duration,
}

impl Config {
    /// `READWISE_BASE_URL` (default `https://readwise.io`), `READWISE_CALLBACK_URL` and
    /// `READWISE_KEY_PARAMETER_PREFIX`.
    pub fn from_env() -> Self {
        Config {
            base_url: std::env::var("READWISE_BASE_URL").unwrap_or_else(|_| "https://readwise.io".into()),
            callback_url: std::env::var("READWISE_CALLBACK_URL").ok(),
            keys: KeyStore::from_env(),
            timeout: TOTAL_TIMEOUT,
        }
    }
}

/// A `Retry-After` in seconds, bounded by [`MAX_RETRY_AFTER`]; 60 s when absent or not a number.
fn retry_after(header: Option<&str>) -> Duration {
    let seconds = header.and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(60);
    Duration::from_secs(seconds).min(MAX_RETRY_AFTER)
}

/// A failed call as a retriable step error that says whether it timed out (reqwest's own
/// message keeps that in its source chain).
fn call_failed(what: &str, err: &reqwest::Error) -> StepError {
    if err.is_timeout() {
        StepError::new(format!("{what} timed out"))
    } else {
        StepError::new(format!("{what}: {err}"))
    }
}

async fn fetch_page(client: &reqwest::Client, base_url: &str, api_key: &str, page: u32) -> StepResult<Page> {
    let url = format!("{base_url}/api/v2/books/?page_size={PAGE_SIZE}&page={page}");
    let request = client.get(&url).header("Authorization", format!("Token {api_key}"));
    let what = format!("Readwise page {page}");
    let response = request.send().await.map_err(|err| call_failed(&what, &err))?;
    match response.status() {
        status if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN => {
            Err(StepError::non_retriable(format!("Readwise refused the API key ({status})")))
        }
        status if status == reqwest::StatusCode::TOO_MANY_REQUESTS => {
            let wait = retry_after(response.headers().get("Retry-After").and_then(|v| v.to_str().ok()));
            Err(StepError::retry_after("Readwise rate limit", wait))
        }
        status if !status.is_success() => Err(StepError::new(format!("Readwise answered {status} for page {page}"))),
        _ => {
            let body: BooksPage = response.json().await.map_err(|err| call_failed(&what, &err))?;
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
        // Readwise allows 20 list requests a minute per token: start at most 20 fetches a
        // minute per user, and run one fetch per user at a time.
        .throttle(Throttle::new(20, "1m").key("event.data.userId"))
        .concurrency(Concurrency::new(1).key("event.data.userId"))
        .handler(move |event: Event<FetchBooks>, step: Step| {
            let config = config.clone();
            async move {
                let client = reqwest::Client::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .timeout(config.timeout)
                    .build()
                    .map_err(|err| StepError::new(format!("HTTP client: {err}")))?;
                let user_id = event.data.user_id;
                // Read once per invocation, and only by a step that calls Readwise.
                let api_key = tokio::sync::OnceCell::<String>::new();
                let mut total = 0;
                let mut page = 1;
                loop {
                    if page > MAX_PAGES {
                        return Err(StepError::non_retriable(format!("Readwise listed over {MAX_PAGES} pages")));
                    }
                    let (client, api_key, config, user_id) = (&client, &api_key, &config, &user_id);
                    let fetched: Page = step
                        .run("fetch-page", || async move {
                            let key = api_key.get_or_try_init(|| config.keys.read(user_id)).await?;
                            fetch_page(client, &config.base_url, key, page).await
                        })
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
                        let posted = client.post(&callback).json(&body).send().await;
                        let response = posted.map_err(|err| call_failed("the callback", &err))?;
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

/// The `readwise-fetch-books` Lambda binary: the function, configured from the environment;
/// it reads each user's key under the stack's `/readwise/users/` parameters, and nothing else
/// of SSM.
pub fn lambda() -> cairn_aws::Lambda {
    cairn_aws::Lambda::new("readwise-fetch-books", vec![function()])
        .description("readwise-fetch-books: one step per page of the Readwise books API, then post the count")
        .env("READWISE_BASE_URL", cairn_aws::EnvValue::literal("https://readwise.io"))
        .env("READWISE_CALLBACK_URL", cairn_aws::EnvValue::parameter("ReadwiseCallbackUrl"))
        .env("READWISE_KEY_PARAMETER_PREFIX", cairn_aws::EnvValue::sub("/${AWS::StackName}/readwise/users/"))
        .reads_parameters("/${AWS::StackName}/readwise/users/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_bounded_and_never_overflows() {
        assert_eq!(retry_after(Some("7")), Duration::from_secs(7));
        assert_eq!(retry_after(Some("18446744073709551615")), MAX_RETRY_AFTER);
        assert_eq!(retry_after(Some("99999999999999999999999")), Duration::from_secs(60));
        assert_eq!(retry_after(Some("-5")), Duration::from_secs(60));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), Duration::from_secs(60));
        assert_eq!(retry_after(None), Duration::from_secs(60));
    }
}
