//! Flow-control items: `<scope>#FLOW#<key>` / `FLOW`, a GCRA bucket's `tat` (rate limit,
//! idempotency) or a lock's `holder` (singleton). A run's head and its claims are written in one
//! `TransactWriteItems`, each claim conditioned on the item as it was read, so two admissions
//! racing for one key cannot both spend its last token, and a duplicate delivery spends none.
//!
//! Concurrency slots (`<scope>#SLOT#<key>` / `SLOT`) and throttle queues
//! (`<scope>#THROTTLE#<key>` / `THROTTLE`): the key's state as JSON (`state`) with a version
//! (`ver`); every change reads the keys (strongly consistent) and writes them back conditioned on
//! the versions read, all keys in one transaction.

use super::items::{build_error, decode, decode_meta, encode, meta_item, number, sdk_error, string};
use super::{DynamoDbStore, Item};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use cairn::flow::{
    Acquired, Claim, FlowItem, Gcra, Slot, SlotState, ThrottleState, Throttled, WindowChange, WindowState, Windowed,
    acquire, apply, decide, leave, redelivered, release, throttle,
};
use cairn::store::Admission;
use cairn::{Millis, RunId, RunMeta, StoreError};

/// Reads and conditional writes retried before a contended key is reported unavailable.
const ADMIT_ATTEMPTS: usize = 8;
/// A bucket is forgotten (TTL) this long after its `tat`: by then it is idle again.
const BUCKET_TTL_SECS: i64 = 86_400;
/// An event a window keeps is forgotten (TTL) this long after it came. Its run reads them on
/// every invocation, so they must outlive the run: 400 days is beyond a window's 7 days plus
/// the 366-day longest sleep (a run sleeping longer, in several sleeps, would lose them).
const KEPT_EVENT_TTL_SECS: i64 = 400 * 86_400;

impl DynamoDbStore {
    fn flow_key(&self, key: &str) -> String {
        self.key("FLOW", key)
    }

    async fn flow_item(&self, key: &str) -> Result<Option<FlowItem>, StoreError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("PK", AttributeValue::S(self.flow_key(key)))
            .key("SK", AttributeValue::S("FLOW".into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| sdk_error("GetItem", err))?
            .item;
        Ok(item.map(|item| FlowItem {
            tat: item.get("tat").and_then(|value| value.as_n().ok()).and_then(|n| n.parse().ok()),
            holder: item.get("holder").and_then(|value| value.as_s().ok()).map(RunId::new),
        }))
    }

    async fn existing_head(&self, run_id: &RunId) -> Result<Option<RunMeta>, StoreError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("PK", AttributeValue::S(self.run_key(run_id)))
            .key("SK", AttributeValue::S("META".into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| sdk_error("GetItem", err))?
            .item;
        item.as_ref().map(decode_meta).transpose()
    }

    /// The claim's item written as decided, conditioned on it being as read.
    fn flow_put(&self, claim: &Claim, read: Option<&FlowItem>, item: &FlowItem) -> Result<Put, StoreError> {
        let mut written: Item = Item::new();
        written.insert("PK".into(), AttributeValue::S(self.flow_key(claim.key())));
        written.insert("SK".into(), AttributeValue::S("FLOW".into()));
        if let Some(tat) = item.tat {
            written.insert("tat".into(), number(tat));
            written.insert("expires_at".into(), number(tat / 1000 + BUCKET_TTL_SECS));
        }
        if let Some(holder) = &item.holder {
            written.insert("holder".into(), AttributeValue::S(holder.to_string()));
        }
        let put = Put::builder().table_name(&self.table).set_item(Some(written));
        let put = match read {
            None => put.condition_expression("attribute_not_exists(PK)"),
            Some(FlowItem { tat: Some(tat), .. }) => {
                put.condition_expression("tat = :read").expression_attribute_values(":read", number(*tat))
            }
            Some(FlowItem { holder: Some(holder), .. }) => put
                .condition_expression("holder = :read")
                .expression_attribute_values(":read", AttributeValue::S(holder.to_string())),
            Some(_) => put.condition_expression("attribute_exists(PK)"),
        };
        put.build().map_err(build_error)
    }

    pub(super) async fn admit(&self, meta: RunMeta, claims: &[Claim], now: Millis) -> Result<Admission, StoreError> {
        self.note_function(&meta.function_id).await?;
        let mut meta = meta;
        meta.version = 0;
        for _ in 0..ADMIT_ATTEMPTS {
            let mut read = Vec::with_capacity(claims.len());
            for claim in claims {
                read.push(self.flow_item(claim.key()).await?);
            }
            let items = match decide(claims, &read, &meta.run_id, now) {
                Ok(items) => items,
                Err((claim, holder)) => {
                    // A duplicate delivery is a duplicate, whatever its claims say now.
                    if let Some(existing) = self.existing_head(&meta.run_id).await? {
                        return Ok(Admission::Existing(existing));
                    }
                    return Ok(Admission::Refused { claim, holder });
                }
            };
            let head = Put::builder()
                .table_name(&self.table)
                .set_item(Some(meta_item(self, &meta)?))
                .condition_expression("attribute_not_exists(PK)")
                .build()
                .map_err(build_error)?;
            let mut transaction =
                self.client.transact_write_items().transact_items(TransactWriteItem::builder().put(head).build());
            for ((claim, read), item) in claims.iter().zip(&read).zip(&items) {
                let put = self.flow_put(claim, read.as_ref(), item)?;
                transaction = transaction.transact_items(TransactWriteItem::builder().put(put).build());
            }
            let err = match transaction.send().await {
                Ok(_) => return Ok(Admission::Created(meta)),
                Err(err) => err,
            };
            let reasons: Vec<String> = match err.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(canceled)) => {
                    canceled.cancellation_reasons().iter().map(|r| r.code().unwrap_or_default().to_string()).collect()
                }
                _ => return Err(sdk_error("TransactWriteItems", err)),
            };
            if reasons.first().is_some_and(|code| code == "ConditionalCheckFailed") {
                let existing = self.existing_head(&meta.run_id).await?;
                return existing
                    .map(Admission::Existing)
                    .ok_or_else(|| StoreError::Backend("head condition failed but no head is stored".into()));
            }
            // A claim's item moved since it was read (another admission): read it again.
        }
        Err(StoreError::Unavailable(format!(
            "run {}: its flow-control keys stayed contended over {ADMIT_ATTEMPTS} attempts",
            meta.run_id
        )))
    }

    pub(super) async fn release(&self, key: &str, holder: &RunId) -> Result<(), StoreError> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("PK", AttributeValue::S(self.flow_key(key)))
            .key("SK", AttributeValue::S("FLOW".into()))
            .condition_expression("holder = :holder")
            .expression_attribute_values(":holder", AttributeValue::S(holder.to_string()))
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(()),
            Err(err) => Err(sdk_error("DeleteItem", err)),
        }
    }

    /// The JSON states of `keys` under `kind` (`SLOT`, `THROTTLE`), with their versions.
    async fn states<T: serde::de::DeserializeOwned + Default>(
        &self,
        kind: &str,
        keys: &[&str],
    ) -> Result<Vec<(T, Option<i64>)>, StoreError> {
        let mut states = Vec::with_capacity(keys.len());
        for key in keys {
            let item = self
                .client
                .get_item()
                .table_name(&self.table)
                .key("PK", AttributeValue::S(self.key(kind, key)))
                .key("SK", AttributeValue::S(kind.into()))
                .consistent_read(true)
                .send()
                .await
                .map_err(|err| sdk_error("GetItem", err))?
                .item;
            states.push(match item {
                Some(item) => (
                    decode(&string(&item, "state")?)?,
                    item.get("ver").and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok()),
                ),
                None => (T::default(), None),
            });
        }
        Ok(states)
    }

    /// A flow-control state item of `kind` under `key`, one version past the `version` read.
    fn state_item<T: serde::Serialize>(
        &self,
        kind: &str,
        key: &str,
        state: &T,
        version: Option<i64>,
    ) -> Result<Item, StoreError> {
        Ok(Item::from([
            ("PK".into(), AttributeValue::S(self.key(kind, key))),
            ("SK".into(), AttributeValue::S(kind.into())),
            ("state".into(), AttributeValue::S(encode(state)?)),
            ("ver".into(), number(version.unwrap_or(0) + 1)),
        ]))
    }

    /// `item` as a transaction's put, conditioned on the `version` read (absent: not there yet).
    fn versioned_put(&self, item: Item, version: Option<i64>) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder().table_name(&self.table).set_item(Some(item));
        let put = match version {
            None => put.condition_expression("attribute_not_exists(PK)"),
            Some(version) => {
                put.condition_expression("ver = :read").expression_attribute_values(":read", number(version))
            }
        };
        Ok(TransactWriteItem::builder().put(put.build().map_err(build_error)?).build())
    }

    /// Reads the keys' states, applies `decide`, writes them back conditioned on the versions
    /// read (one key: one conditional put, none if nothing changed; several: one transaction);
    /// again if another writer came first.
    pub(super) async fn update_states<
        T: serde::Serialize + serde::de::DeserializeOwned + Default + Clone + PartialEq,
        R,
    >(
        &self,
        kind: &str,
        keys: &[&str],
        decide: impl Fn(&[T]) -> (Vec<T>, R),
    ) -> Result<R, StoreError> {
        for _ in 0..ADMIT_ATTEMPTS {
            let read: Vec<(T, Option<i64>)> = self.states(kind, keys).await?;
            let states: Vec<T> = read.iter().map(|(state, _)| state.clone()).collect();
            let (next, outcome) = decide(&states);
            let mut puts = Vec::with_capacity(keys.len());
            for ((key, (_, version)), state) in keys.iter().zip(&read).zip(&next) {
                puts.push((self.state_item(kind, key, state, *version)?, *version));
            }
            // One key: a conditional put (half a transaction's cost), or nothing if the
            // decision changed nothing (the strongly consistent read was the whole decision).
            if let ([(item, version)], [(old, _)], [new]) = (puts.as_slice(), read.as_slice(), next.as_slice()) {
                if old == new {
                    return Ok(outcome);
                }
                let put = self.client.put_item().table_name(&self.table).set_item(Some(item.clone()));
                let put = match version {
                    None => put.condition_expression("attribute_not_exists(PK)"),
                    Some(version) => {
                        put.condition_expression("ver = :read").expression_attribute_values(":read", number(*version))
                    }
                };
                match put.send().await {
                    Ok(_) => return Ok(outcome),
                    Err(err) => match err.as_service_error() {
                        Some(e) if e.is_conditional_check_failed_exception() => continue,
                        _ => return Err(sdk_error("PutItem", err)),
                    },
                }
            }
            let mut transaction = self.client.transact_write_items();
            for (item, version) in puts {
                transaction = transaction.transact_items(self.versioned_put(item, version)?);
            }
            match transaction.send().await {
                Ok(_) => return Ok(outcome),
                Err(err) => match err.as_service_error() {
                    Some(TransactWriteItemsError::TransactionCanceledException(_)) => continue,
                    _ => return Err(sdk_error("TransactWriteItems", err)),
                },
            }
        }
        Err(StoreError::Unavailable(format!(
            "flow-control keys {keys:?} stayed contended over {ADMIT_ATTEMPTS} attempts"
        )))
    }

    pub(super) async fn acquire(
        &self,
        run_id: &RunId,
        slots: &[Slot],
        now: Millis,
        hold_until: Millis,
    ) -> Result<Acquired, StoreError> {
        let keys: Vec<&str> = slots.iter().map(|slot| slot.key.as_str()).collect();
        self.update_states("SLOT", &keys, |states: &[SlotState]| acquire(slots, states, run_id, now, hold_until)).await
    }

    pub(super) async fn release_held(
        &self,
        run_id: &RunId,
        slots: &[Slot],
        now: Millis,
    ) -> Result<Vec<RunId>, StoreError> {
        let keys: Vec<&str> = slots.iter().map(|slot| slot.key.as_str()).collect();
        self.update_states("SLOT", &keys, |states: &[SlotState]| release(slots, states, run_id, now)).await
    }

    pub(super) async fn throttle(
        &self,
        run_id: &RunId,
        key: &str,
        limiter: Gcra,
        score: Millis,
        now: Millis,
    ) -> Result<Throttled, StoreError> {
        self.update_states("THROTTLE", &[key], |states: &[ThrottleState]| {
            let (next, throttled) = throttle(limiter, &states[0], run_id, score, now);
            (vec![next], throttled)
        })
        .await
    }

    pub(super) async fn leave_throttle_queue(&self, run_id: &RunId, key: &str) -> Result<(), StoreError> {
        self.update_states("THROTTLE", &[key], |states: &[ThrottleState]| (vec![leave(&states[0], run_id)], ())).await
    }

    /// Applies a window change; a pushed event the rule keeps is written under the placeholder
    /// that took it in the same transaction, conditioned on its absence (a redelivery writes
    /// nothing). One decision, one write: what the write holds is what `apply` decided.
    pub(super) async fn update_window(
        &self,
        keys: &[&str],
        change: &WindowChange,
        now: Millis,
    ) -> Result<Windowed, StoreError> {
        let Some((event, placeholder)) = change.kept() else {
            return self.update_states("WINDOW", keys, |states: &[WindowState]| apply(change, states, now)).await;
        };
        for _ in 0..ADMIT_ATTEMPTS {
            let read: Vec<(WindowState, Option<i64>)> = self.states("WINDOW", keys).await?;
            let states: Vec<WindowState> = read.iter().map(|(state, _)| state.clone()).collect();
            let (next, outcome) = apply(change, &states, now);
            if next == states {
                // Ignored (a redelivery, an older event) or limited: nothing to write.
                return Ok(outcome);
            }
            let mut transaction = self.client.transact_write_items();
            for ((key, (_, version)), state) in keys.iter().zip(&read).zip(&next) {
                let item = self.state_item("WINDOW", key, state, *version)?;
                transaction = transaction.transact_items(self.versioned_put(item, *version)?);
            }
            let kept = match outcome.taken_by() {
                Some(taken_by) => {
                    let seq = next[0]
                        .open
                        .iter()
                        .chain(&next[0].closed)
                        .find(|window| &window.run_id == taken_by)
                        .map_or(1, |window| window.count);
                    let item = Item::from([
                        ("PK".into(), AttributeValue::S(self.key("WINEV", taken_by))),
                        ("SK".into(), AttributeValue::S(format!("E#{}", event.id.as_deref().unwrap_or_default()))),
                        ("seq".into(), number(seq)),
                        ("event".into(), AttributeValue::S(encode(event)?)),
                        ("expires_at".into(), number(now / 1000 + KEPT_EVENT_TTL_SECS)),
                    ]);
                    let put = Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(item))
                        .condition_expression("attribute_not_exists(PK)")
                        .build()
                        .map_err(build_error)?;
                    transaction = transaction.transact_items(TransactWriteItem::builder().put(put).build());
                    true
                }
                None => false,
            };
            let err = match transaction.send().await {
                Ok(_) => return Ok(outcome),
                Err(err) => err,
            };
            let reasons: Vec<String> = match err.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(canceled)) => {
                    canceled.cancellation_reasons().iter().map(|r| r.code().unwrap_or_default().to_string()).collect()
                }
                _ => return Err(sdk_error("TransactWriteItems", err)),
            };
            if kept && reasons.last().is_some_and(|code| code == "ConditionalCheckFailed") {
                return Ok(redelivered(&states[0], placeholder));
            }
            // A window item moved since it was read: read it again.
        }
        Err(StoreError::Unavailable(format!("window keys {keys:?} stayed contended over {ADMIT_ATTEMPTS} attempts")))
    }

    /// The events kept under placeholder `run_id`'s window, in order.
    pub(super) async fn kept_events(&self, run_id: &RunId) -> Result<Vec<cairn::EventPayload>, StoreError> {
        let items = self.query_all(&self.key("WINEV", run_id), super::SortKey::Prefix("E#")).await?;
        let mut events = Vec::with_capacity(items.len());
        for item in &items {
            let seq: i64 = item.get("seq").and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok()).unwrap_or(0);
            events.push((seq, decode::<cairn::EventPayload>(&string(item, "event")?)?));
        }
        events.sort_by_key(|(seq, _)| *seq);
        Ok(events.into_iter().map(|(_, event)| event).collect())
    }
}
