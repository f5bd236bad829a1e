//! Wait items and the event log: pending waits filed by the value their condition requires
//! (`WAITKEY`) or under their event name (`WAIT`, with the `!paths` marker), and received
//! events kept a day for the lookback.

use super::items::{decode, encode, number, sdk_error, string};
use super::{DynamoDbStore, Item, SortKey};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use cairn::{EventPayload, Millis, StoreError, Wait, WaitKey};

/// The sort key of the marker listing the paths waits of an event name are filed under.
const WAIT_PATHS_SK: &str = "!paths";

impl DynamoDbStore {
    /// The partition a wait is kept in: its key's, or its event name's for the general form.
    pub(super) fn wait_partition(&self, wait: &Wait) -> String {
        match &wait.key {
            Some(key) => self.key("WAITKEY", format!("{}#{}", wait.event, key.digest())),
            None => self.key("WAIT", &wait.event),
        }
    }

    /// Adds `path` to the fields waits for `event` are filed under, before the first such
    /// wait is written (so an event that reads the set after the wait exists finds it).
    async fn note_wait_path(&self, event: &str, path: &str) -> Result<(), StoreError> {
        let noted = format!("{event}#{path}");
        if self.noted_wait_paths.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).contains(&noted) {
            return Ok(());
        }
        self.client
            .update_item()
            .table_name(&self.table)
            .key("PK", AttributeValue::S(self.key("WAIT", event)))
            .key("SK", AttributeValue::S(WAIT_PATHS_SK.into()))
            .update_expression("ADD paths :path")
            .expression_attribute_values(":path", AttributeValue::Ss(vec![path.to_string()]))
            .send()
            .await
            .map_err(|err| sdk_error("UpdateItem", err))?;
        self.noted_wait_paths.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(noted);
        Ok(())
    }

    /// Writes a pending wait in its partition (its value's, or its event name's).
    pub(super) async fn write_wait(&self, wait: &Wait) -> Result<(), StoreError> {
        if let Some(key) = &wait.key {
            self.note_wait_path(&wait.event, &key.path).await?;
        }
        let item = Item::from([
            ("PK".into(), AttributeValue::S(self.wait_partition(wait))),
            ("SK".into(), AttributeValue::S(format!("{}#{}", wait.run_id, wait.step_id))),
            ("wait".into(), AttributeValue::S(encode(wait)?)),
            ("created_at".into(), number(wait.created_at)),
            ("expires_at".into(), number(wait.timeout_at / 1000 + 86_400)),
        ]);
        self.put(item).await
    }

    /// The pending waits `event` may resume: the general partition, then each filed path's value.
    pub(super) async fn read_waits(&self, event: &EventPayload) -> Result<Vec<Wait>, StoreError> {
        let candidate = serde_json::to_value(event).map_err(|err| StoreError::Serialization(err.to_string()))?;
        // The general partition holds the general-form waits and the paths marker: one Query
        // (as before waits were filed) unless some waits of this name are filed by value.
        let mut paths = Vec::new();
        let mut waits = Vec::new();
        for item in self.query_all(&self.key("WAIT", &event.name), SortKey::Any).await? {
            match item.get("paths") {
                Some(marker) => paths.extend(
                    marker
                        .as_ss()
                        .map_err(|_| StoreError::Serialization("wait paths marker is not a string set".into()))?
                        .iter()
                        .cloned(),
                ),
                None => waits.push(decode::<Wait>(&string(&item, "wait")?)?),
            }
        }
        for key in paths.iter().filter_map(|path| WaitKey::of_event(path, &candidate)) {
            let partition = self.key("WAITKEY", format!("{}#{}", event.name, key.digest()));
            for item in self.query_all(&partition, SortKey::Any).await? {
                waits.push(decode::<Wait>(&string(&item, "wait")?)?);
            }
        }
        waits.sort_by(|a, b| (a.created_at, &a.run_id, &a.step_id).cmp(&(b.created_at, &b.run_id, &b.step_id)));
        Ok(waits)
    }

    /// Deletes a wait; `true` if it was there.
    pub(super) async fn delete_wait(&self, wait: &Wait) -> Result<bool, StoreError> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("PK", AttributeValue::S(self.wait_partition(wait)))
            .key("SK", AttributeValue::S(format!("{}#{}", wait.run_id, wait.step_id)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|err| sdk_error("DeleteItem", err))?;
        Ok(deleted.attributes.is_some_and(|old| !old.is_empty()))
    }

    /// Logs a received event for the wait lookback (TTL 1 day).
    pub(super) async fn write_event(&self, event: &EventPayload, received_at: Millis) -> Result<(), StoreError> {
        let item = Item::from([
            ("PK".into(), AttributeValue::S(self.key("EVENTS", &event.name))),
            ("SK".into(), AttributeValue::S(format!("{received_at:013}#{}", event.id.as_deref().unwrap_or_default()))),
            ("event".into(), AttributeValue::S(encode(event)?)),
            ("expires_at".into(), number(received_at / 1000 + 86_400)),
        ]);
        self.put(item).await
    }

    /// The events of `name` received since `since`, one per event id.
    pub(super) async fn read_events(&self, name: &str, since: Millis) -> Result<Vec<EventPayload>, StoreError> {
        let items = self.query_all(&self.key("EVENTS", name), SortKey::AtLeast(&format!("{since:013}"))).await?;
        let mut events: Vec<EventPayload> = Vec::new();
        for item in &items {
            let event: EventPayload = decode(&string(item, "event")?)?;
            // One entry per event id, however often it was delivered.
            if !events.iter().any(|known| known.id == event.id) {
                events.push(event);
            }
        }
        Ok(events)
    }
}
