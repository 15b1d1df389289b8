"""What a sampler reads from its envs: the agent's specs, the extra keys, the buffer.

A sampler builds its envs with ``tdrl.samplers.env_build.make_envs`` (gymnasium envs, or TorchRL
envs of batch size ``[]`` or ``[B']``), then reads from one of them, with ``env_specs``,
what the agent and the ``[T, B]`` buffer need: the observation and action specs, the specs
of the extra keys and, for a TorchRL env, where each entry comes from
(``tdrl.envs.torchrl_env``). ``initialize_agent`` and ``allocate_samples`` finish the set-up
every sampler shares; ``tdrl.samplers.torchrl_loop.make_env_runner`` picks the env loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch
from tensordict import TensorDict

from tdrl._compat import EnvBase, TensorSpec, Unbounded
from tdrl.agents.base import Agent
from tdrl.envs.spaces import space_to_spec
from tdrl.envs.torchrl_env import Path, TorchEnvLayout, torchrl_layout
from tdrl.samplers.base import SamplerSettings, build_samples_buffer, example_agent_info
from tdrl.utils.checks import ArgumentError


@dataclass(frozen=True)
class EnvSpecs:
    """What a sampler reads from one env its factory built (``env_specs``).

    Attributes:
        observation: the agent's observation spec (one env).
        action: the agent's action spec.
        extras: spec of each extra key (one env), recorded under ``("next", *key)``.
        layout: a TorchRL env's layout (``tdrl.envs.torchrl_env``); None for gymnasium.
    """

    observation: TensorSpec
    action: TensorSpec
    extras: dict[Path, TensorSpec]
    layout: TorchEnvLayout | None

    @property
    def columns(self) -> int:
        """Buffer columns one env fills (``B'`` for a batched TorchRL env, else 1)."""
        return 1 if self.layout is None else self.layout.columns


def env_specs(env: gym.Env | EnvBase, extra_keys: Sequence[Path] = ()) -> EnvSpecs:
    """The specs a sampler needs from ``env`` (a gymnasium or a TorchRL env).

    A gymnasium env's spaces become specs (``space_to_spec``) and its extra keys are
    entries of each step's ``info``, stored as float32 numbers (``[1]``); a TorchRL env's
    specs are read by ``tdrl.envs.torchrl_env.torchrl_layout``.

    Raises:
        TypeError: a TorchRL spec tdrl cannot use, naming the key.
        ArgumentError: an extra key a TorchRL env does not declare.
    """
    if isinstance(env, EnvBase):
        layout = torchrl_layout(env, extra_keys=extra_keys)
        return EnvSpecs(layout.observation_spec, layout.action_spec, layout.extra_specs, layout)
    extras: dict[Path, TensorSpec] = {
        path: Unbounded(shape=(1,), dtype=torch.float32) for path in extra_keys
    }
    return EnvSpecs(
        space_to_spec(env.observation_space), space_to_spec(env.action_space), extras, None
    )


def initialize_agent(agent: Agent, specs: EnvSpecs, n_envs: int) -> None:
    """Give ``agent`` the env's specs and set it up to act for ``n_envs`` envs.

    Raises:
        ArgumentError: ``model_kwargs`` the agent's default model does not take (one line
            naming them, where the model's constructor raised a bare ``TypeError``).
    """
    try:
        agent.initialize(specs.observation, specs.action)
    except TypeError as err:
        kwargs = getattr(agent, "model_kwargs", None)
        if not kwargs or "unexpected keyword argument" not in str(err):
            raise
        raise ArgumentError(f"model_kwargs={kwargs!r} of {type(agent).__name__}: {err}") from None
    agent.collector_initialize(n_envs, list(range(n_envs)))


def allocate_samples(
    settings: SamplerSettings,
    agent: Agent,
    specs: EnvSpecs,
    inputs: tuple[Any, torch.Tensor, torch.Tensor],
) -> TensorDict:
    """The zeroed ``[T, B]`` sample buffer of a sampler, for what ``agent`` returns.

    Puts the agent in sample mode (iteration 0) and steps it once on ``inputs``
    (``(observation, prev_action, prev_reward)`` of the B envs, CPU tensors) to learn its
    info entries; adds ``valid`` for wait-reset collection (``mid_batch_reset=False``) and
    the extra keys of ``specs``.
    """
    agent.sample_mode(0)
    return build_samples_buffer(
        settings.batch_spec,
        specs.observation,
        specs.action,
        example_agent_info(agent, *inputs),
        valid=not settings.mid_batch_reset,
        extras=specs.extras,
    )
