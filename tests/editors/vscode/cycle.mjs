// Cycling through the server's candidates: Alt+\ asks explicitly (the server returns several),
// Alt+] shows the next, Alt+[ the previous again; Alt+] and Tab accept the second; Ctrl+S saves.
// Usage: node cycle.mjs CONFIG.json (written by tests/editors/test_vscode.py); prints one JSON line.
import { readFileSync } from "node:fs";
import {
  goToLineEnd, openFile, openWorkbench, pressForGhost, readConfig, saveAndRead, statusLabel, steadyGhost, waitForGhost, waitForStatus,
} from "./common.mjs";

const cfg = readConfig();
const result = {};
const { browser, page } = await openWorkbench(cfg);
try {
  result.readyStatus = await waitForStatus(page, /^spectab: ready/, 90000);
  const original = readFileSync(cfg.file, "utf8");
  await openFile(page, cfg.fileName);
  await goToLineEnd(page, cfg.line);
  await page.keyboard.press("Alt+Backslash");
  await waitForGhost(page, cfg.ghostTimeoutMs ?? 120000);
  result.first = await steadyGhost(page);
  await page.screenshot({ path: cfg.screenshot });
  result.next = await pressForGhost(page, "Alt+BracketRight", result.first);
  result.previous = await pressForGhost(page, "Alt+BracketLeft", result.next);
  result.accepted = await pressForGhost(page, "Alt+BracketRight", result.previous);
  const after = await pressForGhost(page, "Tab", result.accepted);
  // accepted, the suggestion goes; VS Code may at once ask for the next one at the new cursor
  // (another text), so only the same ghost text still showing means Tab did not accept
  if (JSON.stringify(after) === JSON.stringify(result.accepted)) {
    throw new Error(`Tab did not accept the suggestion: ghost text still ${JSON.stringify(after)}`);
  }
  result.afterAccept = after;
  result.saved = await saveAndRead(page, cfg.file, original);
  result.countedStatus = await waitForStatus(page, /accepted suggestions [1-9]/, 20000).catch((e) => `${e}`);
} catch (err) {
  result.error = String(err?.stack ?? err);
  result.lastStatus = await statusLabel(page).catch(() => null);
  await page.screenshot({ path: cfg.screenshot }).catch(() => {});
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
