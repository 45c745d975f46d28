// For benchmarks/editor_vscode.py: in each file, the cursor at the end of `retur`, type `n`, time
// from that keydown (the event's timestamp in the page) to the first DOM mutation that shows a
// `.ghost-text-decoration` (and to the animation frame after it), then Escape.
// Usage: node latency.mjs CONFIG.json; prints one JSON line.
import { armTimer, ghostText, goToLineEnd, log, openFile, openWorkbench, readConfig, readTimer, statusLabel, waitForGhost, waitForStatus } from "./common.mjs";

const cfg = readConfig();
const result = { triggers: [] };
const { browser, page } = await openWorkbench(cfg);
try {
  result.readyStatus = await waitForStatus(page, /^spectab: ready/, 120000);
  for (const file of cfg.files) {
    await openFile(page, file.name);
    await goToLineEnd(page, file.line);
    const before = await statusLabel(page);
    await armTimer(page, cfg.type);
    await page.keyboard.type(cfg.type);
    const trigger = { file: file.name };
    try {
      trigger.ghost = await waitForGhost(page, cfg.ghostTimeoutMs);
      await page.waitForTimeout(50); // the frame after the mutation
      const t = await readTimer(page);
      trigger.shownMs = t.ghostAt - t.keyAt;
      trigger.paintedMs = t.paintedAt === null ? null : t.paintedAt - t.keyAt;
    } catch {
      trigger.ghost = await ghostText(page);
      trigger.timedOut = true;
    }
    // the server's own time for this request (and why it stopped), from the next status poll
    const end = Date.now() + 4000;
    let label = before;
    while (label === before && Date.now() < end) {
      await page.waitForTimeout(200);
      label = await statusLabel(page);
    }
    const m = /last latency (\d+) ms(?: \(([^)]*)\))?/.exec(label ?? "");
    if (label !== before && m) {
      trigger.serverMs = Number(m[1]);
      trigger.stop = m[2] ?? null;
    }
    log(`${file.name}: ${JSON.stringify(trigger)}`);
    result.triggers.push(trigger);
    await page.keyboard.press("Escape");
  }
  await page.screenshot({ path: cfg.screenshot });
} catch (err) {
  result.error = String(err?.stack ?? err);
  await page.screenshot({ path: cfg.screenshot }).catch(() => {});
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
