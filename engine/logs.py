"""Logging for the command line: spectab's own progress lines on stderr, other libraries quiet."""

from __future__ import annotations

import logging
import os
import sys


def setup_logging(verbose: bool, quiet: bool) -> None:
    """spectab's own progress lines (loading, converting, downloading) at INFO on stderr; other
    libraries' chatter (transformers' GGUF notes, huggingface_hub's retries) only with --verbose."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("spectab: %(message)s"))
    ours = logging.getLogger("spectab")
    ours.addHandler(handler)
    ours.setLevel(logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO)
    ours.propagate = False
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "info" if verbose else "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # huggingface_hub resets its logger's level when imported; it reads this variable then
    os.environ.setdefault("HF_HUB_VERBOSITY", "info" if verbose else "error")
    if not verbose:
        import warnings

        warnings.filterwarnings("ignore")
        for name in ("huggingface_hub", "transformers", "accelerate"):
            logging.getLogger(name).setLevel(logging.ERROR)
