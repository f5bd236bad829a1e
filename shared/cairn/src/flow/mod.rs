//! Flow control, Inngest's semantics on Cairn's stores (`reference/flow-control.md`): the
//! options ([`Concurrency`], [`Throttle`], [`RateLimit`], idempotency, priority, [`Singleton`],
//! [`CancelOn`], [`Timeouts`]), checked when a function is defined and registered with Inngest
//! in the TypeScript SDK's shape, and the admission [`Claim`]s a new run makes on its store.
//!
//! Admission happens when an event would create a run, before anything runs: idempotency and
//! rate limits are GCRA buckets ([`Gcra`]), a singleton is a lock the run holds until it ends.
//! The run's head and its claims are written together ([`RunStore::admit_run`]), so a
//! duplicate delivery never spends a token twice; an event turned away leaves a `skipped` run
//! saying why ([`Skipped`]). A function without options makes no claim and pays nothing.
//!
//! [`RunStore::admit_run`]: crate::RunStore::admit_run
//! [`Skipped`]: crate::record::Skipped

mod batch;
mod debounce;
mod gcra;
mod options;
mod register;
mod slots;
mod throttle;
mod values;
mod window;

pub use batch::{BatchEvents, MAX_BATCH_SIZE};
pub use debounce::Debounce;
pub use gcra::Gcra;
pub use options::{
    CancelOn, Concurrency, ConcurrencyScope, FlowControl, MAX_PRIORITY_SECS, OptionError, RateLimit, Singleton,
    SingletonMode, Throttle, Timeouts,
};
pub use slots::{Acquired, Slot, SlotState, acquire, release};
pub use throttle::{ThrottleState, Throttled, leave, throttle};
pub(crate) use values::Expr;
pub(crate) use window::window_key;
pub use window::{
    FIRED_KEPT, MAX_WINDOW_BYTES, Window, WindowChange, WindowRule, WindowState, Windowed, apply, fired_run,
    redelivered,
};

use crate::event::EventPayload;
use crate::expr::ExprValue;
use crate::id::{RunId, StepId};
use crate::record::{Millis, SkipReason, Skipped, Wait};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// One day: idempotency is a rate limit of one per day.
const IDEMPOTENCY_PERIOD: i64 = 86_400_000;
/// How long a `cancel_on` rule without a timeout listens (Inngest: 365 days).
const CANCEL_LISTENER_DEFAULT: i64 = 365 * 86_400_000;
/// The longest key text kept on a skipped run.
const KEY_TEXT_LIMIT: usize = 256;

/// What a new run claims on its store, all or nothing, when its head is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// A GCRA bucket (idempotency, rate limit): the run is admitted if the bucket admits an
    /// arrival now, which moves the bucket's `tat`.
    Bucket {
        /// The bucket's store key.
        key: String,
        /// Its limiter.
        limiter: Gcra,
    },
    /// A lock the run holds until it ends (singleton). `replaces` names a holder seen finished
    /// (its release lost) or just cancelled, whose lock the run may take over.
    Lock {
        /// The lock's store key.
        key: String,
        /// The holder that may be replaced.
        replaces: Option<RunId>,
    },
}

impl Claim {
    /// The store key.
    pub fn key(&self) -> &str {
        match self {
            Claim::Bucket { key, .. } | Claim::Lock { key, .. } => key,
        }
    }
}

/// A flow-control item as a store keeps it under a claim's key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlowItem {
    /// A bucket's theoretical arrival time.
    pub tat: Option<Millis>,
    /// A lock's holder.
    pub holder: Option<RunId>,
}

/// Decides `claims` for `run_id` at `now` against the items stored under their keys (`None`:
/// no item): the items to write, one per claim, or the first refused claim's index and, for a
/// lock, its holder. Every store applies this one rule inside its own atomic write.
///
/// # Errors
/// The refused claim, as described.
pub fn decide(
    claims: &[Claim],
    stored: &[Option<FlowItem>],
    run_id: &RunId,
    now: Millis,
) -> Result<Vec<FlowItem>, (usize, Option<RunId>)> {
    claims
        .iter()
        .zip(stored.iter().chain(std::iter::repeat(&None)))
        .enumerate()
        .map(|(index, (claim, stored))| match claim {
            Claim::Bucket { limiter, .. } => {
                let tat = stored.as_ref().and_then(|item| item.tat);
                limiter.admit(tat, now).map(|tat| FlowItem { tat: Some(tat), holder: None }).ok_or((index, None))
            }
            Claim::Lock { replaces, .. } => match stored.as_ref().and_then(|item| item.holder.as_ref()) {
                Some(holder) if holder != run_id && Some(holder) != replaces.as_ref() => {
                    Err((index, Some(holder.clone())))
                }
                _ => Ok(FlowItem { tat: None, holder: Some(run_id.clone()) }),
            },
        })
        .collect()
}

/// A run's throttle: the key's store key, its limiter, the key's text (none for a keyless
/// throttle) and the run's place in the key's queue.
#[derive(Debug, Clone)]
pub struct ThrottleKey {
    /// The key's store key.
    pub key: String,
    /// The limiter of the function's throttle.
    pub limiter: Gcra,
    /// The key's value as the dashboard shows it (`None` without a key expression).
    pub text: Option<String>,
    /// The run's place in the queue: its creation time minus its priority.
    pub score: Millis,
}

/// A claim with what a refusal means for the run.
#[derive(Debug, Clone)]
pub(crate) struct PlannedClaim {
    pub(crate) claim: Claim,
    pub(crate) reason: SkipReason,
    pub(crate) key_text: Option<String>,
}

impl PlannedClaim {
    pub(crate) fn skipped(&self, by: Option<RunId>) -> Skipped {
        Skipped { reason: self.reason, key: self.key_text.clone(), by, error: None }
    }
}

/// The store key of one value of a keyed option: the function, the option, and a hash of the
/// expression and the value (the expression's hash keeps runs queued under an old expression
/// apart from new ones, as Inngest does).
fn store_key(option: &str, function_id: &str, expression: Option<&str>, value: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(expression.unwrap_or("").as_bytes());
    hash.update([0]);
    hash.update(value.as_bytes());
    let digest = hex::encode(hash.finalize());
    format!("{option}#{function_id}#{}", &digest[..32])
}

fn truncated(text: &str) -> String {
    text.chars().take(KEY_TEXT_LIMIT).collect()
}

impl FlowControl {
    /// The claims a run of `function_id` for `event` makes, in Inngest's order (rate limit or
    /// idempotency, then singleton). An option whose key is `false` for this event makes none.
    ///
    /// # Errors
    /// A key that fails to evaluate (not a missing field, which is null): the event is skipped
    /// with the evaluation error, as Inngest refuses to schedule it.
    pub(crate) fn claims(&self, function_id: &str, event: &EventPayload) -> Result<Vec<PlannedClaim>, Skipped> {
        let mut claims = Vec::new();
        if self.idempotency.is_none() && self.rate_limit.is_none() && self.singleton.is_none() {
            return Ok(claims);
        }
        let event_json = serde_json::to_value(event).unwrap_or(Value::Null);
        let evaluate = |key: Option<&Expr>, reason: SkipReason| -> Result<Option<ExprValue>, Skipped> {
            match key {
                None => Ok(Some(ExprValue::Text(String::new()))),
                Some(expr) => match expr.compiled.value(&event_json) {
                    Ok(ExprValue::False) => Ok(None),
                    Ok(value) => Ok(Some(value)),
                    Err(err) => Err(Skipped { reason, key: None, by: None, error: Some(err.to_string()) }),
                },
            }
        };
        if let Some(expr) = &self.idempotency {
            if let Some(value) = evaluate(Some(expr), SkipReason::Idempotency)? {
                claims.push(PlannedClaim {
                    claim: Claim::Bucket {
                        key: store_key("idempotency", function_id, Some(expr.source()), value.key_text()),
                        limiter: Gcra::rate_limit(1, IDEMPOTENCY_PERIOD),
                    },
                    reason: SkipReason::Idempotency,
                    key_text: Some(truncated(value.key_text())),
                });
            }
        } else if let Some(rate_limit) = &self.rate_limit
            && let Some(value) = evaluate(rate_limit.key.as_ref(), SkipReason::RateLimit)?
        {
            let period = rate_limit.period.as_ref().map_or(0, |period| period.millis);
            let source = rate_limit.key.as_ref().map(Expr::source);
            claims.push(PlannedClaim {
                claim: Claim::Bucket {
                    key: store_key("rate", function_id, source, value.key_text()),
                    limiter: Gcra::rate_limit(rate_limit.limit, i64::try_from(period).unwrap_or(i64::MAX)),
                },
                reason: SkipReason::RateLimit,
                key_text: source.map(|_| truncated(value.key_text())),
            });
        }
        if let Some(singleton) = &self.singleton {
            // A key that fails to evaluate leaves the run out of the singleton (Inngest: a warning).
            let value = evaluate(singleton.key.as_ref(), SkipReason::Singleton).unwrap_or_else(|skipped| {
                tracing::warn!(function = function_id, error = ?skipped.error, "singleton key failed; not a singleton");
                None
            });
            if let Some(value) = value {
                let source = singleton.key.as_ref().map(Expr::source);
                claims.push(PlannedClaim {
                    claim: Claim::Lock {
                        key: store_key("singleton", function_id, source, value.key_text()),
                        replaces: None,
                    },
                    reason: SkipReason::Singleton,
                    key_text: source.map(|_| truncated(value.key_text())),
                });
            }
        }
        Ok(claims)
    }

    /// The `cancel_on` listeners a new run registers at `now`: one wait per rule, named
    /// `cancel-<n>`, its condition kept for matching, listening until the rule's timeout (or a
    /// year: Inngest's default).
    pub(crate) fn cancel_listeners(&self, run_id: &RunId, trigger: &EventPayload, now: Millis) -> Vec<Wait> {
        self.cancel
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                let timeout = rule
                    .timeout
                    .as_ref()
                    .map_or(CANCEL_LISTENER_DEFAULT, |p| i64::try_from(p.millis).unwrap_or(i64::MAX));
                Wait {
                    cancels: true,
                    ..Wait::new(
                        &rule.event,
                        run_id,
                        &StepId::from_hashed(format!("cancel-{index}")),
                        rule.condition.as_ref().map(|expr| expr.source().to_string()),
                        trigger,
                        now.saturating_add(timeout),
                        now,
                    )
                }
            })
            .collect()
    }

    /// The concurrency slots a run of `function_id` for `event` needs, with each key's text:
    /// none for a limit of 0. The run's queue score is its creation time minus its priority.
    pub fn slots(&self, function_id: &str, event: &EventPayload, created_at: Millis) -> Vec<(Slot, Option<String>)> {
        if self.concurrency.iter().all(|limit| limit.limit == 0) {
            return Vec::new();
        }
        let event_json = serde_json::to_value(event).unwrap_or(Value::Null);
        let score = self.queue_score(&event_json, created_at);
        self.concurrency
            .iter()
            .filter(|limit| limit.limit > 0)
            .map(|limit| {
                // Inngest: a key that fails to evaluate, like a null one, is the shared `<nil>` bucket.
                let value = limit.key.as_ref().map(|key| key.compiled.value(&event_json).unwrap_or(ExprValue::Null));
                let text = value.as_ref().map_or("", ExprValue::key_text);
                let scope = match limit.scope {
                    ConcurrencyScope::Function => function_id,
                    ConcurrencyScope::Environment => "env",
                    ConcurrencyScope::Account => "account",
                };
                let key = store_key("concurrency", scope, limit.key.as_ref().map(Expr::source), text);
                (Slot { key, limit: limit.limit, score }, value.map(|v| truncated(v.key_text())))
            })
            .collect()
    }

    /// The throttle key a run of `function_id` for `event` (created at `created_at`) starts
    /// under, or `None` for a function without a throttle.
    pub fn throttle_key(&self, function_id: &str, event: &EventPayload, created_at: Millis) -> Option<ThrottleKey> {
        let throttle = self.throttle.as_ref()?;
        let period = throttle.period.as_ref().map_or(1_000, |period| i64::try_from(period.millis).unwrap_or(i64::MAX));
        let event_json = serde_json::to_value(event).unwrap_or(Value::Null);
        // Inngest: a key that fails to evaluate, like a null one, is the shared `<nil>` bucket.
        let value = throttle.key.as_ref().map(|key| key.compiled.value(&event_json).unwrap_or(ExprValue::Null));
        let text = value.as_ref().map_or("", ExprValue::key_text);
        Some(ThrottleKey {
            key: store_key("throttle", function_id, throttle.key.as_ref().map(Expr::source), text),
            limiter: Gcra::throttle(throttle.limit, period, throttle.burst),
            text: value.map(|value| truncated(value.key_text())),
            score: self.queue_score(&event_json, created_at),
        })
    }

    /// A run's place in flow-control queues: its creation time minus its priority.
    fn queue_score(&self, event: &Value, created_at: Millis) -> Millis {
        created_at.saturating_sub(self.priority_secs(event) * 1_000)
    }

    /// `priority.run` for an event, in seconds within +-[`MAX_PRIORITY_SECS`]; 0 when unset,
    /// not a number, or failing (Inngest's rules).
    fn priority_secs(&self, event: &Value) -> i64 {
        let Some(run) = &self.priority else { return 0 };
        match run.compiled.value(event) {
            Ok(ExprValue::Text(text)) => text.parse::<f64>().map_or(0, |n| {
                // Whole seconds, clamped: the cast saturates, then the clamp bounds it.
                (n.trunc() as i64).clamp(-MAX_PRIORITY_SECS, MAX_PRIORITY_SECS)
            }),
            _ => 0,
        }
    }

    /// The singleton mode, if the function is a singleton.
    pub(crate) fn singleton_mode(&self) -> Option<SingletonMode> {
        self.singleton.as_ref().map(|singleton| singleton.mode)
    }
}
