// Drives the dev server's dashboard in Debian's headless Chromium with playwright-core:
// node dashboard.mjs DEV_URL RUN_ID SCREENSHOT_DIR WAITING_RUN_ID
// Loads the runs page, finds RUN_ID, opens its timeline, invokes `hello` from the Functions page
// and follows the new run until it completes (live updates, no reload), cancels WAITING_RUN_ID
// and reruns RUN_ID with the buttons. Prints one JSON line with what the DOM showed; any missing
// element fails with a message and exit code 1.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [url, runId, shots, waitingRun] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
});
const errors = [];
const result = {};
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 860 } });
  page.on("pageerror", (e) => errors.push(e.message));
  // A run invoked a moment ago answers 404 until the function has started it; the page shows it
  // as starting, so that one network error is expected.
  page.on("console", (m) => { if (m.type() === "error" && !m.text().includes("status of 404")) errors.push(m.text()); });

  await page.goto(url);
  await page.waitForSelector(`[data-testid=run-row][data-run="${runId}"]`, { timeout: 15000 });
  await page.waitForSelector("[data-testid=live]:has-text('live')", { timeout: 10000 });
  result.runRows = await page.locator("[data-testid=run-row]").count();
  await page.screenshot({ path: `${shots}/1-runs.png` });

  await page.click(`[data-testid=run-row][data-run="${runId}"]`);
  await page.waitForSelector(`[data-testid=run-detail][data-run-id="${runId}"] [data-testid=step]`);
  await page.click("[data-testid=step][data-step=step-name] summary");
  result.steps = await page.$$eval("[data-testid=step]", (els) => els.map((e) => [e.dataset.step, e.dataset.stepStatus]));
  result.firstStepOutput = JSON.parse(await page.textContent("[data-testid=step][data-step=step-name] [data-testid=step-output]"));
  result.runStatus = await page.getAttribute("[data-testid=run-detail] .pill", "data-status");
  result.runOutput = JSON.parse(await page.textContent("[data-testid=run-output]"));
  await page.screenshot({ path: `${shots}/2-timeline.png` });

  await page.click("nav a[data-nav=functions]");
  await page.waitForSelector("[data-testid=function][data-function=hello]");
  result.functions = await page.$$eval("[data-testid=function]", (els) => els.map((e) => e.dataset.function));
  await page.click("[data-testid=function][data-function=hello] [data-testid=invoke]");
  await page.fill("[data-testid=invoke-data]", "not json");
  await page.click("[data-testid=invoke-submit]");
  result.badJsonError = await page.textContent("[data-testid=invoke-error]");
  await page.fill("[data-testid=invoke-data]", '{"from": "dashboard"}');
  await page.screenshot({ path: `${shots}/3-invoke.png` });
  await page.click("[data-testid=invoke-submit]");
  await page.waitForSelector("[data-testid=run-detail], [data-testid=run-pending]");
  result.invokedRun = decodeURIComponent(page.url().split("#/runs/")[1]);
  // Live updates carry the new run from running through its 2 s sleep to completed.
  await page.waitForSelector("[data-testid=run-detail] .pill[data-status=completed]", { timeout: 60000 });
  result.invokedEvent = JSON.parse(await page.locator("[data-testid=run-detail] pre.json").last().textContent()).data;
  result.invokedSteps = await page.$$eval("[data-testid=step]", (els) => els.map((e) => [e.dataset.step, e.dataset.stepStatus]));
  await page.screenshot({ path: `${shots}/4-invoked-run.png` });

  await page.click("nav a[data-nav=events]");
  await page.waitForSelector("[data-testid=event-row]");
  // The newest app/my.event: the one invoked above (timer messages and finished events follow it).
  await page.click("[data-testid=event-row]:has-text('app/my.event') >> nth=0");
  await page.waitForSelector("[data-testid=event-detail] [data-testid=event-runs]");
  result.eventPayload = JSON.parse(await page.textContent("[data-testid=event-payload]")).detail.data;
  await page.screenshot({ path: `${shots}/5-events.png` });

  await page.goto(`${url}#/runs/${waitingRun}`);
  await page.waitForSelector(`[data-testid=run-detail][data-run-id="${waitingRun}"] .pill[data-status=waiting]`);
  await page.click("[data-testid=cancel]");
  await page.waitForSelector(`[data-testid=run-detail][data-run-id="${waitingRun}"] .pill[data-status=cancelled]`);
  result.cancelled = { status: "cancelled", cancelDisabled: await page.isDisabled("[data-testid=cancel]") };
  await page.screenshot({ path: `${shots}/6-cancelled.png` });

  await page.goto(`${url}#/runs/${runId}`);
  await page.waitForSelector(`[data-testid=run-detail][data-run-id="${runId}"]`);
  await page.click("[data-testid=rerun-start]");
  await page.waitForFunction((id) => { const d = document.querySelector("[data-testid=run-detail]"); return d && d.dataset.runId !== id; }, runId);
  result.rerunRun = await page.getAttribute("[data-testid=run-detail]", "data-run-id");
  await page.waitForSelector("[data-testid=run-detail] .pill[data-status=completed]", { timeout: 60000 });
  await page.screenshot({ path: `${shots}/7-rerun.png` });
  result.errors = errors;
  console.log(JSON.stringify(result));
} catch (err) {
  console.error(`dashboard check failed: ${err.message}\npage errors: ${JSON.stringify(errors)}\nso far: ${JSON.stringify(result)}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
