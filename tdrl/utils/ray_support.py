"""Ray, imported lazily: tdrl's optional cluster engine (``pip install "tdrl[ray]"``).

``import tdrl`` never imports Ray; the Ray launcher backend (``tdrl.launch.ray_launcher``)
and ``RaySampler`` (``tdrl.samplers.ray_sampler``) call :func:`import_ray` when they start,
and :func:`connect` to join a running Ray instance or start a local one.
"""

from __future__ import annotations

import os
import socket
from typing import Any

#: How to install what the Ray pieces need.
INSTALL_HINT = 'pip install "tdrl[ray]"'


def import_ray() -> Any:
    """The ``ray`` module.

    Raises:
        ImportError: Ray is not installed (the message says how to install it).
    """
    try:
        import ray
    except ImportError as e:
        raise ImportError(f"this needs Ray ({e}): {INSTALL_HINT}") from None
    return ray


def connect(address: str | None = None, *, num_cpus: int | None = None) -> bool:
    """Make sure this process is connected to Ray.

    Args:
        address: ``None``: the instance this process already joined, else a new local one
            (``RAY_ADDRESS`` in the environment is honoured by Ray itself); ``"auto"``: the
            running instance of this machine; ``"HOST:PORT"`` or ``"ray://HOST:10001"``: that
            cluster.
        num_cpus: CPUs a new *local* instance offers (None: this machine's); ignored when
            joining a running instance.

    Returns:
        Whether this call started the connection (the caller then calls ``ray.shutdown``
        when done); False when the process was connected already.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "configure_logging": False,
    }
    if address is None and not os.environ.get("RAY_ADDRESS"):
        kwargs["num_cpus"] = num_cpus
        # A local instance listens on this machine only: no token (Ray would otherwise
        # write one to ~/.ray and warn about it).
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    else:
        kwargs["address"] = address
        if address:
            _check_reachable(address)
    try:
        ray.init(**kwargs)
    except SystemExit as e:  # Ray exits the process when it gives up on a cluster's GCS
        raise ConnectionError(
            f"Ray could not connect to {address or 'a new local instance'} (it gave up with "
            f"exit status {e.code})"
        ) from None
    return True


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast, in one line, on a ``HOST:PORT`` address nothing listens at.

    Ray itself waits about a minute for an unreachable cluster and then exits the process.
    ``"auto"``, ``"local"`` and ``ray://`` client addresses are left to Ray.

    Raises:
        ConnectionError: nothing accepts a TCP connection at ``HOST:PORT``.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConnectionError(
            f"no Ray instance answers at {address} ({e.strerror or e}); start one with "
            "`ray start --head` there, or pass address='auto' on its head node"
        ) from None
