//! The run lifecycle: every change of a run's status, and what must happen with it, in one
//! place. Drivers (the [`Runner`](crate::Runner) behind the Lambda driver, the dev server and
//! [`TestRun`](crate::testing::TestRun); the dev server's executor for Inngest-protocol apps) and
//! the operators (the dashboard, `cairn runs`, the console over a deployed stack) call these
//! functions; none of them sets a status or builds a system event itself.
//!
//! ```text
//!              create (event, cron, invoke, rerun, replay)
//!                                |   \--> skipped   (flow control: rate limit, idempotency, singleton)
//!                                v
//!                  queued  (throttle, concurrency: woken at its turn, or when a slot is freed)
//!                                |
//!                                v
//!   +----------------------->  running  <-------------------------------+
//!   |  start (lease taken)    |   |   |                                   |
//!   |                         |   |   +--> suspend: sleeping  (sleep, back-off, retry)
//!   |                         |   +------> suspend: waiting   (wait_for_event, invoke)
//!   |                         |                    |  wake-up (timer, matched event,
//!   +-------------------------+--------------------+  invoke answer, reconciler)
//!                             |
//!          finish             v                     cancel (any unfinished status)
//!   completed / failed  <-- running ... --------->  cancelled
//! ```
//!
//! | transition | head ([`transition`]) | duties |
//! |---|---|---|
//! | start | `running`, lease taken, `wake_at` = lease expiry | none: a holder that dies is found when the lease lapses |
//! | suspend | `sleeping` / `waiting`, lease released, `wake_at` = next time | arm the [`Timer`](crate::Timer) after the write; waits registered before |
//! | retry | `attempt + 1`, `retry_at` | as suspend, or sleep in process when short |
//! | finish | `completed` / `failed`, output or error, `outbox` | deliver the outbox ([`events::system_events`]): `inngest/function.finished` (answers a parent's `step.invoke`), `inngest/function.failed`; forget timers |
//! | cancel | `cancelled`, lease dropped, `outbox` | remove pending waits, forget timers, deliver `inngest/function.cancelled` and `finished`; a drive in flight loses its lease at its next commit |
//! | rerun / replay | a new run of the same function and event | copy the steps before the failed one (from the failed step), wake it through the timer |
//! | skip | `skipped` with the reason ([`transition::skipped`]), written at admission instead of the run | none: no system event is owed |
//! | queue | `queued` with the reason, due at its turn or a recheck | a throttle arms the timer for its turn; a freed concurrency slot wakes the queue's head |
//!
//! Flow control around these transitions (`crate::flow`): admission writes the head with its
//! claims (buckets, a singleton's lock) in one atomic write and registers `cancel_on` listeners;
//! the drivers (the Runner's drive, the dev server's executor for Inngest-protocol apps) check the
//! timeouts, the throttle and the concurrency slots before any code runs, and give the slots back
//! when they stop; finishing releases the singleton lock with the outbox ([`deliver_outbox`]).
//! Admission and `cancel_on` listeners hearing an event are [`RunControl::admit`] and
//! [`RunControl::hear_cancel`] ([`admission`]), so every driver applies them alike.
//!
//! Matching an event against a pending wait lives in [`waits`]; a `step.invoke`'s event, the
//! run it starts and the answer that resolves it, in [`invoke`]; the operations an operator performs on runs in any [`RunStore`](crate::RunStore)
//! are [`RunControl`]'s.

pub mod admission;
pub mod control;
pub mod events;
pub mod gate;
pub mod invoke;
pub mod transition;
pub mod waits;
pub mod window;

pub use admission::Admitted;
pub use control::{BulkReport, ControlError, RerunFrom, RunControl, deliver_outbox};
pub use events::{CANCELLED_MESSAGE, RunEnd, system_events};
pub use invoke::{invoke_answer, invoke_event, invoked_function, invoked_run};
pub use waits::{WaitMatch, match_wait};
pub use window::Fired;
