//! Listing runs through the `runs` index, per function, and the marker items that name the
//! functions of a scope (see the module docs of [`super`]).

use super::{
    BATCH_GET_KEYS, DynamoDbStore, Item, RUNS_INDEX, SortKey, build_error, decode_meta, number, sdk_error, string,
};
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use cairn::store::RunQuery;
use cairn::{Millis, RunMeta, StoreError};

impl DynamoDbStore {
    /// Writes this scope's marker for `function` once per process (a `PutItem` of a few bytes).
    pub(super) async fn note_function(&self, function_id: &str) -> Result<(), StoreError> {
        let noted = self.noted_functions.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).contains(function_id);
        if noted {
            return Ok(());
        }
        self.put(Item::from([
            ("PK".into(), AttributeValue::S(self.key("FUNCTIONS", "all"))),
            ("SK".into(), AttributeValue::S(function_id.to_string())),
        ]))
        .await?;
        self.noted_functions.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(function_id.to_string());
        Ok(())
    }

    /// The functions that have runs in this scope.
    pub async fn functions(&self) -> Result<Vec<String>, StoreError> {
        let items = self.query_all(&self.key("FUNCTIONS", "all"), SortKey::Any).await?;
        items.iter().map(|item| string(item, "SK")).collect()
    }

    /// Up to `limit` (creation time, partition key) of `function`'s runs matching `query`'s
    /// status and time window, newest first, from the `runs` index.
    pub(super) async fn indexed_runs(
        &self,
        function: &str,
        query: &RunQuery,
        limit: usize,
    ) -> Result<Vec<(Millis, String)>, StoreError> {
        let mut found = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(RUNS_INDEX)
                .scan_index_forward(false)
                .key_condition_expression("fn_key = :fn AND created_at BETWEEN :from AND :to")
                .expression_attribute_values(":fn", AttributeValue::S(self.key("FN", function)))
                .expression_attribute_values(":from", number(query.created_from.unwrap_or(0)))
                .expression_attribute_values(":to", number(query.created_before.map_or(i64::MAX, |before| before - 1)))
                .limit(i32::try_from(limit.min(1_000)).unwrap_or(1_000))
                .set_exclusive_start_key(start.take());
            if let Some(status) = query.status {
                request = request
                    .filter_expression("#status = :status")
                    .expression_attribute_names("#status", "status")
                    .expression_attribute_values(":status", AttributeValue::S(status.as_str().into()));
            }
            let page = request.send().await.map_err(|err| sdk_error("Query", err))?;
            for item in page.items.unwrap_or_default() {
                let created_at = match item.get("created_at") {
                    Some(AttributeValue::N(n)) => n.parse().unwrap_or_default(),
                    _ => 0,
                };
                found.push((created_at, string(&item, "PK")?));
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() && found.len() < limit => start = Some(key),
                _ => break,
            }
        }
        found.truncate(limit);
        Ok(found)
    }

    /// The heads under these partition keys (consistent reads, 100 keys a request).
    pub(super) async fn heads(&self, partition_keys: Vec<String>) -> Result<Vec<RunMeta>, StoreError> {
        let mut heads = Vec::with_capacity(partition_keys.len());
        for chunk in partition_keys.chunks(BATCH_GET_KEYS) {
            let mut keys: Vec<Item> = chunk
                .iter()
                .map(|pk| {
                    Item::from([
                        ("PK".to_string(), AttributeValue::S(pk.clone())),
                        ("SK".to_string(), AttributeValue::S("META".into())),
                    ])
                })
                .collect();
            while !keys.is_empty() {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut keys)))
                    .consistent_read(true)
                    .build()
                    .map_err(build_error)?;
                let answer = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|err| sdk_error("BatchGetItem", err))?;
                for item in answer.responses.unwrap_or_default().remove(&self.table).unwrap_or_default() {
                    heads.push(decode_meta(&item)?);
                }
                if let Some(mut unprocessed) = answer.unprocessed_keys
                    && let Some(left) = unprocessed.remove(&self.table)
                {
                    keys = left.keys;
                }
            }
        }
        Ok(heads)
    }
}
