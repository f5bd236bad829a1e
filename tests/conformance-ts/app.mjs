// TypeScript twins of tests/conformance-app's functions, served by the official Inngest SDK
// (node adapter) on 127.0.0.1:$PORT at /api/inngest. The differential tests send both apps the
// same executor requests and compare the answers.
import http from "node:http";
import { Inngest, NonRetriableError, referenceFunction } from "inngest";
import { serve } from "inngest/node";

const inngest = new Inngest({ id: "conformance" });

const hello = inngest.createFunction({ id: "hello", triggers: [{ event: "app/my.event" }] }, async ({ step }) => {
  const result = await step.run("step-name", () => ({ success: true }));
  await step.sleep("wait", "1h");
  return result;
});

const repeated = inngest.createFunction({ id: "repeated-step", triggers: [{ event: "test/repeat" }] }, async ({ event, step }) => {
  let total = 0;
  for (let page = 1; page <= 3; page++) {
    const fetched = await step.run("fetch-page", () => ({ page, count: 10 }));
    total += fetched.count;
  }
  const saved = await step.run("save-count", () => total);
  return { userId: event.data.userId, total: saved };
});

const fanOut = inngest.createFunction({ id: "daily-fan-out", triggers: [{ cron: "0 3 * * *" }] }, async ({ step }) => {
  const users = await step.run("list-users", () => ["u1", "u2"]);
  await step.sendEvent("fan-out", users.map((userId) => ({ name: "readwise/fetch-books", data: { userId } })));
  return { sent: users.length };
});

const parallel = inngest.createFunction({ id: "parallel", triggers: [{ event: "test/parallel" }] }, async ({ step }) => {
  return await Promise.all([step.run("a", () => "A"), step.run("b", () => "B")]);
});

const flaky = inngest.createFunction({ id: "flaky", retries: 2, triggers: [{ event: "test/flaky" }] }, async ({ step, attempt }) => {
  return await step.run("may-fail", () => {
    if (attempt === 0) throw new Error("boom");
    return "ok";
  });
});

const fatal = inngest.createFunction({ id: "fatal", triggers: [{ event: "test/fatal" }] }, async ({ step }) => {
  return await step.run("fatal-step", () => {
    throw new NonRetriableError("nope");
  });
});

const waiter = inngest.createFunction({ id: "waiter", triggers: [{ event: "test/wait" }] }, async ({ step }) => {
  const approval = await step.waitForEvent("wait-approval", { event: "test/approved", timeout: "1d", if: "async.data.id == event.data.id" });
  return approval ? approval.data : null;
});

const double = inngest.createFunction({ id: "double", triggers: [{ event: "test/double" }] }, async ({ event, step }) => {
  return await step.run("double", () => event.data.n * 2);
});

// Invokes `double`; with `slow`, `hello` (which sleeps an hour) under a 2 s timeout; with
// `missing`, a function no app serves; with `failing`, `fatal`; with `both`, `double` twice at once.
const invoker = inngest.createFunction({ id: "invoker", triggers: [{ event: "test/invoke" }] }, async ({ event, step }) => {
  if (event.data.slow) return await step.invoke("call-hello", { function: hello, data: { userId: "x" }, timeout: "2s" });
  if (event.data.missing) return await step.invoke("call-missing", { function: referenceFunction({ functionId: "missing" }) });
  if (event.data.failing) return await step.invoke("call-fatal", { function: fatal });
  if (event.data.both) {
    return await Promise.all([
      step.invoke("double-one", { function: double, data: { n: 1 } }),
      step.invoke("double-two", { function: double, data: { n: 2 } }),
    ]);
  }
  return await step.invoke("call-double", { function: double, data: { n: 21 } });
});

// Flow control: the sync must register these options exactly as the Rust twins do.
const flowSync = inngest.createFunction(
  {
    id: "flow-sync",
    triggers: [{ event: "test/sync" }],
    concurrency: [{ limit: 1, key: "event.data.userId" }, { limit: 20, key: '"readwise-api"', scope: "account" }],
    throttle: { limit: 2, period: "10s", burst: 1, key: "event.data.userId" },
    priority: { run: "event.data.plan == 'pro' ? 120 : 0" },
    singleton: { mode: "skip", key: "event.data.userId" },
    cancelOn: [
      { event: "test/user.deleted", match: "data.userId", timeout: "1h" },
      { event: "test/sync.cancelled", if: "async.data.id == event.data.id" },
    ],
    timeouts: { start: "10m", finish: "1h" },
  },
  async () => "synced",
);
const flowCharge = inngest.createFunction(
  { id: "flow-charge", triggers: [{ event: "test/charge" }], idempotency: "event.data.cartId" },
  async () => "charged",
);
const flowLimited = inngest.createFunction(
  {
    id: "flow-limited",
    triggers: [{ event: "test/limited" }],
    rateLimit: { limit: 10, period: "1m", key: "event.data.userId" },
    concurrency: { limit: 5 },
    singleton: { mode: "cancel" },
  },
  async () => "limited",
);

// Only for the serve benchmark (CAIRN_BENCH_FUNCTION=1): 100 `run` steps and one more.
const benchHundred = inngest.createFunction({ id: "bench-hundred", triggers: [{ event: "bench/hundred" }] }, async ({ step }) => {
  let total = 0;
  for (let n = 0; n < 101; n++) total += await step.run("step", () => n);
  return total;
});

const functions = [hello, repeated, fanOut, parallel, flaky, fatal, waiter, double, invoker, flowSync, flowCharge, flowLimited];
if (process.env.CAIRN_BENCH_FUNCTION) functions.push(benchHundred);
const handler = serve({ client: inngest, functions });
http.createServer(handler).listen(Number(process.env.PORT || 3000), "127.0.0.1");
