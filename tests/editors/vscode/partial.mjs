// Partial accept in the workbench: a multi-line suggestion, the next word (Ctrl+Right), the next
// line (Alt+End), then the rest (Tab, pressed until the ghost text is gone); Ctrl+S saves. Reports the suggestion as shown before the
// first step, the ghost text after each step and the status-bar label once the server has counted.
// Usage: node partial.mjs CONFIG.json (written by tests/editors/test_vscode.py); prints one JSON line.
import { existsSync, readFileSync } from "node:fs";
import { ghostLines, goToLineEnd, log, openFile, openWorkbench, readConfig, statusLabel, waitForGhost, waitForStatus } from "./common.mjs";

const cfg = readConfig();
const result = { steps: [] };
const { browser, page } = await openWorkbench(cfg);

/** Presses `key` and waits until the ghost text differs from `before` (or is gone). */
async function step(key, before) {
  await page.keyboard.press(key);
  const end = Date.now() + 10000;
  let now = await ghostLines(page);
  while (JSON.stringify(now) === JSON.stringify(before) && Date.now() < end) {
    await page.waitForTimeout(50);
    now = await ghostLines(page);
  }
  log(`${key}: ghost now ${JSON.stringify(now)}`);
  result.steps.push({ key, ghost: now });
  return now;
}

try {
  result.readyStatus = await waitForStatus(page, /^spectab: ready/, 90000);
  await openFile(page, cfg.fileName);
  await goToLineEnd(page, cfg.line);
  await page.keyboard.type(cfg.type);
  await waitForGhost(page, cfg.ghostTimeoutMs ?? 60000);
  // the decorations of a multi-line suggestion arrive in pieces: wait until they hold still
  let shown = await ghostLines(page);
  for (let same = 0; same < 4; ) {
    await page.waitForTimeout(150);
    const again = await ghostLines(page);
    same = JSON.stringify(again) === JSON.stringify(shown) ? same + 1 : 0;
    shown = again;
  }
  result.suggestion = shown;
  log(`suggestion: ${JSON.stringify(shown)}`);
  await page.screenshot({ path: cfg.screenshot });

  let ghost = await step(cfg.wordKey ?? "Control+ArrowRight", shown);
  ghost = await step(cfg.lineKey ?? "Alt+End", ghost);
  // the rest starts in the indentation of an empty line, where VS Code's Tab indents first (up to
  // the ghost text's indentation) and accepts once the cursor reaches it
  result.tabs = 0;
  while (ghost !== null && result.tabs < 4) {
    ghost = await step("Tab", ghost);
    result.tabs += 1;
  }
  if (ghost !== null) throw new Error(`Tab did not take the rest of the suggestion: ghost text still ${JSON.stringify(ghost)}`);
  await page.keyboard.press("Control+S");
  const original = readFileSync(cfg.file, "utf8");
  const end = Date.now() + 15000;
  while (Date.now() < end && readFileSync(cfg.file, "utf8") === original) {
    await page.waitForTimeout(100);
  }
  result.saved = existsSync(cfg.file) ? readFileSync(cfg.file, "utf8") : null;
  log(`on disk: ${JSON.stringify(result.saved)}`);
  result.countedStatus = await waitForStatus(page, cfg.countedPattern ? new RegExp(cfg.countedPattern) : /accepted suggestions [1-9]/, 20000)
    .catch(async (e) => `${e}`);
  result.screenshotAfter = cfg.screenshot.replace(/\.png$/, "-saved.png");
  await page.screenshot({ path: result.screenshotAfter });
} catch (err) {
  result.error = String(err?.stack ?? err);
  result.lastStatus = await statusLabel(page).catch(() => null);
  await page.screenshot({ path: cfg.screenshot }).catch(() => {});
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
