"""Compiled updates: one switch between an eager and a compiled update step.

An algorithm with ``compile=True`` runs its update (loss, backward, gradient clipping,
optimizer step; the target update as its own compiled function) through ``torch.compile``:
with CUDA graphs (``mode="reduce-overhead"``) on CUDA, the default mode elsewhere. What
depends on Python state stays outside the compiled functions: the update counter and when
the target or the actor is due, priorities, schedules (learning rates live in tensors that
the schedule fills), so nothing is baked into a graph. Results equal the eager update's up
to float rounding (``tests/test_compiled.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["compile_mode", "compiled", "maybe_compiled"]


def compile_mode(device: torch.device) -> str | None:
    """The ``torch.compile`` mode of a compiled update on ``device``.

    ``"reduce-overhead"`` (CUDA graphs: one launch per graph instead of one per kernel) on
    CUDA, the default mode elsewhere (the CPU path exists so the semantics can be tested
    without a GPU). ``"max-autotune"`` is never chosen: it spent minutes autotuning small
    matrix products.
    """
    return "reduce-overhead" if device.type == "cuda" else None


@functools.cache
def _compiled_fn(fn: Callable[..., Any], mode: str | None) -> Callable[..., Any]:
    return torch.compile(fn, mode=mode)


def compiled(fn: Callable[..., Any], device: torch.device, *args: Any) -> Any:
    """``fn(*args)``, through ``torch.compile`` in ``compile_mode(device)``.

    ``fn`` is a plain function or an unbound method (``DQN.gradient_step``, called with the
    object first), so the compiled function is shared and nothing unpicklable is kept on
    the object. Compilation happens at the first call of each function (seconds to a minute;
    ``torch._dynamo`` recompiles for new shapes, objects or Python constants, up to its
    cache limit, so each algorithm class keeps an entry point of its own). With CUDA graphs
    each call starts a new graph step and the tensors it returns are cloned, since the
    graph's next replay reuses their memory; they can then be kept (diagnostics are stacked
    once per iteration).
    """
    mode = compile_mode(device)
    if mode != "reduce-overhead":
        return _compiled_fn(fn, mode)(*args)
    torch.compiler.cudagraph_mark_step_begin()
    out = _compiled_fn(fn, mode)(*args)
    if isinstance(out, dict):
        return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in out.items()}
    return out


def maybe_compiled(enabled: bool, fn: Callable[..., Any], device: torch.device, *args: Any) -> Any:
    """Run ``compiled(fn, device, *args)`` if ``enabled``, else plainly ``fn(*args)``.

    ``enabled`` is an algorithm's ``compile`` flag: the one switch between the eager and
    the compiled path of an update step.
    """
    return compiled(fn, device, *args) if enabled else fn(*args)
