import assert from "node:assert/strict";
import { test } from "node:test";
import { needsRestart, SERVER_KEYS, serverCommand, serverSettings, startFailureMessage } from "../settings";

const getter = (values: Record<string, unknown>) => (key: string) => values[key];

test("every server key is sent under its own name, nothing else", () => {
  const values: Record<string, unknown> = {
    enable: true, "server.command": "spectab", "server.args": ["serve"], "trace.server": "off",
    profile: "smollm2-135m", target: "/m/x.gguf", draft: "ngram", device: "cpu", dtype: "auto", quant: "int4",
    threads: 4, fim: "psm",
    maxNewTokens: 32, temperature: 0.5, debounceMs: 10, deadlineMs: 900, multiline: "never",
    contextTokens: 512, languages: ["python"],
    engine: "http://127.0.0.1:8000", engineApi: "infill", engineModel: "codellama", engineApiKeyEnv: "SPECTAB_KEY",
    kvLanes: 4, idleMinutes: 0, extraContextTokens: 0, minConfidence: 0.25, candidates: 5, draftFim: "none",
  };
  const sent = serverSettings(getter(values));
  assert.deepEqual(Object.keys(sent).sort(), [...SERVER_KEYS].sort());
  for (const key of SERVER_KEYS) {
    assert.deepEqual(sent[key], values[key], key);
  }
});

test("an empty target or draft goes back to the profile's (null)", () => {
  const sent = serverSettings(getter({ target: "", draft: "  ", profile: "auto" }));
  assert.equal(sent.target, null);
  assert.equal(sent.draft, null);
  assert.equal(sent.profile, "auto");
  assert.ok(!("maxNewTokens" in sent), "unset keys are left to the server's defaults");
});

test("server command: spectab serve by default, python -m spectab serve with server.python", () => {
  assert.deepEqual(serverCommand(getter({})), { command: "spectab", args: ["serve"], display: "spectab serve" });
  assert.deepEqual(serverCommand(getter({ "server.command": " /v/bin/spectab ", "server.args": ["serve", "--device", "cpu"] })).args,
    ["serve", "--device", "cpu"]);
  const py = serverCommand(getter({ "server.python": "/v/bin/python", "server.args": ["serve"], "server.command": "ignored" }));
  assert.deepEqual([py.command, ...py.args], ["/v/bin/python", "-m", "spectab", "serve"]);
});

test("only the server.* settings need a new process", () => {
  assert.ok(needsRestart((s) => s === "spectab.server.python"));
  assert.ok(!needsRestart((s) => s === "spectab.profile" || s === "spectab"));
});

test("the start-failure message names the command and both fixes", () => {
  const msg = startFailureMessage(serverCommand(getter({})), "spectab was not found on PATH", false);
  assert.match(msg, /`spectab serve`/);
  assert.match(msg, /not found on PATH/);
  assert.match(msg, /spectab\.server\.command/);
  assert.match(msg, /spectab\.server\.python/);
});
