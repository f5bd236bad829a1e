//! `readwise-daily-sync`: every day at 03:00 UTC, list the users, then fan out one
//! `readwise/fetch-books` event per user with `send_event`.
//!
//! `READWISE_USERS_URL` answers `[{"userId", "apiKey"}]`. The `list-users` step memoizes only
//! the user ids; the keys are read again just before the send and travel only in the events.

use cairn::prelude::*;
use serde::Deserialize;
use std::collections::HashMap;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserCredentials {
    user_id: String,
    api_key: String,
}

async fn credentials(client: &reqwest::Client, users_url: Option<&str>) -> StepResult<Vec<UserCredentials>> {
    let url = users_url.ok_or_else(|| StepError::non_retriable("READWISE_USERS_URL is not set"))?;
    let response = client.get(url).send().await?;
    if !response.status().is_success() {
        return Err(StepError::new(format!("the users endpoint answered {}", response.status())));
    }
    Ok(response.json().await?)
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
                let client = reqwest::Client::new();
                let users_url = users_url.as_deref();
                let user_ids: Vec<String> = step
                    .run("list-users", || async {
                        Ok(credentials(&client, users_url).await?.into_iter().map(|user| user.user_id).collect())
                    })
                    .await?;
                // Keys are looked up outside the memoized output, so no stored step holds them.
                let keys: HashMap<String, String> = if user_ids.is_empty() {
                    HashMap::new()
                } else {
                    credentials(&client, users_url)
                        .await?
                        .into_iter()
                        .map(|user| (user.user_id, user.api_key))
                        .collect()
                };
                let mut events = Vec::new();
                for user_id in &user_ids {
                    let api_key =
                        keys.get(user_id).ok_or_else(|| StepError::new(format!("no API key for user {user_id}")))?;
                    events.push(EventPayload::new(
                        "readwise/fetch-books",
                        json!({ "userId": user_id, "apiKey": api_key }),
                    ));
                }
                let sent = step.send_event("fan-out", events).await?;
                Ok(json!({ "sent": sent.ids.len() }))
            }
        })
        .expect("the readwise-daily-sync definition is valid")
}
