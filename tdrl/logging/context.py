"""``logger_context`` opens a run directory; ``get_logger`` reaches the active logger."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tdrl.logging.files import remove_stale_temps
from tdrl.logging.logger import PARAMS_FILE, Logger, NullLogger, atomic_write_bytes

_NULL_LOGGER = NullLogger()
_LOGGER_STACK: list[Logger] = []


def get_logger() -> Logger | NullLogger:
    """Returns the logger of the innermost open :func:`logger_context`.

    Returns:
        That :class:`Logger`, or a shared :class:`NullLogger` (prints :meth:`~NullLogger.log`
        messages, ignores the rest) outside any context.
    """
    return _LOGGER_STACK[-1] if _LOGGER_STACK else _NULL_LOGGER


@contextmanager
def logger_context(
    log_dir: str | os.PathLike[str],
    run_ID: int | str = 0,  # rlpyt's and viskit's spelling
    name: str = "experiment",
    config: Mapping[str, Any] | Any | None = None,
    *,
    snapshot_mode: str = "last",
    snapshot_gap: int = 1,
    use_tensorboard: bool = False,
    resume: bool = False,
    echo: bool = True,
    variant: Mapping[str, Any] | None = None,
) -> Iterator[Logger]:
    """Logs a run into ``log_dir/run_{run_ID}`` and makes it what :func:`get_logger` returns.

    Writes ``params.json`` (``config`` plus ``name`` and ``run_ID``) on entry, and
    ``variant.json`` (viskit's file: ``exp_name`` = ``name`` plus the settings that make
    this run's variant; ``tdrl plot --group-by`` reads it) when ``variant`` is given or the
    launcher left ``variant_config.json`` in ``log_dir``. If the body
    raises, the traceback goes to ``debug.log`` after ``"run failed:"`` and the exception
    propagates; everything dumped or saved before stays on disk. Contexts may nest.

    Example::

        with logger_context("data/ppo_cartpole", run_ID=0, config=cfg) as logger:
            logger.record_tabular("Diagnostics/Iteration", itr)
            logger.dump_tabular()

    Args:
        log_dir: Parent of the run directory; created with parents.
        run_ID: Run number (or name) giving the directory ``run_{run_ID}``.
        name: Experiment name, stored in ``params.json``.
        config: Mapping or dataclass of the run's settings. Nested mappings and dataclasses
            are kept; values JSON cannot hold are stored as ``repr(value)``.
        snapshot_mode: One of :data:`~tdrl.logging.SNAPSHOT_MODES`.
        snapshot_gap: Positive int, used by the ``"gap"`` snapshot modes.
        use_tensorboard: Also write scalars to TensorBoard (``pip install "tdrl[tb]"``).
        resume: Append to an existing run instead of refusing; an existing ``params.json``
            is then kept.
        echo: Echo log lines and dumped tables to the console by default.
        variant: The settings that tell this run's variant from others (no seed, no run
            number); None: the launcher's ``variant_config.json``, if any.

    Yields:
        The run's :class:`Logger`.

    Raises:
        ValueError: Bad ``snapshot_mode`` or ``snapshot_gap``.
        ImportError: ``use_tensorboard`` without tensorboard installed.
        LogDirError: ``log_dir/run_{run_ID}`` (or a parent) is a file, or it cannot be
            created or written; an ``OSError`` and a ``ValueError`` naming the path.
        FileExistsError: The run directory already has a ``progress.csv`` and ``resume`` is
            False.
    """
    run_dir = Path(log_dir) / f"run_{run_ID}"
    # A resumed run's directory may hold files a killed writer staged: nobody else writes there.
    stale = remove_stale_temps(run_dir) if resume else []
    logger = Logger(
        run_dir,
        snapshot_mode=snapshot_mode,
        snapshot_gap=snapshot_gap,
        use_tensorboard=use_tensorboard,
        resume=resume,
        echo=echo,
    )
    try:
        params_path = run_dir / PARAMS_FILE
        if not (resume and params_path.exists()):
            params = {**_params_dict(config), "name": name, "run_ID": run_ID}
            text = json.dumps(params, indent=2, sort_keys=True) + "\n"
            atomic_write_bytes(params_path, text.encode("utf-8"))
            settings = _variant(log_dir, variant)
            if settings is not None:
                text = json.dumps({"exp_name": name, **settings}, indent=2, sort_keys=True)
                atomic_write_bytes(run_dir / VARIANT_JSON, (text + "\n").encode("utf-8"))
        logger.log(f"{'Resuming' if resume else 'Starting'} run '{name}' in {run_dir}")
        if stale:
            logger.log(f"removed files staged by the interrupted run: {', '.join(stale)}")
        _LOGGER_STACK.append(logger)
        try:
            yield logger
        except BaseException:
            with contextlib.suppress(OSError):  # a full disk must not hide the first error
                logger.log("run failed:\n" + traceback.format_exc().rstrip(), echo=False)
            raise
        finally:
            _LOGGER_STACK.remove(logger)
    except BaseException:
        with contextlib.suppress(OSError):  # closing flushes debug.log: keep the first error
            logger.close()
        raise
    logger.close()


#: The variant file viskit reads in a run directory (``tdrl plot`` too).
VARIANT_JSON = "variant.json"

#: The launcher's variant file in a variant's log directory (``tdrl.launch.VARIANT_FILE``).
LAUNCHED_VARIANT = "variant_config.json"


def _variant(log_dir: str | os.PathLike[str], variant: Any) -> dict[str, Any] | None:
    """The run's variant settings: ``variant``, else the launcher's file, else None."""
    if variant is not None:
        return _params_dict(variant)
    path = Path(log_dir) / LAUNCHED_VARIANT
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # the launcher's own reader reports a bad file to the run
    return data if isinstance(data, dict) else None


def _params_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    params = _jsonable(config)
    if not isinstance(params, dict):
        raise TypeError(f"config must be a mapping or a dataclass, got {type(config).__name__}")
    return params


def _jsonable(value: Any) -> Any:
    """Turns ``value`` into JSON-ready data, with ``repr`` for anything JSON cannot hold.

    Dataclass fields are walked directly (as :func:`dataclasses.asdict` would, without its
    deep copy of every value).
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def next_run_id(log_dir: str | os.PathLike[str]) -> int:
    """The smallest ``N`` such that ``log_dir/run_N`` holds no ``progress.csv`` yet."""
    n = 0
    while (Path(log_dir) / f"run_{n}" / "progress.csv").exists():
        n += 1
    return n
