"""Sizes in bytes: read from text such as ``2GiB`` or ``1.5GB``, written as ``1.50 GiB``."""

from __future__ import annotations

import re

from extmem.errors import OptionError

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
_BINARY = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str, option: str = "memory_budget") -> int:
    """Bytes in a size: ``2GiB``, ``800M`` and ``2G`` are powers of 1024; ``2GB`` and ``1.5MB`` powers of 1000; ``1073741824`` bytes.

    Binary units for K/M/G/T alone follow ``prlimit`` and ``ulimit``; the ``B`` suffixes follow SI.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:([KMGT])(i?B)?|(B)?)\s*", text, flags=re.IGNORECASE)
    if match is None:
        msg = f"The '{option}' option {text!r} is not a size; write it like 2GiB, 1.5GB, 800MiB or 1073741824 (bytes)."
        raise OptionError(msg, options=(option,))
    number, prefix, suffix = float(match[1]), (match[2] or "").upper(), (match[3] or "")
    factor = 1000 ** " KMGT".index(prefix) if prefix and suffix.upper() == "B" else _BINARY[prefix]
    return int(number * factor)


def format_size(size: float) -> str:
    """``1.50 GiB``, ``640 MiB``; below a MiB, ``0.25 MiB`` or ``512 bytes``."""
    if size >= GiB:
        return f"{size / GiB:.2f} GiB"
    if size >= MiB or size == 0:
        return f"{size / MiB:,.0f} MiB"
    return f"{size / MiB:.2f} MiB" if size >= MiB / 100 else f"{size:,.0f} bytes"
