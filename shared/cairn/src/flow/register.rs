//! A function's options in the JSON of an Inngest function configuration, both ways: written
//! as the TypeScript SDK registers them (a sync), and read from an app's sync (what `cairn dev
//! -u` enforces).

use super::batch::BatchEvents;
use super::debounce::Debounce;
use super::options::{
    CancelOn, Concurrency, ConcurrencyScope, FlowControl, OptionError, RateLimit, Singleton, Throttle, Timeouts,
};
use super::values::Expr;
use serde_json::{Map, Value, json};

impl FlowControl {
    /// The options as the fields of an Inngest function configuration, exactly as the
    /// TypeScript SDK registers them (`concurrency`, `throttle`, `rateLimit`, `idempotency`,
    /// `priority`, `singleton`, `cancel`, `timeouts`, `debounce`, `batchEvents`).
    pub fn wire(&self) -> Map<String, Value> {
        let mut fields = Map::new();
        match self.concurrency.as_slice() {
            [] => {}
            [one] => {
                fields.insert("concurrency".into(), one.wire());
            }
            many => {
                fields.insert("concurrency".into(), Value::Array(many.iter().map(Concurrency::wire).collect()));
            }
        }
        if let Some(throttle) = &self.throttle {
            fields.insert("throttle".into(), throttle.wire());
        }
        if let Some(rate_limit) = &self.rate_limit {
            fields.insert("rateLimit".into(), rate_limit.wire());
        }
        if let Some(key) = &self.idempotency {
            fields.insert("idempotency".into(), json!(key.source()));
        }
        if let Some(run) = &self.priority {
            fields.insert("priority".into(), json!({"run": run.source()}));
        }
        if let Some(singleton) = &self.singleton {
            fields.insert("singleton".into(), singleton.wire());
        }
        if !self.cancel.is_empty() {
            fields.insert("cancel".into(), Value::Array(self.cancel.iter().map(CancelOn::wire).collect()));
        }
        if let Some(timeouts) = &self.timeouts {
            fields.insert("timeouts".into(), timeouts.wire());
        }
        if let Some(debounce) = &self.debounce {
            fields.insert("debounce".into(), debounce.wire());
        }
        if let Some(batch) = &self.batch {
            fields.insert("batchEvents".into(), batch.wire());
        }
        fields
    }

    /// The options of an Inngest function configuration (an app's sync, `functions[]`), in the
    /// shape the TypeScript SDK registers ([`FlowControl::wire`]'s inverse): what `cairn dev
    /// -u` enforces for an Inngest-protocol app's function.
    ///
    /// # Errors
    /// The first option Inngest would refuse, with the reason (as the builder names it).
    pub fn from_wire(config: &Value) -> Result<FlowControl, OptionError> {
        let text = |value: &Value, field: &str| value[field].as_str().map(str::to_string);
        let limit = |value: &Value| u32::try_from(value["limit"].as_u64().unwrap_or(0)).unwrap_or(u32::MAX);
        let mut flow = FlowControl::default();
        let concurrency: Vec<&Value> = match &config["concurrency"] {
            Value::Null => Vec::new(),
            Value::Array(limits) => limits.iter().collect(),
            one => vec![one],
        };
        for item in concurrency {
            let mut limit = match item.as_u64() {
                Some(n) => Concurrency::new(u32::try_from(n).unwrap_or(u32::MAX)),
                None => Concurrency::new(limit(item)),
            };
            if let Some(key) = text(item, "key") {
                limit = limit.key(key);
            }
            limit = limit.scope(match item["scope"].as_str() {
                None | Some("fn") => ConcurrencyScope::Function,
                Some("env") => ConcurrencyScope::Environment,
                Some("account") => ConcurrencyScope::Account,
                Some(other) => {
                    return Err(("concurrency", format!("unknown scope `{other}`: fn, env or account")).into());
                }
            });
            limit.check().map_err(|reason| ("concurrency", reason))?;
            flow.concurrency.push(limit);
        }
        let throttle = &config["throttle"];
        if !throttle.is_null() {
            let mut option = Throttle::new(limit(throttle), text(throttle, "period").unwrap_or_default())
                .burst(u32::try_from(throttle["burst"].as_u64().unwrap_or(0)).unwrap_or(u32::MAX));
            if let Some(key) = text(throttle, "key") {
                option = option.key(key);
            }
            option.check().map_err(|reason| ("throttle", reason))?;
            flow.throttle = Some(option);
        }
        let rate_limit = &config["rateLimit"];
        if !rate_limit.is_null() {
            let mut option = RateLimit::new(limit(rate_limit), text(rate_limit, "period").unwrap_or_default());
            if let Some(key) = text(rate_limit, "key") {
                option = option.key(key);
            }
            option.check().map_err(|reason| ("rate_limit", reason))?;
            flow.rate_limit = Some(option);
        }
        if let Some(key) = config["idempotency"].as_str() {
            flow.idempotency = Some(Expr::parse(key).map_err(|reason| ("idempotency", reason))?);
        }
        if let Some(run) = config["priority"]["run"].as_str() {
            flow.priority = Some(Expr::parse(run).map_err(|reason| ("priority", reason))?);
        }
        let singleton = &config["singleton"];
        if !singleton.is_null() {
            let mut option = match singleton["mode"].as_str() {
                Some("skip") | None => Singleton::skip(),
                Some("cancel") => Singleton::cancel(),
                Some(other) => return Err(("singleton", format!("unknown mode `{other}`: skip or cancel")).into()),
            };
            if let Some(key) = text(singleton, "key") {
                option = option.key(key);
            }
            option.check().map_err(|reason| ("singleton", reason))?;
            flow.singleton = Some(option);
        }
        for rule in config["cancel"].as_array().into_iter().flatten() {
            let mut option = CancelOn::event(text(rule, "event").unwrap_or_default());
            if let Some(condition) = text(rule, "if") {
                option = option.when(condition);
            }
            if let Some(timeout) = text(rule, "timeout") {
                option = option.timeout(timeout);
            }
            option.check().map_err(|reason| ("cancel_on", reason))?;
            flow.cancel.push(option);
        }
        let timeouts = &config["timeouts"];
        if !timeouts.is_null() {
            let mut option = Timeouts::new();
            if let Some(start) = text(timeouts, "start") {
                option = option.start(start);
            }
            if let Some(finish) = text(timeouts, "finish") {
                option = option.finish(finish);
            }
            option.check().map_err(|reason| ("timeouts", reason))?;
            flow.timeouts = Some(option);
        }
        if !config["debounce"].is_null() {
            let mut option = Debounce::from_wire(&config["debounce"]);
            option.check().map_err(|reason| ("debounce", reason))?;
            flow.debounce = Some(option);
        }
        if !config["batchEvents"].is_null() {
            let mut option = BatchEvents::from_wire(&config["batchEvents"]);
            option.check().map_err(|reason| ("batch_events", reason))?;
            flow.batch = Some(option);
        }
        flow.validate()?;
        Ok(flow)
    }
}
