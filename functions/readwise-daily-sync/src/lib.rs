//! `readwise-daily-sync`: every day at 03:00 UTC, list the users, then fan out one
//! `readwise/fetch-books` event per user with `send_event`.
//!
//! `READWISE_USERS_URL` answers `[{"userId": ...}]`. Only ids travel: each fetch reads its
//! user's Readwise key itself (see `readwise-fetch-books`), so the users endpoint need not, and
//! should not, hand out keys; any other field it sends is ignored.

use cairn::prelude::*;
use serde::Deserialize;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct User {
    user_id: String,
}

/// Timeouts of the call to the users endpoint (under the template's 30 s deadline margin).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const TOTAL_TIMEOUT: Duration = Duration::from_secs(20);

async fn user_ids(users_url: Option<&str>) -> StepResult<Vec<String>> {
    let url = users_url.ok_or_else(|| StepError::non_retriable("READWISE_USERS_URL is not set"))?;
    let client = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT).timeout(TOTAL_TIMEOUT).build()?;
    let response = client.get(url).send().await?;
    if !response.status().is_success() {
        return Err(StepError::new(format!("the users endpoint answered {}", response.status())));
    }
    let users: Vec<User> = response.json().await?;
    Ok(users.into_iter().map(|user| user.user_id).collect())
}

/// The function, reading `READWISE_USERS_URL`.
pub fn function() -> Function {
    function_with(std::env::var("READWISE_USERS_URL").ok())
}

/// The function with an explicit users endpoint (tests point it at a local stub).
///
/// # Panics
/// Never: the definition is static and valid (its tests build it).
pub fn function_with(users_url: Option<String>) -> Function {
    Function::new("readwise-daily-sync")
        .name("Daily Readwise sync")
        .cron("0 3 * * *")
        .sends("readwise/fetch-books")
        .handler(move |_event: Event, step: Step| {
            let users_url = users_url.clone();
            async move {
                let users_url = users_url.as_deref();
                let user_ids: Vec<String> = step.run("list-users", || user_ids(users_url)).await?;
                let events: Vec<EventPayload> = user_ids
                    .iter()
                    .map(|user_id| EventPayload::new("readwise/fetch-books", json!({ "userId": user_id })))
                    .collect();
                let sent = step.send_event("fan-out", events).await?;
                Ok(json!({ "sent": sent.ids.len() }))
            }
        })
        .expect("the readwise-daily-sync definition is valid")
}

/// The `readwise-daily-sync` Lambda binary: the function, reading `READWISE_USERS_URL`.
pub fn lambda() -> cairn_aws::Lambda {
    cairn_aws::Lambda::new("readwise-daily-sync", vec![function()])
        .description("readwise-daily-sync: daily at 03:00 UTC, fan out one readwise/fetch-books event per user")
        .env("READWISE_USERS_URL", cairn_aws::EnvValue::parameter("ReadwiseUsersUrl"))
}
