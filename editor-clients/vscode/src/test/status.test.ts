import assert from "node:assert/strict";
import { test } from "node:test";
import { acceptedText, formatStatus, stderrLevel } from "../status";

const ready = {
  state: "ready", error: null, profile: "smollm2-135m", target: "SmolLM2-135M", draft: "ngram", device: "cpu",
  acceptedSuggestions: 2, lastLatencyMs: 41.6, lastStopReason: "eos", acceptanceRate: 0.8125, prefixCacheHitRate: 0.5,
};

test("ready: latency in the text, model, rate and accepted count in the tooltip", () => {
  const v = formatStatus(ready, true);
  assert.equal(v.text, "$(sparkle) spectab 42 ms");
  assert.equal(v.severity, "ok");
  assert.match(v.tooltip, /^spectab: ready\n/);
  assert.match(v.tooltip, /model SmolLM2-135M, draft ngram, on cpu/);
  assert.match(v.tooltip, /last latency 42 ms \(eos\)/);
  assert.match(v.tooltip, /draft acceptance 81%/);
  assert.match(v.tooltip, /accepted suggestions 2/);
});

test("partial accepts next to the accepted suggestions, low-confidence counts on their own line", () => {
  const v = formatStatus({ ...ready, partialAccepts: 5, confidenceCut: 4, confidenceHidden: 1 }, true);
  assert.match(v.tooltip, /\naccepted suggestions 2, partial accepts 5\n/);
  assert.match(v.tooltip, /\nlow confidence: 4 cut short, 1 hidden$/);
  assert.equal(acceptedText({ ...ready, partialAccepts: 0 }), "accepted suggestions 2, partial accepts 0");
  // a server from before partial accepts: nothing made up
  assert.equal(acceptedText(ready), "accepted suggestions 2");
  assert.doesNotMatch(formatStatus(ready, true).tooltip, /partial|confidence/);
});

test("the engine, its pid or URL, and the document's lane", () => {
  assert.match(formatStatus({ ...ready, engine: "shared", enginePid: 4242, lane: 1 }, true).tooltip,
    /\nengine shared \(pid 4242\), lane 1\n/);
  assert.match(formatStatus({ ...ready, engine: "remote", engineUrl: "http://gpu:8000", enginePid: null, lane: null }, true).tooltip,
    /\nengine remote http:\/\/gpu:8000\n/);
  assert.match(formatStatus({ ...ready, engine: "inprocess" }, true).tooltip, /\nengine inprocess\n/);
  assert.doesNotMatch(formatStatus(ready, true).tooltip, /engine/);
});

test("ready before any request: no latency, rates n/a", () => {
  const v = formatStatus({ ...ready, lastLatencyMs: null, lastStopReason: null, acceptanceRate: null, acceptedSuggestions: 0 }, true);
  assert.equal(v.text, "$(sparkle) spectab");
  assert.match(v.tooltip, /last latency n\/a/);
  assert.match(v.tooltip, /draft acceptance n\/a/);
});

test("loading, error, off, and no server", () => {
  assert.equal(formatStatus({ state: "loading" }, true).text, "$(loading~spin) spectab");
  const err = formatStatus({ state: "error", error: "no such file: x.gguf" }, true);
  assert.equal(err.severity, "error");
  assert.equal(err.tooltip, "spectab: no model loaded: no such file: x.gguf");
  const off = formatStatus(ready, false);
  assert.equal(off.severity, "warning");
  assert.match(off.text, /circle-slash/);
  assert.match(off.tooltip, /suggestions off/);
  assert.equal(formatStatus(undefined, true, true).tooltip, "spectab: starting the server");
  assert.equal(formatStatus(undefined, true, false).severity, "error");
});

test("stderr lines get a level from their text", () => {
  assert.equal(stderrLevel("spectab: spectab serve starting (log: /x/server.log)"), "info");
  assert.equal(stderrLevel("spectab.server: ready: SmolLM2 (draft ngram) on cpu"), "info");
  assert.equal(stderrLevel("spectab.server: setting spectab.maxNewTokens must be an integer 1..512 (warning)"), "warn");
  assert.equal(stderrLevel("Traceback (most recent call last):"), "error");
  assert.equal(stderrLevel('  File "/x/server.py", line 3, in f'), "error");
  assert.equal(stderrLevel("ModuleNotFoundError: No module named 'spectab'"), "error");
});
