//! [`DynamoDbStore`]: the run store on one DynamoDB table (DESIGN.md, State).
//!
//! Every partition key starts with the store's **scope** (one per Lambda, `CAIRN_SCOPE`, the
//! binary's name in `template.yaml`), so an IAM `dynamodb:LeadingKeys` condition on `<scope>#*`
//! confines each function to its own items:
//!
//! | PK | SK | holds |
//! |---|---|---|
//! | `<scope>#RUN#<run>` | `META` | the run head as JSON, `version` (the optimistic-concurrency fence), `expires_at` (TTL), `fn_key` (`<scope>#FN#<function>`), and while the run needs a driver `due_fn` (= `fn_key`) + `due_at` (the sparse `due` index the reconciler queries) |
//! | `<scope>#RUN#<run>` | `STEP#<step>` | the step record as JSON, `final`, and `chunks` when its output is split |
//! | `<scope>#RUN#<run>` | `STEP#<step>#<nonce>#<n>` | chunk `n` of an output too large for one 400 KB item |
//! | `<scope>#WAIT#<event>` | `<run>#<step>` | a pending `wait_for_event` or `cancel_on` listener of the general form (matched by evaluating its condition) |
//! | `<scope>#WAITKEY#<event>#<path>#<hash>` | `<run>#<step>` | a pending wait filed under the value its condition requires at `<path>` of the event ([`Wait::key`]): an event reads only the partition of its own value |
//! | `<scope>#WAIT#<event>` | `!paths` | the string set `paths` of the fields waits for `<event>` are filed under (written before the first such wait, once per process; read by the same Query as the general form) |
//! | `<scope>#EVENTS#<event>` | `<received ms, 13 digits>#<id>` | a received event, for the wait lookback (TTL 1 day) |
//! | `<scope>#FLOW#<key>` | `FLOW` | a flow-control item: a rate-limit or idempotency bucket's `tat`, a singleton lock's `holder` (see `flow.rs`) |
//! | `<scope>#SLOT#<key>` | `SLOT` | a concurrency key's holders and queue (JSON `state`, version `ver`; see `flow.rs`) |
//! | `<scope>#THROTTLE#<key>` | `THROTTLE` | a throttle key's `tat` and queue (JSON `state`, version `ver`) |
//! | `<scope>#WINDOW#<key>` | `WINDOW` | an event window (debounce, batch), or a debounced function's rate-limit bucket (JSON `state`, version `ver`) |
//! | `<scope>#WINEV#<placeholder run>` | `E#<event id>` | an event a window keeps for its run (`seq`, JSON `event`; TTL 400 days) |
//! | `<scope>#FUNCTIONS#all` | `<function>` | a function that has runs in this scope (written once per process and function), so runs can be listed without naming one |
//!
//! The `due` global secondary index (hash `due_fn`, range `due_at`, projection ALL) holds only
//! heads with a `wake_at`: unfinished runs and runs with an undelivered outbox. Its hash key is
//! scope-prefixed too, so a Query on the index is covered by the same condition. The reconciler
//! reads it per function, never scanning the table.
//!
//! The `runs` global secondary index (hash `fn_key`, range `created_at`, projecting the keys and
//! `status`) holds every head: [`RunStore::list_runs`] queries it per function, newest first,
//! then reads the heads it needs (`BatchGetItem`). Only a head's creation or a change of status
//! writes to it; lease renewals and wake-ups do not.
//!
//! A step commits with one conditional `PutItem` (`attribute_not_exists(SK) OR final = false`)
//! with `ReturnValuesOnConditionCheckFailure=ALL_OLD`, so the loser of a race gets the winner's
//! record in the same round trip.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update};
use cairn::flow::{Acquired, Claim, Gcra, Slot, Throttled};
use cairn::store::{Admission, Commit, CreateRun, RunQuery};
use cairn::{EventPayload, Journal, Millis, RunId, RunMeta, RunStore, StepRecord, StoreError, Wait};
use std::collections::HashMap;

/// Outputs whose record is larger than this are split into chunk items (an item holds 400 KB,
/// attribute names included).
pub const CHUNK_BYTES: usize = 350 * 1024;
/// The largest step output stored (Inngest's limit); larger outputs fail the step.
pub const MAX_OUTPUT_BYTES: usize = 4 * 1024 * 1024;
/// Step items expire this long after they start, whatever happens to the run (a run lasts at
/// most 366 days plus retention; the head's own TTL is set when the run finishes).
const STEP_TTL_SECS: i64 = 400 * 86_400;
/// A step record is written when none is stored, or over a non-final one with no more
/// attempts than it (a stale writer never brings back retries that were used up).
const STEP_CONDITION: &str =
    "attribute_not_exists(SK) OR (#final = :false AND (attribute_not_exists(#attempts) OR #attempts <= :attempts))";
/// The reconciler's index.
pub const DUE_INDEX: &str = "due";
/// The listing index: every head by function and creation time.
pub const RUNS_INDEX: &str = "runs";
/// Keys a `BatchGetItem` takes at most.
const BATCH_GET_KEYS: usize = 100;
/// The largest run head stored (its event, output and error as JSON): an item holds 400 KB.
pub const MAX_HEAD_BYTES: usize = CHUNK_BYTES + 30 * 1024;

type Item = HashMap<String, AttributeValue>;

mod flow;
mod items;
mod listing;
mod steps;
mod table;
mod waits;

pub(crate) use items::sdk_error;
use items::{build_error, decode_meta, meta_item, number, string};

/// The longest scope: it also prefixes the Scheduler schedule names (64 characters at most).
pub const MAX_SCOPE_LEN: usize = 43;

/// A scope that cannot prefix keys (and IAM patterns): empty, too long, or with characters
/// other than letters, digits, `-` and `_`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "scope `{0}` is not usable: it must be 1 to {MAX_SCOPE_LEN} letters, digits, '-' or '_' (the binary's name, as template.yaml sets CAIRN_SCOPE)"
)]
pub struct InvalidScope(pub String);

/// Checks a scope (see [`InvalidScope`]).
///
/// # Errors
/// [`InvalidScope`] naming it.
pub fn check_scope(scope: &str) -> Result<(), InvalidScope> {
    let valid = !scope.is_empty()
        && scope.len() <= MAX_SCOPE_LEN
        && scope.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid { Ok(()) } else { Err(InvalidScope(scope.to_string())) }
}

/// The run store on DynamoDB. Cheap to clone (the SDK client is shared).
#[derive(Clone, Debug)]
pub struct DynamoDbStore {
    client: Client,
    table: String,
    scope: String,
    /// Functions whose marker item this process has written (see the module docs).
    noted_functions: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// `<event>#<path>` pairs whose `WAITPATHS` entry this process has written.
    noted_wait_paths: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl DynamoDbStore {
    /// A store on `table` through `client`, keeping its items under `scope` (every partition
    /// key starts with `<scope>#`).
    ///
    /// # Errors
    /// [`InvalidScope`] when `scope` cannot prefix keys.
    pub fn new(client: Client, table: impl Into<String>, scope: impl Into<String>) -> Result<Self, InvalidScope> {
        let scope = scope.into();
        check_scope(&scope)?;
        Ok(DynamoDbStore {
            client,
            table: table.into(),
            scope,
            noted_functions: Default::default(),
            noted_wait_paths: Default::default(),
        })
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The scope every partition key starts with.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The one key builder: `<scope>#<kind>#<name>` (partition keys and the `due` index's key).
    fn key(&self, kind: &str, name: impl std::fmt::Display) -> String {
        format!("{}#{kind}#{name}", self.scope)
    }

    fn run_key(&self, run_id: &RunId) -> String {
        self.key("RUN", run_id)
    }

    async fn query_all(&self, pk: &str, sort_key: SortKey<'_>) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .expression_attribute_values(":pk", AttributeValue::S(pk.to_string()))
                .set_exclusive_start_key(start.take());
            query = match sort_key {
                SortKey::Any => query.key_condition_expression("PK = :pk"),
                SortKey::Prefix(prefix) => query
                    .key_condition_expression("PK = :pk AND begins_with(SK, :sk)")
                    .expression_attribute_values(":sk", AttributeValue::S(prefix.to_string())),
                SortKey::AtLeast(from) => query
                    .key_condition_expression("PK = :pk AND SK >= :sk")
                    .expression_attribute_values(":sk", AttributeValue::S(from.to_string())),
            };
            let page = query.send().await.map_err(|err| sdk_error("Query", err))?;
            items.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    /// An unconditional `PutItem` (chunks, waits, the event log: idempotent items).
    async fn put(&self, item: Item) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|err| sdk_error("PutItem", err))?;
        Ok(())
    }
}

/// Which items of a partition a query reads.
#[derive(Clone, Copy)]
enum SortKey<'a> {
    Any,
    Prefix(&'a str),
    AtLeast(&'a str),
}

impl RunStore for DynamoDbStore {
    async fn admit_run(&self, meta: RunMeta, claims: &[Claim], now: Millis) -> Result<Admission, StoreError> {
        self.admit(meta, claims, now).await
    }

    async fn release_lock(&self, key: &str, holder: &RunId) -> Result<(), StoreError> {
        self.release(key, holder).await
    }

    async fn acquire_slots(
        &self,
        run_id: &RunId,
        slots: &[Slot],
        now: Millis,
        hold_until: Millis,
    ) -> Result<Acquired, StoreError> {
        self.acquire(run_id, slots, now, hold_until).await
    }

    async fn release_slots(&self, run_id: &RunId, slots: &[Slot], now: Millis) -> Result<Vec<RunId>, StoreError> {
        self.release_held(run_id, slots, now).await
    }

    async fn throttle_start(
        &self,
        run_id: &RunId,
        key: &str,
        limiter: Gcra,
        score: Millis,
        now: Millis,
    ) -> Result<Throttled, StoreError> {
        self.throttle(run_id, key, limiter, score, now).await
    }

    async fn leave_throttle(&self, run_id: &RunId, key: &str) -> Result<(), StoreError> {
        self.leave_throttle_queue(run_id, key).await
    }

    async fn window(
        &self,
        keys: &[&str],
        change: &cairn::flow::WindowChange,
        now: Millis,
    ) -> Result<cairn::flow::Windowed, StoreError> {
        self.update_window(keys, change, now).await
    }

    async fn window_events(&self, run_id: &RunId) -> Result<Vec<EventPayload>, StoreError> {
        self.kept_events(run_id).await
    }

    async fn create_run(&self, meta: RunMeta) -> Result<CreateRun, StoreError> {
        self.note_function(&meta.function_id).await?;
        let mut meta = meta;
        meta.version = 0;
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(meta_item(self, &meta)?))
            .condition_expression("attribute_not_exists(PK)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match put {
            Ok(_) => Ok(CreateRun::Created(meta)),
            Err(err) => match err.as_service_error() {
                Some(e) if e.is_conditional_check_failed_exception() => {
                    let existing = match e {
                        aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(
                            failed,
                        ) => failed.item.clone(),
                        _ => None,
                    };
                    let existing =
                        existing.ok_or_else(|| StoreError::Backend("condition failed without the old item".into()))?;
                    Ok(CreateRun::Existing(decode_meta(&existing)?))
                }
                _ => Err(sdk_error("PutItem", err)),
            },
        }
    }

    async fn load(&self, run_id: &RunId) -> Result<Option<Journal>, StoreError> {
        let items = self.query_all(&self.run_key(run_id), SortKey::Any).await?;
        let mut meta = None;
        let mut steps = Vec::new();
        for item in &items {
            let sk = string(item, "SK")?;
            if sk == "META" {
                meta = Some(decode_meta(item)?);
            } else if let Some(rest) = sk.strip_prefix("STEP#")
                && !rest.contains('#')
            {
                steps.push(self.decode_step(run_id, item).await?);
            }
        }
        let Some(meta) = meta else { return Ok(None) };
        steps.sort_by_key(|record| record.position);
        Ok(Some(Journal { meta, steps }))
    }

    async fn update_meta(&self, meta: &RunMeta) -> Result<RunMeta, StoreError> {
        let mut stored = meta.clone();
        stored.version = meta.version + 1;
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(meta_item(self, &stored)?))
            .condition_expression("#version = :expected")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":expected", number(meta.version))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match put {
            Ok(_) => Ok(stored),
            Err(err) => match err.as_service_error() {
                Some(aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(failed)) => {
                    Err(match &failed.item {
                        Some(old) if !old.is_empty() => {
                            StoreError::Conflict { run_id: meta.run_id.clone(), expected: meta.version }
                        }
                        _ => StoreError::NotFound(meta.run_id.clone()),
                    })
                }
                _ => Err(sdk_error("PutItem", err)),
            },
        }
    }

    async fn commit_step(&self, run_id: &RunId, record: &StepRecord) -> Result<Commit, StoreError> {
        let item = self.step_item(run_id, record).await?;
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(STEP_CONDITION)
            .expression_attribute_names("#final", "final")
            .expression_attribute_names("#attempts", "attempts")
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":attempts", number(record.attempts))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match put {
            Ok(_) => Ok(Commit::Committed),
            Err(err) => match err.as_service_error() {
                Some(aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(failed)) => {
                    let old = failed
                        .item
                        .clone()
                        .ok_or_else(|| StoreError::Backend("condition failed without the old item".into()))?;
                    Ok(Commit::Existing(Box::new(self.decode_step(run_id, &old).await?)))
                }
                _ => Err(sdk_error("PutItem", err)),
            },
        }
    }

    async fn commit_and_wake(&self, run_id: &RunId, record: &StepRecord, now: Millis) -> Result<Commit, StoreError> {
        let item = self.step_item(run_id, record).await?;
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(STEP_CONDITION)
            .expression_attribute_names("#final", "final")
            .expression_attribute_names("#attempts", "attempts")
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":attempts", number(record.attempts))
            .build()
            .map_err(build_error)?;
        // The head's version moves on (a holder about to suspend gets a conflict and replays)
        // and it enters the due index now, in the same transaction as the step.
        let wake = Update::builder()
            .table_name(&self.table)
            .key("PK", AttributeValue::S(self.run_key(run_id)))
            .key("SK", AttributeValue::S("META".into()))
            .update_expression("SET #version = #version + :one, due_at = :now, due_fn = fn_key")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":one", number(1))
            .expression_attribute_values(":now", number(now))
            .build()
            .map_err(build_error)?;
        let written = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(TransactWriteItem::builder().update(wake).build())
            .send()
            .await;
        let err = match written {
            Ok(_) => return Ok(Commit::Committed),
            Err(err) => err,
        };
        let reasons: Vec<String> = match err.as_service_error() {
            Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(
                canceled,
            )) => canceled.cancellation_reasons().iter().map(|r| r.code().unwrap_or_default().to_string()).collect(),
            _ => return Err(sdk_error("TransactWriteItems", err)),
        };
        if reasons.get(1).is_some_and(|code| code == "ConditionalCheckFailed") {
            return Err(StoreError::NotFound(run_id.clone()));
        }
        if reasons.first().is_some_and(|code| code == "ConditionalCheckFailed") {
            let existing = self
                .client
                .get_item()
                .table_name(&self.table)
                .key("PK", AttributeValue::S(self.run_key(run_id)))
                .key("SK", AttributeValue::S(format!("STEP#{}", record.id)))
                .consistent_read(true)
                .send()
                .await
                .map_err(|err| sdk_error("GetItem", err))?
                .item
                .ok_or_else(|| StoreError::Backend("step condition failed but no step is stored".into()))?;
            return Ok(Commit::Existing(Box::new(self.decode_step(run_id, &existing).await?)));
        }
        Err(StoreError::Unavailable(format!("TransactWriteItems canceled: {reasons:?}")))
    }

    async fn due_runs(&self, function_id: &str, now: Millis, limit: usize) -> Result<Vec<RunMeta>, StoreError> {
        let mut runs = Vec::new();
        let mut start: Option<Item> = None;
        while runs.len() < limit {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(DUE_INDEX)
                .key_condition_expression("due_fn = :function AND due_at <= :now")
                .expression_attribute_values(":function", AttributeValue::S(self.key("FN", function_id)))
                .expression_attribute_values(":now", number(now))
                .limit(i32::try_from(limit - runs.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|err| sdk_error("Query", err))?;
            for item in page.items.unwrap_or_default() {
                runs.push(decode_meta(&item)?);
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(runs)
    }

    async fn put_wait(&self, wait: &Wait) -> Result<(), StoreError> {
        self.write_wait(wait).await
    }

    async fn waits_for(&self, event: &EventPayload) -> Result<Vec<Wait>, StoreError> {
        self.read_waits(event).await
    }

    async fn remove_wait(&self, wait: &Wait) -> Result<bool, StoreError> {
        self.delete_wait(wait).await
    }

    async fn record_event(&self, event: &EventPayload, received_at: Millis) -> Result<(), StoreError> {
        self.write_event(event, received_at).await
    }

    async fn events_since(&self, name: &str, since: Millis) -> Result<Vec<EventPayload>, StoreError> {
        self.read_events(name, since).await
    }

    /// Runs through the `runs` index, per function (the query's, else every function noted in
    /// this scope), newest first, then their heads. The index is eventually consistent: a run
    /// created or moved a moment ago may be missing, or filtered by its previous status.
    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunMeta>, StoreError> {
        let limit = if query.limit == 0 { 100 } else { query.limit };
        let functions = match &query.function_id {
            Some(function) => vec![function.clone()],
            None => self.functions().await?,
        };
        let mut keys: Vec<(Millis, String)> = Vec::new();
        for function in &functions {
            keys.extend(self.indexed_runs(function, query, limit).await?);
        }
        keys.sort_by(|a, b| b.cmp(a));
        keys.truncate(limit);
        let mut runs = self.heads(keys.into_iter().map(|(_, pk)| pk).collect()).await?;
        runs.retain(|meta| query.matches(meta));
        runs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.run_id.cmp(&a.run_id)));
        Ok(runs)
    }
}
