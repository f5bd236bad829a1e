//! What an app's answer does to its run: a `200` finishes it, an error is retried or fails it
//! (`cairn::RetryPolicy`, as the Runner), and a `206`'s opcodes become steps: memoized results and
//! failures, sleeps, waits and signal waits (registered through the lifecycle), pending invokes,
//! and the planned steps to call next.

use super::flow::{durations, finish_at};
use super::protocol::{Answer, error_of, judged, retry_after_ms, sleep_until};
use super::{AppFunction, InngestApps, MAX_WAKE_AT, Result, store_err};
use crate::host::Host;
use cairn::lifecycle::transition;
use cairn::lifecycle::waits::{Registered, register_wait, signal_condition};
use cairn::{RunMeta, RunStatus, RunStore, StepError, StepId, StepKind, StepRecord, StepState, Wait};
use cairn_http::opcode::{
    GeneratorOpcode, InvokeOpts, Opcode, PlannedOpts, SerializedError, SignalOpts, SleepOpts, WaitOpts,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// What applying an answer left to do.
pub(super) enum Applied {
    /// Call these planned steps next.
    Continue(Vec<String>),
    /// The run finished or suspended in this status.
    Finished(RunStatus),
}

impl InngestApps {
    pub(super) async fn apply<H: Host>(
        &self,
        dev: &Arc<H>,
        function: &AppFunction,
        meta: &mut RunMeta,
        answer: Answer,
        steps: &[StepRecord],
        attempt: u32,
    ) -> Result<Applied> {
        let now = dev.now();
        let run_id = meta.run_id.clone();
        let asked_delay = answer.retry_after.as_deref().and_then(|value| retry_after_ms(value, now));
        match answer.status {
            200 => return self.finish(dev, meta, Ok(answer.body)).await.map(Applied::Finished),
            206 => {}
            status => {
                let error = error_of(&answer.body, status);
                let policy = function.retries();
                let (error, retry_at) =
                    judged(&policy, error, answer.no_retry, asked_delay, attempt + 1, now, run_id.as_str());
                let Some(retry_at) = retry_at else {
                    return self.finish(dev, meta, Err(error)).await.map(Applied::Finished);
                };
                let mut failed_attempt = meta.clone();
                failed_attempt.attempt = attempt;
                let retrying = transition::retrying(failed_attempt, retry_at, now);
                let wake = finish_at(function, steps, now).map_or(retry_at, |finish| retry_at.min(finish));
                let sleeping = transition::suspended(retrying, RunStatus::Sleeping, Some(wake), now, durations());
                *meta = dev.store().update_meta(&sleeping).await.map_err(store_err)?;
                self.wake_at(dev, &function.id, &run_id, wake)?;
                return Ok(Applied::Finished(RunStatus::Sleeping));
            }
        }
        let no_retry = answer.no_retry;
        let parsed = match answer.body {
            Value::Array(_) => serde_json::from_value::<Vec<GeneratorOpcode>>(answer.body),
            single @ Value::Object(_) => serde_json::from_value(single).map(|op| vec![op]),
            other => return Err(format!("206 without opcodes: {other}").into()),
        };
        // An answer this side cannot read fails the run, as an opcode it does not support does.
        let ops = match parsed {
            Ok(ops) => ops,
            Err(error) => {
                let error = StepError::non_retriable(format!("the app answered malformed opcodes: {error}"));
                return self.finish(dev, meta, Err(error)).await.map(Applied::Finished);
            }
        };
        let mut planned = Vec::new();
        let mut position = u32::try_from(steps.len()).unwrap_or(u32::MAX);
        let existing = |id: &str| steps.iter().find(|s| s.id.as_str() == id).cloned();
        for op in ops {
            let id = op.id.clone();
            // A sleep or wait the app reports again (called while it is pending) keeps its time.
            if matches!(op.op, Opcode::Sleep | Opcode::WaitForEvent | Opcode::WaitForSignal | Opcode::InvokeFunction)
                && existing(&id).is_some_and(|step| matches!(step.state, StepState::Scheduled { .. }))
            {
                continue;
            }
            let name = op.shown_name().to_string();
            let record = |kind: StepKind, state: StepState, attempts: u32, detail: Option<Value>, position: u32| {
                let prior = existing(&id);
                StepRecord {
                    id: StepId::from_hashed(id.clone()),
                    name: name.clone(),
                    kind,
                    position: prior.as_ref().map_or(position, |p| p.position),
                    ended_at: state.is_final().then_some(now),
                    state,
                    attempts,
                    started_at: prior.map_or(now, |p| p.started_at),
                    detail,
                }
            };
            let planned_by = op.opts::<PlannedOpts>().kind;
            let kind =
                if planned_by.as_deref() == Some("step.sendEvent") { StepKind::SendEvent } else { StepKind::Run };
            let run_ref = &run_id;
            let commit =
                |record: StepRecord| async move { dev.store().commit_step(run_ref, &record).await.map_err(store_err) };
            match &op.op {
                Opcode::StepRun | Opcode::Step => {
                    commit(record(kind, StepState::Completed { output: op.data.clone() }, attempt + 1, None, position))
                        .await?;
                    position += 1;
                }
                Opcode::StepPlanned => planned.push(id.clone()),
                Opcode::StepFailed | Opcode::StepError => {
                    // A StepFailed, or a StepError with no attempts left, is final.
                    let reported = op.error.clone().unwrap_or_else(|| SerializedError::new("error"));
                    let final_op = op.op == Opcode::StepFailed;
                    let error = StepError::from(&reported);
                    let seed = format!("{run_id}/{id}");
                    let policy = function.retries();
                    let (error, retry_at) =
                        judged(&policy, error, no_retry || final_op, asked_delay, attempt + 1, now, &seed);
                    let (state, detail) = match retry_at {
                        // The error as the app reported it (its `cause` and other fields with it):
                        // the memo hands it back to the app on every later call.
                        None => (StepState::Failed { error }, Some(json!({"error": reported}))),
                        Some(retry_at) => (StepState::Retrying { error, retry_at }, None),
                    };
                    commit(record(kind, state, attempt + 1, detail, position)).await?;
                    if let Some(retry_at) = retry_at {
                        self.wake_at(dev, &function.id, &run_id, retry_at)?;
                    }
                    position += 1;
                }
                Opcode::Sleep => {
                    let until = op.opts::<SleepOpts>().duration.or_else(|| op.name.clone()).unwrap_or_default();
                    let wake_at = sleep_until(&until, now)?;
                    commit(record(StepKind::Sleep, StepState::Scheduled { wake_at }, 0, None, position)).await?;
                    position += 1;
                }
                Opcode::WaitForEvent | Opcode::WaitForSignal => {
                    let signal_opts = op.opts::<SignalOpts>();
                    let wait_opts = op.opts::<WaitOpts>();
                    let timeout = wait_opts.timeout.clone().unwrap_or_else(|| "1d".into());
                    let timeout_at = sleep_until(&timeout, now)?;
                    let step_id = StepId::from_hashed(id.clone());
                    let (wait, detail) = if op.op == Opcode::WaitForSignal {
                        let signal = signal_opts
                            .signal
                            .clone()
                            .or_else(|| op.name.clone())
                            .unwrap_or_default()
                            .trim()
                            .to_string();
                        let expression = signal_condition(&signal);
                        let wait = Wait::new(
                            cairn::SIGNAL_EVENT,
                            &run_id,
                            &step_id,
                            Some(expression.clone()),
                            &meta.event,
                            timeout_at,
                            now,
                        );
                        (wait, json!({"event": cairn::SIGNAL_EVENT, "if": expression, "signal": signal}))
                    } else {
                        let event = wait_opts.event.clone().or_else(|| op.name.clone()).unwrap_or_default();
                        let expression = wait_opts.condition.clone();
                        let wait =
                            Wait::new(&event, &run_id, &step_id, expression.clone(), &meta.event, timeout_at, now);
                        (wait, json!({"event": event, "if": expression}))
                    };
                    let scheduled = record(
                        StepKind::WaitForEvent,
                        StepState::Scheduled { wake_at: timeout_at },
                        0,
                        Some(detail),
                        position,
                    );
                    commit(scheduled).await?;
                    // One waiter per signal (as the Runner): `conflict: "replace"` takes the signal
                    // from the waiting run; otherwise this wait withdraws and its step fails.
                    let replace = signal_opts.conflict.as_deref() == Some("replace");
                    let registered = register_wait(dev.store(), &wait, &name, replace).await.map_err(store_err)?;
                    self.has_waiters.store(true, Ordering::Relaxed);
                    if let Registered::Conflict(error) = registered {
                        let detail = json!({"error": {"name": error.name, "message": error.message}});
                        commit(record(StepKind::WaitForEvent, StepState::Failed { error }, 1, Some(detail), position))
                            .await?;
                    }
                    position += 1;
                }
                Opcode::RunComplete => return self.finish(dev, meta, Ok(op.data.clone())).await.map(Applied::Finished),
                Opcode::InvokeFunction => {
                    // Recorded pending until its timeout (Inngest's longest wait without one);
                    // the drive sends the invoke when the run suspends on it.
                    let opts = op.opts::<InvokeOpts>();
                    let timeout_at = match &opts.timeout {
                        Some(timeout) => sleep_until(timeout, now)?,
                        None => now
                            .saturating_add(i64::try_from(cairn::MAX_WAIT.as_millis()).unwrap_or(i64::MAX))
                            .min(MAX_WAKE_AT),
                    };
                    let detail = json!({"function_id": opts.function_id, "data": opts.payload["data"]});
                    let pending = StepState::Scheduled { wake_at: timeout_at };
                    commit(record(StepKind::Invoke, pending, 0, Some(detail), position)).await?;
                    position += 1;
                }
                Opcode::Other(other) => {
                    let message = format!("opcode `{other}` is not supported by `cairn dev -u`");
                    return self.finish(dev, meta, Err(StepError::non_retriable(message))).await.map(Applied::Finished);
                }
            }
        }
        Ok(Applied::Continue(planned))
    }
}
