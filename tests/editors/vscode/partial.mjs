// Partial accept in the workbench: a multi-line suggestion, the next word (Ctrl+Right), the next
// line (Alt+End), then the rest (Tab, pressed until the ghost text is gone); Ctrl+S saves. Reports
// the suggestion as shown before the first step, the ghost text after each step and the status-bar
// label once the server has counted. Usage: node partial.mjs CONFIG.json (written by
// tests/editors/test_vscode.py); prints one JSON line.
import { readFileSync } from "node:fs";
import {
  goToLineEnd, openFile, openWorkbench, pressForGhost, readConfig, saveAndRead, statusLabel, steadyGhost, waitForGhost, waitForStatus,
} from "./common.mjs";

const cfg = readConfig();
const result = { steps: [] };
const { browser, page } = await openWorkbench(cfg);
try {
  result.readyStatus = await waitForStatus(page, /^spectab: ready/, 90000);
  const original = readFileSync(cfg.file, "utf8");
  await openFile(page, cfg.fileName);
  await goToLineEnd(page, cfg.line);
  await page.keyboard.type(cfg.type);
  await waitForGhost(page, cfg.ghostTimeoutMs ?? 60000);
  result.suggestion = await steadyGhost(page);
  await page.screenshot({ path: cfg.screenshot });

  let ghost = result.suggestion;
  for (const key of ["Control+ArrowRight", "Alt+End"]) {
    ghost = await pressForGhost(page, key, ghost);
    result.steps.push({ key, ghost });
  }
  // the rest starts in the indentation of an empty line, where VS Code's Tab indents first (up to
  // the ghost text's indentation) and accepts once the cursor reaches it
  result.tabs = 0;
  while (ghost !== null && result.tabs < 4) {
    ghost = await pressForGhost(page, "Tab", ghost);
    result.tabs += 1;
  }
  if (ghost !== null) throw new Error(`Tab did not take the rest of the suggestion: ghost text still ${JSON.stringify(ghost)}`);
  result.saved = await saveAndRead(page, cfg.file, original);
  result.countedStatus = await waitForStatus(page, new RegExp(cfg.countedPattern), 20000).catch((e) => `${e}`);
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
