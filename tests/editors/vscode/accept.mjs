// The end-to-end check: a model that fails to load shows in the status bar; a change in the
// Settings editor reaches the running server and loads the offline model; typing the last letter of `return`
// brings ghost text, Tab accepts it (the server counts it), Ctrl+S saves.
// Usage: node accept.mjs CONFIG.json (written by tests/editors/test_vscode.py); prints one JSON line.
import { existsSync, readFileSync } from "node:fs";
import {
  ghostText, goToLineEnd, log, openFile, openWorkbench, readConfig, setTextSetting, statusLabel, waitForGhost, waitForStatus,
} from "./common.mjs";

const cfg = readConfig();
const result = { screenshot: cfg.screenshot };
const { browser, page } = await openWorkbench(cfg);
try {
  if (cfg.clearSetting) {
    // a bad model shows as an error; clearing the setting reaches the running server
    // (didChangeConfiguration), which loads the profile's model
    result.errorStatus = await waitForStatus(page, /no model loaded/, 90000);
    await setTextSetting(page, cfg.clearSetting, "", cfg.settingsPath);
  }
  result.readyStatus = await waitForStatus(page, /^spectab: ready/, 90000);

  await openFile(page, cfg.fileName);
  await goToLineEnd(page, cfg.line);
  await page.keyboard.type(cfg.type);
  result.ghost = await waitForGhost(page, cfg.ghostTimeoutMs ?? 60000);
  log(`ghost text: ${JSON.stringify(result.ghost)}`);
  await page.screenshot({ path: cfg.screenshot });

  await page.keyboard.press("Tab");
  await page.locator(".monaco-editor .ghost-text-decoration").first().waitFor({ state: "detached", timeout: 10000 });
  await page.keyboard.press("Control+S");
  const end = Date.now() + 15000;
  while (Date.now() < end && !(existsSync(cfg.file) && readFileSync(cfg.file, "utf8") === cfg.expected)) {
    await page.waitForTimeout(100);
  }
  result.saved = readFileSync(cfg.file, "utf8");
  log(`on disk: ${JSON.stringify(result.saved)}`);

  // accepting ran the item's command (spectab.accepted -> workspace/executeCommand); the status poll shows the count
  result.acceptedStatus = await waitForStatus(page, /accepted suggestions [1-9]/, 20000).catch((e) => String(e));
  result.ghostAfter = await ghostText(page);
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
