// Flow-control scenarios for `cairn dev -u` (infra/dev/tests/inngest_flow.rs): an app on the
// official Inngest SDK whose functions set the options through the SDK's own configuration, with
// periods short enough to watch in real time. Served on 127.0.0.1:$PORT at /api/inngest.
import http from "node:http";
import { Inngest } from "inngest";
import { serve } from "inngest/node";

const inngest = new Inngest({ id: "flow" });
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const functions = [
  // Excess events start nothing: one run per user per minute.
  inngest.createFunction(
    { id: "rate", triggers: [{ event: "flow/rate" }], rateLimit: { limit: 1, period: "1m", key: "event.data.user" } },
    async ({ event }) => event.data.user,
  ),
  // One run per cart in 24 hours.
  inngest.createFunction(
    { id: "idempotent", triggers: [{ event: "flow/charge" }], idempotency: "event.data.cart" },
    async ({ event }) => event.data.cart,
  ),
  // One active run per user: later ones are skipped while it sleeps.
  inngest.createFunction(
    { id: "singleton", triggers: [{ event: "flow/single" }], singleton: { mode: "skip", key: "event.data.user" } },
    async ({ step }) => {
      await step.sleep("hold", "3s");
      return "done";
    },
  ),
  // A new run replaces the active one.
  inngest.createFunction(
    { id: "replace", triggers: [{ event: "flow/replace" }], singleton: { mode: "cancel" } },
    async ({ event, step }) => {
      await step.sleep("hold", "30s");
      return event.data.n;
    },
  ),
  // A sleeping run is cancelled by its user's deletion.
  inngest.createFunction(
    {
      id: "cancellable",
      triggers: [{ event: "flow/start" }],
      cancelOn: [{ event: "flow/user.deleted", match: "data.user" }],
    },
    async ({ step }) => {
      await step.sleep("long", "30s");
      return "finished";
    },
  ),
  // Cancelled 2 s after its first step, while it sleeps.
  inngest.createFunction(
    { id: "bounded", triggers: [{ event: "flow/bounded" }], timeouts: { finish: "2s" } },
    async ({ step }) => {
      await step.run("first", () => "started");
      await step.sleep("long", "30s");
      return "finished";
    },
  ),
  // One step executing at a time per user; each takes 600 ms.
  inngest.createFunction(
    { id: "serial", triggers: [{ event: "flow/serial" }], concurrency: { limit: 1, key: "event.data.user" } },
    async ({ event, step }) => {
      return await step.run("work", async () => {
        await pause(600);
        return event.data.n;
      });
    },
  ),
  // One start per 2 seconds; the rest wait their turn.
  inngest.createFunction(
    { id: "throttled", triggers: [{ event: "flow/throttled" }], throttle: { limit: 1, period: "2s" } },
    async ({ event, step }) => await step.run("work", () => event.data.n),
  ),
  // One run per burst per user: once 2 s pass without an event for the user, with the last one.
  inngest.createFunction(
    { id: "debounced", triggers: [{ event: "flow/typed" }], debounce: { period: "2s", key: "event.data.user" } },
    async ({ event }) => event.data.n,
  ),
  // Batches of 3 events, or whatever came within 2 s of a batch's first.
  inngest.createFunction(
    { id: "batched", triggers: [{ event: "flow/batched" }], batchEvents: { maxSize: 3, timeout: "2s" } },
    async ({ event, events }) => ({ first: event.data.n, all: events.map((e) => e.data.n) }),
  ),
  // Waits for its order's approval signal; a second waiter for the same signal fails.
  inngest.createFunction(
    { id: "approval", triggers: [{ event: "flow/approval" }] },
    async ({ event, step }) =>
      await step.waitForSignal("approval", { signal: `approve-${event.data.id}`, timeout: "1m" }),
  ),
  // Approves an order from another run: the SDK's sendSignal (the dev server's /v1/signals).
  inngest.createFunction(
    { id: "approver", triggers: [{ event: "flow/approve" }] },
    async ({ event, step }) =>
      await step.sendSignal("approve", { signal: `approve-${event.data.id}`, data: { by: event.data.by } }),
  ),
  // A race of two steps (the SDK's race mode): the first in the memo wins.
  inngest.createFunction(
    { id: "racer", triggers: [{ event: "flow/race" }] },
    async ({ step, group }) => {
      const winner = await group.parallel({ mode: "race" }, () =>
        Promise.race([
          step.run("fast", () => "fast"),
          step.run("slow", async () => {
            await pause(300);
            return "slow";
          }),
        ]),
      );
      return await step.run("after", () => `${winner} won`);
    },
  ),
  // A window that stays open for the rest of the test, for the dashboard.
  inngest.createFunction(
    { id: "quiet", triggers: [{ event: "flow/quiet" }], debounce: { period: "1m", timeout: "5m" } },
    async ({ event }) => event.data.n,
  ),
  // One start a minute: a second event waits its turn, queued, while the test looks at it.
  inngest.createFunction(
    { id: "gated", triggers: [{ event: "flow/gated" }], throttle: { limit: 1, period: "1m" } },
    async ({ event }) => event.data.n,
  ),
];

http.createServer(serve({ client: inngest, functions })).listen(Number(process.env.PORT || 3000), "127.0.0.1");
