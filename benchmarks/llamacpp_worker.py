"""llama.cpp's side of benchmarks/cpu_vs_llamacpp.py: runs inside llama-cpp-python's own venv.

Reads one JSON request per line on stdin, answers one JSON line each on stdout (anything the C
library prints goes to stderr, so it can never corrupt an answer). It imports nothing from this
repository: that venv has llama-cpp-python and numpy, not torch.

Requests (`op`):
  load    {name, model_path, n_ctx, n_threads, lookup, num_pred_tokens, max_ngram_size}
          -> {load_s, memory}; `lookup` gives the instance a LlamaPromptLookupDecoding draft
  prefill {name, prompt}          -> {ms}: llm.eval(prompt) after llm.reset()
  decode  {name, prompt, tokens}  -> {s, ids}: greedy generation of exactly `tokens` ids with the
          prompt already in the KV cache (evaluated untimed when it is not), the last prompt
          position run again as the first step, as the other engine does; end-of-text is ignored
          (Llama.generate never stops on it)
  memory  {}                      -> {memory}: VmRSS, VmHWM, RssAnon, RssFile in MB
  close   {name}                  -> {memory}
  quit    {}
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback


def memory() -> dict:
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    out[key] = round(int(value.split()[0]) / 1024, 1)  # kB -> MB
    except OSError:
        pass
    return out


class Worker:
    def __init__(self):
        self.models = {}

    def load(self, name, model_path, n_ctx, n_threads, lookup=False, num_pred_tokens=10, max_ngram_size=2):
        import llama_cpp
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

        draft = LlamaPromptLookupDecoding(max_ngram_size=max_ngram_size, num_pred_tokens=num_pred_tokens) if lookup else None
        t0 = time.perf_counter()
        # With a draft model Llama keeps every position's logits (it forces logits_all on), but 0.3.36
        # sizes its `scores` buffer from the logits_all argument: False leaves n_batch rows, and a
        # prompt longer than n_batch then fails in eval(). So the lookup instance says True itself.
        llm = llama_cpp.Llama(model_path=model_path, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                              n_batch=512, verbose=False, logits_all=lookup, draft_model=draft)
        load_s = time.perf_counter() - t0
        self.models[name] = llm
        return {"load_s": load_s, "memory": memory(), "n_vocab": llm.n_vocab(), "version": llama_cpp.__version__,
                "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip()}

    def prefill(self, name, prompt):
        llm = self.models[name]
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        return {"ms": (time.perf_counter() - t0) * 1000}

    def decode(self, name, prompt, tokens):
        llm = self.models[name]
        n = len(prompt)
        if llm.n_tokens < n or llm.input_ids[:n].tolist() != prompt:
            llm.reset()
            llm.eval(prompt)  # untimed: the prompt is cached before every timed decode
        # Keep positions 0..n-2: generate() finds that prefix cached and runs the last prompt token
        # again, so the timed call makes `tokens` forward steps (an exactly cached prompt would
        # sample its first token from the prefill's logits for free).
        llm.n_tokens = n - 1
        ids = []
        t0 = time.perf_counter()
        for token in llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
            ids.append(int(token))
            if len(ids) == tokens:
                break
        seconds = time.perf_counter() - t0
        return {"s": seconds, "ids": ids}

    def memory(self):
        return {"memory": memory()}

    def close(self, name):
        llm = self.models.pop(name, None)
        if llm is not None:
            llm.close()
        return {"memory": memory()}


def main() -> None:
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the library's own prints land on stderr
    sys.stdout = sys.stderr
    worker = Worker()
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        op = request.pop("op")
        if op == "quit":
            answers.write(json.dumps({"ok": True}) + "\n")
            break
        try:
            answer = getattr(worker, op)(**request)
        except Exception as err:  # report it to the benchmark, which stops with the message
            answer = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        answers.write(json.dumps(answer) + "\n")
    answers.close()


if __name__ == "__main__":
    main()
