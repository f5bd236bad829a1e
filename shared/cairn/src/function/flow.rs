//! The builder's flow-control options (`reference/flow-control.md`): each is checked when it is
//! set, and a bad one fails the definition naming the option.

use super::FunctionBuilder;
use crate::error::DefinitionError;
use crate::flow::{BatchEvents, CancelOn, Concurrency, Debounce, Expr, RateLimit, Singleton, Throttle, Timeouts};

impl<T> FunctionBuilder<T> {
    fn flow_error(&mut self, option: &'static str, reason: String) {
        self.errors.push(DefinitionError::InvalidFlowControl { function: self.id.clone(), option, reason });
    }

    /// Limits how many invocations execute this function's code at once, per key (Inngest's
    /// `concurrency`; call it twice for two limits). Sleeping, waiting and backing off hold no
    /// slot; queued runs start oldest first.
    pub fn concurrency(mut self, mut limit: Concurrency) -> Self {
        match limit.check() {
            Ok(()) => self.flow.concurrency.push(limit),
            Err(reason) => self.flow_error("concurrency", reason),
        }
        self
    }

    /// Limits how many runs start per period, per key; runs over it are queued, not dropped
    /// (Inngest's `throttle`).
    pub fn throttle(mut self, mut throttle: Throttle) -> Self {
        match throttle.check() {
            Ok(()) => self.flow.throttle = Some(throttle),
            Err(reason) => self.flow_error("throttle", reason),
        }
        self
    }

    /// Limits how many runs start per period, per key; events over it start nothing and leave
    /// a `skipped` run (Inngest's `rateLimit`).
    pub fn rate_limit(mut self, mut rate_limit: RateLimit) -> Self {
        match rate_limit.check() {
            Ok(()) => self.flow.rate_limit = Some(rate_limit),
            Err(reason) => self.flow_error("rate_limit", reason),
        }
        self
    }

    /// At most one run per value of the CEL `key` in 24 hours, e.g. `event.data.cartId`
    /// (Inngest's `idempotency`); later events for the key leave a `skipped` run.
    pub fn idempotency(mut self, key: &str) -> Self {
        match Expr::parse(key) {
            Ok(expr) => self.flow.idempotency = Some(expr),
            Err(reason) => self.flow_error("idempotency", reason),
        }
        self
    }

    /// A CEL expression giving seconds (-600 to 600) that move a run ahead (positive) or back
    /// in its function's queue (Inngest's `priority.run`).
    pub fn priority(mut self, run: &str) -> Self {
        match Expr::parse(run) {
            Ok(expr) => self.flow.priority = Some(expr),
            Err(reason) => self.flow_error("priority", reason),
        }
        self
    }

    /// At most one active run per key: a new one is skipped, or cancels the active one
    /// (Inngest's `singleton`).
    pub fn singleton(mut self, mut singleton: Singleton) -> Self {
        match singleton.check() {
            Ok(()) => self.flow.singleton = Some(singleton),
            Err(reason) => self.flow_error("singleton", reason),
        }
        self
    }

    /// Cancels a run when a matching event arrives (Inngest's `cancelOn`; up to 5 rules).
    pub fn cancel_on(mut self, mut rule: CancelOn) -> Self {
        match rule.check() {
            Ok(()) => self.flow.cancel.push(rule),
            Err(reason) => self.flow_error("cancel_on", reason),
        }
        self
    }

    /// Starts one run per burst of events: once no event for the key arrived for the period,
    /// with the last one (Inngest's `debounce`).
    pub fn debounce(mut self, mut debounce: Debounce) -> Self {
        match debounce.check() {
            Ok(()) => self.flow.debounce = Some(debounce),
            Err(reason) => self.flow_error("debounce", reason),
        }
        self
    }

    /// One run per batch of up to `max_size` events, started when the batch is full or its
    /// timeout passed (Inngest's `batchEvents`); [`Step::events`](crate::Step::events) gives
    /// the run all of them. Cannot be combined with `cancel_on`, `debounce`, `singleton`,
    /// `priority`, `idempotency` or `rate_limit`.
    pub fn batch_events(mut self, mut batch: BatchEvents) -> Self {
        match batch.check() {
            Ok(()) => self.flow.batch = Some(batch),
            Err(reason) => self.flow_error("batch_events", reason),
        }
        self
    }

    /// Cancels runs that wait too long to start or run too long (Inngest's `timeouts`).
    pub fn timeouts(mut self, mut timeouts: Timeouts) -> Self {
        match timeouts.check() {
            Ok(()) => self.flow.timeouts = Some(timeouts),
            Err(reason) => self.flow_error("timeouts", reason),
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use crate::flow::ConcurrencyScope;
    use crate::function::FunctionBuilder;
    use crate::prelude::*;

    async fn noop(_: Event, _: Step) -> Result<(), StepError> {
        Ok(())
    }

    fn error(builder: FunctionBuilder<serde_json::Value>) -> String {
        builder.handler(noop).unwrap_err().to_string()
    }

    fn f() -> FunctionBuilder<serde_json::Value> {
        Function::new("f").on_event("a/b")
    }

    #[test]
    fn definitions_inngest_refuses_are_errors_naming_the_option() {
        // V1: concurrency.
        let three =
            f().concurrency(Concurrency::new(1)).concurrency(Concurrency::new(2)).concurrency(Concurrency::new(3));
        assert_eq!(error(three), "function `f`: invalid `concurrency`: at most 2 limits, got 3");
        let unkeyed = f().concurrency(Concurrency::new(1).scope(ConcurrencyScope::Environment));
        assert_eq!(error(unkeyed), "function `f`: invalid `concurrency`: scope `env` needs a key");
        let bad_key = error(f().concurrency(Concurrency::new(1).key("event.data.")));
        assert!(
            bad_key.starts_with("function `f`: invalid `concurrency`: invalid expression `event.data.`: "),
            "{bad_key}"
        );
        // V2: throttle periods.
        assert_eq!(
            error(f().throttle(Throttle::new(1, "0s"))),
            "function `f`: invalid `throttle`: period `0s` is out of bounds: from 1s to 7d"
        );
        assert_eq!(
            error(f().throttle(Throttle::new(1, "8d"))),
            "function `f`: invalid `throttle`: period `8d` is out of bounds: from 1s to 7d"
        );
        assert_eq!(
            error(f().throttle(Throttle::new(1, "abc"))),
            "function `f`: invalid `throttle`: invalid duration `abc`: expected a number like `30s`, `1h` or `2d`"
        );
        // ... and a limit of 0 counts as 1.
        let zero = f().throttle(Throttle::new(0, "10s")).handler(noop).unwrap();
        assert_eq!(zero.flow().wire()["throttle"], serde_json::json!({"limit": 1, "period": "10s"}));
        // V3: rate limits.
        assert_eq!(
            error(f().rate_limit(RateLimit::new(1, "25h"))),
            "function `f`: invalid `rate_limit`: period `25h` is out of bounds: from 1s to 24h"
        );
        assert_eq!(
            error(f().rate_limit(RateLimit::new(0, "1h"))),
            "function `f`: invalid `rate_limit`: limit must be at least 1"
        );
        // Idempotency is a rate limit: both at once is refused (Inngest drops the rate limit).
        assert_eq!(
            error(f().idempotency("event.data.id").rate_limit(RateLimit::new(1, "1h"))),
            "function `f`: invalid `idempotency`: set idempotency or rate_limit, not both: idempotency is a rate limit of 1 per 24h"
        );
        // V7: cancel rules.
        let mut six = f();
        for n in 0..6 {
            six = six.cancel_on(CancelOn::event(format!("a/c{n}")));
        }
        assert_eq!(error(six), "function `f`: invalid `cancel_on`: at most 5 rules, got 6");
        let bad_if = error(f().cancel_on(CancelOn::event("a/c").when("async.data.id ==")));
        assert!(
            bad_if.starts_with("function `f`: invalid `cancel_on`: invalid expression `async.data.id ==`: "),
            "{bad_if}"
        );
        assert_eq!(error(f().timeouts(Timeouts::new())), "function `f`: invalid `timeouts`: set start, finish or both");
        let bad_priority = error(f().priority("event.data.tier =="));
        assert!(bad_priority.starts_with("function `f`: invalid `priority`: invalid expression"), "{bad_priority}");
        let bad_singleton = error(f().singleton(Singleton::skip().key("event.data.")));
        assert!(bad_singleton.starts_with("function `f`: invalid `singleton`: invalid expression"), "{bad_singleton}");
        // V4: debounce periods; an empty key is no key.
        for (period, unit) in [("500ms", "500ms"), ("8d", "8d")] {
            assert_eq!(
                error(f().debounce(Debounce::new(period))),
                format!("function `f`: invalid `debounce`: period `{unit}` is out of bounds: from 1s to 7d")
            );
        }
        assert_eq!(
            error(f().debounce(Debounce::new("5s").timeout("0s"))),
            "function `f`: invalid `debounce`: timeout: period `0s` is out of bounds: from 1s to 7d"
        );
        // V5: batches: bounds, and the options a batch cannot be combined with.
        let batch = || BatchEvents::new(10, "5s");
        assert_eq!(
            error(f().batch_events(BatchEvents::new(1, "5s"))),
            "function `f`: invalid `batch_events`: max size 1 is out of bounds: from 2 to 1000"
        );
        assert_eq!(
            error(f().batch_events(BatchEvents::new(10, "500ms"))),
            "function `f`: invalid `batch_events`: timeout: period `500ms` is out of bounds: from 1s to 1h"
        );
        let clash = |option: &str| {
            format!(
                "function `f`: invalid `batch_events`: cannot be combined with `{option}` (a batch's run has no single triggering event)"
            )
        };
        assert_eq!(error(f().batch_events(batch()).cancel_on(CancelOn::event("a/c"))), clash("cancel_on"));
        assert_eq!(error(f().batch_events(batch()).debounce(Debounce::new("5s"))), clash("debounce"));
        assert_eq!(error(f().batch_events(batch()).singleton(Singleton::skip())), clash("singleton"));
        assert_eq!(error(f().batch_events(batch()).priority("0")), clash("priority"));
        assert_eq!(error(f().batch_events(batch()).idempotency("event.data.id")), clash("idempotency"));
        assert_eq!(error(f().batch_events(batch()).rate_limit(RateLimit::new(1, "1m"))), clash("rate_limit"));
        let bad_if = error(f().batch_events(batch().when("event.data.plan ==")));
        assert!(bad_if.starts_with("function `f`: invalid `batch_events`: invalid expression"), "{bad_if}");
        let keyless = f().debounce(Debounce::new("5s").key("")).handler(noop).unwrap();
        assert_eq!(serde_json::Value::Object(keyless.flow().wire()), serde_json::json!({"debounce": {"period": "5s"}}));
    }

    #[test]
    fn options_register_in_the_typescript_sdks_shape() {
        let function = f()
            .concurrency(Concurrency::new(2).key("event.data.acct"))
            .rate_limit(RateLimit::new(10, "1m"))
            .singleton(Singleton::cancel())
            .cancel_on(CancelOn::event("a/deleted").matching("data.id"))
            .timeouts(Timeouts::new().finish("1h"))
            .debounce(Debounce::new("5m").key("event.data.acct").timeout("10m").all_events())
            .handler(noop)
            .unwrap();
        assert_eq!(
            serde_json::Value::Object(function.flow().wire()),
            serde_json::json!({
                "concurrency": {"limit": 2, "key": "event.data.acct"},
                "rateLimit": {"limit": 10, "period": "1m"},
                "singleton": {"mode": "cancel"},
                "cancel": [{"event": "a/deleted", "if": "event.data.id == async.data.id"}],
                "timeouts": {"finish": "1h"},
                "debounce": {"period": "5m", "key": "event.data.acct", "timeout": "10m"}
            })
        );
        assert!(f().handler(noop).unwrap().flow().is_empty());
    }

    /// An Inngest-protocol app's synced options (what `cairn dev -u` enforces) read back exactly
    /// as the TypeScript SDK registers them, and refused with the builder's messages.
    #[test]
    fn synced_options_are_read_back_and_checked() {
        use crate::flow::FlowControl;
        use serde_json::json;
        let synced = json!({
            "id": "app-f",
            "triggers": [{"event": "a/b"}],
            "concurrency": [{"limit": 1, "key": "event.data.userId"}, {"limit": 20, "key": "\"api\"", "scope": "account"}],
            "throttle": {"limit": 2, "period": "10s", "burst": 1, "key": "event.data.userId"},
            "priority": {"run": "event.data.plan == 'pro' ? 120 : 0"},
            "singleton": {"mode": "skip", "key": "event.data.userId"},
            "cancel": [{"event": "a/deleted", "if": "event.data.userId == async.data.userId", "timeout": "1h"}],
            "timeouts": {"start": "10m", "finish": "1h"},
            "debounce": {"period": "5m", "key": "event.data.account_id", "timeout": "10m"}
        });
        let flow = FlowControl::from_wire(&synced).unwrap();
        let mut expected = synced.as_object().unwrap().clone();
        expected.remove("id");
        expected.remove("triggers");
        assert_eq!(flow.wire(), expected);
        let charge = FlowControl::from_wire(&json!({"idempotency": "event.data.cartId", "concurrency": 5})).unwrap();
        assert_eq!(json!(charge.wire()), json!({"idempotency": "event.data.cartId", "concurrency": {"limit": 5}}));
        assert!(FlowControl::from_wire(&json!({"id": "plain"})).unwrap().is_empty());
        let refused = |config: serde_json::Value| FlowControl::from_wire(&config).unwrap_err();
        assert_eq!(
            refused(json!({"throttle": {"limit": 1, "period": "8d"}})),
            ("throttle", "period `8d` is out of bounds: from 1s to 7d".to_string()).into()
        );
        let batched = json!({"batchEvents": {"maxSize": 100, "timeout": "5s", "key": "event.data.accountId", "if": "event.data.plan == \"free\""}});
        assert_eq!(json!(FlowControl::from_wire(&batched).unwrap().wire()), batched);
        assert_eq!(
            refused(json!({"batchEvents": {"maxSize": 5, "timeout": "5s"}, "cancel": [{"event": "a/b"}]})),
            (
                "batch_events",
                "cannot be combined with `cancel_on` (a batch's run has no single triggering event)".to_string()
            )
                .into()
        );
        assert_eq!(
            refused(json!({"debounce": {"period": "500ms"}})),
            ("debounce", "period `500ms` is out of bounds: from 1s to 7d".to_string()).into()
        );
        assert_eq!(
            json!(FlowControl::from_wire(&json!({"debounce": {"period": "5s", "key": ""}})).unwrap().wire()),
            json!({"debounce": {"period": "5s"}}),
            "an empty key is no key"
        );
        assert_eq!(
            refused(json!({"concurrency": [{"limit": 1}, {"limit": 2}, {"limit": 3}]})),
            ("concurrency", "at most 2 limits, got 3".to_string()).into()
        );
        assert_eq!(
            refused(json!({"concurrency": {"limit": 1, "scope": "galaxy"}})),
            ("concurrency", "unknown scope `galaxy`: fn, env or account".to_string()).into()
        );
        assert_eq!(
            refused(json!({"rateLimit": {"limit": 1, "period": "1m"}, "idempotency": "event.data.id"})),
            (
                "idempotency",
                "set idempotency or rate_limit, not both: idempotency is a rate limit of 1 per 24h".to_string()
            )
                .into()
        );
    }
}
