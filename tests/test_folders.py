"""Private folders: a lock held for the folder's life decides what a sweeper may remove, across processes."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from extmem._folders import CACHE_PREFIX, LOCK_FILE, PrivateFolder, sweep_stale


def _hold_lock_in_another_process(folder: Path) -> subprocess.Popen[str]:
    """A child process that locks ``folder``'s lock file and says so on stdout, then waits for stdin to close."""
    script = (
        "import fcntl, os, sys\n"
        f"fd = os.open({str(folder / LOCK_FILE)!r}, os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    return child


def _folder(root: Path, name: str, *, lock_file: bool, age: float = 0.0) -> Path:
    folder = root / f"{CACHE_PREFIX}{name}"
    folder.mkdir()
    (folder / "xgb.gradient_index.page").write_bytes(b"x" * 100)
    if lock_file:
        (folder / LOCK_FILE).touch()
    if age:
        os.utime(folder, (time.time() - age, time.time() - age))
    return folder


def test_a_folder_whose_lock_is_free_is_swept_and_a_locked_one_is_not(cache_root: Path) -> None:
    dead = _folder(cache_root, "dead", lock_file=True)
    alive = _folder(cache_root, "alive", lock_file=True)
    child = _hold_lock_in_another_process(alive)
    try:
        assert sweep_stale(cache_root) == [dead]
        assert alive.exists() and not dead.exists()
    finally:
        child.communicate("")
    assert sweep_stale(cache_root) == [alive], "once its owner exits, the kernel frees the lock"


def test_a_folder_without_a_lock_file_is_swept_only_when_old(cache_root: Path) -> None:
    young = _folder(cache_root, "young", lock_file=False)
    old = _folder(cache_root, "old", lock_file=False, age=2 * 3600)
    assert sweep_stale(cache_root) == [old]
    assert young.exists()


def test_own_live_folders_are_never_swept_and_are_removed_on_exit(cache_root: Path) -> None:
    with PrivateFolder(cache_root) as first, PrivateFolder(cache_root) as second:
        assert first.path.name.startswith(CACHE_PREFIX) and (first.path / LOCK_FILE).is_file()
        assert sweep_stale(cache_root) == []
        assert first.path.exists() and second.path.exists()
    assert not first.path.exists() and not second.path.exists()


def test_a_lock_is_held_for_the_folder_life(cache_root: Path) -> None:
    with PrivateFolder(cache_root) as folder:
        fd = os.open(folder.path / LOCK_FILE, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


CHURN = """
import sys, time
from pathlib import Path
from extmem._folders import PrivateFolder
root, seconds = sys.argv[1], float(sys.argv[2])
end = time.monotonic() + seconds
made = 0
while time.monotonic() < end:
    with PrivateFolder(root) as folder:
        (folder.path / "page").write_bytes(b"x")
        for _ in range(20):
            if not (folder.path / "page").exists():
                print("LOST", folder.path, flush=True)
                sys.exit(1)
        made += 1
print("made", made)
"""


def test_processes_creating_and_sweeping_caches_never_delete_a_live_one(cache_root: Path) -> None:
    """Four processes create, check and remove cache folders under one root as fast as they can; each creation sweeps."""
    runs = [subprocess.Popen([sys.executable, "-c", CHURN, str(cache_root), "4"], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0, 0], outputs
    assert all(int(output.split()[-1]) > 10 for output in outputs), outputs
    assert list(cache_root.iterdir()) == []


HOLD = """
import sys
from extmem._folders import PrivateFolder
folder = PrivateFolder(sys.argv[1])
print(folder.path, flush=True)
sys.stdin.read()
folder.cleanup()
"""


def test_a_cache_of_a_run_in_another_pid_namespace_is_not_swept(cache_root: Path) -> None:
    """Ownership is the lock, not a process id: a run in a container (its own PID namespace) keeps its cache."""
    probe = subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a PID namespace here: {probe.stderr.decode().strip()}")
    holder = subprocess.Popen(
        ["unshare", "--pid", "--fork", sys.executable, "-c", HOLD, str(cache_root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    path = Path(holder.stdout.readline().strip())
    try:
        assert path.is_dir()
        with PrivateFolder(cache_root):  # creating a folder sweeps the root
            assert sweep_stale(cache_root) == []
        assert path.is_dir()
    finally:
        holder.communicate("")
    assert not path.exists()
