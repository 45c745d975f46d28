"""Workspace context: the ring of other documents' chunks (unit), and over LSP the prompt the
engine builds (recorded by the engine itself, SPECTAB_DEBUG_PROMPTS=1), prefix reuse while
typing, closing a document and a budget of 0."""

from __future__ import annotations

from lsp_server.workspace import RING_SIZE, Workspace, comment_for

from .lsp_client import LspClient

HELPERS = "file:///proj/pkg/helpers.py"
MAIN = "file:///proj/pkg/main.py"
HELPERS_TEXT = ("import re\n\n\ndef normalize_header_name(name):\n    \"\"\"Lower-case and strip a header name.\"\"\"\n"
                "    return re.sub(r'\\s+', '-', name.strip().lower())\n\n\nclass HeaderBag:\n    def add(self, name, value):\n"
                "        self.items.append((name, value))\n")
MAIN_TEXT = "from .helpers import normalize_header_name\n\n\ndef parse(lines):\n    out = {}\n    for line in lines:\n        key, _, value = line.partition(':')\n        out[\n"


def test_outline_and_edit_chunks_with_headers_in_the_files_language():
    ws = Workspace()
    ws.root = "/proj"
    ws.opened(HELPERS, HELPERS_TEXT, "python")
    ws.opened(MAIN, MAIN_TEXT, "python")
    chunks = ws.context_for(MAIN, MAIN_TEXT)
    assert chunks[0].startswith("# pkg/helpers.py\n") and "def normalize_header_name(name):" in chunks[0]
    assert "class HeaderBag:" in chunks[0] and "re.sub" not in chunks[0]  # the outline: definitions only
    assert chunks[-1] == "# pkg/main.py\n"  # the current file's path closes the context
    assert all("pkg/main.py\ndef parse" not in c for c in chunks)  # never the current file's own chunks
    ws.changed(HELPERS, HELPERS_TEXT, 5)
    edit = ws.context_for(MAIN, MAIN_TEXT)
    assert len(edit) == 4 and "re.sub" in edit[1] and edit[2].startswith("# pkg/helpers.py\ndef normalize_header_name")
    assert comment_for("lua", "x.lua") == "--" and comment_for("", "x.rs") == "//" and comment_for("", "x.el") == ";;"


def test_near_duplicates_are_replaced_the_ring_is_bounded_and_order_is_stable():
    ws = Workspace()
    text = "\n".join(f"value_{i} = compute({i})" for i in range(200))
    ws.changed(HELPERS, text, 50)
    ws.context_for(MAIN, "")  # a request elsewhere: the helper file's chunk joins the ring
    ws.changed(HELPERS, text, 58)  # more typing near the same place
    ws.context_for(MAIN, "")
    assert len(ws.ring) == 1 and "value_58 " in ws.ring[-1].text  # the newer chunk stands for both
    ws.changed(HELPERS, text, 150)  # somewhere else in the file: a second chunk
    ws.context_for(MAIN, "")
    assert len(ws.ring) == 2
    for i in range(RING_SIZE + 5):
        ws.changed(f"file:///proj/f{i}.py", text, 100)
    ws.changed(MAIN, MAIN_TEXT, 3)
    before = ws.context_for(MAIN, "")
    assert len(ws.ring) == RING_SIZE
    for line in (3, 4, 5):  # typing in the current file changes nothing it sees
        ws.changed(MAIN, MAIN_TEXT, line)
        ws.visited(MAIN, MAIN_TEXT, MAIN_TEXT.index("out = {}"))
        assert ws.context_for(MAIN, "x = 1") == before
    ws.context_for(HELPERS, "")  # until another file asks: then the current file's work joins
    assert ws.ring[-1].uri == MAIN
    ws.closed("file:///proj/f20.py")
    assert all("f20.py" not in c for c in ws.context_for(MAIN, ""))


def test_chunks_defining_a_name_the_window_uses_come_last_and_oversized_ones_are_passed_over(tiny_models):
    ws = Workspace()
    ws.opened(HELPERS, HELPERS_TEXT, "python")
    ws.opened("file:///proj/pkg/other.py", "def unrelated_thing():\n    pass\n", "python")
    chunks = ws.context_for(MAIN, MAIN_TEXT)  # main.py imports normalize_header_name
    assert "def normalize_header_name" in chunks[-2] and "unrelated_thing" in chunks[0]
    assert ws.context_for(MAIN, MAIN_TEXT + "x = 1\n") == chunks  # typing on: the same chunks, same order

    from engine.loading import load_tokenizer
    from engine.prompts import context_ids

    tok = load_tokenizer(str(tiny_models["target"]), False)
    big, small = "# big.py\n" + "x = 1\n" * 200, "# small.py\ndef f():\n    pass\n"
    ids = context_ids(tok, (small, big), 100)
    assert tok.decode(ids).strip() == small.strip()  # the newest is too big: the older one still fits


def test_what_the_document_imports_comes_as_signatures_even_when_the_window_lacks_the_import():
    ws = Workspace()
    ws.root = "/proj"
    models = ("import os\n\nLIMIT = 10\n\n\nclass Parser(Base):\n    \"\"\"Parses.\"\"\"\n\n"
              "    def __init__(self, source,\n                 strict=False):\n        self.source = source\n\n"
              "    def feed(self, data):\n        pass\n\n\ndef tokenize(text, *, keep_blank=False):\n    return []\n")
    ws.opened(HELPERS, HELPERS_TEXT, "python")
    ws.opened("file:///proj/pkg/models.py", models, "python")
    ws.opened("file:///proj/pkg/other.py", "def unrelated_thing():\n    pass\n", "python")
    main = "from .models import (\n    Parser,\n    LIMIT,\n)\n" + "\n" * 80 + "def run(src):\n    p = "
    ws.opened(MAIN, main, "python")
    window = "def run(src):\n    p = "  # far below the imports: the window does not show them
    chunks = ws.context_for(MAIN, window)
    signatures = chunks[-2]
    assert signatures == ("# pkg/models.py\nLIMIT = 10\nclass Parser(Base):\n    def __init__(self, source,\n"
                          "                 strict=False):\n\n")  # what is imported, not the module's other names
    headers = [c.split("\n", 1)[0] for c in chunks]
    assert headers.count("# pkg/other.py") == 1 and headers.count("# pkg/helpers.py") == 1  # not imported: outlines only
    ws.changed(MAIN, main + "src.strip(", 85)  # typing on, the imports the same: the same chunks
    assert ws.context_for(MAIN, window + "src.strip(") == chunks
    ws.changed(MAIN, "from .helpers import normalize_header_name\nimport pkg.other\n" + main, 1)  # new imports
    headers = [c.split("\n", 1)[0] for c in ws.context_for(MAIN, window)]
    assert headers.count("# pkg/helpers.py") == 2 and headers.count("# pkg/other.py") == 2  # a module imported whole
    assert headers[-4:] == ["# pkg/other.py", "# pkg/helpers.py", "# pkg/models.py", "# pkg/main.py"]  # named imports last
    ws.closed("file:///proj/pkg/models.py")
    assert all("Parser" not in c for c in ws.context_for(MAIN, window))


def test_a_module_imported_under_an_alias_is_that_module_not_one_named_like_the_alias():
    ws = Workspace()
    ws.root = "/proj"
    ws.opened(HELPERS, HELPERS_TEXT, "python")
    ws.opened("file:///proj/pkg/fast.py", "def speedy(x):\n    return x\n", "python")
    ws.opened(MAIN, "import pkg.helpers as fast\n\nfast.normalize_header_name(x)\n", "python")
    signatures = ws.context_for(MAIN, "")[-2]
    assert signatures == "# pkg/helpers.py\ndef normalize_header_name(name):\nclass HeaderBag:\n\n"  # top level only
    assert sum("def speedy" in c for c in ws.context_for(MAIN, "")) == 1  # fast.py: its outline, no signatures


def test_a_chunk_much_like_the_window_is_left_out():
    ws = Workspace()
    ws.changed(HELPERS, HELPERS_TEXT, 4)
    assert ws.context_for(MAIN, MAIN_TEXT)
    assert ws.context_for(MAIN, HELPERS_TEXT + MAIN_TEXT) == ()  # all its lines are in the window already


def context_server(tiny_models, tmp_path, **settings) -> LspClient:
    client = LspClient(env={"SPECTAB_LOG_DIR": str(tmp_path), "SPECTAB_DEBUG_PROMPTS": "1"})
    client.initialize({"target": str(tiny_models["target"]), "draft": str(tiny_models["same"]), "device": "cpu",
                       "engine": "inprocess", "fim": "psm", "maxNewTokens": 6, "minConfidence": 0, "candidates": 1,
                       **settings})
    assert client.wait_ready()["state"] == "ready"
    return client


def prompt_of(client: LspClient, uri: str) -> str:
    return client.request("spectab/status", {"uri": uri})["lastPrompt"] or ""


def test_over_lsp_the_engines_prompt_has_the_other_documents_definition(tiny_models, tmp_path):
    client = context_server(tiny_models, tmp_path, extraContextTokens=256)
    try:
        client.open(HELPERS, HELPERS_TEXT)
        client.open(MAIN, MAIN_TEXT)
        client.inline(MAIN, 7, 12)
        prompt = prompt_of(client, MAIN)
        assert "# helpers.py" in prompt or "# /proj/pkg/helpers.py" in prompt
        assert "def normalize_header_name(name):" in prompt
        assert prompt.index("def normalize_header_name") < prompt.index("def parse(lines)")
        status = client.request("spectab/status", {"uri": MAIN})
        assert any("helpers.py" in header for header in status["context"])

        # typing on: the chunks stay where they were, so the engine reuses the prompt up to the edit
        reused0, total0 = status["reusedPromptTokens"], status["promptTokens"]
        client.change(MAIN, 2, 7, 12, 7, 12, "k")
        client.inline(MAIN, 7, 13)
        status = client.request("spectab/status", {"uri": MAIN})
        last_prompt = status["promptTokens"] - total0
        assert status["reusedPromptTokens"] - reused0 >= last_prompt - 8, status

        # the other document closes: its chunks go
        client.notify("textDocument/didClose", {"textDocument": {"uri": HELPERS}})
        client.inline(MAIN, 7, 13)
        assert "normalize_header_name(name):" not in prompt_of(client, MAIN).split("def parse")[0]
    finally:
        client.close()


def test_over_lsp_a_budget_of_zero_sends_no_chunks(tiny_models, tmp_path):
    client = context_server(tiny_models, tmp_path, extraContextTokens=0)
    try:
        client.open(HELPERS, HELPERS_TEXT)
        client.open(MAIN, MAIN_TEXT)
        client.inline(MAIN, 7, 12)
        prompt = prompt_of(client, MAIN)
        assert "def parse(lines)" in prompt and "normalize_header_name(name):" not in prompt
    finally:
        client.close()


def test_over_lsp_what_is_imported_far_above_the_window_reaches_the_prompt(tiny_models, tmp_path):
    client = context_server(tiny_models, tmp_path, extraContextTokens=64, contextTokens=256)
    body = "".join(f"    total_{i} = step({i})\n" for i in range(150))  # the import ends up far above the window
    main = "from .helpers import normalize_header_name\n\n\ndef parse(lines):\n" + body + "    key = "
    cursor_line = main.count("\n")
    try:
        client.open(HELPERS, HELPERS_TEXT)
        client.open(MAIN, main)
        client.inline(MAIN, cursor_line, len("    key = "))
        prompt = prompt_of(client, MAIN)
        assert "from .helpers import" not in prompt  # the window does not reach the import line
        assert "# helpers.py\ndef normalize_header_name(name):\n\n" in prompt or \
            "# /proj/pkg/helpers.py\ndef normalize_header_name(name):\n\n" in prompt
        assert "class HeaderBag" not in prompt  # not imported, and the budget keeps the signatures first
    finally:
        client.close()


def test_import_lines_of_other_languages_name_what_they_import():
    from lsp_server.workspace import imported_names

    js = "import { parseHeader, HeaderBag } from './headers';\nconst { slugify } = require('./text');\nconst limit = 5;\n"
    assert {"parseHeader", "HeaderBag", "headers", "slugify", "text"} <= imported_names(js)
    assert "limit" not in imported_names(js)  # a declaration, not an import
    rust = "use crate::wire::{Frame, encode_frame};\nfn main() {}\n"
    assert {"wire", "Frame", "encode_frame"} <= imported_names(rust)
    assert "main" not in imported_names(rust)
    ws = Workspace()
    ws.opened("file:///proj/src/headers.js", "export function parseHeader(line, strict) {\n  return line;\n}\n"
              "export const VERSION = 3;\n", "javascript")
    ws.opened("file:///proj/src/main.js", js, "javascript")
    assert ws.context_for("file:///proj/src/main.js", "")[-2] == \
        "// /proj/src/headers.js\nexport function parseHeader(line, strict) {\n\n"
