import assert from "node:assert/strict";
import { test } from "node:test";
import { handlesLanguage, partialAcceptArgs, ShownSuggestions, stepOutcome } from "../partial";

// a document as a string; a suggestion shown at `start`
const reader = (doc: string) => (a: number, b: number) => doc.slice(a, b);
const BEFORE = "class P:\n    def f(self):\n        s";
const SUGGESTION = "elf.x = x\n        self.y = y";
const at = BEFORE.length;
const shown = [{ start: at, text: SUGGESTION }];

test("a step inside the suggestion is partial, counted in characters", () => {
  const doc = BEFORE + "elf" + "\n";
  assert.deepEqual(stepOutcome(shown, reader(doc), at, at + 3), { kind: "partial", chars: 3 });
  // the next line after the word: from where the word left off
  const doc2 = BEFORE + "elf.x = x\n" + "\n";
  assert.deepEqual(stepOutcome(shown, reader(doc2), at + 3, at + 10), { kind: "partial", chars: 7 });
});

test("a step that reaches the suggestion's end is VS Code's whole accept, not a partial", () => {
  const doc = BEFORE + SUGGESTION + "\n";
  assert.deepEqual(stepOutcome(shown, reader(doc), at + 10, at + SUGGESTION.length), { kind: "whole" });
});

test("text that is not one of ours, or no edit, is not reported", () => {
  assert.deepEqual(stepOutcome(shown, reader(BEFORE + "elg\n"), at, at + 3), { kind: "none" });
  assert.deepEqual(stepOutcome(shown, reader(BEFORE), at, at), { kind: "none" });
  assert.deepEqual(stepOutcome([], reader(BEFORE + "elf"), at, at + 3), { kind: "none" });
  // a suggestion shown further on cannot have been stepped into from before it
  assert.deepEqual(stepOutcome([{ start: at + 1, text: "lf.x" }], reader(BEFORE + "elf"), at, at + 3), { kind: "none" });
});

test("any of the candidates can be the one shown", () => {
  const two = [...shown, { start: at, text: "elf.points = []" }];
  const doc = BEFORE + "elf.points" + "\n";
  assert.deepEqual(stepOutcome(two, reader(doc), at, at + 10), { kind: "partial", chars: 10 });
});

test("characters are code points, as the server counts them", () => {
  const s = [{ start: 0, text: "x = '😀😀' # ok" }];
  const doc = "x = '😀😀'";
  assert.deepEqual(stepOutcome(s, reader(doc), 0, doc.length), { kind: "partial", chars: 8 });
});

test("the partial accept's arguments", () => {
  assert.deepEqual(partialAcceptArgs("file:///w/p.py", 3), [{ uri: "file:///w/p.py", chars: 3, partial: true }]);
});

test("a document's last answers are kept, older ones dropped, a closed one forgotten", () => {
  const s = new ShownSuggestions(2);
  s.add("a", [{ start: 0, text: "1" }, { start: 0, text: "2" }]);
  s.add("a", []);
  s.add("a", [{ start: 1, text: "3" }]);
  assert.deepEqual(s.get("a").map((x) => x.text), ["1", "2", "3"]);
  s.add("a", [{ start: 2, text: "4" }]);
  assert.deepEqual(s.get("a").map((x) => x.text), ["3", "4"]);
  assert.deepEqual(s.get("b"), []);
  s.forget("a");
  assert.deepEqual(s.get("a"), []);
});

test("languages: empty means all", () => {
  assert.ok(handlesLanguage([], "python"));
  assert.ok(handlesLanguage(undefined, "python"));
  assert.ok(handlesLanguage(["python", "rust"], "rust"));
  assert.ok(!handlesLanguage(["rust"], "python"));
});
