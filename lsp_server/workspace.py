"""Workspace context: a small ring of chunks from the other documents, placed before the prefix.

What goes in (each chunk at most `CHUNK_LINES` lines, headed by its file's path as a comment in
that file's language):
- the outline of every opened document: its definition lines (def, class, function, ...; at most
  `OUTLINE_LINES`), so a call into another file can use the names and signatures defined there;
- the text around each edit, and around each cursor that asked for a suggestion: what the user
  worked on there, as llama.vim gathers its extra chunks.

The ring holds at most `RING_SIZE` chunks, oldest first. A new chunk much like one already there
(the same document, most lines shared) replaces it; the oldest goes when the ring is full. The
text around the latest edit or cursor of a document waits beside the ring until a request comes
from another document (the user moved on, as llama.vim gathers a buffer's chunk when it is left):
so while the user types in one file the ring does not change at all.

Chunks that define a name the request's window uses move to the ring's newest end (the engine's
budget keeps the newest first). A request gets the ring's chunks of the other documents, in ring
order, without the ones much like its own window; then, newest of all, a signatures chunk for each
other document that defines what the requesting document imports (`from .x import name`, `import
{name} from './x'`, `use x::name`, ...): those definitions' signature lines, and for a module
imported whole its top-level ones. The imports are read from the whole document, not the window,
because a call site rarely shows the name it is about to call, and the import lines are often
far above the cursor. Last comes the current file's path. While the user types, the chunks and
their order stay the same (imports change rarely), so the engine keeps its cached prompt prefix.
The engine takes the newest ones that fit `extraContextTokens`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import PurePosixPath
from urllib.parse import unquote, urlparse

RING_SIZE = 16
CHUNK_LINES = 32
OUTLINE_LINES = 24
SIMILAR = 0.5
"""Chunks sharing more than this share of their lines (Jaccard) are near-duplicates."""
IN_WINDOW = 0.6
"""A chunk with more than this share of its lines in the request's window adds nothing."""
SIGNATURE_LINES = 16
"""At most this many lines in a document's signatures chunk."""
SIGNATURE_SPAN = 4
"""A signature whose brackets are still open continues over at most this many lines."""

# a line that defines something, in most languages (indentation allowed: methods count)
DEFINITION = re.compile(
    r"^\s*(export\s+|pub(\([^)]*\))?\s+|public\s+|private\s+|protected\s+|static\s+|async\s+|extern\s+)*"
    r"(?P<keyword>def|class|function|fn|func|struct|interface|trait|impl|enum|type|module|defun|defmacro|local\s+function)\b")

DEFINED_NAME = re.compile(DEFINITION.pattern + r"\s+(?P<name>[A-Za-z_][A-Za-z0-9_]{2,})")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
# a top-level constant or bound function: `NAME = ...`, `NAME: int = ...`, `export const name = ...`
ASSIGNED_NAME = re.compile(r"^(export\s+)?((const|let|var|static|pub\s+const)\s+)?(?P<name>[A-Za-z_][A-Za-z0-9_]{2,})"
                           r"\s*(:[^=\n]*)?=(?!=)")
# an import statement, brackets spanning lines included (Python's `from x import (\n a,\n b)`)
IMPORT = re.compile(r"(?m)^[ \t]*(from|import|use|using|require|local|const|#include|#import|export)\b"
                    r"(?:[^\n({]|\([^)]*\)|\{[^}]*\})*")
ALIAS = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s+as\s+([A-Za-z_][A-Za-z0-9_]*)")
INIT = re.compile(r"^\s+(def\s+__init__|constructor)\s*\(")

_COMMENT_BY_LANGUAGE = {
    "#": ("python", "shellscript", "sh", "bash", "ruby", "perl", "r", "yaml", "toml", "makefile", "dockerfile",
          "elixir", "julia", "nim", "powershell", "cmake"),
    "--": ("lua", "sql", "haskell", "elm", "ada"),
    ";;": ("lisp", "emacs-lisp", "elisp", "clojure", "scheme", "racket"),
    "%": ("latex", "tex", "erlang", "matlab", "prolog"),
}
_COMMENT_BY_SUFFIX = {
    "#": (".py", ".pyi", ".sh", ".bash", ".rb", ".pl", ".r", ".yaml", ".yml", ".toml", ".ex", ".exs", ".jl", ".nim", ".ps1"),
    "--": (".lua", ".sql", ".hs", ".elm", ".adb"),
    ";;": (".el", ".lisp", ".clj", ".scm", ".rkt"),
    "%": (".tex", ".erl", ".m"),
}


def comment_for(language: str, path: str) -> str:
    """The line-comment marker of a file's language ("//" for the C family and anything unknown)."""
    for marker, languages in _COMMENT_BY_LANGUAGE.items():
        if language.lower() in languages:
            return marker
    suffix = PurePosixPath(path).suffix.lower()
    for marker, suffixes in _COMMENT_BY_SUFFIX.items():
        if suffix in suffixes:
            return marker
    return "//"


@dataclass(frozen=True)
class Chunk:
    uri: str
    kind: str
    """outline (a document's definitions) or work (the text around an edit or a cursor)."""
    lines: tuple[str, ...]
    text: str
    """What the prompt gets: the header line and the lines, ending with a newline."""

    @cached_property
    def defines(self) -> frozenset[str]:
        """The names this chunk's definition lines define."""
        return frozenset(m.group("name") for line in self.lines if (m := DEFINED_NAME.match(line)))

    @cached_property
    def key(self) -> frozenset[str]:
        return frozenset(line.strip() for line in self.lines if line.strip())


class Workspace:
    """The documents' paths and languages, and the ring of chunks."""

    def __init__(self, ring_size: int = RING_SIZE, chunk_lines: int = CHUNK_LINES):
        self.ring_size, self.chunk_lines = ring_size, chunk_lines
        self.ring: list[Chunk] = []
        # uri -> (text, line, offset) of its latest edit or cursor: held as a reference to the
        # (immutable) text, so a keystroke costs nothing; the chunk is cut when it joins the ring
        self.pending: dict[str, tuple[str, int | None, int | None]] = {}
        self.root: str | None = None
        self._languages: dict[str, str] = {}
        # uri -> its latest text (a reference: costs nothing per keystroke), for imports and
        # signatures; what was read from each text is memoised beside it
        self._texts: dict[str, str] = {}
        self._read: dict[tuple[str, str], tuple[str, object]] = {}

    # -- what the editor tells -----------------------------------------------------------------
    def opened(self, uri: str, text: str, language: str = "") -> None:
        self._languages[uri] = language
        self._texts[uri] = text
        lines = text.split("\n")
        outline = [line.rstrip() for line in lines if DEFINITION.match(line)]
        if outline:
            self._add(self._chunk(uri, "outline", outline[:OUTLINE_LINES]))

    def changed(self, uri: str, text: str, line: int) -> None:
        """An edit at `line` (0-based): the text around it joins the ring once the user moves on."""
        self.pending[uri] = (text, line, None)
        self._texts[uri] = text

    def visited(self, uri: str, text: str, offset: int) -> None:
        """A suggestion was asked for at character `offset`: the text around it, likewise."""
        self.pending[uri] = (text, None, offset)
        self._texts[uri] = text

    def closed(self, uri: str) -> None:
        self._languages.pop(uri, None)
        self.pending.pop(uri, None)
        self._texts.pop(uri, None)
        self._read = {k: v for k, v in self._read.items() if k[0] != uri}
        self.ring = [c for c in self.ring if c.uri != uri]

    # -- what a request gets -------------------------------------------------------------------
    def context_for(self, uri: str, window: str) -> tuple[str, ...]:
        """The chunks for a request in `uri` whose prefix and suffix are `window`: the other
        documents' chunks in ring order, those much like the window left out, then the signatures
        of what the document imports from each other document, then the current file's path.
        Empty when no other document has a chunk."""
        for other in [u for u in self.pending if u != uri]:
            text, line, offset = self.pending.pop(other)
            self._add(self._around(other, "work", text, line if line is not None else text.count("\n", 0, offset)))
        self._promote(uri, window)
        seen = {line.strip() for line in window.split("\n") if line.strip()}
        chosen = []
        for chunk in self.ring:
            if chunk.uri == uri:
                continue
            key = chunk.key
            if key and len(key & seen) / len(key) > IN_WINDOW:
                continue
            chosen.append(chunk.text)
        chosen += [chunk.text for chunk in self._signatures(uri)]
        if not chosen:
            return ()
        return tuple(chosen) + (self._header(uri) + "\n",)

    # -- signatures of what a document imports ---------------------------------------------------
    def _signatures(self, uri: str) -> list[Chunk]:
        """For each other open document that defines a top-level name the document at `uri`
        imports: a chunk of those definitions' signature lines (a class with its constructor's);
        for one whose module is imported whole (`from pkg import mod`, `import pkg.mod as m`), a
        chunk of its top-level ones. At most `SIGNATURE_LINES` lines each, in that document's
        order; the chunks of whole modules first, so the engine's budget keeps the others first,
        and otherwise in the order the documents were opened. They depend on the import lines
        only, not on what the document reads as `mod.name`: that changes with the line being
        typed, and every change would send the prompt after the context to be prefilled again
        (benchmark 11 with those reads, at commit 744dcc7: 52 of 150 requests found their lane
        warm against 65 without them, for the callee's name in context at 33 of 50 call sites
        against 24, and no exact match gained)."""
        text = self._texts.get(uri)
        if not text:
            return []
        imported = self._memo(uri, "imports", text, imported_names)
        if not imported:
            return []
        named, whole = [], []
        for other, other_text in self._texts.items():
            if other == uri:
                continue
            tops = [(name, sig) for name, top, sig in self._memo(other, "definitions", other_text, definitions) if top]
            picked = [sig for name, sig in tops if name in imported]
            if picked:
                named.append(self._chunk(other, "signatures", _capped(picked)))
            elif tops and PurePosixPath(urlparse(other).path).stem in imported:
                whole.append(self._chunk(other, "signatures", _capped(sig for _, sig in tops)))
        return whole + named

    def _memo(self, uri: str, what: str, text: str, read):
        """`read(text)`, computed again only when the document's text is a new one."""
        held = self._read.get((uri, what))
        if held is None or held[0] is not text:
            held = (text, read(text))
            self._read[(uri, what)] = held
        return held[1]

    # -- the ring ------------------------------------------------------------------------------
    def _promote(self, uri: str, window: str) -> None:
        """Move the chunks that define a name the window uses to the ring's newest end (in their
        order), where the engine's budget keeps them first. The ring changes only when that set
        of chunks changes, not at every keystroke."""
        names = set(IDENTIFIER.findall(window))
        wanted = [c for c in self.ring if c.uri != uri and c.defines & names]
        if wanted and self.ring[len(self.ring) - len(wanted):] != wanted:
            self.ring = [c for c in self.ring if c not in wanted] + wanted

    def _add(self, chunk: Chunk | None) -> None:
        if chunk is None:
            return
        key = chunk.key
        kept = []
        for old in self.ring:
            if old.uri == chunk.uri and old.kind == chunk.kind and _similarity(old.key, key) > SIMILAR:
                continue  # a near-duplicate: the newer one stands for both
            kept.append(old)
        kept.append(chunk)
        self.ring = kept[-self.ring_size:]

    def _around(self, uri: str, kind: str, text: str, line: int) -> Chunk | None:
        lines = text.split("\n")
        half = self.chunk_lines // 2
        start = max(0, min(line - half, len(lines) - self.chunk_lines))
        part = [ln.rstrip() for ln in lines[start:start + self.chunk_lines]]
        while part and not part[-1].strip():
            part.pop()
        while part and not part[0].strip():
            part.pop(0)
        if not any(ln.strip() for ln in part):
            return None
        return self._chunk(uri, kind, part)

    def _chunk(self, uri: str, kind: str, lines: list[str]) -> Chunk:
        text = self._header(uri) + "\n" + "\n".join(lines) + "\n\n"
        return Chunk(uri, kind, tuple(lines), text)

    def _header(self, uri: str) -> str:
        path = self.display_path(uri)
        return f"{comment_for(self._languages.get(uri, ''), path)} {path}"

    def display_path(self, uri: str) -> str:
        """The document's path relative to the workspace root when inside it, else its full path."""
        parsed = urlparse(uri)
        path = unquote(parsed.path) if parsed.scheme == "file" else uri
        if self.root:
            root = self.root.rstrip("/") + "/"
            if path.startswith(root):
                return path[len(root):]
        return path


def imported_names(text: str) -> frozenset[str]:
    """The identifiers on a document's import lines: the names it imports and the modules it
    imports them from (a module's last part names the file that defines it). A name after `as`
    is the document's own alias, no module's name, and is left out."""
    names = set()
    for m in IMPORT.finditer(text):
        statement = m.group(0)
        if m.group(1) in ("const", "local", "export") and "require" not in statement and " from " not in statement:
            continue  # a plain declaration, not an import
        names.update(IDENTIFIER.findall(ALIAS.sub(lambda a: a.group(1), statement)))
    return frozenset(names)


def definitions(text: str) -> tuple[tuple[str, bool, tuple[str, ...]], ...]:
    """Each definition in a document, in order: (name, at top level, its signature lines). A
    signature runs until its brackets close (at most `SIGNATURE_SPAN` lines); a class's carries
    its constructor's signature after it."""
    lines = text.split("\n")
    found: list[tuple[str, bool, tuple[str, ...]]] = []
    cls = None  # the index in `found` of the top-level class being read, until its constructor
    for i, line in enumerate(lines):
        top_level = not line[:1].isspace()
        if cls is not None and not top_level and INIT.match(line):
            name, _, signature = found[cls]
            found[cls] = (name, True, signature + _signature(lines, i))
            cls = None
            continue
        m = DEFINED_NAME.match(line)
        if m is not None:
            if top_level:
                cls = len(found) if m.group("keyword") == "class" else None
            found.append((m.group("name"), top_level, _signature(lines, i)))
        elif top_level and (a := ASSIGNED_NAME.match(line)):
            cls = None
            found.append((a.group("name"), True, (line.rstrip()[:120],)))
    return tuple(found)


def _capped(signatures) -> list[str]:
    """The signatures' lines, each signature whole, at most `SIGNATURE_LINES` of them."""
    lines: list[str] = []
    for signature in signatures:
        if len(lines) + len(signature) > SIGNATURE_LINES:
            break
        lines += signature
    return lines


def _signature(lines: list[str], i: int) -> tuple[str, ...]:
    out = []
    depth = 0
    for line in lines[i:i + SIGNATURE_SPAN]:
        out.append(line.rstrip())
        # a line-ending `{` opens the body (C, JS, Rust, Go): the signature ends with it
        code = line.rstrip()
        code = code[:-1] if code.endswith("{") else code
        depth += sum(code.count(c) for c in "([{") - sum(code.count(c) for c in ")]}")
        if depth <= 0:
            break
    return tuple(out)


def _similarity(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)
