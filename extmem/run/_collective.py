"""XGBoost's collective as the client of a distributed run sees it: where its tracker listens, how it stops, a worker's error in one line."""

from __future__ import annotations

import logging
import socket
import threading
from typing import TYPE_CHECKING

import xgboost as xgb

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger("extmem")

TRACKER_STOP_SECONDS = 10.0
"""How long a failed run waits for XGBoost's tracker to stop before leaving it to the process's exit."""


def tracker_host(client: Client) -> str:
    """This machine's address as the scheduler's network sees it (the workers connect to the tracker there)."""
    from distributed.comm import get_address_host

    scheduler_host = get_address_host(client.scheduler.address)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((scheduler_host, 9))  # no packet is sent: this only picks the interface
        return str(probe.getsockname()[0])


def stop_tracker(tracker: xgb.tracker.RabitTracker, *, failed: bool) -> None:
    """Stop the tracker; after a failed run it reports the failed connections, which the worker's error already told.

    After a worker died, XGBoost's tracker may wait for it forever (seen with one of two workers
    killed mid-build): a ``failed`` run gives it ``TRACKER_STOP_SECONDS``, then leaves its thread
    to the process's exit rather than hang the caller.
    """

    def free() -> None:
        try:
            tracker.free()
        except xgb.core.XGBoostError as exc:
            logger.debug("extmem: tracker stopped with: %s", exc)

    if not failed:
        free()
        return
    stopping = threading.Thread(target=free, name="extmem-tracker", daemon=True)
    stopping.start()
    stopping.join(TRACKER_STOP_SECONDS)
    if stopping.is_alive():
        logger.debug("extmem: XGBoost's tracker did not stop in %s s; it is left to the process's exit", TRACKER_STOP_SECONDS)


def failure_reason(error: BaseException | None) -> str:
    """One line for a worker's error: XGBoost's chain of causes without its stack trace; a worker that died, said so."""
    if type(error).__name__ == "KilledWorker":
        return "the worker process died (killed, or out of memory)"
    lines = str(error).splitlines()
    causes = [line.split("]: ", 1)[-1] for line in lines if line.startswith("- [")]
    if causes:
        return f"XGBoost's collective failed ({'; '.join(causes)}): another worker probably died (killed, or out of memory)"
    return f"{type(error).__name__}: {lines[0] if lines else error}"
