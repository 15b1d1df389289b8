"""Child processes: starting, supervising and stopping them, written once.

The parallel samplers (worker processes), ``AsyncRl`` (its sampler process), ``SyncRl``
(spawned ranks) and the launcher (one process group per run) all use these pieces:

* ``spawn_context()``: the ``spawn`` start method (fork is unsafe once torch has threads);
* ``wait_for(ready, children)``: block until ``ready`` says so, checking between polls that
  every child is alive, so a dead child raises ``ChildFailed`` naming it and how it ended
  (exit code or signal) instead of the parent hanging or failing on a broken pipe;
* ``receive(conn, child)``: the next ``(kind, payload)`` message of a child, with the same
  supervision, turning a reported ``("error", traceback)`` into ``ChildFailed``;
* ``report_failure(conn)``: the child's side, sending its traceback before it exits;
* ``stop_processes(procs)``: wait for children asked to exit, then SIGTERM, then SIGKILL,
  so none outlives its run; ``ProcessGroup`` lets the launcher stop a run's whole group
  with the same function;
* ``stop_at_exit(obj)``: objects whose ``shutdown()`` must run at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import time
import traceback
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

#: Seconds between liveness checks while waiting on a child.
POLL_S = 0.5


class Stoppable(Protocol):
    """What ``stop_processes`` needs of a child (``multiprocessing.Process`` has it)."""

    name: str

    def is_alive(self) -> bool:
        """Whether the child still runs."""
        ...

    def join(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` seconds for the child to end."""
        ...

    def terminate(self) -> None:
        """Send SIGTERM."""
        ...

    def kill(self) -> None:
        """Send SIGKILL."""
        ...


class Child(Stoppable, Protocol):
    """A supervised child process: ``Stoppable`` with its exit code."""

    @property
    def exitcode(self) -> int | None:
        """The exit code (negative: killed by that signal), None while running."""
        ...


class ChildFailed(RuntimeError):  # noqa: N818 - reads as what happened
    """A child process died, failed or stopped answering.

    Args:
        name: the child's name (e.g. ``"tdrl-sampler-1"``).
        how: how it ended (``exit_description``) or what went wrong.
        detail: the child's traceback, when it reported one.
    """

    def __init__(self, name: str, how: str, detail: str | None = None):
        self.name = name
        self.how = how
        self.detail = detail
        message = f"{name} {how}"
        if detail:
            message += f":\n{detail.rstrip()}"
        super().__init__(message)


def spawn_context() -> Any:
    """Torch's multiprocessing context with the ``spawn`` start method."""
    import torch.multiprocessing

    return torch.multiprocessing.get_context("spawn")


def exit_description(exitcode: int | None) -> str:
    """How a process ended, in words: ``"exited with code 1"``, ``"was killed by SIGKILL"``."""
    if exitcode is None:
        return "is still running"
    if exitcode == 0:
        return "exited normally"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


def check_alive(children: Sequence[Child]) -> None:
    """Raise ``ChildFailed`` for the first child that is no longer running."""
    for child in children:
        if not child.is_alive():
            raise ChildFailed(child.name, exit_description(child.exitcode))


def wait_for(
    ready: Callable[[float], bool],
    children: Sequence[Child],
    *,
    timeout: float | None = None,
    what: str = "an answer",
    on_poll: Callable[[], None] | None = None,
) -> None:
    """Call ``ready(POLL_S)`` until it returns True, supervising ``children`` in between.

    Args:
        ready: waits up to the given seconds for the event; True once it happened (e.g.
            ``conn.poll`` or ``semaphore.acquire``'s ``timeout`` form).
        children: processes that must stay alive meanwhile.
        timeout: seconds after which a child that has not produced the event counts as
            stuck (None: wait as long as they live).
        what: what is awaited, for the timeout's message.
        on_poll: called between polls (e.g. to surface a child's reported error).

    Raises:
        ChildFailed: a child died, or ``timeout`` passed (named after the first child).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while not ready(POLL_S):
        if on_poll is not None:
            on_poll()
        if not all(child.is_alive() for child in children):
            if ready(0.0):  # it delivered (its error, say) just before it ended
                return
            check_alive(children)
        if deadline is not None and time.monotonic() > deadline:
            name = children[0].name if children else "a child process"
            raise ChildFailed(name, f"sent no {what} within {timeout:g} s (stuck?)")


def receive(conn: Any, child: Child, *, timeout: float | None = None) -> tuple[str, Any]:
    """The next ``(kind, payload)`` message ``child`` sends through ``conn``.

    Raises:
        ChildFailed: the child died, reported an error (``("error", traceback)``), or sent
            nothing within ``timeout`` seconds.
    """
    wait_for(conn.poll, [child], timeout=timeout, what="message")
    try:
        kind, payload = conn.recv()
    except (EOFError, OSError) as exc:  # it died between the poll and the read
        child.join(1.0)
        raise ChildFailed(child.name, exit_description(child.exitcode)) from exc
    if kind == "error":
        raise ChildFailed(child.name, "failed", payload)
    return kind, payload


@contextlib.contextmanager
def report_failure(conn: Any) -> Iterator[None]:
    """In a child: send ``("error", traceback)`` through ``conn`` if the block raises.

    ``KeyboardInterrupt`` (Ctrl-C reaches the whole process group) ends the child quietly:
    the parent is being interrupted too and stops its children.
    """
    try:
        yield
    except KeyboardInterrupt:
        return
    except BaseException:
        with contextlib.suppress(BrokenPipeError, OSError):
            conn.send(("error", traceback.format_exc()))


def stop_processes(
    procs: Sequence[Stoppable], *, wait_s: float = 5.0, terminate_s: float = 5.0
) -> None:
    """Make sure none of ``procs`` outlives this call.

    Waits up to ``wait_s`` seconds in all for them to exit on their own (they were asked
    to), sends SIGTERM to the rest and waits up to ``terminate_s``, then SIGKILLs what is
    still alive and reaps it (waiting at most ``max(terminate_s, 1)`` more seconds).
    """
    deadline = time.monotonic() + wait_s
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    alive = [p for p in procs if p.is_alive()]
    for proc in alive:
        proc.terminate()
    deadline = time.monotonic() + terminate_s
    for proc in alive:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in alive:
        if proc.is_alive():
            proc.kill()
            proc.join(max(terminate_s, 1.0))  # bounded: a group's zombie may linger


class ProcessGroup:
    """A whole process group (a launched run and what it started), as a ``Stoppable``.

    Args:
        pgid: the group's id (the leader's pid, for a process started with
            ``start_new_session=True``).
        name: what to call it in messages.
    """

    def __init__(self, pgid: int, name: str | None = None):
        self.pgid = pgid
        self.name = name or f"process group {pgid}"

    def is_alive(self) -> bool:
        """Whether the group has a member that is not a zombie."""
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        if not os.path.isdir("/proc/self"):
            return True
        return any(state != "Z" for state in _group_states(self.pgid))

    def join(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` seconds (None: for ever) for every member to end."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_alive() and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.05)

    def terminate(self) -> None:
        """SIGTERM to every member."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to every member."""
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)


def _group_states(pgid: int) -> Iterator[str]:
    """The state letters (``R``, ``S``, ``Z``, ...) of group ``pgid``'s members."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:  # state, ppid, pgrp, ...
            yield fields[0]


class _Shutdown(Protocol):
    def shutdown(self) -> None: ...


_at_exit: weakref.WeakSet[Any] = weakref.WeakSet()


def stop_at_exit(obj: _Shutdown) -> None:
    """Call ``obj.shutdown()`` at interpreter exit unless ``forget_at_exit(obj)`` came first."""
    _at_exit.add(obj)


def forget_at_exit(obj: _Shutdown) -> None:
    """Undo ``stop_at_exit(obj)`` (after a regular shut-down)."""
    _at_exit.discard(obj)


@atexit.register
def _shutdown_all() -> None:
    for obj in list(_at_exit):
        with contextlib.suppress(Exception):
            obj.shutdown()
