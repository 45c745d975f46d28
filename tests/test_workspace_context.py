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
    assert len(edit) == 3 and "re.sub" in edit[1]
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
