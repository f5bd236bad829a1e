//! Step items: a step record as one item, or, when its output is larger than
//! [`CHUNK_BYTES`](super::CHUNK_BYTES), a head item referencing chunk items keyed by a hash of
//! their content.

use super::items::split_on_char_boundaries;
use super::items::{decode, encode, number, string};
use super::{CHUNK_BYTES, MAX_OUTPUT_BYTES, STEP_TTL_SECS};
use super::{DynamoDbStore, Item, SortKey};
use aws_sdk_dynamodb::types::AttributeValue;
use cairn::{RunId, StepId, StepRecord, StepState, StoreError};

impl DynamoDbStore {
    pub(super) async fn load_chunks(
        &self,
        run_id: &RunId,
        record_id: &StepId,
        nonce: &str,
        chunks: usize,
    ) -> Result<String, StoreError> {
        let prefix = format!("STEP#{record_id}#{nonce}#");
        let items = self.query_all(&self.run_key(run_id), SortKey::Prefix(&prefix)).await?;
        let mut parts: Vec<(usize, String)> = items
            .iter()
            .filter_map(|item| {
                let n = string(item, "SK").ok()?.strip_prefix(&prefix)?.parse().ok()?;
                Some((n, string(item, "data").ok()?))
            })
            .collect();
        if parts.len() != chunks {
            return Err(StoreError::Serialization(format!(
                "step {record_id} of run {run_id}: found {} of {chunks} output chunks",
                parts.len()
            )));
        }
        parts.sort_by_key(|(n, _)| *n);
        Ok(parts.into_iter().map(|(_, data)| data).collect())
    }

    /// The item a step record is stored as; an output over [`CHUNK_BYTES`] is first written as
    /// chunk items keyed by a hash of their content (so a racing writer with another output
    /// never overwrites the winner's chunks), and the item references them.
    pub(super) async fn step_item(&self, run_id: &RunId, record: &StepRecord) -> Result<Item, StoreError> {
        let encoded = encode(record)?;
        let mut item = Item::from([
            ("PK".into(), AttributeValue::S(self.run_key(run_id))),
            ("SK".into(), AttributeValue::S(format!("STEP#{}", record.id))),
            ("final".into(), AttributeValue::Bool(record.state.is_final())),
            ("position".into(), number(record.position)),
            ("attempts".into(), number(record.attempts)),
            ("expires_at".into(), number(record.started_at / 1000 + STEP_TTL_SECS)),
        ]);
        if encoded.len() <= CHUNK_BYTES {
            item.insert("record".into(), AttributeValue::S(encoded));
            return Ok(item);
        }
        let StepState::Completed { output } = &record.state else {
            // An error (or a scheduled detail) this large: the step fails with the size instead.
            return Err(StoreError::TooLarge { step: record.name.clone(), bytes: encoded.len(), limit: CHUNK_BYTES });
        };
        let output = encode(output)?;
        if output.len() > MAX_OUTPUT_BYTES {
            return Err(StoreError::TooLarge {
                step: record.name.clone(),
                bytes: output.len(),
                limit: MAX_OUTPUT_BYTES,
            });
        }
        let nonce = &StepId::hash(&output).to_string()[..12];
        let parts = split_on_char_boundaries(&output, CHUNK_BYTES);
        for (n, part) in parts.iter().enumerate() {
            let chunk = Item::from([
                ("PK".into(), AttributeValue::S(self.run_key(run_id))),
                ("SK".into(), AttributeValue::S(format!("STEP#{}#{nonce}#{n}", record.id))),
                ("data".into(), AttributeValue::S(part.to_string())),
                ("expires_at".into(), number(record.started_at / 1000 + STEP_TTL_SECS)),
            ]);
            self.put(chunk).await?;
        }
        let mut head = record.clone();
        head.state = StepState::Completed { output: serde_json::Value::Null };
        item.insert("record".into(), AttributeValue::S(encode(&head)?));
        item.insert("chunks".into(), number(parts.len()));
        item.insert("nonce".into(), AttributeValue::S(nonce.to_string()));
        Ok(item)
    }

    /// Decodes a step item, reassembling a chunked output.
    pub(super) async fn decode_step(&self, run_id: &RunId, item: &Item) -> Result<StepRecord, StoreError> {
        let mut record: StepRecord = decode(&string(item, "record")?)?;
        if let (Some(AttributeValue::N(chunks)), Some(AttributeValue::S(nonce))) =
            (item.get("chunks"), item.get("nonce"))
        {
            let chunks: usize = chunks.parse().map_err(|_| StoreError::Serialization("bad chunk count".into()))?;
            let output = self.load_chunks(run_id, &record.id, nonce, chunks).await?;
            record.state = StepState::Completed { output: decode(&output)? };
        }
        Ok(record)
    }
}
