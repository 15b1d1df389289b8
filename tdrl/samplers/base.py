"""What every sampler provides (``Sampler``), and the pieces samplers share.

A sampler is built from an env factory and a batch shape, then:

* ``initialize(agent, *, seed, traj_info_kwargs)`` builds the envs, gives the agent the
  env's specs (``agent.initialize``), allocates the ``[T, B]`` sample buffer and starts the
  envs (decorrelated);
* ``obtain_samples(itr) -> (samples, traj_infos)`` returns a TensorDict of batch size
  ``[batch_T, batch_B]`` (dim 0 named ``"time"``, keys in ``tdrl.keys``) and the
  ``TrajInfo`` of every episode that ended during the batch;
* ``evaluate_agent(itr) -> traj_infos`` runs the agent in eval mode on separate envs and
  returns only completed episodes;
* ``shutdown()`` closes the envs (and stops any worker process);
* ``for samples in sampler:`` iterates like a TorchRL collector (``iterate``): the batches
  of iterations 0, 1, ... forever, each one's finished episodes in ``last_traj_infos``;
  ``update_policy_weights_()`` brings the acting agent's weights up to date.

An env factory may return gymnasium envs (stepped by ``tdrl.samplers.env_loop``) or
TorchRL envs, of batch size ``[]`` or ``[B']`` (stepped by ``tdrl.samplers.torchrl_loop``):
``tdrl.samplers.env_build.make_envs`` builds them, ``tdrl.samplers.env_setup.env_specs``
reads what the agent and the buffer need from one.
Every sampler checks its shared keyword arguments once, into a ``SamplerSettings``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from tensordict import TensorDict, TensorDictBase

from tdrl import keys
from tdrl._compat import TensorSpec
from tdrl.agents.base import Agent
from tdrl.envs.torchrl_env import Path, check_extra_keys
from tdrl.envs.traj_info import TrajInfo
from tdrl.keys import BatchSpec
from tdrl.utils.checks import (
    ArgumentError,
    check_bool,
    check_callable,
    check_mapping,
    check_positive_int,
)
from tdrl.utils.finite import check_agent_inputs_after


class Sampler(Protocol):
    """Structural type of every tdrl sampler (see the module docstring).

    ``agent`` is the agent that acts, set by ``initialize``; a runner may hand the sampler
    a copy of the same architecture instead (``AsyncRl`` does, so that sampling and
    optimising do not share weights mid-update). ``samples`` is the ``[T, B]`` buffer
    ``obtain_samples`` fills (valid after ``initialize``). ``settings`` are its checked
    arguments (the env factory and its keyword arguments, the batch shape, ...).
    ``last_traj_infos`` are the episodes that ended during the batch the sampler's
    iterator yielded last.
    """

    batch_spec: BatchSpec
    settings: SamplerSettings
    agent: Agent | None
    eval_n_envs: int
    samples: TensorDict
    last_traj_infos: list[TrajInfo]

    def initialize(
        self, agent: Agent, *, seed: int = 0, traj_info_kwargs: dict[str, Any] | None = None
    ) -> TensorDict:
        """Build the envs, initialise the agent, allocate the buffer; returns the buffer.

        Args:
            agent: the agent; receives the env's specs through ``agent.initialize``.
            seed: env ``b`` is seeded with ``seed + b``; eval env ``i`` with
                ``seed + 10_000 + i``.
            traj_info_kwargs: ``{"discount": gamma}`` for ``DiscountedReturn``.

        Returns:
            The (zeroed) sample buffer, as an example of what ``obtain_samples`` returns.
        """
        ...

    def obtain_samples(self, itr: int) -> tuple[TensorDict, list[TrajInfo]]:
        """One ``[T, B]`` batch and the episodes that ended during it."""
        ...

    def evaluate_agent(self, itr: int) -> list[TrajInfo]:
        """Completed evaluation episodes of the agent in eval mode."""
        ...

    def shutdown(self) -> None:
        """Close the envs and stop any worker process."""
        ...

    def __iter__(self) -> Iterator[TensorDict]:
        """The ``[T, B]`` batches of iterations 0, 1, ..., forever (``iterate``)."""
        ...

    def update_policy_weights_(self) -> None:
        """Make the acting agent's weights those of ``agent`` now (no-op where shared)."""
        ...


def iterate(sampler: Sampler) -> Iterator[TensorDict]:
    """Iterate over a sampler as over a TorchRL collector: ``for samples in sampler:``.

    For ``itr = 0, 1, ...`` (forever: break out of the loop, then ``shutdown``) it puts the
    agent in sample mode (``agent.sample_mode(itr)``, as the runners do), yields
    ``obtain_samples(itr)``'s ``[T, B]`` batch, and keeps that batch's finished episodes
    in ``sampler.last_traj_infos``. The batch is the sampler's buffer, overwritten by the
    next one: consume (or ``clone``) it inside the loop. Every sampler's ``__iter__``
    returns this generator.

    Raises:
        RuntimeError: the sampler is not initialized.
    """
    itr = 0
    while True:
        agent = sampler.agent
        if agent is None:
            raise RuntimeError("call initialize(agent, seed=...) before iterating a sampler")
        agent.sample_mode(itr)
        samples, sampler.last_traj_infos = sampler.obtain_samples(itr)
        yield samples
        itr += 1


@dataclass(frozen=True)
class SamplerSettings:
    """The checked keyword arguments every sampler shares (see ``SerialSampler`` for each).

    Build it with ``SamplerSettings.check(...)``, which validates every argument and names
    the first bad one.

    Attributes:
        env_fn: builds one env from ``**env_kwargs``.
        env_kwargs: keyword arguments of ``env_fn`` (a copy).
        batch_spec: ``(batch_T, batch_B)``.
        mid_batch_reset: reset finished envs at once (True) or before the next batch.
        max_decorrelation_steps: random start-up steps per env, in ``[0, max)``.
        eval_n_envs: envs for offline evaluation (0: none).
        eval_env_kwargs: ``env_kwargs`` of the evaluation envs.
        eval_max_steps: env steps per evaluation over all eval envs (None: unbounded).
        eval_max_trajectories: episodes after which evaluation stops (None: unbounded).
        traj_info_cls: per-episode record class.
        extra_keys: env keys recorded under ``("next", *key)``, as tuples of strings.
    """

    env_fn: Callable[..., Any]
    env_kwargs: dict[str, Any]
    batch_spec: BatchSpec
    mid_batch_reset: bool
    max_decorrelation_steps: int
    eval_n_envs: int
    eval_env_kwargs: dict[str, Any]
    eval_max_steps: int | None
    eval_max_trajectories: int | None
    traj_info_cls: type[TrajInfo]
    extra_keys: tuple[Path, ...]

    @classmethod
    def check(
        cls,
        env_fn: Callable[..., Any],
        env_kwargs: dict[str, Any] | None,
        *,
        batch_T: int,
        batch_B: int,
        mid_batch_reset: bool,
        max_decorrelation_steps: int,
        eval_n_envs: int,
        eval_env_kwargs: dict[str, Any] | None,
        eval_max_steps: int | None,
        eval_max_trajectories: int | None,
        traj_info_cls: type[TrajInfo],
        extra_keys: Sequence[str | tuple[str, ...]],
    ) -> SamplerSettings:
        """Validate a sampler's shared keyword arguments (same names and meaning).

        Raises:
            ArgumentError: (a ``ValueError`` and a ``TypeError``) naming the first bad
                argument; also when evaluation is unbounded (``eval_n_envs > 0`` without
                ``eval_max_steps`` or ``eval_max_trajectories``).
        """
        check_callable("env_fn", env_fn)
        env_kwargs = check_mapping("env_kwargs", env_kwargs)
        check_env_kwargs("env_kwargs", env_fn, env_kwargs)
        if eval_env_kwargs is not None:
            eval_env_kwargs = check_mapping("eval_env_kwargs", eval_env_kwargs)
            check_env_kwargs("eval_env_kwargs", env_fn, eval_env_kwargs)
        if not (isinstance(traj_info_cls, type) and issubclass(traj_info_cls, TrajInfo)):
            raise ArgumentError(
                f"traj_info_cls must be TrajInfo or a subclass of it, got {traj_info_cls!r}"
            )
        batch_spec = BatchSpec(
            check_positive_int("batch_T", batch_T), check_positive_int("batch_B", batch_B)
        )
        mid_batch_reset = check_bool("mid_batch_reset", mid_batch_reset)
        max_decorrelation_steps = check_positive_int(
            "max_decorrelation_steps", max_decorrelation_steps, 0
        )
        eval_n_envs = check_positive_int("eval_n_envs", eval_n_envs, 0)
        if eval_max_steps is not None:
            eval_max_steps = check_positive_int("eval_max_steps", eval_max_steps)
        if eval_max_trajectories is not None:
            eval_max_trajectories = check_positive_int(
                "eval_max_trajectories", eval_max_trajectories
            )
        if eval_n_envs > 0 and eval_max_steps is None and eval_max_trajectories is None:
            raise ArgumentError(
                "eval_n_envs > 0 needs eval_max_steps or eval_max_trajectories to bound evaluation"
            )
        return cls(
            env_fn=env_fn,
            env_kwargs=env_kwargs,
            batch_spec=batch_spec,
            mid_batch_reset=mid_batch_reset,
            max_decorrelation_steps=max_decorrelation_steps,
            eval_n_envs=eval_n_envs,
            eval_env_kwargs=dict(eval_env_kwargs if eval_env_kwargs is not None else env_kwargs),
            eval_max_steps=eval_max_steps,
            eval_max_trajectories=eval_max_trajectories,
            traj_info_cls=traj_info_cls,
            extra_keys=check_extra_keys(extra_keys),
        )

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any]) -> SamplerSettings:
        """``check`` on the shared arguments, picked by name from a sampler's arguments.

        A sampler's ``__init__`` declares every shared argument with its type and default
        and passes its ``locals()`` here, so that the names are forwarded in one place.

        Args:
            arguments: at least ``check``'s arguments, by name (others are ignored).
        """
        names = list(inspect.signature(cls.check).parameters)
        return cls.check(**{name: arguments[name] for name in names})


def build_samples_buffer(
    batch_spec: BatchSpec,
    observation_spec: TensorSpec,
    action_spec: TensorSpec,
    agent_info: Mapping[Any, Any],
    *,
    valid: bool = False,
    extras: Mapping[Path, TensorSpec] | None = None,
) -> TensorDict:
    """Allocate the zeroed ``[T, B]`` sample TensorDict for these specs.

    Args:
        batch_spec: ``(T, B)``.
        observation_spec: spec of one observation (a ``Composite`` for Dict spaces).
        action_spec: spec of one action.
        agent_info: an example of what the agent's ``step`` returns beside the action, with
            leading dim B; one ``[T, B, ...]`` entry is allocated per key. A recurrent
            agent's ``("next", "rnn_state")`` also allocates ``rnn_state`` and ``is_init``.
        valid: add a bool ``valid`` ``[T, B]`` entry (wait-reset collection).
        extras: specs (one env) of the extra keys, allocated under ``("next", *key)``.

    Returns:
        The buffer, with the time dim named ``"time"``.
    """
    T, B = batch_spec
    lead = (T, B)
    buf = TensorDict(
        {
            keys.OBSERVATION: observation_spec.zeros(lead),
            keys.PREV_ACTION: action_spec.zeros(lead),
            keys.PREV_REWARD: torch.zeros(T, B, 1),
            keys.ACTION: action_spec.zeros(lead),
            keys.NEXT: TensorDict(
                {
                    keys.OBSERVATION: observation_spec.zeros(lead),
                    keys.REWARD: torch.zeros(T, B, 1),
                    keys.DONE: torch.zeros(T, B, 1, dtype=torch.bool),
                    keys.TERMINATED: torch.zeros(T, B, 1, dtype=torch.bool),
                    keys.TRUNCATED: torch.zeros(T, B, 1, dtype=torch.bool),
                },
                batch_size=lead,
            ),
        },
        batch_size=lead,
    )
    for key, value in agent_info.items():
        if isinstance(value, TensorDictBase):  # a recurrent state
            buf.set(key, value.cpu().unsqueeze(0).expand(T, *value.batch_size).clone().zero_())
        else:
            buf.set(key, torch.zeros(T, *value.shape, dtype=value.dtype))
    if keys.NEXT_RNN_STATE in agent_info:
        buf.set(keys.RNN_STATE, buf.get(keys.NEXT_RNN_STATE).clone())
        buf.set(keys.IS_INIT, torch.zeros(T, B, dtype=torch.bool))
    if valid:
        buf.set(keys.VALID, torch.ones(T, B, dtype=torch.bool))
    for path, spec in (extras or {}).items():
        buf.set((keys.NEXT, *path), spec.zeros(lead))
    buf.names = [keys.TIME_DIM_NAME, None]
    return buf


def example_agent_info(
    agent: Agent, observation: Any, prev_action: torch.Tensor, prev_reward: torch.Tensor
) -> dict[Any, Any]:
    """What ``agent.step`` returns beside the action for these ``[B]`` inputs (CPU tensors).

    A recurrent agent steps from its zero state. Used to allocate sample buffers.
    """
    device = agent.device
    rnn_state = agent.initial_rnn_state(prev_reward.shape[0])
    inputs = (observation.to(device), prev_action.to(device), prev_reward.to(device))
    try:
        with torch.no_grad():
            _, info = agent.step(*inputs) if rnn_state is None else agent.step(*inputs, rnn_state)
    except (RuntimeError, ValueError) as err:  # NaN inputs fail deep inside torch
        check_agent_inputs_after(err, observation, prev_reward, "before the first batch")
        raise
    return info


def callable_name(fn: Any) -> str:
    """``fn``'s qualified name, for messages."""
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def check_env_kwargs(name: str, env_fn: Callable[..., Any], env_kwargs: dict[str, Any]) -> None:
    """Refuse ``env_kwargs`` that ``env_fn`` cannot be called with, naming both.

    Checked against ``env_fn``'s signature when Python can read one (a missing required
    argument, an unknown keyword); factories without a readable signature are called as
    they are.

    Raises:
        ArgumentError: ``env_fn(**env_kwargs)`` would fail to bind.
    """
    try:
        signature = inspect.signature(env_fn)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(**env_kwargs)
    except TypeError as e:
        raise ArgumentError(
            f"{name}={env_kwargs!r} does not fit env_fn {callable_name(env_fn)}: {e}"
        ) from None
