// Shared steps of the code-server drivers: Chromium, the spectab status-bar item, opening a file,
// the ghost text. Flags and steps follow /work/shared/EDITORS.md.
import { chromium } from "playwright-core";
import { readFileSync } from "node:fs";

export const log = (...args) => console.error(`[driver ${(performance.now() / 1000).toFixed(1)}s]`, ...args);

export function readConfig() {
  return JSON.parse(readFileSync(process.argv[2], "utf8"));
}

export async function openWorkbench(cfg) {
  const browser = await chromium.launch({
    executablePath: cfg.chromium ?? "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.setDefaultTimeout(cfg.stepTimeoutMs ?? 30000);
  await page.goto(cfg.url);
  await page.locator(".monaco-workbench").waitFor();
  log("workbench loaded");
  return { browser, page };
}

/** The status-bar item's aria label (its tooltip, one line), or null while it is not there. Only the
 * right-hand items: on the left, the language client's progress entry also starts with "spectab:". */
export async function statusLabel(page) {
  return page.evaluate(() => {
    for (const el of document.querySelectorAll(".right-items .statusbar-item, .right-items .statusbar-item a")) {
      const label = el.getAttribute("aria-label") ?? "";
      if (label.startsWith("spectab:")) {
        return label;
      }
    }
    return null;
  });
}

export async function waitForStatus(page, pattern, timeoutMs) {
  const end = Date.now() + timeoutMs;
  let last = null;
  while (Date.now() < end) {
    last = await statusLabel(page);
    if (last !== null && pattern.test(last)) {
      log(`status: ${last}`);
      return last;
    }
    await page.waitForTimeout(250);
  }
  throw new Error(`the spectab status-bar item never matched ${pattern}; last label: ${JSON.stringify(last)}`);
}

export async function openFile(page, name) {
  await page.keyboard.press("Control+P");
  await page.locator(".quick-input-widget input").waitFor();
  await page.keyboard.type(name);
  // Enter opens the focused row: wait until the filter has put this file there
  await page.locator(".quick-input-list .monaco-list-row.focused", { hasText: name }).first().waitFor();
  await page.keyboard.press("Enter");
  await page.locator(`.monaco-editor[data-uri$="${name}"] .view-lines`).waitFor();
  await page.locator(".monaco-editor .view-lines").first().click();
  log(`opened ${name}`);
}

/** The cursor to the end of a 1-based line, through Go to Line. */
export async function goToLineEnd(page, line) {
  await page.keyboard.press("Control+G");
  await page.locator(".quick-input-widget input").waitFor();
  await page.keyboard.type(String(line));
  await page.keyboard.press("Enter");
  await page.locator(".quick-input-widget").waitFor({ state: "hidden" });
  await page.keyboard.press("End");
}

/** Records, in the page's clock, the keydown of `key` and the first ghost text after it. */
export async function armTimer(page, key) {
  await page.evaluate((key) => {
    const s = (window.__spectab ??= {});
    Object.assign(s, { key, keyAt: null, ghostAt: null, paintedAt: null });
    if (!s.installed) {
      s.installed = true;
      document.addEventListener("keydown", (e) => {
        if (e.key === s.key && s.keyAt === null) s.keyAt = e.timeStamp;
      }, true);
      new MutationObserver(() => {
        if (s.keyAt !== null && s.ghostAt === null && document.querySelector(".ghost-text-decoration")) {
          s.ghostAt = performance.now();
          requestAnimationFrame(() => { s.paintedAt = performance.now(); });
        }
      }).observe(document.body, { childList: true, subtree: true, attributes: true, characterData: true });
    }
  }, key);
}

export async function readTimer(page) {
  return page.evaluate(() => {
    const s = window.__spectab;
    return { keyAt: s.keyAt, ghostAt: s.ghostAt, paintedAt: s.paintedAt };
  });
}

/** The visible ghost text (spaces as spaces), or null. */
export async function ghostText(page) {
  return page.evaluate(() => {
    const parts = [...document.querySelectorAll(".monaco-editor .ghost-text-decoration")];
    return parts.length ? parts.map((el) => el.textContent).join("").replace(/\u00a0/g, " ") : null;
  });
}

export async function waitForGhost(page, timeoutMs) {
  await page.locator(".monaco-editor .ghost-text-decoration").first().waitFor({ state: "visible", timeout: timeoutMs });
  return ghostText(page);
}

/** The editor's text of a 1-based line as rendered. */
export async function lineText(page, line) {
  return page.evaluate((line) => {
    const rows = [...document.querySelectorAll(".monaco-editor .view-lines .view-line")];
    const editor = document.querySelector(".monaco-editor .view-lines");
    const height = rows.length ? rows[0].getBoundingClientRect().height : 1;
    const top = editor.getBoundingClientRect().top;
    const row = rows.find((r) => Math.round((r.getBoundingClientRect().top - top) / height) === line - 1);
    return row ? row.textContent.replace(/\u00a0/g, " ") : null;
  }, line);
}

/** Sets a text setting through the Settings editor, the way a user would (VS Code does not notice
 * an outside write to settings.json under code-server here). */
export async function setTextSetting(page, key, value, settingsPath) {
  await page.keyboard.press("Control+,");
  await page.locator(".settings-editor").waitFor();
  await page.keyboard.type(key);
  const input = page.locator(`.settings-editor input[aria-label="${key}"]`);
  await input.waitFor();
  await input.fill(value);
  // the editor writes after a pause in typing; closing it earlier drops the change
  const end = Date.now() + 15000;
  const written = () => {
    const text = readFileSync(settingsPath, "utf8");
    return value === "" ? !text.includes(`"${key}"`) : text.includes(JSON.stringify(value));
  };
  while (!written()) {
    if (Date.now() > end) throw new Error(`the Settings editor did not write ${key} to ${settingsPath}`);
    await page.waitForTimeout(200);
  }
  log(`set ${key} to ${JSON.stringify(value)} in the Settings editor`);
  // newer workbenches open it as a modal over the editors: close it before going on
  await page.keyboard.press("Escape");
  await page.keyboard.press("Escape");
  const editor = page.locator(".settings-editor");
  if (await editor.isVisible()) {
    await page.keyboard.press("F1");
    await page.keyboard.type("View: Close Editor");
    await page.locator(".quick-input-list .monaco-list-row", { hasText: "Close Editor" }).first().waitFor();
    await page.keyboard.press("Enter");
  }
  await editor.waitFor({ state: "hidden" });
}

/** Runs a command by its palette title (F1), as a user would. */
export async function runCommand(page, title) {
  await page.keyboard.press("F1");
  await page.locator(".quick-input-widget input").waitFor();
  await page.keyboard.type(title);
  await page.locator(".quick-input-list .monaco-list-row", { hasText: title }).first().waitFor();
  await page.keyboard.press("Enter");
  await page.locator(".quick-input-widget").waitFor({ state: "hidden" });
  log(`ran ${title}`);
}

/** The text of the first notification toast that matches `pattern`. */
export async function waitForNotification(page, pattern, timeoutMs) {
  const toast = page.locator(".notification-toast", { hasText: pattern }).first();
  await toast.waitFor({ timeout: timeoutMs });
  const text = (await toast.locator(".notification-list-item-message").first().textContent()) ?? "";
  log(`notification: ${text}`);
  return text;
}

/** The visible ghost text as lines, top to bottom, or null: a multi-line suggestion's first line
 * sits in the cursor's line (`.ghost-text-decoration`), the others in a zone below it
 * (`.ghost-text` spans), a blank one as a line without spans. */
export async function ghostLines(page) {
  return page.evaluate(() => {
    const parts = [...document.querySelectorAll(".monaco-editor .ghost-text-decoration, .monaco-editor span.ghost-text")]
      .map((el) => ({ text: (el.textContent ?? "").replace(/\u00a0/g, " "), box: el.getBoundingClientRect() }))
      .filter(({ box }) => box.width > 0 || box.height > 0);
    if (!parts.length) return null;
    const height = document.querySelector(".monaco-editor .view-lines .view-line")?.getBoundingClientRect().height || parts[0].box.height;
    parts.sort((a, b) => a.box.top - b.box.top || a.box.left - b.box.left);
    const first = parts[0].box.top;
    const lines = [];
    for (const { text, box } of parts) {
      const row = Math.round((box.top - first) / height);
      while (lines.length <= row) lines.push("");
      lines[row] += text;
    }
    return lines;
  });
}

/** The ghost text lines once they hold still (a multi-line suggestion's decorations arrive in pieces). */
export async function steadyGhost(page) {
  let shown = await ghostLines(page);
  for (let same = 0; same < 4; ) {
    await page.waitForTimeout(150);
    const again = await ghostLines(page);
    same = JSON.stringify(again) === JSON.stringify(shown) ? same + 1 : 0;
    shown = again;
  }
  return shown;
}

/** Presses `key` and returns the ghost text lines once they differ from `before` and hold still
 * (null: gone), or what is shown after `timeoutMs` if nothing changed. Holding still matters: VS
 * Code redraws a multi-line ghost text in parts (the inline text, then the lines below), and a
 * read between the two saw a state that never was. */
export async function pressForGhost(page, key, before, timeoutMs = 10000) {
  await page.keyboard.press(key);
  const end = Date.now() + timeoutMs;
  let now = await ghostLines(page);
  while (JSON.stringify(now) === JSON.stringify(before) && Date.now() < end) {
    await page.waitForTimeout(50);
    now = await ghostLines(page);
  }
  if (JSON.stringify(now) !== JSON.stringify(before)) {
    now = await steadyGhost(page);
  }
  log(`${key}: ghost text ${JSON.stringify(now)}`);
  return now;
}

export async function saveAndRead(page, file, original) {
  await page.keyboard.press("Control+S");
  const end = Date.now() + 15000;
  while (Date.now() < end && readFileSync(file, "utf8") === original) {
    await page.waitForTimeout(100);
  }
  const saved = readFileSync(file, "utf8");
  log(`on disk: ${JSON.stringify(saved)}`);
  return saved;
}
