"""Where the cursor's block of code ends, judged by indentation.

A stop condition of the engine (a multi-line completion stops generating once a whole line falls
outside the block) and a rule of the server's post-processing (the suggestion keeps only the
block's lines): one function, so both agree.
"""

from __future__ import annotations

CLOSES = {")": "(", "]": "[", "}": "{"}
OPENS_BLOCK = (":", "{", "(", "[")


def indent_of(line: str) -> int:
    expanded = line.expandtabs(4)
    return len(expanded) - len(expanded.lstrip())


def cut_block(text: str, line_prefix: str) -> str:
    """Keep the lines of `text` (a completion after `line_prefix`, the cursor's line so far) that
    belong to the cursor's block: stop before a line indented less than the cursor's line, and,
    after a first line that opens a block (ends with : { ( [), before a line back at its
    indentation (keeping a closing bracket line there)."""
    lines = text.split("\n")
    base = indent_of(line_prefix)
    opener = (line_prefix + lines[0]).rstrip().endswith(OPENS_BLOCK)
    kept = [lines[0]]
    for line in lines[1:]:
        if not line.strip():
            kept.append(line)
            continue
        indent = indent_of(line)
        if indent < base:
            break
        if opener and indent == base:
            if line.strip()[0] in CLOSES:
                kept.append(line)
            break
        kept.append(line)
    return "\n".join(kept)


def block_ended(text: str, line_prefix: str) -> bool:
    """Whether a whole line of `text` already falls outside the cursor's block."""
    whole_lines = text[: text.rfind("\n") + 1]
    return bool(whole_lines) and len(cut_block(whole_lines, line_prefix)) < len(whole_lines.rstrip("\n"))
