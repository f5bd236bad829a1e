// Drives `cairn console` (a deployed stack's runs) in Debian's headless Chromium:
// node console.mjs CONSOLE_URL FAILED_RUN SLEEPING_RUN BULK_FUNCTION SCREENSHOT_DIR
// Lists the runs, reruns FAILED_RUN from its failed step, cancels SLEEPING_RUN, then cancels
// every run of BULK_FUNCTION with the bulk button. Prints one JSON line with what the DOM showed;
// a missing element fails with a message and exit code 1.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [url, failedRun, sleepingRun, bulkFunction, shots] = process.argv.slice(2);
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
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("dialog", (d) => d.accept());

  await page.goto(url);
  await page.waitForSelector(`[data-testid=run-row][data-run="${failedRun}"]`, { timeout: 15000 });
  result.mode = await page.evaluate(() => document.body.dataset.mode);
  result.nav = await page.$$eval("nav a", (els) => els.map((e) => e.dataset.nav));
  result.rows = await page.$$eval("[data-testid=run-row]", (els) => els.map((e) => e.dataset.run));
  await page.screenshot({ path: `${shots}/1-console-runs.png` });

  await page.click(`[data-testid=run-row][data-run="${failedRun}"]`);
  await page.waitForSelector(`[data-testid=run-detail][data-run-id="${failedRun}"] [data-testid=step]`);
  result.failedSteps = await page.$$eval("[data-testid=step]", (els) => els.map((e) => [e.dataset.step, e.dataset.stepStatus]));
  await page.screenshot({ path: `${shots}/2-console-failed-run.png` });
  await page.click("[data-testid=rerun-failed]");
  await page.waitForFunction((old) => location.hash.startsWith("#/runs/") && !location.hash.endsWith(old), failedRun);
  result.rerunRun = decodeURIComponent(page.url().split("#/runs/")[1]);
  await page.waitForSelector(`[data-testid=run-detail][data-run-id="${result.rerunRun}"]`);
  result.rerunSteps = await page.$$eval("[data-testid=step]", (els) => els.map((e) => [e.dataset.step, e.dataset.stepStatus]));

  await page.goto(`${url}/#/runs/${encodeURIComponent(sleepingRun)}`);
  await page.waitForSelector(`[data-testid=run-detail][data-run-id="${sleepingRun}"] [data-testid=cancel]:not([disabled])`);
  await page.click("[data-testid=cancel]");
  await page.waitForSelector(`[data-testid=run-detail][data-run-id="${sleepingRun}"] .pill[data-status=cancelled]`, { timeout: 15000 });
  result.cancelled = await page.getAttribute("[data-testid=run-detail] .pill", "data-status");
  await page.screenshot({ path: `${shots}/3-console-cancelled.png` });

  await page.selectOption("[data-testid=filter-function]", bulkFunction);
  await page.waitForFunction((fn) => [...document.querySelectorAll("[data-testid=run-row] td:nth-child(2)")].every((td) => td.textContent === fn), bulkFunction);
  await page.click("[data-testid=bulk-cancel]");
  const bulkToast = page.locator(".toast", { hasText: /^Cancelled \d+ of \d+/ });
  await bulkToast.waitFor({ timeout: 15000 });
  result.bulkToast = await bulkToast.textContent();
  await page.waitForFunction(() => [...document.querySelectorAll("[data-testid=run-row] .pill")].every((p) => ["cancelled", "completed", "failed"].includes(p.dataset.status)), null, { timeout: 15000 });
  result.bulkStatuses = await page.$$eval("[data-testid=run-row] .pill", (els) => els.map((e) => e.dataset.status));
  await page.screenshot({ path: `${shots}/4-console-bulk-cancelled.png` });
} catch (err) {
  errors.push(err.message);
} finally {
  await browser.close();
}
result.errors = errors;
console.log(JSON.stringify(result));
process.exit(errors.length ? 1 : 0);
