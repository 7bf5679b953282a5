"""Checkpoints: the booster of a running training plus the run's state, in one file checked before it is parsed.

The file holds a magic line, the length of a JSON header, the header (the run's configuration,
metric history and time spent, and the SHA-256 of the booster), then the booster in XGBoost's
UBJSON. It is written atomically, so a crash leaves the previous checkpoint whole; a damaged or
foreign file is one clear error, never a crash inside XGBoost's parser.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import xgboost as xgb

from extmem._atomic import write_atomically
from extmem.errors import OptionError

MAGIC = b"extmem-checkpoint 1\n"


def save_checkpoint(booster: xgb.Booster, path: Path, state: dict[str, Any]) -> None:
    """Write ``booster`` with the run's ``state`` to ``path``, atomically."""
    model = bytes(booster.save_raw("ubj"))
    header = json.dumps({"state": state, "booster_sha256": hashlib.sha256(model).hexdigest()}).encode()
    write_atomically(path, lambda file: file.write(MAGIC + struct.pack("<Q", len(header)) + header + model))


def load_checkpoint(path: Path) -> tuple[xgb.Booster, dict[str, Any]]:
    """The booster and run state saved in ``path``; an error naming the file when it is not a whole extmem checkpoint."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        msg = f"Cannot read the checkpoint {str(path)!r}: {exc.strerror or exc}."
        raise OptionError(msg) from None
    where = f"The checkpoint {str(path)!r}"
    if not content.startswith(MAGIC) or len(content) < len(MAGIC) + 8:
        msg = f"{where} is not an extmem checkpoint (it lacks the extmem-checkpoint header)."
        raise OptionError(msg)
    (length,) = struct.unpack("<Q", content[len(MAGIC) : len(MAGIC) + 8])
    start = len(MAGIC) + 8
    try:
        header = json.loads(content[start : start + length])
        state, expected = header["state"], header["booster_sha256"]
        config, history, seconds = state["config"], state["history"], state["seconds"]
    except (ValueError, KeyError, TypeError) as exc:
        msg = f"{where} is corrupt: its header cannot be read ({type(exc).__name__}: {exc})."
        raise OptionError(msg) from None
    model = content[start + length :]
    if hashlib.sha256(model).hexdigest() != expected:
        msg = f"{where} is corrupt: its checksum does not match the booster it holds."
        raise OptionError(msg)
    if not isinstance(config, dict) or not isinstance(history, dict) or not isinstance(seconds, (int, float)):
        msg = f"{where} holds no run state of this extmem (configuration, history, time)."
        raise OptionError(msg)
    try:
        booster = xgb.Booster(model_file=bytearray(model))
    except xgb.core.XGBoostError as exc:
        msg = f"{where} holds a booster XGBoost cannot load: {str(exc).splitlines()[0]}"
        raise OptionError(msg) from None
    return booster, state
