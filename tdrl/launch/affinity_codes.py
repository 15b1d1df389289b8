"""Affinity codes: a machine and its cut into run slots as a short string (rlpyt's format).

A code is pieces ``"{number}{abbreviation}"`` joined by ``_``, with an optional run-slot
prefix::

    "4cpu_0gpu_2cpr"          # 4 cores, no GPU, 2 cores per run: 2 run slots
    "1slt_4cpu_0gpu_2cpr"     # the same machine, run slot 1 (cores 2 and 3)

The launcher hands every run the code of its own slot; the run turns it back into an
affinity with :func:`affinity_from_code` and pins itself with
:func:`~tdrl.launch.apply_affinity`.

Abbreviations (argument of :func:`~tdrl.launch.make_affinity` in brackets): ``cpu``
(n_cpu_core), ``gpu`` (n_gpu), ``cxg`` (contexts_per_gpu), ``gpr`` (gpu_per_run), ``cpr``
(cpu_per_run), ``cpw`` (cpu_per_worker), ``res`` (cpu_reserved), ``hto``
(hyperthread_offset), ``ass`` (async_sample), ``sgr`` (sample_gpu_per_run), ``alt``
(alternating), ``saf`` (set_affinity) and ``slt`` (run slot).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from tdrl.launch.affinity import SWITCHES, MachineSpec, RunAffinity

#: Affinity argument name -> its three-letter abbreviation in a code (rlpyt's).
ABBREVIATIONS: dict[str, str] = {
    "n_cpu_core": "cpu",
    "n_gpu": "gpu",
    "contexts_per_gpu": "cxg",
    "gpu_per_run": "gpr",
    "cpu_per_run": "cpr",
    "cpu_per_worker": "cpw",
    "cpu_reserved": "res",
    "hyperthread_offset": "hto",
    "async_sample": "ass",
    "sample_gpu_per_run": "sgr",
    "alternating": "alt",
    "set_affinity": "saf",
}
RUN_SLOT_ABBREVIATION = "slt"
_ARGUMENTS = {abbr: name for name, abbr in ABBREVIATIONS.items()}
_PIECE = re.compile(r"^(\d+)([a-z]{3})$")


def encode_affinity(*, run_slot: int | None = None, **machine: Any) -> str:
    """Encodes a machine and its cut into run slots as an affinity code.

    The code names ``n_cpu_core`` and ``n_gpu`` always and every other argument only when
    it differs from its default, e.g. ``"4cpu_0gpu_2cpr"``.

    Args:
        run_slot: Prefix the code with this run slot (``"{run_slot}slt_..."``); None: no
            prefix.
        **machine: :func:`~tdrl.launch.make_affinity`'s arguments but ``run_slot`` (the
            fields of :class:`~tdrl.launch.affinity.MachineSpec`, with their defaults):
            ``n_cpu_core``, ``n_gpu``, ``contexts_per_gpu``, ``gpu_per_run``,
            ``cpu_per_run``, ``cpu_per_worker``, ``cpu_reserved``, ``hyperthread_offset``,
            ``async_sample``, ``sample_gpu_per_run``, ``alternating``, ``set_affinity``.

    Returns:
        The code; :func:`affinity_from_code` and :func:`decode_affinity` invert it.

    Raises:
        ValueError: An inconsistent combination (the message names the argument), or a
            ``run_slot`` outside ``[0, n_run_slots)``.
        TypeError: An argument that is not one of the machine's.
    """
    spec = MachineSpec(**machine)
    if run_slot is not None:
        spec.build(run_slot)  # validates the slot
    return _encode(spec, run_slot)


def decode_affinity(code: str) -> dict[str, Any]:
    """The keyword arguments of :func:`encode_affinity` that ``code`` stands for.

    Args:
        code: An affinity code, with or without a run-slot prefix.

    Returns:
        Every argument (defaults filled in), plus ``run_slot`` (None without a prefix).

    Raises:
        ValueError: A malformed piece, an unknown or repeated abbreviation, or an
            inconsistent combination.
    """
    run_slot, spec = _decode(code)
    return {**dataclasses.asdict(spec), "run_slot": run_slot}


def affinity_from_code(code: str) -> RunAffinity:
    """The affinity a (run-slot) code stands for; the inverse of :func:`encode_affinity`.

    Args:
        code: An affinity code; without a run-slot prefix, run slot 0 is meant.

    Returns:
        What :func:`~tdrl.launch.make_affinity` returns for the same arguments.

    Raises:
        ValueError: See :func:`decode_affinity`; also a run slot out of range.
    """
    run_slot, spec = _decode(code)
    return spec.build(0 if run_slot is None else run_slot)


def get_n_run_slots(code: str) -> int:
    """How many runs the machine of ``code`` runs at once (its run slot is ignored)."""
    return _decode(code)[1].n_run_slots


def remove_run_slot(code: str) -> tuple[int | None, str]:
    """Splits ``code`` into its run slot (None without one) and the code without it."""
    run_slot, spec = _decode(code)
    return run_slot, _encode(spec)


def prepend_run_slot(code: str, run_slot: int) -> str:
    """``code`` for run slot ``run_slot`` (replacing any slot it has).

    Raises:
        ValueError: ``run_slot`` out of range for the machine of ``code``.
    """
    spec = _decode(code)[1]
    spec.build(run_slot)
    return _encode(spec, run_slot)


def _encode(spec: MachineSpec, run_slot: int | None = None) -> str:
    """The code of ``spec``: the core and GPU counts, then every non-default argument."""
    pieces = [] if run_slot is None else [f"{run_slot}{RUN_SLOT_ABBREVIATION}"]
    defaults = MachineSpec()
    for f in dataclasses.fields(spec):
        value = int(getattr(spec, f.name))
        if f.name in ("n_cpu_core", "n_gpu") or value != int(getattr(defaults, f.name)):
            pieces.append(f"{value}{ABBREVIATIONS[f.name]}")
    return "_".join(pieces)


def _decode(code: str) -> tuple[int | None, MachineSpec]:
    """The run slot (None without a prefix) and machine of ``code``."""
    if not isinstance(code, str) or not code:
        raise ValueError(f"affinity code must be a non-empty string, got {code!r}")
    values: dict[str, int] = {}
    for piece in code.split("_"):
        match = _PIECE.match(piece)
        if match is None:
            raise ValueError(
                f"affinity code {code!r}: piece {piece!r} is not '<number><abbreviation>'"
            )
        number, abbr = int(match.group(1)), match.group(2)
        if abbr != RUN_SLOT_ABBREVIATION and abbr not in _ARGUMENTS:
            known = ", ".join([*ABBREVIATIONS.values(), RUN_SLOT_ABBREVIATION])
            raise ValueError(
                f"affinity code {code!r}: unknown abbreviation {abbr!r} (known: {known})"
            )
        if abbr in values:
            raise ValueError(f"affinity code {code!r}: {abbr!r} given twice")
        values[abbr] = number
    run_slot = values.pop(RUN_SLOT_ABBREVIATION, None)
    kwargs: dict[str, Any] = {_ARGUMENTS[abbr]: n for abbr, n in values.items()}
    for name in SWITCHES:
        if name in kwargs:
            if kwargs[name] not in (0, 1):
                raise ValueError(
                    f"affinity code {code!r}: {name} ({ABBREVIATIONS[name]}) must be 0 or 1"
                )
            kwargs[name] = bool(kwargs[name])
    return run_slot, MachineSpec(**kwargs)
