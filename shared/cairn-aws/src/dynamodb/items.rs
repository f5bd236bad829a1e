//! How records are stored as items: a head's attributes (the JSON, the version fence, the index
//! keys), values in and out of JSON, and the service's errors as [`StoreError`]s.

use super::{DynamoDbStore, Item, MAX_HEAD_BYTES};
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use cairn::{RunMeta, StoreError};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub(super) fn build_error(err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(err.to_string())
}

/// Maps an SDK error: throttling and transport failures are retryable, the rest are not.
pub(crate) fn sdk_error<E: ProvideErrorMetadata + std::fmt::Debug>(
    operation: &str,
    err: SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> StoreError {
    let code = err.code().unwrap_or_default().to_string();
    let message = format!("{operation}: {}", err.message().map(str::to_string).unwrap_or_else(|| format!("{err:?}")));
    match &err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => StoreError::Unavailable(message),
        _ if code.contains("Throttl")
            || code == "ProvisionedThroughputExceededException"
            || code == "RequestLimitExceeded" =>
        {
            StoreError::Throttled(message)
        }
        SdkError::ResponseError(_) => StoreError::Unavailable(message),
        SdkError::ServiceError(service) if service.raw().status().is_server_error() => StoreError::Unavailable(message),
        _ => StoreError::Backend(message),
    }
}

pub(super) fn encode<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|err| StoreError::Serialization(err.to_string()))
}

pub(super) fn decode<T: DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|err| StoreError::Serialization(err.to_string()))
}

pub(super) fn string(item: &Item, name: &str) -> Result<String, StoreError> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value.clone()),
        _ => Err(StoreError::Serialization(format!("item attribute `{name}` is missing or not a string"))),
    }
}

pub(super) fn number(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) fn meta_item(store: &DynamoDbStore, meta: &RunMeta) -> Result<Item, StoreError> {
    let encoded = encode(meta)?;
    if encoded.len() > MAX_HEAD_BYTES {
        return Err(StoreError::RunTooLarge {
            run_id: meta.run_id.clone(),
            bytes: encoded.len(),
            limit: MAX_HEAD_BYTES,
        });
    }
    let mut item = Item::from([
        ("PK".into(), AttributeValue::S(store.run_key(&meta.run_id))),
        ("SK".into(), AttributeValue::S("META".into())),
        ("fn_key".into(), AttributeValue::S(store.key("FN", &meta.function_id))),
        ("meta".into(), AttributeValue::S(encoded)),
        ("version".into(), number(meta.version)),
        ("status".into(), AttributeValue::S(meta.status.as_str().into())),
        ("function_id".into(), AttributeValue::S(meta.function_id.clone())),
        ("created_at".into(), number(meta.created_at)),
    ]);
    if let Some(expires_at) = meta.expires_at {
        item.insert("expires_at".into(), number(expires_at / 1000));
    }
    if let Some(wake_at) = meta.wake_at {
        item.insert("due_fn".into(), AttributeValue::S(store.key("FN", &meta.function_id)));
        item.insert("due_at".into(), number(wake_at));
    }
    Ok(item)
}

/// Decodes a head item. `version` and `due_at` are read from their attributes: a wake-up
/// ([`RunStore::commit_and_wake`]) moves them without rewriting the JSON.
pub(super) fn decode_meta(item: &Item) -> Result<RunMeta, StoreError> {
    let mut meta: RunMeta = decode(&string(item, "meta")?)?;
    let number_of = |name: &str| match item.get(name) {
        Some(AttributeValue::N(n)) => n.parse::<i64>().ok(),
        _ => None,
    };
    if let Some(version) = number_of("version").and_then(|v| u64::try_from(v).ok()) {
        meta.version = version;
    }
    meta.wake_at = number_of("due_at");
    Ok(meta)
}

/// Splits `text` into pieces of at most `max` bytes, never inside a UTF-8 character.
pub(super) fn split_on_char_boundaries(text: &str, max: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(max);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (part, tail) = rest.split_at(end);
        parts.push(part);
        rest = tail;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_never_cut_a_character() {
        let text = "aé€😀".repeat(1000);
        let parts = split_on_char_boundaries(&text, 7);
        assert!(parts.iter().all(|p| p.len() <= 7));
        assert_eq!(parts.concat(), text);
    }
}
