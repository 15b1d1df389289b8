"""Script configs: a dataclass that builds its own command line, and the run around training.

A script's settings are one dataclass (cleanrl's habit), saved with the run. Its fields
become command-line flags, ``_`` written ``-`` (``n_steps`` is ``--n-steps``, ``run_ID``
is ``--run-ID``); the field's type gives the flag's form and its default the flag's:

===========================  =====================================================
field type                   command line
===========================  =====================================================
``int``, ``float``, ``str``  ``--batch-T 64`` (an int also as ``1e6``; NaN refused)
``bool``                     ``--dueling`` / ``--no-dueling``
``X | None``                 ``--delta-clip 1.0``, or ``--delta-clip none``
``tuple[X, ...]``            ``--hidden-sizes 256 256`` (``tuple[X, X]``: exactly 2)
``Literal["a", "b"]``        ``--algo a``, refusing other values
===========================  =====================================================

A field's help text and any extra flag names come from its metadata, most briefly written
with :func:`option` (``batch_T: int = option(32, "time steps per batch")``); a plain
``dataclasses.field(..., metadata={"help": ..., "aliases": (...)})`` works the same.
When the dataclass has both ``log_dir`` and ``run_ID``, ``--run-ID`` defaults to the next
free run in ``--log-dir`` (``tdrl.logging.next_run_id``) instead of the field's default.

:func:`train_and_log` is the rest of a script's scaffolding: it opens
``tdrl.logging.logger_context`` for ``log_dir/run_{run_ID}`` with the config saved to
``params.json``, trains, and logs one summary line. A whole script then reads::

    @dataclasses.dataclass
    class Config:
        env_id: str = "CartPole-v1"
        algo: Literal["ppo", "a2c"] = "ppo"
        n_steps: int = 100_000
        batch_T: int = option(32, "time steps per batch")
        log_dir: str = "data/my_script"
        run_ID: int = 0


    def build_and_train(config: Config) -> dict[str, float]:
        runner = ...  # sampler, agent, algorithm
        return train_and_log(config, runner.train, name="my_script", label=config.algo)


    if __name__ == "__main__":
        build_and_train(parse_config(Config, description=__doc__))

``tdrl.logging`` (and with it torch) is imported only when these functions run, so
``import tdrl.launch`` stays light for the launcher.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol, TypeVar

from tdrl.utils.checks import ArgumentError, check_int

T = TypeVar("T")
C = TypeVar("C")

#: Metadata keys read from a config field: its help text and extra flag names.
HELP = "help"
ALIASES = "aliases"


class RunConfig(Protocol):
    """What :func:`train_and_log` needs of a config: where the run logs."""

    log_dir: str
    run_ID: int


def option(default: T, doc: str = "", *, aliases: Sequence[str] = ()) -> T:
    """A config field with a default, help text and optional extra flags.

    For type checkers the result is ``default`` (the field keeps its declared type); for
    ``dataclasses`` it is a ``dataclasses.field`` carrying the metadata. ``default`` must be
    immutable (numbers, strings, tuples), as for any dataclass default.

    Args:
        default: The field's default value.
        doc: Help text shown by ``--help``.
        aliases: Extra flag names, e.g. ``("--prioritized",)`` beside the field's own
            ``--prioritized-replay``.

    Returns:
        The field, to be assigned in the dataclass body.
    """
    field: Any = dataclasses.field(default=default, metadata={HELP: doc, ALIASES: tuple(aliases)})
    return field  # a Field where the dataclass reads it; the default's type for checkers


def config_parser(config_cls: type, *, description: str | None = None) -> argparse.ArgumentParser:
    """An argument parser with one flag per field of the dataclass ``config_cls``.

    Args:
        config_cls: A dataclass whose fields all have defaults.
        description: The program's description; only its first line is shown (pass the
            script's ``__doc__``).

    Returns:
        The parser; parsing gives one attribute per field, named like the field.

    Raises:
        TypeError: ``config_cls`` is not a dataclass, or a field's type has no
            command-line form (the message names the field).
    """
    if not (isinstance(config_cls, type) and dataclasses.is_dataclass(config_cls)):
        raise TypeError(f"config_cls must be a dataclass, got {config_cls!r}")
    parser = argparse.ArgumentParser(
        description=description.strip().splitlines()[0] if description else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    hints = typing.get_type_hints(config_cls)
    defaults = config_cls()
    for f in dataclasses.fields(config_cls):
        flags = ["--" + f.name.replace("_", "-"), *f.metadata.get(ALIASES, ())]
        kwargs = _flag_form(f"{config_cls.__name__}.{f.name}", hints[f.name])
        kwargs["default"] = getattr(defaults, f.name)
        # argparse shows no empty help, so an undocumented flag gets its default as help
        kwargs["help"] = f.metadata.get(HELP) or "default: %(default)s"
        if f.name == "run_ID" and _picks_run_id(config_cls):
            kwargs["default"] = argparse.SUPPRESS  # absent: parse_config picks the next free
            kwargs["help"] = "run number (run_<ID> folder); default: the next free one"
        parser.add_argument(*flags, dest=f.name, **kwargs)
    return parser


def parse_config(
    config_cls: type[C], argv: Sequence[str] | None = None, *, description: str | None = None
) -> C:
    """The config the command line asks for: ``config_cls``'s defaults, changed by the flags.

    Args:
        config_cls: A dataclass whose fields all have defaults (see the module docstring).
        argv: The arguments; None reads ``sys.argv[1:]``.
        description: The program's description for ``--help`` (its first line).

    Returns:
        A ``config_cls`` instance. With ``log_dir`` and ``run_ID`` fields and no
        ``--run-ID``, ``run_ID`` is the next free run in ``log_dir``.

    Raises:
        SystemExit: A bad flag or value (argparse's message and exit status 2), or
            ``--help``.
    """
    args = vars(config_parser(config_cls, description=description).parse_args(argv))
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
    if _picks_run_id(config_cls) and "run_ID" not in values:
        from tdrl.logging import next_run_id

        values["run_ID"] = next_run_id(values["log_dir"])
    return config_cls(**values)


def _picks_run_id(config_cls: type) -> bool:
    """Whether ``--run-ID`` defaults to the next free run (``log_dir`` and ``run_ID`` fields)."""
    return {"log_dir", "run_ID"} <= {f.name for f in dataclasses.fields(config_cls)}


def train_and_log(
    config: RunConfig,
    train: Callable[[], Mapping[str, float]],
    *,
    name: str,
    label: str,
    score: str = "ReturnAverage",
) -> dict[str, float]:
    """Runs ``train`` inside the run's logger and logs a one-line summary.

    Opens ``tdrl.logging.logger_context(config.log_dir, config.run_ID, name, config)``
    (which saves the config to ``params.json``), calls ``train`` and logs, and prints,
    ``"{label}: {score} X after N steps, U updates in S s; logs in RUN_DIR"``.

    Args:
        config: The run's config (a dataclass with ``log_dir`` and ``run_ID``).
        train: Trains and returns the last logged row (a runner's ``train``).
        name: The experiment's name in ``params.json``.
        label: What ran, for the summary (``"PPO CartPole-v1"``).
        score: The row's entry to report (``"GameScoreAverage"`` for Atari); NaN when the
            row lacks it (no episode finished).

    Returns:
        The last logged row.
    """
    from tdrl.logging import logger_context

    with logger_context(config.log_dir, config.run_ID, name, config, echo=False) as logger:
        start = time.time()
        row = dict(train())
        logger.log(
            f"{label}: {score} {row.get(score, math.nan):.1f} after "
            f"{row['Diagnostics/CumSteps']:.0f} steps, {row['Diagnostics/CumUpdates']:.0f} "
            f"updates in {time.time() - start:.1f} s; logs in {logger.run_dir}",
            echo=True,
        )
    return row


def _flag_form(where: str, hint: Any) -> dict[str, Any]:
    """``add_argument`` keywords (``type``, ``nargs``, ``choices``, ``action``) for a type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if hint is int:
        return {"type": int_flag()}
    if hint is float:
        return {"type": float_flag()}
    if hint is str:
        return {"type": str}
    if origin is Literal and len({type(a) for a in args}) == 1:
        return {"type": type(args[0]), "choices": args}
    if origin is tuple and args and (len(set(args)) == 1 or args[1:] == (Ellipsis,)):
        item = _flag_form(where, args[0])
        if "action" not in item:
            return {**item, "nargs": "+" if args[-1] is Ellipsis else len(args)}
    if origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        inner = _flag_form(where, next(a for a in args if a is not type(None)))
        if set(inner) == {"type"}:
            metavar = f"{inner['type'].__name__.upper()}|none"
            return {"type": _or_none(inner["type"]), "metavar": metavar}
    raise TypeError(f"{where}: no command-line form for the type {hint!r}")


def int_flag(minimum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` for a whole number: ``64``, and rlpyt's ``1e6`` or ``64.0``.

    Args:
        minimum: The smallest value accepted (None: no bound).

    Returns:
        A converter named ``int`` that raises ``argparse.ArgumentTypeError`` (argparse then
        prints ``argument --flag: must be ..., got ...`` and exits with status 2) for text
        that is not a whole number or is below ``minimum``.
    """

    def parse(text: str) -> int:
        try:
            value: int | float = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"must be an int, got {text!r}") from None
        try:
            return check_int("value", value, minimum=minimum)
        except ArgumentError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix("value ")) from None

    parse.__name__ = "int"
    return parse


def float_flag(minimum: float | None = None) -> Callable[[str], float]:
    """An argparse ``type`` for a finite number (NaN and infinities are refused).

    Args:
        minimum: The smallest value accepted (None: no bound).

    Returns:
        A converter named ``float`` that raises ``argparse.ArgumentTypeError`` for text
        that is not a finite number or is below ``minimum``.
    """

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be a number >= {minimum}, got {text!r}")
        return value

    parse.__name__ = "float"
    return parse


def _or_none(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """``convert``, except that ``"none"`` (any case) gives None."""

    def parse(text: str) -> Any:
        return None if text.lower() == "none" else convert(text)

    parse.__name__ = f"{convert.__name__} or none"  # argparse's "invalid ... value" message
    return parse
