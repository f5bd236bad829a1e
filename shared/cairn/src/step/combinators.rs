//! Step combinators: [`Step::race`] (the first of several steps to finish wins, the others are
//! cancelled) and [`Step::map`] (a step per item, at most N at once). Both are deterministic on
//! replay: steps begin in the same order on every pass (their positions in the journal), and a
//! race's winner is itself a step, so a replay returns the recorded winner whatever finished
//! first this time.

use super::support::{checked_name, decode_output, halt};
use super::{Begin, Step};
use crate::error::{StepError, StepResult};
use crate::op::OpKind;
use crate::record::StepKind;
use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::future::Future;
use std::task::Poll;

impl Step {
    /// Runs `branches` at once (each one step: a `run`, `sleep`, `wait_for_event`,
    /// `wait_for_signal` or `invoke`, boxed) and returns the first to finish, with its index:
    /// Inngest's `group.parallel({mode: "race"})`. The others are cancelled: each is recorded
    /// failed with `StepCancelledError` (a sleep or wait stops waiting, a planned `run` never
    /// runs). The winner is recorded as the step `name` (`{"winner": i}`), so a replay returns
    /// the same branch. A winner that failed fails the race with its error.
    ///
    /// ```no_run
    /// # use cairn::prelude::*;
    /// # use futures::FutureExt;
    /// # async fn demo(step: Step) -> StepResult<()> {
    /// let (winner, answer) = step
    ///     .race("first-answer", vec![
    ///         step.wait_for_event::<serde_json::Value>("reply", WaitFor::event("app/reply").timeout("1d")).boxed(),
    ///         step.sleep("give-up", "1h").map(|slept| slept.map(|()| None)).boxed(),
    ///     ])
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn race<'a, T>(
        &self,
        name: &str,
        mut branches: Vec<BoxFuture<'a, StepResult<T>>>,
    ) -> StepResult<(usize, T)>
    where
        T: Send + 'a,
    {
        let name = checked_name(name)?;
        if branches.is_empty() {
            return Err(StepError::non_retriable(format!("step `{name}`: a race needs at least one branch")));
        }
        // The decision is a step of its own, begun before the branches so every pass gives the
        // branches the same positions.
        let (decided, pending) = match self.begin(StepKind::Run, name, decode_output::<Value>) {
            Begin::Memoized(Ok(decision)) => (decision["winner"].as_u64().and_then(|w| usize::try_from(w).ok()), None),
            Begin::Memoized(Err(error)) => return Err(error),
            Begin::Halt => return halt().await,
            Begin::Pending { id, position, existing } => (None, Some((id, position, existing))),
        };
        // Each branch alone first: it must begin exactly one step, whose position is then the
        // same on every pass (what a loser's cancellation is recorded under).
        let mut settled: Vec<Option<StepResult<T>>> = branches.iter().map(|_| None).collect();
        let mut positions = Vec::with_capacity(branches.len());
        for (index, branch) in branches.iter_mut().enumerate() {
            let before = self.state.lock().next_position();
            let polled = std::future::poll_fn(|cx| Poll::Ready(branch.as_mut().poll(cx))).await;
            let began = self.state.lock().next_position() - before;
            if began != 1 {
                self.cancel_and_settle(&positions, &format!("cancelled: race `{name}` is invalid")).await;
                return Err(StepError::non_retriable(format!(
                    "step `{name}`: branch {index} of the race must be one step (a `run`, `sleep`, `wait_for_event`, \
                     `wait_for_signal` or `invoke`); it began {began}{}",
                    match polled {
                        Poll::Ready(Err(error)) if began == 0 => format!(": {}", error.message),
                        _ => String::new(),
                    }
                )));
            }
            positions.push(before);
            if let Poll::Ready(output) = polled {
                settled[index] = Some(output);
            }
        }
        if let Some(winner) = decided.filter(|&winner| winner >= branches.len()) {
            self.cancel_and_settle(&positions, &format!("cancelled: race `{name}` is invalid")).await;
            return Err(StepError::non_retriable(format!(
                "step `{name}`: the recorded winner, branch {winner}, is not one of its {} branches",
                branches.len()
            )));
        }
        let winner = std::future::poll_fn(|cx| {
            for (branch, result) in branches.iter_mut().zip(settled.iter_mut()) {
                if result.is_none()
                    && let Poll::Ready(output) = branch.as_mut().poll(cx)
                {
                    *result = Some(output);
                }
            }
            match decided {
                Some(winner) if settled[winner].is_some() => Poll::Ready(winner),
                Some(_) => Poll::Pending,
                None => settled.iter().position(Option::is_some).map_or(Poll::Pending, Poll::Ready),
            }
        })
        .await;
        if let Some((id, position, existing)) = pending {
            let kind = OpKind::Decide { output: json!({"winner": winner}) };
            self.register(&id, name, position, kind, existing.is_none());
            self.settle::<Value>(&id).await?;
        }
        // Every other branch still waiting is cancelled, on every pass (a crash after the
        // decision leaves some to cancel again), and the race ends once they are recorded.
        let losers: Vec<u32> = positions
            .iter()
            .enumerate()
            .filter(|&(index, _)| index != winner && settled[index].is_none())
            .map(|(_, p)| *p)
            .collect();
        self.cancel_and_settle(&losers, &format!("cancelled: branch {winner} of race `{name}` finished first")).await;
        drop(branches);
        match settled[winner].take() {
            Some(result) => result.map(|output| (winner, output)),
            None => {
                Err(StepError::non_retriable(format!("step `{name}`: the recorded winner {winner} did not finish")))
            }
        }
    }

    /// Records the steps pending at `positions` failed with `StepCancelledError` (`because`)
    /// and waits until the driver has committed them, so nothing is left pending.
    async fn cancel_and_settle(&self, positions: &[u32], because: &str) {
        self.state.lock().cancel_ops(positions, because);
        std::future::poll_fn(|_| {
            let state = self.state.lock();
            if positions.iter().any(|position| state.ops().contains_key(position)) {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
    }

    /// Runs `f` for every item as a `run` step of its own, named `name[i]`, at most
    /// `max_concurrency` at once (AWS durable functions' `map` with `max_concurrency`): the
    /// outputs in the items' order. Items start in order as earlier ones finish, so every pass
    /// gives each item the same step. The first item that fails fails the map with its error.
    ///
    /// ```no_run
    /// # use cairn::prelude::*;
    /// # async fn demo(step: Step) -> StepResult<()> {
    /// let sizes: Vec<usize> = step.map("fetch", vec!["a", "b", "c"], 2, |page| async move { Ok(page.len()) }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn map<I, T, F, Fut>(
        &self,
        name: &str,
        items: impl IntoIterator<Item = I>,
        max_concurrency: usize,
        f: F,
    ) -> StepResult<Vec<T>>
    where
        I: Send,
        T: Serialize + DeserializeOwned + Send + 'static,
        F: Fn(I) -> Fut + Send + Sync,
        Fut: Future<Output = StepResult<T>> + Send,
    {
        let name = checked_name(name)?;
        if max_concurrency == 0 {
            return Err(StepError::non_retriable(format!("step `{name}`: max concurrency must be at least 1")));
        }
        let mut queue = items.into_iter().enumerate().collect::<std::collections::VecDeque<_>>();
        let mut outputs: Vec<Option<T>> = (0..queue.len()).map(|_| None).collect();
        // Where each item's step began (it begins at its first poll): a failure cancels those
        // still pending.
        let positions = std::sync::Mutex::new(vec![None; queue.len()]);
        let (f, positions_ref) = (&f, &positions);
        let start = |(index, item): (usize, I)| -> (usize, BoxFuture<'_, StepResult<T>>) {
            let step_name = format!("{name}[{index}]");
            let future = async move {
                let position = self.state.lock().next_position();
                if let Ok(mut positions) = positions_ref.lock() {
                    positions[index] = Some(position);
                }
                self.run(step_name, move || f(item)).await
            };
            (index, Box::pin(future))
        };
        let mut in_flight: Vec<(usize, BoxFuture<'_, StepResult<T>>)> = Vec::new();
        let mut errors: Vec<StepError> = Vec::new();
        std::future::poll_fn(|cx| {
            loop {
                // Start what fits, in the items' order, then poll everything in flight in order:
                // the k-th step begun is always item k, whatever finishes first.
                while in_flight.len() < max_concurrency {
                    match queue.pop_front() {
                        Some(next) => in_flight.push(start(next)),
                        None => break,
                    }
                }
                let mut finished = false;
                in_flight.retain_mut(|(index, future)| match future.as_mut().poll(cx) {
                    Poll::Ready(Ok(output)) => {
                        outputs[*index] = Some(output);
                        finished = true;
                        false
                    }
                    Poll::Ready(Err(error)) => {
                        errors.push(error);
                        false
                    }
                    Poll::Pending => true,
                });
                if !errors.is_empty() || (in_flight.is_empty() && queue.is_empty()) {
                    return Poll::Ready(());
                }
                if !finished {
                    return Poll::Pending;
                }
            }
        })
        .await;
        if errors.is_empty() {
            return Ok(outputs.into_iter().flatten().collect());
        }
        // An item failed: the ones still pending are cancelled and recorded so, and the map
        // fails with the first real failure (on a replay the cancelled ones fail too).
        let pending: Vec<u32> = {
            let positions = positions.lock().map(|positions| positions.clone()).unwrap_or_default();
            in_flight.iter().filter_map(|(index, _)| positions[*index]).collect()
        };
        drop(in_flight);
        self.cancel_and_settle(&pending, &format!("cancelled: an item of map `{name}` failed")).await;
        let first = errors.iter().position(|error| error.name != "StepCancelledError").unwrap_or(0);
        Err(errors.swap_remove(first))
    }
}
