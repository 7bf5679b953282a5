"""The allocators and threads under a data limit: glibc's heap trimmed and its arenas few, pyarrow on the system
allocator, native threads on small stacks, one OpenBLAS thread; what the process needs before any data.

``prlimit --data`` (RLIMIT_DATA) counts writable private mappings whether their pages are
touched or not. glibc gives each thread that allocates its own arena (up to 8 per core), a
64 MiB reservation made writable as it grows and not unmapped when freed; pyarrow's default
allocator (jemalloc or mimalloc) keeps the address space of freed memory too. Both take a share
of a small budget that holds no data. Measured on 925k rows x 1,130 features under a 1 GiB
limit (peak data size): 841 MiB as is, 733 MiB with two arenas, 652 MiB with pyarrow on the
system allocator, 586 MiB with both, and no slower. Every thread's stack (8 MiB by default) and
every OpenBLAS thread's buffer (32-64 MiB) counts in full too. The command line sets all this up
before anything allocates, ``import extmem`` does when the process already runs under a data
limit (a library user's ``prlimit --data``), and a run given a ``memory_budget`` does when it
plans; elsewhere than glibc these are no-ops.
"""

from __future__ import annotations

import ctypes
import functools
import os
import resource
import sys
import threading

from extmem._units import MiB, format_size
from extmem.errors import OptionError

LIBRARIES_DATA_BYTES = 240 * MiB
"""Data size of a process once XGBoost, pyarrow, scipy and scikit-learn are loaded, allocators set up as here: 198 MiB
measured (XGBoost 3.2, pyarrow 26, Linux x86-64; 284 MiB with two OpenBLAS threads). Below it and its threads' stacks,
loading them or starting their threads fails, and they often abort the process rather than raise an error."""
ARROW_IO_THREADS = 8
"""Threads of pyarrow's I/O pool."""
EXTMEM_THREADS = 3
"""extmem's own threads in a run: the page prefetcher, the column-part reader and the memory sampler."""
THREAD_STACK_BYTES = 2 * MiB
"""The stack of threads started once the allocators are set up (glibc's default is the 8 MiB stack limit): each counts in
full against a data limit. XGBoost, pyarrow and OpenBLAS run with 512 KiB stacks on macOS."""
_thread_stack: int | None = None
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


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
    ]


def heap_free_bytes() -> int:
    """Bytes free inside glibc's arenas (``mallinfo2().fordblks``, every arena): mapped, counted in the data size, and
    reused by the next allocations before the heap grows. 0 where glibc does not say."""
    mallinfo2 = getattr(_libc(), "mallinfo2", None)
    if mallinfo2 is None:
        return 0
    mallinfo2.restype = _MallInfo2
    return int(mallinfo2().fordblks)


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


def _limit_thread_stacks(size: int = THREAD_STACK_BYTES) -> None:
    """Make ``size`` the stack of native threads started from now on without a size of their own (glibc's
    ``pthread_setattr_default_np``). Python's threads keep the stack they had (``threading.stack_size``): Python code can
    recurse deeply through C."""
    global _thread_stack
    libc = _libc()
    functions = [getattr(libc, name, None) for name in ("pthread_attr_init", "pthread_attr_setstacksize", "pthread_setattr_default_np")]
    if _thread_stack is not None or not all(functions):
        return
    python_stack = threading.stack_size() or _default_stack()
    init, set_size, set_default = functions
    attr = ctypes.create_string_buffer(256)  # a pthread_attr_t (56 bytes on x86-64 and aarch64 glibc)
    if init(attr) == 0 and set_size(attr, ctypes.c_size_t(size)) == 0 and set_default(attr) == 0:
        _thread_stack = size
        threading.stack_size(python_stack)


def _one_blas_thread() -> None:
    """One OpenBLAS thread, unless said otherwise or numpy is loaded: each thread's buffer is 32-64 MiB of data size, and
    extmem's work is not matrix products."""
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def limit_allocators() -> None:
    """Cap glibc's arenas, make pyarrow allocate through the system allocator and threads start with small stacks, from now on.

    ``MALLOC_ARENA_MAX`` and ``ARROW_DEFAULT_MEMORY_POOL``, when set, say otherwise. Before pyarrow
    is imported this sets the variable it reads when it starts; after, it switches pyarrow's default
    pool. Before numpy is imported, OpenBLAS is given one thread (``OPENBLAS_NUM_THREADS``).
    Arenas, buffers and threads made before stay as they are.
    """
    _limit_malloc_arenas()
    _limit_thread_stacks()
    _one_blas_thread()
    if "ARROW_DEFAULT_MEMORY_POOL" in os.environ:
        return
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is None:
        os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"
    elif pyarrow.default_memory_pool().backend_name != "system":
        pyarrow.set_memory_pool(pyarrow.system_memory_pool())


_imported_first: tuple[str, ...] = ()


def prepare_for_data_limit() -> None:
    """Under a data limit (``prlimit --data``), set up the allocators as the command line does (:func:`limit_allocators`),
    remembering which libraries were imported before (see :func:`process_note`)."""
    global _imported_first
    if resource.getrlimit(resource.RLIMIT_DATA)[0] != resource.RLIM_INFINITY:
        _imported_first = tuple(name for name in ("numpy", "pyarrow", "xgboost") if name in sys.modules)
        limit_allocators()


def process_note() -> str:
    """Why the process holds more than the command line's would, for a refused budget: under a data limit, libraries that a
    program imported before extmem set up their threads (numpy: OpenBLAS's, each with a 32-64 MiB buffer) and allocators
    before extmem could limit them. Empty otherwise."""
    if not _imported_first:
        return ""
    return f" ({', '.join(_imported_first)} imported before extmem, whose threads and allocators it could not limit: import extmem first)"


def _default_stack() -> int:
    """glibc's default thread stack: the stack limit, 8 MiB when unlimited."""
    limit = resource.getrlimit(resource.RLIMIT_STACK)[0]
    return 8 * MiB if limit == resource.RLIM_INFINITY else int(limit)


def thread_stack_bytes(running: int = 0) -> int:
    """The stacks of the threads a run uses that are not among the ``running`` ones: XGBoost's (OpenMP), pyarrow's (CPU and
    I/O pools) and extmem's (the main thread, the prefetcher, the part reader, the memory sampler). Writable mappings: the data limit counts them."""
    python_running = threading.active_count() if running else 0
    native = max(0, 2 * (os.cpu_count() or 1) + ARROW_IO_THREADS - max(0, running - python_running))
    python = max(0, 1 + EXTMEM_THREADS - python_running)
    return native * (_thread_stack or _default_stack()) + python * (threading.stack_size() or _default_stack())


def running_threads() -> int:
    """Threads of this process now (from /proc; 1 where it cannot be read)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 1


def check_room_for_libraries() -> None:
    """Refuse a data limit below what the libraries and their threads take before any data, in one error.

    Under it, loading the libraries or starting their threads fails, and pyarrow and XGBoost
    then often abort the whole process instead of raising an error.
    """
    limit = resource.getrlimit(resource.RLIMIT_DATA)[0]
    needed = LIBRARIES_DATA_BYTES + thread_stack_bytes()
    if limit != resource.RLIM_INFINITY and limit < needed:
        msg = (
            f"out of memory before any data: the data limit (prlimit --data) of {format_size(limit)} is below the about "
            f"{format_size(needed)} that XGBoost, pyarrow and scipy take once loaded, with their threads' stacks. "
            "Raise the limit; 'memory_budget' then plans the rest within it."
        )
        raise OptionError(msg, options=("memory_budget",))
