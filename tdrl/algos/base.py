"""What every algorithm provides to the runners, and what algorithms share.

An algorithm never sees envs or samplers: it receives TensorDicts. Two contracts:

* ``Algorithm`` (every algorithm): ``initialize(agent, *, n_itr, batch_spec)`` binds the
  agent and builds optimizers and schedules; ``loss(batch) -> TensorDict`` is **pure** (it
  reads the batch, changes neither the batch nor any parameter, and returns the total
  ``loss`` with gradient, its named ``loss_*`` terms and detached diagnostics);
  ``optimize_agent(itr, samples)`` runs one iteration's updates and returns the
  diagnostics as lists of floats; ``state_dict()`` / ``load_state_dict()`` hold optimizer
  and schedule state for snapshots; ``optimizers()`` lists what it steps (``SyncRl``
  synchronises every parameter there); ``discount``, ``update_counter`` and
  ``batch_size`` are read by runners and samplers.
* ``ReplayAlgorithm`` (DQN family, DDPG, TD3, SAC, SAC_V) adds the replay buffer and the
  update schedule the asynchronous runner drives: ``update(batch)`` is one gradient update
  on a replay batch (``loss`` plus optimizer step, priorities and target updates), and
  ``optimize_agent(itr, None)`` replays without appending (the caller appended).

Diagnostics have one name everywhere (``DIAGNOSTICS``); the runner logs each as
``<name>Average``, ``<name>Std``, ... with no per-algorithm code.

Shared functions: ``make_optimizer``, ``grad_norm_clip``, ``stack_diagnostics``,
``make_replay_buffer`` and ``replay_updates`` (the off-policy schedule), ``to_device`` and
``compiled`` (the opt-in compiled updates).

Devices. An algorithm trains on ``agent.device`` (the runner places the agent before
``initialize``, which creates the optimizers and every tensor the algorithm trains there).
On-policy algorithms move the sampler's CPU batch there once per batch (``to_device``);
replay algorithms append CPU batches and draw each minibatch onto that device
(``ReplayBuffer.sample_batch(..., device=...)``: gathered into pinned memory and copied
asynchronously when the buffer is on the CPU and the agent on CUDA; no copy at all with
``replay_device`` on the agent's device).

Compiled updates (``compile=True``). The update (loss, backward, gradient clipping,
optimizer step; the target update as its own compiled function) runs through
``torch.compile``: with CUDA graphs (``mode="reduce-overhead"``) on CUDA, the default mode
elsewhere. What depends on Python state stays outside the compiled functions: the update
counter and when the target or the actor is due, priorities, schedules (learning rates
live in tensors that the schedule fills), so nothing is baked into a graph. Results equal
the eager update's up to float rounding (``tests/test_compiled.py``).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from tensordict import TensorDict, TensorDictBase

from tdrl import keys
from tdrl.agents.base import Agent
from tdrl.keys import BatchSpec
from tdrl.replays import FrameReplayBuffer, ReplayBuffer
from tdrl.replays.base import ReplayConfig, ReplaySampler
from tdrl.utils.tensor import to_device

__all__ = [
    "DIAGNOSTICS",
    "Algorithm",
    "ReplayAlgorithm",
    "compile_mode",
    "compiled",
    "detached_diagnostics",
    "grad_norm_clip",
    "load_optimizer_state",
    "make_optimizer",
    "make_replay_buffer",
    "param_group",
    "portable_optimizer_state",
    "replay_updates",
    "stack_diagnostics",
    "to_device",
]

#: The diagnostic vocabulary: every name an algorithm may return from ``loss`` /
#: ``update`` / ``optimize_agent``, and what it means. A test keeps the algorithms to it.
DIAGNOSTICS: dict[str, str] = {
    "loss": "the total objective of an update (the sum of its loss_* terms)",
    "loss_pi": "policy term: PG surrogate, or the actor loss of DDPG/TD3/SAC/SAC_V",
    "loss_value": "value-function term of A2C/PPO, c_v * E[0.5 (V - R)^2]",
    "loss_entropy": "entropy-bonus term of A2C/PPO, -c_e * E[H]",
    "loss_q": "critic (Bellman) term of DDPG/TD3/SAC/SAC_V",
    "loss_v": "state-value term of SAC_V",
    "loss_alpha": "temperature term of SAC",
    "loss_kl": "PEARL's encoder term, kl_lambda * KL(q(z | c) || N(0, I)) over tasks",
    "grad_norm": "global gradient norm before clipping (one optimizer)",
    "grad_norm_pi": "gradient norm of the policy (actor) before clipping",
    "grad_norm_q": "gradient norm of the critics before clipping",
    "grad_norm_v": "gradient norm of the value network before clipping",
    "grad_norm_context": "gradient norm of PEARL's context encoder before clipping",
    "entropy": "mean entropy of the policy",
    "perplexity": "exp(entropy)",
    "clip_fraction": "fraction of PPO ratios outside [1 - eps, 1 + eps]",
    "approx_kl": "estimate of KL(pi_old || pi), E[(rho - 1) - log rho]",
    "td_abs_err": "mean absolute TD error (C51: KL to the projected target), as prioritized",
    "priority": "mean new priority of the replayed sequences (R2D1)",
    "q_mean": "mean Q-value of the replayed actions",
    "v_mean": "mean state value",
    "log_pi": "mean log-probability of fresh policy actions",
    "pi_log_std": "mean log standard deviation of the policy",
    "alpha": "entropy temperature",
    "z_mean": "mean of PEARL's posterior means over tasks and latent dims",
    "z_var": "mean of PEARL's posterior variances over tasks and latent dims",
}


@runtime_checkable
class Algorithm(Protocol):
    """Structural type of every tdrl algorithm (see the module docstring)."""

    discount: float
    update_counter: int
    batch_size: int

    def initialize(self, agent: Agent, *, n_itr: int, batch_spec: BatchSpec) -> None:
        """Bind the agent; build optimizers and schedules over ``n_itr`` iterations."""
        ...

    def loss(self, batch: TensorDictBase) -> TensorDict:
        """Pure loss: ``loss``, its ``loss_*`` terms and detached diagnostics."""
        ...

    def optimize_agent(self, itr: int, samples: TensorDictBase) -> dict[str, list[float]]:
        """One iteration's updates on the sampler's ``[T, B]`` batch; diagnostics as lists."""
        ...

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """Every optimizer the algorithm steps (what it trains, agent or not)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Optimizer and schedule state, for snapshots."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""
        ...


@runtime_checkable
class ReplayAlgorithm(Algorithm, Protocol):
    """An ``Algorithm`` that learns from a replay buffer (see the module docstring).

    ``replay_lock`` is None unless a runner that appends from another thread
    (``AsyncRl``) sets a lock there for the run; each append and each draw-and-update then
    holds it.
    """

    replay: ReplayConfig
    replay_buffer: ReplayBuffer | None
    updates_per_optimize: int
    min_itr_learn: int
    replay_lock: contextlib.AbstractContextManager[Any] | None

    def update(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """One gradient update on a replay batch; detached diagnostics (tensors)."""
        ...

    def optimize_agent(self, itr: int, samples: TensorDictBase | None) -> dict[str, list[float]]:
        """Append ``samples`` (None: already appended), then replay once learning started."""
        ...


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
        if compile_on.type == "cuda" and _accepts(optim_cls, "capturable"):
            kwargs.setdefault("capturable", True)
        if tensor_lr:
            lr = torch.tensor(float(learning_rate), device=compile_on)
    return optim_cls(params, lr=lr, **kwargs)


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn``'s signature has a parameter ``name``."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


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
    cache limit). With CUDA graphs each call starts a new graph step and the tensors it
    returns are cloned, since the graph's next replay reuses their memory; they can then be
    kept (diagnostics are stacked once per iteration).
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


class TargetAgent(Protocol):
    """An agent with target networks (``DqnAgent``, ``DdpgAgent``, ``SacAgent``)."""

    def target_pairs(self) -> tuple[list[torch.Tensor], ...]:
        """The target and online tensors, paired (built once)."""
        ...

    def update_target(self, tau: float) -> None:
        """``target <- tau * online + (1 - tau) * target``."""
        ...


def update_targets(
    agent: TargetAgent, tau: float, *, compiled_on: bool, device: torch.device
) -> None:
    """The agent's Polyak target update, compiled when ``compiled_on`` (like the step)."""
    if compiled_on:
        agent.target_pairs()  # built before tracing: one compilation
    maybe_compiled(compiled_on, type(agent).update_target, device, agent, tau)


def param_group(optimizer: torch.optim.Optimizer, name: str) -> dict[str, Any]:
    """The parameter group of ``optimizer`` whose ``"name"`` entry is ``name``.

    Raises:
        KeyError: no such group (the message lists the names there are).
    """
    for group in optimizer.param_groups:
        if group.get("name") == name:
            return group
    names = [g.get("name") for g in optimizer.param_groups]
    raise KeyError(f"no parameter group {name!r}; groups: {names}")


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


def detached_diagnostics(terms: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every entry of a ``loss`` output (or an update's terms), detached."""
    return {key: value.detach() for key, value in terms.items()}


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


def make_replay_buffer(
    config: ReplayConfig,
    batch_spec: BatchSpec,
    *,
    discount: float,
    sampler: ReplaySampler | None = None,
    frames: bool = False,
    seed: int | None = None,
) -> ReplayBuffer:
    """The replay buffer of an off-policy algorithm.

    Args:
        config: the algorithm's replay settings.
        batch_spec: the sampler's batch shape (the buffer keeps ``B`` columns).
        discount: gamma of the n-step returns.
        sampler: index sampler over ``config.capacity(batch_spec)`` entries (None:
            uniform, seeded with ``seed``).
        frames: store each frame of ``[C, H, W]`` frame stacks once (``FrameReplayBuffer``).
        seed: seed of the default uniform sampler (None: drawn from torch's generator, so a
            seeded run replays the same minibatches).
    """
    buffer_cls = FrameReplayBuffer if frames else ReplayBuffer
    return buffer_cls(
        size=config.capacity(batch_spec),
        batch_B=batch_spec.B,
        discount=discount,
        n_step_return=config.n_step_return,
        sampler=sampler,
        storage=config.replay_storage,
        scratch_dir=config.replay_scratch_dir,
        seed=int(torch.randint(2**31 - 1, ()).item()) if seed is None else seed,
        device=config.replay_device,
    )


def replay_updates(
    algo: ReplayAlgorithm,
    itr: int,
    samples: TensorDictBase | None,
    *,
    device: torch.device | None = None,
    draw: int | None = None,
) -> dict[str, list[float]]:
    """The replay schedule of the off-policy algorithms.

    Append the sampler's batch (``None``: the caller stored it, as ``AsyncRl`` does), then,
    from ``algo.min_itr_learn`` on and once the buffer holds a complete n-step window, make
    ``algo.updates_per_optimize`` calls of ``algo.update`` on minibatches of ``draw`` items
    (default ``algo.batch_size`` transitions; R2D1 draws ``batch_B`` sequences), each
    drawn onto ``device`` (the agent's; None: where the buffer is). When
    ``algo.replay_lock`` is set, each append and each draw-and-update holds it, so appends
    from another thread land between updates.

    Returns:
        The updates' diagnostics as lists (``{}`` when no update was made).

    Raises:
        ValueError: ``samples`` came from wait-reset collection (it has a ``valid`` mask):
            replay stores every transition.
    """
    lock = algo.replay_lock or contextlib.nullcontext()
    buffer = algo.replay_buffer
    if buffer is None:
        raise RuntimeError(f"call {type(algo).__name__}.initialize before optimize_agent")
    if samples is not None:
        if samples.get(keys.VALID, None) is not None:
            raise ValueError(
                f"{type(algo).__name__} stores every transition of a batch; wait-reset "
                "collection (mid_batch_reset=False) is for on-policy algorithms"
            )
        with lock:
            buffer.append_samples(samples)
    if itr < algo.min_itr_learn or len(buffer) == 0:
        return {}
    steps, n = [], algo.batch_size if draw is None else draw
    for _ in range(algo.updates_per_optimize):
        with lock:
            steps.append(algo.update(buffer.sample_batch(n, device=device)))
    return stack_diagnostics(steps)
