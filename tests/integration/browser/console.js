// Drive the web console in headless Chromium: the playground, then the live view.
// usage: node console.js URL SCREENSHOT_DIR TEXTS_JSON LABELS_CSV
// Prints one JSON object: the scores the page shows and two readings of the live view.
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
  const [url, shots, textsJson, labels] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  const out = {};
  try {
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    const external = [];
    page.on("request", (r) => { if (!r.url().startsWith(url)) external.push(r.url()); });
    await page.goto(url, { waitUntil: "networkidle" });
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
    await page.screenshot({ path: `${shots}/console-live.png`, fullPage: true });
    out.external = external;
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((err) => { console.error(err); process.exit(1); });
