"""``python -m bench run ...``: the benchmark suite (see :mod:`bench.suite`)."""

from __future__ import annotations

import sys

from . import suite
from .harness import exit_cleanly_on_sigterm

COMMANDS = {"run": suite.main}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python -m bench {{{','.join(COMMANDS)}}} ...  (python -m bench run --help)")
    exit_cleanly_on_sigterm()
    COMMANDS[sys.argv[1]](sys.argv[2:])
