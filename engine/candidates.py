"""Alternative suggestions: where the greedy path was least sure, the target's second choice,
continued greedily.

Each alternative is exactly the target's greedy continuation after its branch token: it runs
through the same generation loop (and drafter) from the greedy prefix plus that token, in the same
KV lane, so only the tokens after the branch point are computed anew. They share the stop rules'
deadline (the completer gives them a time budget); one that runs out of time is dropped.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from .blocks import cut_block
from .speculative import Generation, StopRules


def branch_points(greedy: Generation, count: int, stop_ids: set[int]) -> list[int]:
    """Up to `count` positions of the greedy tokens to branch at: the least confident first, and
    only where the runner-up is a token to continue from (not the end of the completion at its
    start, which would be an empty suggestion)."""
    first = 1 if greedy.healed else 0  # the first token spells out the healed whitespace
    positions = [j for j, (alt, p) in enumerate(greedy.runner_up)
                 if j >= first and p > 0 and not (alt in stop_ids and j == 0)]
    positions.sort(key=lambda j: greedy.probs[j])
    return positions[:count]


def alternatives(greedy: Generation, count: int, stops: StopRules,
                 run: Callable[[list[int], StopRules], Generation], decode: Callable[[list[int]], str]) -> list[Generation]:
    """Up to `count` alternatives to `greedy`, the most likely branch first. `run(branch, stops)`
    generates greedily after the prompt plus the branch ids."""
    found: list[tuple[float, Generation]] = []
    points = branch_points(greedy, len(greedy.tokens), stops.stop_ids)
    if stops.block_of is not None:
        # past the end of the cursor's block the suggestion is cut off: a branch there would show
        # as a repeat of the greedy one
        kept = len(cut_block(greedy.text, stops.block_of).rstrip("\n"))
        points = [j for j in points if len(decode(greedy.tokens[:j])) <= kept]
    for j in points[:count]:
        if stops.cancelled is not None and stops.cancelled():
            break
        token, p = greedy.runner_up[j]
        branch_ids = greedy.tokens[:j] + [token]
        branch_probs = greedy.probs[:j] + [p]
        if token in stops.stop_ids:
            # the target's second choice is to stop here: the shorter suggestion is the alternative
            tokens, probs, runner_up = greedy.tokens[:j], greedy.probs[:j], greedy.runner_up[:j]
            found.append((p, Generation(tokens, decode(tokens), replace(greedy.stats, stop_reason="eos"), probs, runner_up, branch=j, healed=greedy.healed)))
            continue
        left = stops.max_new_tokens - len(branch_ids)
        if left <= 0:
            continue
        rest = run(branch_ids, replace(stops, max_new_tokens=left))
        if rest.stats.stop_reason in ("deadline", "cancelled"):
            break  # out of time: an alternative cut short is not shown, and the rest would be too
        # the rest's text is already cut at its stop string or newline; the branch's text precedes it
        found.append((p, Generation(branch_ids + rest.tokens, decode(branch_ids) + rest.text, rest.stats,
                                    branch_probs + rest.probs,
                                    greedy.runner_up[:j] + [(greedy.tokens[j], greedy.probs[j])] + rest.runner_up,
                                    branch=j, healed=greedy.healed)))
    found.sort(key=lambda pair: -pair[0])
    return [g for _p, g in found]
