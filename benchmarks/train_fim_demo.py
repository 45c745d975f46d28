"""FIM training for drafts, demonstrated on the CPU: does a draft trained with fill-in-the-middle
agree with an infilling target more often than the same draft trained left to right?

Data: the Python standard library of the running interpreter, its top-level modules (with
--packages its packages too, their tests left out); every eighth file (sorted by path) is held out
for the cursors, the rest train. A small "target" trains with FIM (CodeLlama's rate
0.9, half SPM) so that it infills; then drafts of one smaller shape train for the same number
of steps on the same data with the same seed, one left to right (fim_rate 0) and one for each FIM
rate in --draft-fim-rates (default 0.9). Each is measured with the engine against that target
(greedy, k = 4, fixed) at the same cursors in held-out files: after the indentation of a line
inside a function, once with the rest of the file after the cursor (infilling: the target reads
<PRE> prefix <SUF> suffix <MID>) and once with the file cut at the cursor (end of file). The FIM draft reads the target's own prompt, the
left-to-right one reads the prefix, as the engine gives each (`draftFim auto`).

The tokenizer is a byte-level BPE of 4096 tokens trained here on the training files, with
CodeLlama's four infilling markers as special tokens: CodeLlama's own 32016-token vocabulary
would put most of this CPU budget into the output layer of three small models.

Where the target's output changes with the suffix, only a draft that reads the suffix can follow
it; the benchmark says how often that is, and how often the target writes the taken-out line back
exactly, with and without the code after the cursor.

With --work-dir the tokenizer, the corpus and every trained model are kept there and reused by a
later run with the same files (training is deterministic from the seed, so a kept model is the one
the run would train again): a new draft shape or step count then costs only its own training.

    python benchmarks/train_fim_demo.py [--target-steps 600] [--draft-steps 600] [--draft-layers 2] [--files 400] [--packages] [--cursors 60] [--draft-fim-rates 0.9,0.5] [--distill] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import sys
import sysconfig
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import write_results  # noqa: E402
from engine.config import ModelConfig  # noqa: E402
from training.evaluate import measure  # noqa: E402
from training.export import export  # noqa: E402
from training.prepare import prepare  # noqa: E402
from training.presets import preset  # noqa: E402
from training.trainer import run  # noqa: E402

MARKERS = ("▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>")  # CodeLlama's spelling: the engine finds them by name
SEQ_LEN = 256
NEW_TOKENS = 16
K = 4


def train_tokenizer(files: list[Path], out: Path, vocab: int) -> Path:
    """A byte-level BPE of `vocab` tokens on `files`, saved as a transformers tokenizer folder."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab - len(MARKERS), special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    raw.train([str(f) for f in files], trainer)
    raw.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in MARKERS])
    hf = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>")
    hf.save_pretrained(str(out))
    return out


def stdlib_files(packages: bool) -> list[Path]:
    """The standard library's top-level modules, sorted by path; with `packages` the modules inside
    its packages too, less the test suites (largely test data and repeated boilerplate)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    if not packages:
        return sorted(stdlib.glob("*.py"))
    skip = {"site-packages", "dist-packages", "test", "tests", "idle_test"}
    return sorted(f for f in stdlib.rglob("*.py") if not skip & set(f.relative_to(stdlib).parts))


def function_lines(text: str) -> list[int]:
    """Indices of lines with code inside a function body (indented deeper than a `def` above them)."""
    lines, picks, body_indent = text.split("\n"), [], None
    for i, line in enumerate(lines):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if stripped.startswith(("def ", "async def ")):
            body_indent = indent + 1
        elif body_indent is not None and stripped and indent < body_indent:
            body_indent = None
        elif body_indent is not None and stripped and not stripped.startswith(("#", '"', "'")):
            picks.append(i)
    return picks


def cursors(files: list[Path], n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """`n` cursors (prefix, suffix, line) after the indentation of function-body lines, spread over
    the files reproducibly; the suffix is the rest of the file, the line's own code (`line`, what
    the target should write) taken out."""
    r = random.Random(seed)
    pool = []
    for f in files:
        text = f.read_text(encoding="utf-8", errors="replace")
        pool += [(text, i) for i in function_lines(text) if i > 8]
    out = []
    for text, i in r.sample(pool, min(n, len(pool))):
        lines = text.split("\n")
        indent = len(lines[i]) - len(lines[i].lstrip())
        out.append(("\n".join(lines[:i] + [lines[i][:indent]]), "\n" + "\n".join(lines[i + 1:]), lines[i][indent:]))
    return out


def suffix_use(c, points: list[tuple[str, str, str]]) -> dict:
    """How much the target's own output depends on the code after the cursor (greedy, NEW_TOKENS
    tokens, lossless, so the draft does not matter): at how many cursors its text differs between
    the infilling prompt and the file cut at the cursor (only there can a draft that reads the
    suffix do better than one that does not), and at how many its first line is the taken-out line
    exactly, with and without the suffix (how much the suffix tells it)."""
    differ = exact_infilling = exact_end_of_file = 0
    for prefix, suffix, line in points:
        infilled, continued = c.complete(prefix, suffix, NEW_TOKENS).text, c.complete(prefix, "", NEW_TOKENS).text
        differ += infilled != continued
        exact_infilling += infilled.split("\n")[0].rstrip() == line.rstrip()
        exact_end_of_file += continued.split("\n")[0].rstrip() == line.rstrip()
    return {"cursors": len(points), "output_differs": differ, "share": differ / len(points) if points else 0.0,
            "line_exact_infilling": exact_infilling, "line_exact_end_of_file": exact_end_of_file}


SELECTION = "files.json"


def same_selection(work: Path, chosen: list[Path]) -> bool:
    """Whether `work` was set up (copy, tokenizer) for the files `chosen`; an error for another
    selection, whose models would be silently wrong here."""
    kept = work / SELECTION
    if not kept.exists():
        if work.exists() and any(work.iterdir()):
            sys.exit(f"error: {work} is not empty and was not made by this benchmark; give an empty or new --work-dir")
        return False
    if json.loads(kept.read_text()) != [str(f) for f in chosen]:
        sys.exit(f"error: {work} holds models trained on another file selection (--files/--packages); "
                 "give a new --work-dir")
    return True


def fim_name(rate: float) -> str:
    return f"draft, FIM {rate:g}"


def completer(draft: Path, target: Path):
    from engine.completer import Completer, EngineOptions
    from engine.loading import load_model

    # the prompt fits in the windows the models trained on
    opts = EngineOptions(context_tokens=SEQ_LEN, max_new_tokens_limit=NEW_TOKENS, k=K, k_min=K, k_max=K, adaptive=False,
                         min_confidence=0.0)
    return Completer(load_model(str(target), "cpu", quant="none"), load_model(str(draft), "cpu", quant="none"), "auto", opts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target-steps", type=int, default=600, help="training steps of the target")
    ap.add_argument("--draft-steps", type=int, default=600, help="training steps of each draft")
    ap.add_argument("--draft-layers", type=int, default=2, help="layers of each draft (hidden 128; the target has 4 of 256)")
    ap.add_argument("--files", type=int, default=400, help="standard-library files to use (an eighth held out)")
    ap.add_argument("--packages", action="store_true",
                    help="take files from the standard library's packages too, not only its top-level modules")
    ap.add_argument("--cursors", type=int, default=60, help="cursors in the held-out files")
    ap.add_argument("--draft-fim-rates", default="0.9",
                    help="comma-separated FIM rates of the FIM drafts, one draft each (CodeLlama's recipe: 0.9)")
    ap.add_argument("--distill", action="store_true",
                    help="train every draft on the trained target's distribution (spectab train distill) "
                         "instead of the data's next tokens")
    ap.add_argument("--work-dir", type=Path,
                    help="keep the tokenizer, corpus and trained models here and reuse those a previous run made "
                         "(default: a temporary folder, removed at the end)")
    args = ap.parse_args()
    if min(args.target_steps, args.draft_steps, args.draft_layers, args.cursors) < 1 or args.files < 16:
        ap.error("steps, layers and cursors must be at least 1, and --files at least 16 (an eighth is held out)")
    try:
        fim_rates = list(dict.fromkeys(float(x) for x in args.draft_fim_rates.split(",")))  # one draft per rate
    except ValueError:
        ap.error(f"--draft-fim-rates takes numbers separated by commas, got {args.draft_fim_rates!r}")
    if not fim_rates or not all(0 < r <= 1 for r in fim_rates):
        ap.error(f"--draft-fim-rates must be in (0, 1], got {args.draft_fim_rates!r}")

    chosen = stdlib_files(args.packages)[: args.files]
    held_out = [f for i, f in enumerate(chosen) if i % 8 == 7]
    train_files = [f for i, f in enumerate(chosen) if i % 8 != 7]
    points = cursors(held_out, args.cursors)
    kinds = {"infilling": [(prefix, suffix) for prefix, suffix, _ in points],
             "end of file": [(prefix, "") for prefix, _, _ in points]}
    batch = 8
    with (contextlib.nullcontext(args.work_dir) if args.work_dir else tempfile.TemporaryDirectory()) as tmp:
        tmp = Path(tmp)
        tokdir = tmp / "tokenizer"
        if not same_selection(tmp, chosen):  # a fresh folder: copy, train the tokenizer
            src = tmp / "src"
            src.mkdir(parents=True)
            for i, f in enumerate(train_files):  # a flat copy (numbered: packages repeat names): the selection is the corpus
                (src / f"{i:04d}_{f.name}").write_text(f.read_text(encoding="utf-8", errors="replace"))
            train_tokenizer(sorted(src.iterdir()), tokdir, 4096)
            (tmp / SELECTION).write_text(json.dumps([str(f) for f in chosen]))
        manifest = prepare([str(tmp / "src")], tmp / "corpus", str(tokdir), workers=2, shard_tokens=50_000_000, val_every=20)
        target_shape = ModelConfig(vocab_size=4096, hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=4, head_dim=64,
                                   intermediate_size=688, max_position_embeddings=SEQ_LEN, tie_word_embeddings=True)
        draft_shape = replace(target_shape, hidden_size=128, num_layers=args.draft_layers, num_heads=2, num_kv_heads=2,
                              intermediate_size=344)
        base = replace(preset("tiny"), tokenizer=str(tokdir), data=(str(tmp / "corpus"),), seq_len=SEQ_LEN,
                       global_batch_tokens=batch * SEQ_LEN, micro_batch=batch, lr=3e-3, min_lr=3e-4, warmup_steps=50,
                       eval_every=0, eval_batches=8, ckpt_every=0, log_every=100)
        runs = {
            "target (FIM)": replace(base, model=target_shape, fim_rate=0.9, seed=1, max_tokens=args.target_steps * batch * SEQ_LEN),
            "draft, left to right": replace(base, model=draft_shape, fim_rate=0.0, seed=2, max_tokens=args.draft_steps * batch * SEQ_LEN),
        }
        for rate in fim_rates:  # the same seed as the left-to-right draft: only the layout differs
            runs[fim_name(rate)] = replace(base, model=draft_shape, fim_rate=rate, seed=2,
                                           max_tokens=args.draft_steps * batch * SEQ_LEN)
        folders, trained = {}, {}
        for name, cfg in runs.items():
            # the folder names say everything the model depends on beyond the file selection
            slug = f"target-{args.target_steps}" if name == "target (FIM)" else (
                f"draft-{args.draft_layers}L-fim{cfg.fim_rate:g}-{args.draft_steps}"
                + (f"-distilled-from-target-{args.target_steps}" if args.distill else ""))
            folders[name], kept = tmp / "exports" / slug, tmp / "exports" / slug / "trained.json"
            if kept.exists():
                trained[name] = {**json.loads(kept.read_text()), "reused": True}
                print(f"{name}: reused {folders[name]}", flush=True)
                continue
            cfg = replace(cfg, out_dir=str(tmp / "runs" / slug))
            shutil.rmtree(cfg.out_dir, ignore_errors=True)  # an interrupted run's leftovers: train it again
            if args.distill and name != "target (FIM)":  # the target trains first: its export is the teacher
                cfg = replace(cfg, teacher=str(folders["target (FIM)"]))
            t0 = time.perf_counter()
            logs = run(cfg)
            trained[name] = {"steps": len(logs), "tokens": len(logs) * cfg.global_batch_tokens,
                             "final_loss": logs[-1].loss, "minutes": (time.perf_counter() - t0) / 60}
            export(Path(cfg.out_dir), folders[name])
            kept.write_text(json.dumps(trained[name]))  # last: only a finished export is reused
            print(f"{name}: {json.dumps(trained[name])}", flush=True)
        data = {"corpus_tokens": manifest["tokens"], "train_files": len(train_files), "held_out_files": len(held_out),
                "cursors": len(points), "distill": args.distill, "trained": trained, "acceptance": {}}
        rows = []
        for name in ["draft, left to right"] + [fim_name(r) for r in fim_rates]:
            c = completer(folders[name], folders["target (FIM)"])
            if "target_reads_suffix" not in data:
                data["target_reads_suffix"] = suffix_use(c, points)
                print(f"target: {json.dumps(data['target_reads_suffix'])}", flush=True)
            draft_fim = "auto" if runs[name].fim_rate > 0 else "none"
            scores = {kind: measure(c, texts, NEW_TOKENS, draft_fim) for kind, texts in kinds.items()}
            data["acceptance"][name] = scores
            print(f"{name}: {json.dumps(scores)}", flush=True)
            rows.append([name, trained[name]["steps"], scores["infilling"]["draft_prompt"]]
                        + [f"{scores[k]['accepted']}/{scores[k]['drafted']} = {scores[k]['acceptance']:.3f}" for k in kinds]
                        + [f"{scores[k]['alpha']:.3f}" for k in kinds])
    ltr = data["acceptance"]["draft, left to right"]
    data["fim_over_ltr"] = {}
    for rate in fim_rates:
        fim = data["acceptance"][fim_name(rate)]
        ratios = {k: fim[k]["acceptance"] / ltr[k]["acceptance"] if ltr[k]["acceptance"] else float("inf") for k in kinds}
        data["fim_over_ltr"][fim_name(rate)] = ratios
        rows.append([f"{fim_name(rate)} / left to right", "", ""] + [f"{ratios[k]:.2f}x" for k in kinds] + ["", ""])
    print(json.dumps({"fim_over_ltr": data["fim_over_ltr"]}), flush=True)
    t = trained["target (FIM)"]
    command = (f"python benchmarks/train_fim_demo.py --target-steps {args.target_steps} --draft-steps {args.draft_steps} "
               f"--files {args.files}{' --packages' if args.packages else ''} --cursors {args.cursors} --draft-fim-rates {args.draft_fim_rates}"
               + (" --distill" if args.distill else "")
               + (f" --draft-layers {args.draft_layers}" if args.draft_layers != 2 else ""))
    reads = data["target_reads_suffix"]
    write_results("train_fim_demo", command, data, rows,
                  ["draft", "steps", "draft's prompt", "acceptance, infilling", "acceptance, end of file",
                   "alpha, infilling", "alpha, end of file"],
                  f"{len(train_files)} training files of Python {sys.version.split()[0]}'s standard library"
                  f"{', packages included and tests left out' if args.packages else ''} "
                  f"({manifest['tokens']['train']:,} tokens, a 4096-token byte-level BPE with CodeLlama's infilling markers), "
                  f"{len(points)} cursors in {len(held_out)} held-out files. Target: hidden 256, 4 layers, FIM 0.9, "
                  f"{t['steps']} steps; its output differs with and without the suffix at {reads['output_differs']} "
                  f"of {reads['cursors']} cursors, and its first line is the taken-out line at "
                  f"{reads['line_exact_infilling']} with the suffix, {reads['line_exact_end_of_file']} without. "
                  f"Drafts: hidden 128, {args.draft_layers} layers, {args.draft_steps} steps each"
                  f"{', distilled from the target' if args.distill else ''}, "
                  f"sequences of {SEQ_LEN}, {batch * SEQ_LEN} tokens a step. Acceptance = drafted tokens the target "
                  f"accepted, greedy, k = {K}, {NEW_TOKENS} new tokens a cursor.")


if __name__ == "__main__":
    main()
