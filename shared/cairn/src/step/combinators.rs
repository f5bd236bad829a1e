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
        let first_branch = self.state.lock().next_position();
        let mut settled: Vec<Option<StepResult<T>>> = branches.iter().map(|_| None).collect();
        let winner = std::future::poll_fn(|cx| {
            for (branch, result) in branches.iter_mut().zip(settled.iter_mut()) {
                if result.is_none()
                    && let Poll::Ready(output) = branch.as_mut().poll(cx)
                {
                    *result = Some(output);
                }
            }
            match decided {
                Some(winner) if settled.get(winner).is_some_and(Option::is_some) => Poll::Ready(winner),
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
        let losers: Vec<u32> = (0..branches.len())
            .filter(|&index| index != winner && settled[index].is_none())
            .filter_map(|index| u32::try_from(index).ok().map(|index| first_branch + index))
            .collect();
        let because = format!("cancelled: branch {winner} of race `{name}` finished first");
        self.state.lock().cancel_ops(&losers, &because);
        std::future::poll_fn(|_| {
            let state = self.state.lock();
            if losers.iter().any(|position| state.ops().contains_key(position)) {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        drop(branches);
        match settled[winner].take() {
            Some(result) => result.map(|output| (winner, output)),
            None => {
                Err(StepError::non_retriable(format!("step `{name}`: the recorded winner {winner} is not a branch")))
            }
        }
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
        let f = &f;
        let start = |(index, item): (usize, I)| -> (usize, BoxFuture<'_, StepResult<T>>) {
            let step_name = format!("{name}[{index}]");
            (index, Box::pin(async move { self.run(step_name, move || f(item)).await }))
        };
        let mut in_flight: Vec<(usize, BoxFuture<'_, StepResult<T>>)> = Vec::new();
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
                let mut failed = None;
                in_flight.retain_mut(|(index, future)| match future.as_mut().poll(cx) {
                    Poll::Ready(Ok(output)) => {
                        outputs[*index] = Some(output);
                        finished = true;
                        false
                    }
                    Poll::Ready(Err(error)) => {
                        failed.get_or_insert(error);
                        false
                    }
                    Poll::Pending => true,
                });
                if let Some(error) = failed {
                    return Poll::Ready(Err(error));
                }
                if in_flight.is_empty() && queue.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                if !finished {
                    return Poll::Pending;
                }
            }
        })
        .await?;
        Ok(outputs.into_iter().flatten().collect())
    }
}
