"""Will it fit? Memory and disk checked before a large allocation, with a clear error.

A replay of ``replay_size=1e12`` entries, or a thousand tasks' buffers, fails deep in NumPy
or torch ("Maximum allowed dimension exceeded", ``_ArrayMemoryError``), or is killed by the
kernel's OOM killer, or dies of ``SIGBUS`` when a memory-mapped file outgrows the disk.
Each large allocation in tdrl first asks ``check_memory`` / ``check_disk`` with its size in
bytes and the setting that asks for it, and gets an ``ArgumentError`` (memory) or an
``OSError`` with ``ENOSPC`` (disk) naming both, before anything is allocated or written.

Available memory is Linux's ``MemAvailable`` plus free swap (``/proc/meminfo``); where
that is not readable nothing is checked. Free disk space is ``shutil.disk_usage`` of the
nearest existing directory.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from tdrl.utils.checks import ArgumentError

__all__ = ["available_memory", "check_disk", "check_memory", "nbytes_text"]


def available_memory() -> int | None:
    """Bytes of memory a new allocation can get (None: unknown on this system)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        kib = int(fields["MemAvailable"].split()[0]) + int(fields["SwapFree"].split()[0])
    except (OSError, KeyError, ValueError, IndexError):
        return None
    return kib * 1024


def nbytes_text(n: float) -> str:
    """``n`` bytes for people: ``"931.3 GiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_memory(nbytes: float, *, what: str, setting: str) -> None:
    """Raise ``ArgumentError`` if ``nbytes`` exceed the memory available now.

    Args:
        nbytes: the size of the allocation.
        what: what is allocated (``"the replay buffer's storage"``).
        setting: the setting(s) that ask for it, with their values (``"replay_size=..."``).
    """
    available = available_memory()
    if available is not None and nbytes > available:
        raise ArgumentError(
            f"{setting} needs {nbytes_text(nbytes)} of memory for {what}, more than the "
            f"{nbytes_text(available)} available; lower it"
        )


def check_disk(nbytes: float, path: str | Path, *, what: str, setting: str = "") -> None:
    """Raise ``OSError(ENOSPC)`` if ``nbytes`` exceed the free space where ``path`` goes.

    Args:
        nbytes: the bytes about to be written.
        path: the file or directory to be written (it need not exist yet).
        what: what is written.
        setting: the setting that asks for it, if any.
    """
    where = Path(path)
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return
    if nbytes > free:
        by = f" ({setting})" if setting else ""
        raise OSError(
            errno.ENOSPC,
            f"No space left on device: {what}{by} needs {nbytes_text(nbytes)}, "
            f"{nbytes_text(free)} are free",
            str(path),
        )
