// Drive the web console in headless Chromium: the playground, then the live view.
// usage: node console.js URL SCREENSHOT_DIR TEXTS_JSON LABELS_CSV API_KEY
// Prints one JSON object: the scores the page shows, two readings of the live view, what its
// charts draw, and how the page handled an API key (header sent, nothing stored).
"use strict";
const { chromium } = require("playwright-core");

async function liveReading(page) {
  return page.evaluate(() => {
    const edges = {};
    for (const row of document.querySelectorAll("#edges tbody tr")) {
      const cells = [...row.querySelectorAll("td")].map((td) => td.textContent);
      if (cells.length >= 3) edges[cells[0]] = { perSecond: Number(cells[1]), items: Number(cells[2]) };
    }
    return {
      edges,
      completedRate: document.querySelector("#completed-rate")?.textContent,
      queueDepth: document.querySelector("#queue-depth")?.textContent,
      batchSize: document.querySelector("#batch-size")?.textContent,
      padding: document.querySelector("#padding")?.textContent,
      lagRows: document.querySelectorAll("#lag tbody tr").length,
      routes: [...document.querySelectorAll("#routes .route")].map((r) => r.dataset.route),
      deadRows: [...document.querySelectorAll("#dead tbody tr")].map((r) => r.textContent),
    };
  });
}

async function main() {
  const [url, shots, textsJson, labels, apiKey] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  const out = {};
  try {
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    const external = [];
    const requests = [];
    page.on("request", (r) => {
      if (!r.url().startsWith(url)) external.push(r.url());
      else requests.push({ path: r.url().slice(url.length), auth: r.headers()["authorization"] || null });
    });
    // The server in this test runs without [auth]; the first label-set call is answered 401 here
    // (in the browser, not by the server) to see that the page asks for a key.
    let refused = false;
    await page.route("**/v1/label-sets", (route) => {
      if (refused) return route.continue();
      refused = true;
      return route.fulfill({ status: 401, contentType: "application/json", body: '{"error": {"code": 16, "status": "UNAUTHENTICATED", "message": "an API key is required"}}' });
    });
    out.openedAt = Date.now() / 1000;
    await page.goto(url, { waitUntil: "networkidle" });
    await page.waitForSelector("#auth-prompt:not([hidden])");
    out.promptShown = await page.isVisible("#auth-prompt");
    await page.fill("#api-key", apiKey);
    await page.click("#use-key");
    await page.waitForSelector("#auth-prompt", { state: "hidden" });
    const keyedFrom = requests.length;
    await page.fill("#texts", JSON.parse(textsJson).join("\n"));
    await page.fill("#labels", labels);
    await page.click("#classify");
    await page.waitForSelector("#results .result");
    out.results = await page.$$eval("#results .result", (cards) => cards.map((card) => ({
      scores: [...card.querySelectorAll(".score")].map((s) => ({
        label: s.dataset.label, score: Number(s.querySelector(".value").dataset.score),
        shown: s.querySelector(".value").textContent,
      })),
      predicted: card.querySelector(".predicted-labels").textContent,
      meta: card.querySelector(".meta").textContent,
    })));
    await page.screenshot({ path: `${shots}/console-playground.png`, fullPage: true });

    await page.click("#tab-live");
    await page.waitForSelector("#edges tbody tr td");
    await page.waitForTimeout(1500);
    out.before = await liveReading(page);
    // Events keep flowing (the test feeds them): wait until the counters have moved.
    const deadline = Date.now() + 30000;
    let after = out.before;
    while (Date.now() < deadline) {
      await page.waitForTimeout(1000);
      after = await liveReading(page);
      const k0 = (out.before.edges.kafka || {}).items || 0, k1 = (after.edges.kafka || {}).items || 0;
      const h0 = (out.before.edges.http || {}).items || 0, h1 = (after.edges.http || {}).items || 0;
      if (k1 > k0 && h1 > h0 && after.routes.length > 0 && after.lagRows > 0) break;
    }
    out.after = after;
    await page.waitForTimeout(1200);
    out.charts = await page.evaluate(() => window.consoleCharts);
    out.chartCanvases = await page.$$eval(".chart canvas", (c) => c.length);
    out.model = await page.textContent("#model");
    out.topLabelRows = await page.$$eval("#top-labels tbody tr", (r) => r.map((x) => x.textContent));
    out.keyedRequests = requests.slice(keyedFrom);
    out.stored = await page.evaluate(() => ({
      local: localStorage.length, session: sessionStorage.length, cookie: document.cookie,
    }));
    await page.screenshot({ path: `${shots}/console-live.png`, fullPage: true });
    out.external = external;
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((err) => { console.error(err); process.exit(1); });
