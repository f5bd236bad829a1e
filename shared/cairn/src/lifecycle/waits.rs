//! Whether an event resumes a pending `wait_for_event`, and the one waiter a signal has: the
//! rules every driver applies the same way (the Runner for Rust functions, in production and
//! under `TestRun` in unit tests, and the dev server's executor for Inngest-protocol apps).

use crate::error::StepError;
use crate::event::EventPayload;
use crate::expr::{MatchExpr, index_text, lookup, on_cel_stack};
use crate::id::{RunId, StepId};
use crate::record::{Millis, StepKind, StepRecord, StepState, Wait, WaitKey};
use serde_json::Value;

/// Re-exported for the drivers that file signal waits (the dev executor).
pub use crate::event::signal_condition;

/// The largest trigger projection a general-form wait carries (beyond it, the run is loaded
/// to evaluate the condition): a wait item stays small however large the trigger.
const TRIGGER_PROJECTION_BYTES: usize = 4 * 1024;

impl Wait {
    /// A pending wait of `run_id`'s step `step_id` for `event` under `expression`, filed under
    /// the key its condition requires of `trigger` (the run's triggering event), or else
    /// carrying the trigger's fields the condition reads.
    pub fn new(
        event: &str,
        run_id: &RunId,
        step_id: &StepId,
        expression: Option<String>,
        trigger: &EventPayload,
        timeout_at: Millis,
        created_at: Millis,
    ) -> Wait {
        let (key, projection) = match expression.as_deref().map(MatchExpr::cached) {
            Some(Ok(expr)) => {
                let trigger = serde_json::to_value(trigger).unwrap_or(Value::Null);
                match expr.equality(&trigger) {
                    Some((path, value)) => (index_text(&value).map(|value| WaitKey { path, value }), None),
                    None => (None, projection(&expr, &trigger)),
                }
            }
            _ => (None, None),
        };
        Wait {
            event: event.to_string(),
            run_id: run_id.clone(),
            step_id: step_id.clone(),
            expression,
            timeout_at,
            created_at,
            cancels: false,
            key,
            trigger: projection,
        }
    }

    /// The registration of a run's pending wait step, rebuilt from its record (to remove it):
    /// `None` for another kind of step.
    pub fn of_step(trigger: &EventPayload, run_id: &RunId, step: &StepRecord) -> Option<Wait> {
        let detail = step.detail.as_ref().filter(|_| step.kind == StepKind::WaitForEvent)?;
        let event = detail["event"].as_str()?;
        let expression = detail["if"].as_str().map(str::to_string);
        Some(Wait::new(event, run_id, &step.id, expression, trigger, 0, 0))
    }

    /// The waits `candidate` (an event, as JSON) may resume, judged from each wait alone: one
    /// is dropped only when its condition certainly fails. Filed waits were found by their key;
    /// general ones carrying a trigger projection evaluate their condition here (all on one
    /// evaluator thread), so no run is loaded for a wait the event cannot resume.
    pub fn possible(waits: Vec<Wait>, candidate: &Value) -> Vec<Wait> {
        let keep = |wait: &Wait| match (&wait.expression, &wait.trigger) {
            (Some(source), Some(trigger)) if wait.key.is_none() => {
                MatchExpr::cached(source).and_then(|expr| expr.matches_here(trigger, candidate)).unwrap_or(false)
            }
            _ => true,
        };
        if waits.iter().all(|wait| wait.key.is_some() || wait.trigger.is_none() || wait.expression.is_none()) {
            return waits;
        }
        let judged = on_cel_stack(|| waits.iter().map(keep).collect::<Vec<bool>>());
        match judged {
            Ok(keeps) => waits.into_iter().zip(keeps).filter_map(|(wait, keep)| keep.then_some(wait)).collect(),
            Err(_) => waits, // the evaluator failed: each wait is judged with its run loaded
        }
    }
}

impl WaitKey {
    /// The key `event` is filed under for `path`, if it has a scalar there: the key a wait
    /// resumed by `event` through an equality on `path` is filed under.
    pub fn of_event(path: &str, event: &Value) -> Option<WaitKey> {
        let fields: Vec<String> = path.split('.').map(str::to_string).collect();
        let value = index_text(lookup(event, &fields)?)?;
        Some(WaitKey { path: path.to_string(), value })
    }

    /// A short, fixed-size name for the key (`<path>#<32 hex digits of SHA-256>`), for stores
    /// whose keys have a length limit (the value can be as long as an event field).
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let hash = Sha256::digest(self.value.as_bytes());
        format!("{}#{}", self.path, &hex::encode(hash)[..32])
    }
}

/// The trigger's fields `expr` reads, as a JSON object shaped like the trigger; `None` if it
/// reads the trigger whole or the fields are too large.
fn projection(expr: &MatchExpr, trigger: &Value) -> Option<Value> {
    let mut kept = Value::Object(serde_json::Map::new());
    for path in expr.event_paths()? {
        // Every object on the way that the trigger has is kept, even when the field itself is
        // missing: `has(event.data.min)` must find `data` to say `false`, not fail.
        let mut at = &mut kept;
        for (depth, field) in path.iter().enumerate() {
            let Some(value) = lookup(trigger, &path[..=depth]) else { break };
            let object = at.as_object_mut()?;
            if depth + 1 == path.len() || !value.is_object() {
                object.insert(field.clone(), value.clone());
                break;
            }
            at = object.entry(field.clone()).or_insert_with(|| Value::Object(serde_json::Map::new()));
        }
    }
    (serde_json::to_string(&kept).map_or(usize::MAX, |text| text.len()) <= TRIGGER_PROJECTION_BYTES).then_some(kept)
}

/// What [`match_wait`] decided.
#[derive(Clone, Debug, PartialEq)]
pub enum WaitMatch {
    /// The event resumes the wait: commit this completed record (the event is its output).
    Resumes(Box<StepRecord>),
    /// The wait is resolved already (matched, or timed out): drop its registration.
    Stale,
    /// The event does not resume this wait: the name or the `if` expression differs, or the
    /// event already resumed another wait of the run.
    NoMatch,
}

/// Decides whether `event` resumes the wait step `step_id` of a run triggered by `trigger`
/// whose steps are `steps`:
///
/// - the step must still be pending (not final);
/// - an event that already resumed a wait of this run never resumes another (EventBridge
///   delivers at least once, and a redelivery must not complete a later wait);
/// - the `expression`, if any, must hold over `event` (the trigger) and `async` (the
///   candidate); an expression that fails to parse or evaluate does not match.
pub fn match_wait(
    trigger: &EventPayload,
    steps: &[StepRecord],
    step_id: &StepId,
    expression: Option<&str>,
    event: &EventPayload,
    now: Millis,
) -> WaitMatch {
    let Some(step) = steps.iter().find(|record| &record.id == step_id && !record.state.is_final()) else {
        return WaitMatch::Stale;
    };
    let consumed = event.id.is_some()
        && steps.iter().any(|record| {
            record.kind == StepKind::WaitForEvent
                && matches!(&record.state, StepState::Completed { output }
                    if output.get("id").and_then(Value::as_str) == event.id.as_deref())
        });
    if consumed {
        return WaitMatch::NoMatch;
    }
    let candidate = serde_json::to_value(event).unwrap_or(Value::Null);
    if let Some(expression) = expression {
        let trigger = serde_json::to_value(trigger).unwrap_or(Value::Null);
        let matched = MatchExpr::cached(expression).and_then(|expr| expr.matches(&trigger, &candidate));
        if !matched.unwrap_or(false) {
            return WaitMatch::NoMatch;
        }
    }
    let mut record = step.clone();
    record.state = StepState::Completed { output: candidate };
    record.ended_at = Some(now);
    WaitMatch::Resumes(Box::new(record))
}

/// The signal a signal wait (`step.wait_for_signal`) waits for: its filed `data.signal`.
pub fn signal_of(wait: &Wait) -> Option<&str> {
    let key = wait.key.as_ref().filter(|_| wait.event == crate::event::SIGNAL_EVENT && !wait.cancels)?;
    (key.path == "data.signal").then(|| key.value.strip_prefix("s:")).flatten()
}

/// What registering a wait decided ([`register_wait`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Registered {
    /// The wait is pending: an event (or its timeout) resumes it.
    Waiting,
    /// Another run already waits for the signal: the wait withdrew, and its step fails with
    /// this `SignalConflictError`.
    Conflict(StepError),
}

/// Registers `wait` (idempotent: a driver registers it on every pass, so a crash between the
/// step's scheduled record and the wait never leaves the run deaf). A signal has one waiter:
/// the wait is written first, then checked for another run waiting. With `replace` (Inngest's
/// `conflict: "replace"`) the other run's wait is withdrawn (it then times out); otherwise this
/// wait withdraws and the step `step_name` fails. Two runs beginning at the same instant may
/// both withdraw; they never both stay.
///
/// # Errors
/// The store failed.
pub async fn register_wait<S: crate::store::RunStore>(
    store: &S,
    wait: &Wait,
    step_name: &str,
    replace: bool,
) -> Result<Registered, crate::store::StoreError> {
    store.put_wait(wait).await?;
    let (Some(signal), Some(holder)) = (signal_of(wait), signal_holder(store, wait).await?) else {
        return Ok(Registered::Waiting);
    };
    if replace {
        let probe = crate::event::signal(signal, Value::Null);
        for other in store.waits_for(&probe).await? {
            if other.run_id == holder && signal_of(&other) == Some(signal) {
                store.remove_wait(&other).await?;
            }
        }
        return Ok(Registered::Waiting);
    }
    store.remove_wait(wait).await?;
    Ok(Registered::Conflict(signal_conflict(step_name, signal, &holder)))
}

/// A signal has one waiter at a time: the run other than `wait`'s already waiting for the
/// signal `wait` waits for, if any. Waits left behind by runs that ended, or whose step no
/// longer waits, are removed on the way.
///
/// # Errors
/// The store failed.
pub async fn signal_holder<S: crate::store::RunStore>(
    store: &S,
    wait: &Wait,
) -> Result<Option<RunId>, crate::store::StoreError> {
    match signal_of(wait) {
        Some(signal) => signal_waiter(store, signal, Some(&wait.run_id)).await,
        None => Ok(None),
    }
}

/// The run waiting for `signal` now (other than `except`), if any: where a signal sent now
/// goes. Waits left behind by runs that ended, or whose step no longer waits, are removed on
/// the way.
///
/// # Errors
/// The store failed.
pub async fn signal_waiter<S: crate::store::RunStore>(
    store: &S,
    signal: &str,
    except: Option<&RunId>,
) -> Result<Option<RunId>, crate::store::StoreError> {
    let probe = crate::event::signal(signal, Value::Null);
    for other in store.waits_for(&probe).await? {
        if Some(&other.run_id) == except || signal_of(&other) != Some(signal) {
            continue;
        }
        let waiting = store.load(&other.run_id).await?.is_some_and(|journal| {
            !journal.meta.status.is_finished()
                && journal
                    .steps
                    .iter()
                    .any(|step| step.id == other.step_id && matches!(step.state, StepState::Scheduled { .. }))
        });
        if waiting {
            return Ok(Some(other.run_id));
        }
        store.remove_wait(&other).await?;
    }
    Ok(None)
}

/// The error of a signal wait whose signal another run already waits for.
pub fn signal_conflict(step: &str, signal: &str, holder: &RunId) -> StepError {
    StepError {
        name: "SignalConflictError".into(),
        ..StepError::non_retriable(format!("step `{step}`: signal `{signal}` is already awaited by run `{holder}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A general-form wait judged on the trigger fields it carries decides as the whole trigger
    /// would, `has()` on a missing field included.
    #[test]
    fn a_wait_judged_on_its_projection_decides_as_on_the_whole_trigger() {
        let trigger = EventPayload::new("app/order", json!({"order": 1, "big": "x".repeat(10_000)}));
        let condition = "async.data.total >= (has(event.data.min) ? event.data.min : 0)";
        let run = RunId::new("r1");
        let wait = Wait::new("app/paid", &run, &StepId::from_hashed("s"), Some(condition.into()), &trigger, 9, 0);
        assert_eq!((wait.key.clone(), wait.trigger.clone()), (None, Some(json!({"data": {}}))));
        let paid = |total: i64| serde_json::to_value(EventPayload::new("app/paid", json!({"total": total}))).unwrap();
        let whole = serde_json::to_value(&trigger).unwrap();
        let on_whole = MatchExpr::parse(condition).unwrap().matches(&whole, &paid(5)).unwrap();
        assert!(on_whole);
        assert_eq!(Wait::possible(vec![wait.clone()], &paid(5)), vec![wait.clone()]);
        assert_eq!(Wait::possible(vec![wait], &paid(-1)), Vec::<Wait>::new());
    }
}
