"""The allocators under a data limit: glibc's heap trimmed and its arenas few, pyarrow on the system allocator.

``prlimit --data`` (RLIMIT_DATA) counts writable private mappings whether their pages are
touched or not. glibc gives each thread that allocates its own arena (up to 8 per core), a
64 MiB reservation made writable as it grows and not unmapped when freed; pyarrow's default
allocator (jemalloc or mimalloc) keeps the address space of freed memory too. Both take a share
of a small budget that holds no data. Measured on 925k rows x 1,130 features under a 1 GiB
limit (peak data size): 841 MiB as is, 733 MiB with two arenas, 652 MiB with pyarrow on the
system allocator, 586 MiB with both, and no slower. The command line sets both up before
anything allocates, ``import extmem`` does when the process already runs under a data limit
(a library user's ``prlimit --data``), and a run given a ``memory_budget`` does when it plans;
elsewhere than glibc these are no-ops.
"""

from __future__ import annotations

import ctypes
import functools
import os
import resource
import sys

_M_ARENA_MAX = -8
MALLOC_ARENAS = 2
"""Arenas the command line allows (as ``MALLOC_ARENA_MAX=2`` would)."""


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library's symbols as the process already has them (no search, no subprocess); None where they cannot be had."""
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


_arenas_limited = False


def allocators_limited() -> bool:
    """Whether glibc's arenas are capped and pyarrow allocates through the system allocator in this process."""
    if not _arenas_limited:
        return False
    if "pyarrow" in sys.modules:
        return bool(sys.modules["pyarrow"].default_memory_pool().backend_name == "system")
    return os.environ.get("ARROW_DEFAULT_MEMORY_POOL") == "system"


def release_freed_memory() -> None:
    """Give memory freed to glibc's heap back to the kernel.

    Parsing a wide parquet footer (thousands of columns) allocates many small objects; once
    freed, glibc keeps those pages, so over hundreds of shards they would add up in RSS.
    """
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


def _limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> None:
    """Cap glibc's arenas for the rest of the process, unless ``MALLOC_ARENA_MAX`` already says how many.

    Call it before threads start allocating: arenas already made stay.
    """
    global _arenas_limited
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is not None and "MALLOC_ARENA_MAX" not in os.environ:
        _arenas_limited = bool(mallopt(_M_ARENA_MAX, arenas))
    elif os.environ.get("MALLOC_ARENA_MAX", "").isdigit():
        _arenas_limited = int(os.environ["MALLOC_ARENA_MAX"]) <= arenas


def limit_allocators() -> None:
    """Cap glibc's arenas and make pyarrow allocate through the system allocator, from now on.

    ``MALLOC_ARENA_MAX`` and ``ARROW_DEFAULT_MEMORY_POOL``, when set, say otherwise. Before pyarrow
    is imported this sets the variable it reads when it starts; after, it switches pyarrow's default
    pool. Arenas and buffers made before stay as they are.
    """
    _limit_malloc_arenas()
    if "ARROW_DEFAULT_MEMORY_POOL" in os.environ:
        return
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is None:
        os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"
    elif pyarrow.default_memory_pool().backend_name != "system":
        pyarrow.set_memory_pool(pyarrow.system_memory_pool())


def prepare_for_data_limit() -> None:
    """Under a data limit (``prlimit --data``), set up the allocators as the command line does (:func:`limit_allocators`)."""
    if resource.getrlimit(resource.RLIMIT_DATA)[0] != resource.RLIM_INFINITY:
        limit_allocators()
