"""Memory budgets: the bytes a run may use (asked for, or the process's data limit) and the share a plan may fill."""

from __future__ import annotations

import resource
from dataclasses import dataclass

from extmem._allocators import limit_allocators
from extmem._units import format_size, parse_size
from extmem.errors import OptionError, is_number

PLANNED_SHARE = 0.95
"""A plan fills at most this share of a budget: the plan models the peak, and the kernel's limit stops the first byte
above it (training 30,000 count columns under 512 MiB: planned 503 MiB, sampled peak 502, and runs failed on spikes)."""


def data_limit() -> int | None:
    """The process's RLIMIT_DATA soft limit (``prlimit --data``), or None when unlimited."""
    soft = resource.getrlimit(resource.RLIMIT_DATA)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)


@dataclass(frozen=True)
class Budget:
    """Bytes a run may use, and where that figure came from."""

    bytes: int
    origin: str

    @property
    def plannable(self) -> int:
        """The bytes a plan may fill: the budget less a margin for what the model of the peak misses."""
        return int(self.bytes * PLANNED_SHARE)

    @classmethod
    def resolve(cls, requested: int | str | None) -> Budget | None:
        """The budget to plan for: ``requested`` (bytes or a size), else the data limit the process runs under.

        A request above the data limit is lowered to it, since the kernel would refuse the rest.
        Under a budget the allocators are set up as the command line sets them up (see
        :func:`extmem._allocators.limit_allocators`), for the rest of the process.
        """
        budget = cls._resolve(requested)
        if budget is not None:
            limit_allocators()
        return budget

    @classmethod
    def _resolve(cls, requested: int | str | None) -> Budget | None:
        limit = data_limit()
        if requested is None:
            return cls(limit, "the process's data limit (prlimit --data)") if limit is not None else None
        whole = is_number(requested) and float(requested).is_integer()  # type: ignore[arg-type]
        if not (isinstance(requested, str) or whole):  # is_number refuses booleans
            msg = f"The 'memory_budget' must be a size in bytes or text such as '2GiB'. Got {requested!r} instead."
            raise OptionError(msg, options=("memory_budget",))
        size = parse_size(requested) if isinstance(requested, str) else int(requested)
        if size <= 0:
            msg = f"The memory budget must be positive, got {requested!r}."
            raise OptionError(msg)
        if limit is not None and limit < size:
            return cls(limit, f"the process's data limit (prlimit --data), below the requested {format_size(size)}")
        return cls(size, "'memory_budget'")
