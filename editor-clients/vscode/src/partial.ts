// Partial accept (next word, next line) and how to tell the server. No `vscode` import (unit-tested
// under node).
//
// VS Code's own commands do the editing (`editor.action.inlineSuggest.acceptNextWord` /
// `acceptNextLine`), but a step that would take the whole rest of the ghost text is turned by VS
// Code into a whole accept, which runs the item's own `spectab.accepted` command. So after a step
// the extension decides from the document what happened: partial (report it), whole (the server
// was told already) or nothing of ours (another provider's suggestion, or no suggestion).

/** One suggestion the server returned: where it starts in the document (UTF-16 offset) and its text. */
export interface Shown {
  start: number;
  text: string;
}

export type Step = { kind: "none" } | { kind: "whole" } | { kind: "partial"; chars: number };

/** What a step that moved the cursor from `before` to `after` (offsets, after the edit) did.
 * `textAt(start, end)` reads the document as it is now. */
export function stepOutcome(shown: readonly Shown[], textAt: (start: number, end: number) => string, before: number, after: number): Step {
  if (after <= before) {
    return { kind: "none" };
  }
  const ours = shown.filter((s) =>
    s.start <= before && after <= s.start + s.text.length && textAt(s.start, after) === s.text.slice(0, after - s.start));
  if (!ours.length) {
    return { kind: "none" };
  }
  // if any suggestion that fits ends here, VS Code may have taken it whole and run its command:
  // counting a partial too would count the same text twice
  if (ours.some((s) => s.start + s.text.length === after)) {
    return { kind: "whole" };
  }
  // the server counts characters as Python's len(): code points, not UTF-16 units
  return { kind: "partial", chars: [...textAt(before, after)].length };
}

/** The `workspace/executeCommand` arguments of a partial accept (the whole accept's carry no `partial`). */
export function partialAcceptArgs(uri: string, chars: number): [{ uri: string; chars: number; partial: true }] {
  return [{ uri, chars, partial: true }];
}

/** The suggestions of each document's last few answers: the one shown may come from an earlier
 * answer than the newest (VS Code keeps showing an item while it asks again after a step). */
export class ShownSuggestions {
  private readonly byDoc = new Map<string, Shown[][]>();

  constructor(private readonly keep = 4) {}

  add(doc: string, answer: Shown[]): void {
    if (!answer.length) {
      return;
    }
    const answers = this.byDoc.get(doc) ?? [];
    answers.push(answer);
    this.byDoc.set(doc, answers.slice(-this.keep));
  }

  get(doc: string): Shown[] {
    return (this.byDoc.get(doc) ?? []).flat();
  }

  forget(doc: string): void {
    this.byDoc.delete(doc);
  }
}

/** Whether spectab completes in a document of this language (`spectab.languages`: empty = all). */
export function handlesLanguage(languages: unknown, languageId: string): boolean {
  return !Array.isArray(languages) || languages.length === 0 || languages.includes(languageId);
}
