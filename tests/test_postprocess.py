"""Post-processing of raw model text into what the editor shows, and the server's settings."""

import pytest

from lsp_server.context import cursor_at
from lsp_server.postprocess import finish, safe_partial
from lsp_server.settings import Settings, apply, model_changed, unwrap


def at(text: str) -> tuple:
    """A cursor where `|` is, in `text`."""
    offset = text.index("|")
    return cursor_at(text.replace("|", ""), offset, 1024)


@pytest.mark.parametrize("doc,raw,multiline,shown", [
    # single line: the first line only
    ("x = |\n", "compute(a)\nmore()", False, "compute(a)"),
    # the editor auto-closed the bracket: don't type it twice
    ("print(|)\n", "value)", False, "value"),
    ("print(|)\n", "f(x))", False, "f(x)"),
    # auto-closed quote and bracket
    ('say("|")\n', 'hello")', False, "hello"),
    # a closer nothing opened: cut there
    ("x = |\n", "a + b) * 2", False, "a + b"),
    # a tail that duplicates the rest of the line
    ("if x |:\n", "> 0:", False, "> 0"),
    # multi-line stops where the block ends
    ("def f(x):\n    y = x|\n", " + 1\n    return y\n\ndef g():\n    pass", True, " + 1\n    return y"),
    # after a block opener, a line back at the opener's indentation ends it; a closing brace stays
    ("function f() {|\n", "\n  return 1;\n}\nfunction g() {}", True, "\n  return 1;\n}"),
    ("def f():|\n", "\n    return 1\ndef g():\n    pass", True, "\n    return 1"),
    # whitespace only: nothing
    ("x = |\n", "   \n  ", True, ""),
    # the model only repeats the next line: nothing
    ("def f():\n    |\n    return 1\n", "return 1", False, ""),
])
def test_finish(doc, raw, multiline, shown):
    assert finish(raw, at(doc), multiline) == shown


def test_safe_partial_keeps_whole_lines_or_words():
    assert safe_partial("a = 1\nb = 2\nc = ", True) == "a = 1\nb = 2"
    assert safe_partial("total = compu", False) == "total ="
    assert safe_partial("abc", False) == ""


def test_cursor_context_windows_at_line_boundaries():
    text = "".join(f"line {i}\n" for i in range(10_000)) + "end"
    cur = cursor_at(text, len(text) - 1, 64)
    assert cur.prefix.startswith("line ") and len(cur.prefix) <= 64 * 6 + 20
    assert cur.line_prefix == "en" and cur.line_suffix == "d" and not cur.at_line_end


def test_settings_keep_good_values_and_report_bad_ones():
    s, problems = apply(Settings(), unwrap({"spectab": {"maxNewTokens": 32, "multiline": "sometimes", "languages": ["python"],
                                                 "profile": "auto", "debounceMs": True, "colour": "red"}}))
    assert s.maxNewTokens == 32 and s.languages == ("python",) and s.profile is None
    assert s.multiline == "auto" and s.debounceMs == Settings.debounceMs
    assert len(problems) == 3 and any("spectab.colour" in p for p in problems)
    assert not model_changed(Settings(), s)
    assert model_changed(s, apply(s, unwrap({"target": "x.gguf"}))[0])
    assert unwrap({"python": {"x": 1}}) == {} and unwrap(None) == {} and unwrap({"spectab": {"bogus": 1}}) == {"bogus": 1}


def test_the_window_starts_at_an_anchor_line_while_the_user_types(monkeypatch):
    # the window is what a remote server gets: a start that moved with every line would miss its
    # prompt cache on every keystroke (real code not written here)
    import inspect

    import lsp_server.context as context

    text = inspect.getsource(inspect)
    ends = [i + 1 for i, c in enumerate(text) if c == "\n"][2000:2048]

    def starts():
        return [len(text[:end]) - len(cursor_at(text, end, 256).prefix) for end in ends]

    anchored = starts()
    on_anchor = [context.is_anchor(text[s: text.index("\n", s) + 1]) for s in anchored]
    assert sum(on_anchor) >= 0.75 * len(anchored)  # the others had no anchor within reach
    monkeypatch.setattr(context, "is_anchor", lambda line: False)
    per_line = starts()
    assert len(set(per_line)) >= 30  # without anchors the window's start moves with most lines
    assert len(set(anchored)) <= len(set(per_line)) // 3, (len(set(anchored)), len(set(per_line)))
