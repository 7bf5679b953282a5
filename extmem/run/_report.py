"""The run report: one shape for every trainer (common fields, then the trainer's own under ``details``).

It says what ran (command line, data, options, parameters, versions, machine), when, what it
reached (metrics, early stopping) and where the time and memory went, stage by stage, so that a
run can be understood and repeated from its report alone.
"""

from __future__ import annotations

import datetime
import os
import platform
import socket
import sys
from collections.abc import Mapping
from importlib import metadata
from typing import Any

import psutil

from extmem._measure import MemoryMonitor
from extmem._version import __version__

REPORT_VERSION = 2
_PACKAGES = ("xgboost", "pyarrow", "numpy", "scipy", "scikit-learn", "psutil")


def environment() -> dict[str, Any]:
    """The machine and library versions a run used."""
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "packages": versions,
    }


def now() -> str:
    """The current time in UTC, ISO 8601."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def command_line() -> list[str] | None:
    """The ``extmem`` command line this process runs, when it is the command (None for a Python caller)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if (spec is not None and spec.name == "extmem.__main__") or os.path.basename(sys.argv[0]) == "extmem":
        return ["extmem", *sys.argv[1:]]
    return None


def build_report(
    *,
    trainer: str,
    algorithm: str,
    started_at: str,
    monitor: MemoryMonitor,
    common: Mapping[str, Any],
    details: Mapping[str, Any],
) -> dict[str, Any]:
    """The report of a run: identification, the trainer's common fields, measurements, then its ``details``."""
    return {
        "report_version": REPORT_VERSION,
        "extmem_version": __version__,
        "trainer": trainer,
        "algorithm": algorithm,
        "command": command_line(),
        "started_at": started_at,
        "environment": environment(),
        **common,
        **monitor.report(),
        "details": dict(details),
    }
