// Drives Debian's Chromium over the dashboard for internal/e2e's
// TestDashboardInBrowser: opens the pages, waits for the counts the Go test
// read through package client, clicks Retry on a dead letter, watches the
// overview update live, and takes screenshots. It writes what it saw to
// results.json in the output directory; the Go test judges it.
//
// usage: node dashboard.mjs ARGS.json   (see dashboardArgs in dashboard_test.go)
import { chromium } from "playwright-core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const args = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const out = { errors: [] };
const save = () => fs.writeFileSync(path.join(args.out, "results.json"), JSON.stringify(out, null, 2));
const shot = (name) => path.join(args.out, name);

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "dash-chromium-"));
const ctx = await chromium.launchPersistentContext(userDataDir, {
  executablePath: args.chromium,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 1440, height: 1000 },
  deviceScaleFactor: 1,
});
ctx.setDefaultTimeout(args.timeoutMs);

function watch(page, name) {
  page.on("pageerror", (e) => out.errors.push(`${name}: page error: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") out.errors.push(`${name}: console: ${m.text()}`); });
}

// countsOf reads the jobs-by-state table.
const countsOf = () => {
  const c = {};
  document.querySelectorAll("[data-count]").forEach((e) => { c[e.dataset.count] = Number(e.textContent.trim()); });
  return c;
};
// countsAre runs in the page: the table shows exactly want's counts.
const countsAre = (want) => {
  const c = {};
  document.querySelectorAll("[data-count]").forEach((e) => { c[e.dataset.count] = Number(e.textContent.trim()); });
  return Object.keys(want).every((k) => c[k] === want[k]);
};

try {
  // 1. The overview: wait for the counts the Go test read, and for both
  // charts to have lines, then measure and photograph.
  const page = await ctx.newPage();
  watch(page, "overview");
  await page.goto(args.base + "/");
  await page.waitForSelector("#live-status.on");
  await page.waitForSelector("#chart-queue polyline", { state: "attached" });
  await page.waitForSelector("#chart-rate polyline", { state: "attached" });
  try {
    await page.waitForFunction(countsAre, args.counts);
  } catch (e) {
    out.errors.push("overview: counts never matched: " + e.message);
  }
  out.overview = await page.evaluate(() => {
    const box = (id) => { const r = document.getElementById(id).getBoundingClientRect(); return { x: r.x, y: r.y, w: r.width, h: r.height }; };
    const num = (id) => Number(document.getElementById(id).textContent.trim());
    const c = {};
    document.querySelectorAll("[data-count]").forEach((e) => { c[e.dataset.count] = Number(e.textContent.trim()); });
    return {
      counts: c, total: num("count-total"), backlog: num("stat-backlog"), dead: num("stat-dead"),
      consumers: [...document.querySelectorAll("#consumers tbody td:first-child")].map((e) => e.textContent.trim()),
      queueBox: box("chart-queue"), rateBox: box("chart-rate"),
      queueLines: document.querySelectorAll("#chart-queue polyline").length,
    };
  });
  await page.screenshot({ path: shot("overview.png") });
  out.overviewHTML = await page.content();
  save();

  // 2. A completed job's page: its Runpod id and events.
  const job = await ctx.newPage();
  watch(job, "job");
  await job.goto(args.base + "/job?id=" + encodeURIComponent(args.completedJob));
  await job.waitForSelector("#runpod-id");
  out.job = await job.evaluate(() => ({
    id: document.getElementById("job-id").textContent.trim(),
    state: document.getElementById("job-state").textContent.trim(),
    runpodId: document.getElementById("runpod-id").textContent.trim(),
    output: document.getElementById("job-output").textContent,
    events: [...document.querySelectorAll("#events tbody tr[data-event-type]")].map((e) => e.dataset.eventType),
  }));
  await job.screenshot({ path: shot("job.png"), fullPage: true });
  out.jobHTML = await job.content();
  save();

  // 3. Live updates: the overview stays open (a marker proves it is never
  // reloaded) while another tab retries the dead job; the overview must
  // show the counts after the retry's run completed, on its own.
  await page.evaluate(() => { window.__marker = 42; });
  const refreshesBefore = Number(await page.evaluate(() => document.body.dataset.refreshes || 0));
  const dead = await ctx.newPage();
  watch(dead, "dead");
  await dead.goto(args.base + "/dead");
  const row = dead.locator(`tr[data-job="${args.deadJob}"]`);
  await row.waitFor();
  out.deadBefore = { state: (await row.locator(".state").textContent()).trim() };
  await Promise.all([
    dead.waitForURL(/done=retried/),
    row.locator("button.retry").click(),
  ]);
  out.dead = { flash: (await dead.locator("#flash").textContent()).trim(), url: dead.url() };
  await dead.screenshot({ path: shot("dead.png"), fullPage: true });
  out.deadHTML = await dead.content();
  save();

  try {
    await page.waitForFunction(countsAre, args.countsAfter);
  } catch (e) {
    out.errors.push("overview: counts after the retry never showed: " + e.message);
  }
  out.live = await page.evaluate(() => ({
    marker: window.__marker,
    refreshes: Number(document.body.dataset.refreshes || 0),
  }));
  out.live.refreshesBefore = refreshesBefore;
  out.live.counts = await page.evaluate(countsOf);
  await page.screenshot({ path: shot("overview-after.png") });
  save();
} catch (e) {
  out.errors.push("script: " + (e.stack || e.message));
  save();
} finally {
  await ctx.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
