// The extension's own UI: the notification when the server cannot start, a server.* setting
// restarting it, the toggle, Restart Server and Show Server Log from the command palette, and the
// status-bar item following each. Usage: node commands.mjs CONFIG.json; prints one JSON line.
import { log, openWorkbench, readConfig, runCommand, setTextSetting, statusLabel, waitForNotification, waitForStatus } from "./common.mjs";

const cfg = readConfig();
const result = {};
const { browser, page } = await openWorkbench(cfg);
try {
  result.notification = await waitForNotification(page, /could not start the server/, 60000);
  result.notRunning = await waitForStatus(page, /not running/, 10000);

  await setTextSetting(page, "spectab.server.command", cfg.serverCommand, cfg.settingsPath);
  // running (the model may still be loading: the toggle does not need it)
  result.started = await waitForStatus(page, /^spectab: (loading the model|ready)/, 60000);

  await runCommand(page, "spectab: Toggle Inline Suggestions");
  result.off = await waitForStatus(page, /suggestions off/, 10000);
  await runCommand(page, "spectab: Toggle Inline Suggestions");
  // the label still says "(suggestions off)" until the item redraws
  result.on = await waitForStatus(page, /^spectab: (loading the model|ready,)(?!.*suggestions off)/, 10000);

  await runCommand(page, "spectab: Restart Server");
  result.restarting = await waitForStatus(page, /starting the server|loading the model/, 30000);
  result.restarted = await waitForStatus(page, /^spectab: ready,/, 90000);

  await runCommand(page, "spectab: Show Server Log");
  const panel = page.locator(".part.panel .monaco-editor .view-lines");
  await panel.waitFor();
  // Monaco renders spaces as no-break spaces
  await page.waitForFunction(() => /spectab\sserve\sstarting/.test(document.querySelector(".part.panel .view-lines")?.textContent ?? ""), null, { timeout: 10000 });
  result.log = (await panel.textContent()).replace(/\u00a0/g, " ");
  await page.screenshot({ path: cfg.screenshot });
} catch (err) {
  result.error = String(err?.stack ?? err);
  result.lastStatus = await statusLabel(page).catch(() => null);
  await page.screenshot({ path: cfg.screenshot }).catch(() => {});
} finally {
  await browser.close();
}
log("done");
console.log(JSON.stringify(result));
