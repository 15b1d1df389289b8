"""Optimizers and gradient steps: what every algorithm's update is made of.

``make_optimizer`` builds one (fused Adam, tensor learning rates for compiled updates);
``clipped_step`` is the gradient step of every algorithm: zero the gradients, one backward
pass of the loss, a gradient-norm clip per network part (its norm before clipping returned
as ``grad_norm`` or ``grad_norm_<part>``), then each optimizer's step.
``optimizers_state`` / ``load_optimizers_state`` save and restore named optimizers for
snapshots (learning rates held in tensors saved as numbers, so eager and compiled runs
resume from each other's snapshots). ``stack_diagnostics`` turns an iteration's
per-update diagnostics into lists of floats with one synchronisation.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from tdrl.utils.checks import ArgumentError, NonFiniteError, check_callable, check_mapping

__all__ = [
    "check_finite_step",
    "check_optimizer",
    "clipped_step",
    "grad_norm_clip",
    "load_optimizer_state",
    "load_optimizers_state",
    "make_optimizer",
    "optimizers_state",
    "portable_optimizer_state",
    "stack_diagnostics",
]


def make_optimizer(
    optim_cls: Callable[..., torch.optim.Optimizer],
    params: Iterable[Any],
    learning_rate: float,
    optim_kwargs: Mapping[str, Any],
    *,
    compile_on: torch.device | None = None,
    tensor_lr: bool = False,
) -> torch.optim.Optimizer:
    """Build an optimizer over parameters (or parameter groups).

    Adam and AdamW use their fused kernel unless ``optim_kwargs`` chooses otherwise: the same
    arithmetic, one kernel per step instead of several per parameter.

    Args:
        optim_cls: the optimizer class.
        params: parameters or parameter groups.
        learning_rate: the step size.
        optim_kwargs: further arguments (they win over the choices made here).
        compile_on: the device of a compiled update (None: eager). On CUDA the optimizer is
            made ``capturable`` (its step counters on the device) when it can be, as CUDA
            graphs need.
        tensor_lr: hold the learning rate in a 0-dim tensor on ``compile_on`` (a schedule
            then fills it in place, and a compiled step is not recompiled for each value).
    """
    kwargs = dict(optim_kwargs)
    if optim_cls in (torch.optim.Adam, torch.optim.AdamW) and "foreach" not in kwargs:
        kwargs.setdefault("fused", True)
    lr: float | torch.Tensor = learning_rate
    if compile_on is not None:
        if compile_on.type == "cuda" and "capturable" in inspect.signature(optim_cls).parameters:
            kwargs.setdefault("capturable", True)
        if tensor_lr:
            lr = torch.tensor(float(learning_rate), device=compile_on)
    return optim_cls(params, lr=lr, **kwargs)


#: Options that depend on the device the optimizer will run on, left out of the trial.
_DEVICE_OPTIONS = ("capturable", "fused", "foreach", "differentiable")


def check_optimizer(
    optim_cls: Callable[..., torch.optim.Optimizer], optim_kwargs: Mapping[str, Any] | None
) -> tuple[Callable[..., torch.optim.Optimizer], dict[str, Any]]:
    """``(optim_cls, optim_kwargs as a dict)`` if the class takes them, else ``ArgumentError``.

    A trial optimizer over one CPU parameter is built and stepped once with a zero
    gradient, when the algorithm is built rather than at its first update (``betas=5``
    fails in Adam's step, not in its constructor). Device-dependent options
    (``capturable``, ``fused``, ``foreach``, ``differentiable``) are left out of the trial;
    ``lr`` is refused (the algorithm's learning-rate arguments set it).
    """
    optim_cls, kwargs = (
        check_callable("optim_cls", optim_cls),
        check_mapping("optim_kwargs", optim_kwargs),
    )
    param = torch.zeros(1, requires_grad=True)
    param.grad = torch.zeros(1)
    try:
        if "lr" in kwargs:
            raise ValueError("'lr' is set by the algorithm's learning-rate arguments")
        trial = {k: v for k, v in kwargs.items() if k not in _DEVICE_OPTIONS}
        optim_cls([param], lr=1e-3, **trial).step()
    except Exception as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        cls = getattr(optim_cls, "__name__", optim_cls)
        raise ArgumentError(f"optim_kwargs={kwargs!r} are not valid for {cls}: {reason}") from None
    return optim_cls, kwargs


def portable_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``optimizer.state_dict()`` with tensor learning rates saved as numbers.

    A compiled update keeps its learning rate in a tensor; the snapshot stays the same as
    an eager run's, so either kind of run resumes from it.
    """
    state = optimizer.state_dict()
    for group in state["param_groups"]:
        for key in ("lr", "initial_lr"):
            if isinstance(group.get(key), torch.Tensor):
                group[key] = float(group[key])
    return state


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``optimizer.load_state_dict(state)``, keeping tensor learning rates tensors.

    Where the optimizer holds its learning rate in a tensor (a compiled update), the saved
    value is filled into that same tensor.
    """
    held = [
        {k: g[k] for k in ("lr", "initial_lr") if isinstance(g.get(k), torch.Tensor)}
        for g in optimizer.param_groups
    ]
    optimizer.load_state_dict(state)
    for group, tensors in zip(optimizer.param_groups, held, strict=True):
        for key, tensor in tensors.items():
            tensor.fill_(float(group[key]))
            group[key] = tensor


def grad_norm_clip(parameters: Iterable[torch.Tensor], max_norm: float | None) -> torch.Tensor:
    """Clip the global gradient norm of ``parameters`` to ``max_norm`` (None: no clip).

    Returns:
        The norm before clipping (zero when no parameter has a gradient).
    """
    params = [p for p in parameters if p.grad is not None]
    if not params:  # nothing reached these parameters (e.g. an unused encoder)
        return torch.zeros(())
    if max_norm is None:  # one foreach kernel; it also compiles for lists of any length
        grads = [p.grad for p in params if p.grad is not None]
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    return torch.nn.utils.clip_grad_norm_(params, max_norm)


def stack_diagnostics(steps: Iterable[Mapping[str, torch.Tensor]]) -> dict[str, list[float]]:
    """Per-update diagnostics (scalar tensors) as lists of floats.

    One synchronisation for the whole iteration instead of one ``.item()`` per value. A
    name missing from some updates (an actor updated every second step) gets a list of the
    updates that have it.
    """
    collected: dict[str, list[torch.Tensor]] = {}
    for step in steps:
        for key, value in step.items():
            collected.setdefault(key, []).append(value)
    return {key: torch.stack(values).tolist() for key, values in collected.items()}


def check_finite_step(info: Mapping[str, torch.Tensor], checked: Sequence[str]) -> None:
    """Raise ``NonFiniteError`` unless a step's loss and gradient norms (``checked``) are finite.

    The loss is the sum of the terms, so a non-finite term makes it non-finite: one sum
    and one host read per step (none for meta tensors). The message names every scalar
    entry of ``info`` that is not finite.
    """
    total = info[checked[0]].detach()
    for key in checked[1:]:
        total = total + info[key]
    if total.device.type == "meta" or math.isfinite(total.item()):
        return
    scalars = {k: float(v) for k, v in info.items() if v.dim() == 0}
    bad = ", ".join(f"{k} = {v}" for k, v in scalars.items() if not math.isfinite(v))
    raise NonFiniteError(f"non-finite {bad}; the update was not applied")


def clipped_step(
    optimizers: Sequence[torch.optim.Optimizer],
    terms: Mapping[str, torch.Tensor],
    parts: Mapping[str, Iterable[torch.Tensor]],
    max_norm: float | None,
    *,
    loss: str = "loss",
) -> dict[str, torch.Tensor]:
    """One gradient step on ``terms[loss]``: the update skeleton of every algorithm.

    Zero the gradients of ``optimizers``, backward ``terms[loss]``, clip the gradient norm
    of each part's parameters to ``max_norm`` (None: measure only), step each optimizer.

    Args:
        optimizers: what steps (every parameter of ``parts`` belongs to one of them).
        terms: a ``loss`` output (loss terms with gradient and diagnostics).
        parts: parameters by part name; each part is clipped on its own and reported as
            ``grad_norm_<name>`` (``grad_norm`` for the name ``""``).
        max_norm: the gradient-norm clip of each part.
        loss: the entry of ``terms`` to differentiate.

    Returns:
        ``terms`` detached, and each part's gradient norm before clipping.

    Raises:
        NonFiniteError: a loss term or a gradient norm is NaN or infinite (eager steps:
            checked before any optimizer steps, so the parameters are unchanged).
    """
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    terms[loss].backward()
    info = {key: value.detach() for key, value in terms.items()}
    for name, params in parts.items():
        key = f"grad_norm_{name}" if name else "grad_norm"
        info[key] = grad_norm_clip(params, max_norm).detach()
    if not torch.compiler.is_compiling():  # a compiled step is checked by the runner
        check_finite_step(info, [loss, *(k for k in info if k.startswith("grad_norm"))])
    for optimizer in optimizers:
        optimizer.step()
    return info


def optimizers_state(optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, Any]:
    """``portable_optimizer_state`` of each named optimizer, under its name."""
    return {name: portable_optimizer_state(opt) for name, opt in optimizers.items()}


def load_optimizers_state(
    optimizers: Mapping[str, torch.optim.Optimizer], state: Mapping[str, Any]
) -> None:
    """Restore ``optimizers_state(optimizers)`` (``state`` may hold other entries too)."""
    for name, optimizer in optimizers.items():
        load_optimizer_state(optimizer, state[name])
