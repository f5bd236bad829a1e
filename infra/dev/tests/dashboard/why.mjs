// Reads the dashboard's "Why" and "Started by" lines for runs flow control decided, in Debian's
// headless Chromium: node why.mjs DEV_URL SCREENSHOT_DIR RUN...
// Opens each run's page and prints one JSON line: {runs: {RUN: {status, why, started_by?}},
// errors}. A run page that does not load fails with a message and exit code 1.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [url, shots, ...runs] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
});
const errors = [];
const result = { runs: {} };
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 860 } });
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  for (const [n, run] of runs.entries()) {
    await page.goto(`${url}/#/runs/${encodeURIComponent(run)}`);
    await page.waitForSelector(`[data-testid=run-detail][data-run-id="${run}"] .pill`, { timeout: 15000 });
    const status = await page.getAttribute(`[data-testid=run-detail][data-run-id="${run}"] .pill`, "data-status");
    const line = (testid) =>
      page.$eval(`[data-testid=run-detail][data-run-id="${run}"]`, (el, testid) => {
        const found = el.querySelector(`[data-testid=${testid}]`);
        return found ? found.textContent : null;
      }, testid);
    const why = await line("run-reason");
    const startedBy = await line("run-started-by");
    result.runs[run] = startedBy ? { status, why, started_by: startedBy } : { status, why };
    await page.screenshot({ path: `${shots}/why-${n + 1}.png` });
  }
} catch (err) {
  errors.push(err.message);
} finally {
  await browser.close();
}
result.errors = errors;
console.log(JSON.stringify(result));
process.exit(errors.length ? 1 : 0);
