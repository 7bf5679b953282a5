"""Local paths and URIs: which is which (``file://`` URIs are local paths)."""

from __future__ import annotations

import re

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path: str) -> bool:
    """Whether ``path`` is a URI (``scheme://...``) rather than a local path."""
    return bool(_URI.match(path))


def local_path(path: str) -> str:
    """A ``file://`` URI as the local path it names; anything else unchanged."""
    return path.removeprefix("file://")


def is_remote(path: str) -> bool:
    """Whether ``path`` is read through a filesystem other than the local one."""
    return is_uri(local_path(path))
