// Sends the signal a waiting run waits for from its dashboard page, in Debian's headless
// Chromium: node signal.mjs DEV_URL SCREENSHOT_DIR RUN DATA_JSON
// Prints one JSON line: {signal, toast, errors}: the signal name the page showed and the
// message it gave after sending. Exit code 1 when the page fails.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [url, shots, run, data] = process.argv.slice(2);
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
  await page.goto(`${url}/#/runs/${encodeURIComponent(run)}`);
  await page.waitForSelector("[data-testid=send-signal]", { timeout: 15000 });
  result.signal = await page.textContent("[data-testid=signal-name]");
  await page.fill("[data-testid=signal-data]", data);
  await page.screenshot({ path: `${shots}/signal-before.png` });
  await page.click("[data-testid=send-signal]");
  const toast = await page.waitForSelector(".toast", { timeout: 15000 }).catch(() => null);
  result.toast = toast ? (await toast.textContent()).trim() : null;
  await page.screenshot({ path: `${shots}/signal-after.png` });
} catch (err) {
  errors.push(err.message);
} finally {
  await browser.close();
}
result.errors = errors;
console.log(JSON.stringify(result));
process.exit(errors.length ? 1 : 0);
