"""Child processes: starting, supervising and stopping them, written once.

The parallel samplers (worker processes), ``AsyncRl`` (its sampler process), ``SyncRl``
(spawned ranks) and the launcher (one process group per run) all use these pieces:

* ``start_child(ctx, target, ...)``: spawn ``target`` in a child that exits by itself as
  soon as this process is gone (``watch_parent``), whatever it is doing then;
* ``wait_for(ready, children)``: block until ``ready`` says so, checking between polls that
  every child is alive, so a dead child raises ``ChildFailed`` naming it and how it ended
  (exit code or signal), and one that exceeds the ``timeout`` counts as stuck;
* ``receive(conn, child)``: the next ``(kind, payload)`` message of a child, with the same
  supervision, turning a reported ``("error", traceback)`` into ``ChildFailed``;
* ``report_failure(conn)``: the child's side, sending its traceback before it exits;
* ``stop_processes(procs)``: wait for children asked to exit, then SIGTERM (and SIGCONT, so
  a stopped child receives it), then SIGKILL, so none outlives its run; ``ProcessGroup``
  lets the launcher stop a run's whole group with the same function;
* ``stop_at_exit(obj)``: objects whose ``shutdown()`` must run at interpreter exit.

**Parent death.** A child started by ``start_child`` runs a daemon thread that waits on
``multiprocessing.parent_process().sentinel``, a pipe whose write end only the parent
holds (on Windows, the parent's handle): it turns readable as soon as the parent exits,
SIGKILL included. In case that end leaked into a process the parent forked, the thread
also compares ``os.getppid()`` with the parent's pid recorded at spawn every
``PARENT_POLL_S`` (POSIX re-parents orphans); a first check, before the child's own code,
catches a parent that died even earlier. It ends the child with ``os._exit``, whatever it
waits on, skipping ``finally`` blocks, ``atexit`` handlers, env ``close()`` and unflushed
output (the OS frees memory, descriptors and shared tensors; the resource tracker unlinks
semaphores once the run's last process is gone; grandchildren notice in turn). Linux's
``PR_SET_PDEATHSIG`` is not used: it fires when the *thread* that spawned the child ends
(parallel samplers start their workers in ``AsyncRl``'s sampler thread).
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing.connection
import os
import signal
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

#: Seconds between liveness checks while waiting on a child.
POLL_S = 0.5
#: Seconds between a child's checks of ``os.getppid()`` (the fallback of ``watch_parent``).
PARENT_POLL_S = 1.0
#: Default seconds for one unit of work (batch, time step, evaluation) before a child
#: counts as stuck (``worker_timeout_s``, ``sampler_timeout_s``): half an hour, as
#: ``SyncRl``'s ``timeout_s``, so no real batch (minutes, for Atari on a busy CPU) trips it.
STUCK_AFTER_S = 1800.0
#: Least seconds granted to a child's start-up (and first batch), whatever the timeout.
STARTUP_ALLOWANCE_S = 300.0
#: Exit code of a child that ended because its parent was gone.
ORPHANED_EXIT_CODE = 70


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
        stuck: the child is still there but did not answer in time (stop it at once).
    """

    def __init__(self, name: str, how: str, detail: str | None = None, *, stuck: bool = False):
        self.name = name
        self.how = how
        self.detail = detail
        self.stuck = stuck
        message = f"{name} {how}"
        if detail:
            message += f":\n{detail.rstrip()}"
        super().__init__(message)

    def summary(self) -> str:
        """One line: the name and how it ended, or the last line of its traceback."""
        if self.detail and self.detail.strip():
            return f"{self.name} {self.how}: {self.detail.strip().splitlines()[-1]}"
        return f"{self.name} {self.how}"


def spawn_context() -> Any:
    """Torch's multiprocessing context with the ``spawn`` start method."""
    import torch.multiprocessing

    return torch.multiprocessing.get_context("spawn")


def startup_timeout(timeout: float | None) -> float | None:
    """The time a child gets to start: ``timeout``, but at least ``STARTUP_ALLOWANCE_S``."""
    return None if timeout is None else max(timeout, STARTUP_ALLOWANCE_S)


# ------------------------------------------------------------------------ parent death
def start_child(
    ctx: Any,
    target: Callable[..., object],
    *,
    name: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    daemon: bool = True,
) -> BaseProcess:
    """Start ``target(*args, **kwargs)`` in a child that dies with this process; return it.

    Every child process of tdrl is started here: the child runs ``watch_parent`` before
    ``target``, so it exits at once when this process is gone.

    Args:
        ctx: a multiprocessing context (``spawn_context()``).
        target: the child's body (picklable: a module-level function).
        name: the child's name, used in every message about it.
        args: positional arguments of ``target``.
        kwargs: keyword arguments of ``target``.
        daemon: a daemon child (which may not start children of its own).
    """
    proc: BaseProcess = ctx.Process(
        target=_child_main,
        args=(target, tuple(args), dict(kwargs or {})),
        name=name,
        daemon=daemon,
    )
    proc.start()
    return proc


def _child_main(target: Callable[..., object], args: tuple, kwargs: dict[str, Any]) -> None:
    watch_parent()
    target(*args, **kwargs)


def watch_parent(*, poll_s: float = PARENT_POLL_S) -> None:
    """In a multiprocessing child: exit (``os._exit``) once the parent is gone.

    Checks here (it may be gone already), then in a daemon thread; see the module doc.
    """
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None or parent.sentinel is None:
        return
    pid, sentinel = parent.pid, parent.sentinel
    if _parent_gone(pid, sentinel, 0.0):
        os._exit(ORPHANED_EXIT_CODE)
    threading.Thread(
        target=_watch, args=(pid, sentinel, poll_s), name="tdrl-parent-watch", daemon=True
    ).start()


def _parent_gone(pid: int, sentinel: Any, wait_s: float) -> bool:
    """Whether the parent ``pid`` is gone, waiting up to ``wait_s`` on its ``sentinel``."""
    if multiprocessing.connection.wait([sentinel], timeout=wait_s):
        return True  # EOF: the parent's end of the pipe is closed (or its handle signalled)
    return os.name == "posix" and os.getppid() != pid  # re-parented: the parent died


def _watch(pid: int, sentinel: Any, poll_s: float) -> None:
    while not _parent_gone(pid, sentinel, poll_s):
        pass
    os._exit(ORPHANED_EXIT_CODE)  # no message: a stderr pipe nobody reads could block it


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


def process_state(proc: object) -> str | None:
    """What process ``proc`` (a ``multiprocessing`` process) is doing, in words.

    None where the system does not say (no ``/proc``) or the process is gone.
    """
    pid = proc.pid if isinstance(proc, BaseProcess) else None
    fields = None if pid is None else _stat_fields(str(pid))
    return None if fields is None else _STATES.get(fields[0], fields[0])


_STATES = {"R": "running", "S": "sleeping", "D": "waiting for I/O", "Z": "a zombie"}
_STATES |= {"T": "stopped (SIGSTOP?)", "t": "stopped by a debugger"}


def is_stopped(proc: object) -> bool:
    """Whether ``proc`` is stopped (SIGSTOP, a debugger): it cannot end by itself."""
    return (process_state(proc) or "").startswith("stopped")


def stuck_description(child: Child | None, waited: str) -> str:
    """``"is stuck: <waited>"``, plus the child's process state where the system says."""
    state = process_state(child)
    return f"is stuck: {waited}" + (f"; its process is {state}" if state else "")


def wait_for(
    ready: Callable[[float], bool],
    children: Sequence[Child],
    *,
    timeout: float | None = None,
    since: float | None = None,
    what: str = "answer",
    timeout_name: str = "timeout",
    on_poll: Callable[[], None] | None = None,
) -> None:
    """Call ``ready(POLL_S)`` until it returns True, supervising ``children`` in between.

    Args:
        ready: waits up to the given seconds for the event; True once it happened (e.g.
            ``conn.poll`` or ``semaphore.acquire``'s ``timeout`` form).
        children: processes that must stay alive meanwhile.
        timeout: seconds after which a child that has not produced the event counts as
            stuck (None: wait as long as they live).
        since: the ``time.monotonic()`` at which the child began working for the event
            (default: now); ``timeout`` counts from there.
        what: what is awaited, for the timeout's message.
        timeout_name: the argument that set ``timeout``, for its message.
        on_poll: called between polls (e.g. to surface a child's reported error).

    Raises:
        ChildFailed: a child died, or (``stuck=True``) ``timeout`` passed.
    """
    start = time.monotonic() if since is None else since
    while not ready(POLL_S):
        if on_poll is not None:
            on_poll()
        if not all(child.is_alive() for child in children):
            if ready(0.0):  # it delivered (its error, say) just before it ended
                return
            check_alive(children)
        if timeout is not None and children and time.monotonic() - start > timeout:
            child, waited = children[0], f"sent no {what} within {timeout:g} s ({timeout_name})"
            raise ChildFailed(child.name, stuck_description(child, waited), stuck=True)


def receive(
    conn: Any,
    child: Child,
    *,
    timeout: float | None = None,
    since: float | None = None,
    timeout_name: str = "timeout",
) -> tuple[str, Any]:
    """The next ``(kind, payload)`` message ``child`` sends through ``conn``.

    ``timeout``, ``since`` and ``timeout_name`` are those of ``wait_for``.

    Raises:
        ChildFailed: the child died, reported an error (``("error", traceback)``), or sent
            nothing within ``timeout`` seconds.
    """
    wait_for(
        conn.poll, [child], timeout=timeout, since=since, what="message", timeout_name=timeout_name
    )
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
    to; a stopped one cannot), sends SIGTERM (then SIGCONT, for a stopped one) to the rest
    and waits up to ``terminate_s``, then SIGKILLs what is still alive and reaps it
    (waiting at most ``max(terminate_s, 1)`` more seconds).
    """
    deadline = time.monotonic() + wait_s
    for proc in procs:
        if not is_stopped(proc):
            proc.join(max(0.0, deadline - time.monotonic()))
    alive = [p for p in procs if p.is_alive()]
    for proc in alive:
        proc.terminate()
        _continue(proc)  # a stopped (SIGSTOP) process acts on SIGTERM only once continued
    deadline = time.monotonic() + terminate_s
    for proc in alive:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in alive:
        if proc.is_alive():
            proc.kill()
            proc.join(max(terminate_s, 1.0))  # bounded: a group's zombie may linger


def _continue(proc: Stoppable) -> None:
    """SIGCONT to ``proc`` (a process or a ``ProcessGroup``), where signals exist."""
    if isinstance(proc, ProcessGroup):
        proc._signal(signal.SIGCONT)
    elif isinstance(proc, BaseProcess) and proc.pid is not None and os.name == "posix":
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, signal.SIGCONT)


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
        fields = _stat_fields(entry) if entry.isdigit() else None
        if fields is not None and int(fields[2]) == pgid:  # state, ppid, pgrp, ...
            yield fields[0]


def _stat_fields(pid: str) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name; None if unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


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
