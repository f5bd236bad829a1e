//! Creating the table with both indexes, as `template.yaml` declares it (for local stand-ins
//! and tests).

use super::{DUE_INDEX, DynamoDbStore, RUNS_INDEX, build_error, sdk_error};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TimeToLiveSpecification,
};
use cairn::StoreError;

impl DynamoDbStore {
    /// Creates the table (PK/SK strings, on-demand, TTL on `expires_at`), as `template.yaml`
    /// does in AWS; for local stand-ins and tests. An existing table is left as it is.
    ///
    /// # Errors
    /// The service's error, as a [`StoreError`].
    pub async fn create_table(&self) -> Result<(), StoreError> {
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder().attribute_name(name).key_type(kind).build().map_err(build_error)
        };
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build_error)
        };
        let due_at = AttributeDefinition::builder()
            .attribute_name("due_at")
            .attribute_type(ScalarAttributeType::N)
            .build()
            .map_err(build_error)?;
        let number = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::N)
                .build()
                .map_err(build_error)
        };
        let runs = GlobalSecondaryIndex::builder()
            .index_name(RUNS_INDEX)
            .key_schema(key("fn_key", KeyType::Hash)?)
            .key_schema(key("created_at", KeyType::Range)?)
            .projection(
                Projection::builder().projection_type(ProjectionType::Include).non_key_attributes("status").build(),
            )
            .build()
            .map_err(build_error)?;
        let due = GlobalSecondaryIndex::builder()
            .index_name(DUE_INDEX)
            .key_schema(key("due_fn", KeyType::Hash)?)
            .key_schema(key("due_at", KeyType::Range)?)
            .projection(Projection::builder().projection_type(ProjectionType::All).build())
            .build()
            .map_err(build_error)?;
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("PK", KeyType::Hash)?)
            .key_schema(key("SK", KeyType::Range)?)
            .attribute_definitions(attribute("PK")?)
            .attribute_definitions(attribute("SK")?)
            .attribute_definitions(attribute("due_fn")?)
            .attribute_definitions(due_at)
            .attribute_definitions(attribute("fn_key")?)
            .attribute_definitions(number("created_at")?)
            .global_secondary_indexes(due)
            .global_secondary_indexes(runs)
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(err) if err.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) => return Ok(()),
            Err(err) => return Err(sdk_error("CreateTable", err)),
        }
        let ttl = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name("expires_at")
            .build()
            .map_err(build_error)?;
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(ttl)
            .send()
            .await
            .map_err(|err| sdk_error("UpdateTimeToLive", err))?;
        Ok(())
    }
}
