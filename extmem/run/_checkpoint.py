"""Checkpoints: the booster of a running training plus the run's state, in one file checked before it is parsed.

The file holds a magic line, the length of a JSON header, the header (the run's configuration,
metric history, time spent and the stamp of its data, and the SHA-256 of the booster), then the
booster in XGBoost's UBJSON. It is written atomically, so a crash leaves the previous checkpoint
whole; a damaged or foreign file is one clear error, never a crash inside XGBoost's parser.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import xgboost as xgb

from extmem._atomic import json_default, write_atomically
from extmem.errors import OptionError
from extmem.read._storage import absolute, file_stamp
from extmem.xgb._matrix import MatrixInfo

MAGIC = b"extmem-checkpoint 1\n"


def save_checkpoint(booster: xgb.Booster, path: Path, state: dict[str, Any]) -> None:
    """Write ``booster`` with the run's ``state`` to ``path``, atomically."""
    model = bytes(booster.save_raw("ubj"))
    header = json.dumps({"state": state, "booster_sha256": hashlib.sha256(model).hexdigest()}, default=json_default).encode()
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


def data_stamp(info: MatrixInfo) -> dict[str, Any]:
    """What a resumed run must find unchanged in one of its datasets: the shards, their sizes and the rows read (JSON-ready)."""
    return {"shards": [[absolute(shard), file_stamp(shard)[0]] for shard in info.selection.schema.shards], "rows": int(info.stats.rows)}


def data_change(saved: dict[str, Any], now: dict[str, Any]) -> str | None:
    """How the datasets ``now`` differ from their stamps ``saved`` at a checkpoint, in words; None when they do not."""
    for name, stamp in now.items():
        then = saved.get(name)
        if then is None or then == stamp:
            continue
        before, after = dict(map(tuple, then["shards"])), dict(map(tuple, stamp["shards"]))
        added, removed = sorted(after.keys() - before.keys()), sorted(before.keys() - after.keys())
        resized = sorted(shard for shard in before.keys() & after.keys() if before[shard] != after[shard])
        if added or removed or resized:
            shard, how = (added[0], "was added") if added else (removed[0], "is gone") if removed else (resized[0], "was rewritten")
            return f"the shard {shard!r} of its {name} data {how}"
        return f"its {name} data yields {stamp['rows']:,} rows, not {then['rows']:,}"
    return None
