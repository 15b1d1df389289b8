"""tdrl agents as TorchRL policies: ``AgentPolicy``.

A tdrl agent's ``__call__(td)`` is its training forward (``Agent.forward``); it acts through
``step(observation, prev_action, prev_reward[, rnn_state]) -> (action, info)`` on plain
``[B]`` tensors. ``AgentPolicy`` wraps that call as a TensorDict module, so TorchRL's
``env.rollout(n, policy)`` and its collectors can drive any tdrl agent but PEARL's (which
acts with a task latent inferred from context it collected per task; ``tdrl.runners.MetaRl``
drives it). Each call:

* reads the observation: the entry ``observation`` when it is the env's only observation
  (a tensor, or a nested TensorDict for a ``Composite``), otherwise all the env's
  observation keys, handed to the agent as one TensorDict (or the keys named by
  ``observation_keys``); ``prev_action`` and ``prev_reward`` when the TensorDict has them,
  zeros otherwise (the null action and reward 0, as after a reset);
* reads a recurrent agent's state before the step from ``rnn_state`` (tdrl's key, a
  TensorDict of ``h`` and ``c``), zeros where it is absent or where ``is_init`` is True,
  and writes the state after the step under ``("next", "rnn_state")``, so that TorchRL's
  ``step_mdp`` carries it to the next step (TorchRL's LSTM convention);
* writes ``action`` in the env's format (a one-hot vector for a ``OneHot`` action spec,
  the agent's index otherwise; Box actions as the agent drew them, unclipped, as tdrl's
  samplers store them), the agent's info entries under their keys (``log_prob``,
  ``value``, ``logits``, ``q``, ...) and, for agents with a log-probability, the same
  value under TorchRL's ``action_log_prob`` (what its PPO loss reads);
* runs ``agent.step`` under ``no_grad`` in the agent's current mode (call
  ``agent.sample_mode(itr)`` or ``agent.eval_mode(itr)`` first), on the agent's device:
  the inputs are copied there and the outputs copied back to the device of the input.

``prev_action`` and ``prev_reward`` come from the env: ``tdrl.envs.PrevActionReward``
records each step's action and reward into the next observation. A recurrent agent's
state needs ``is_init`` (TorchRL's ``InitTracker``) and a ``TensorDictPrimer`` for
``rnn_state`` so that rollouts and collectors allocate and carry it
(``make_tensordict_primer``). ``prepare_env(env)`` appends whichever of these the env
lacks. Without ``PrevActionReward`` the agent sees the null action and reward 0 at every
step; without the primer a recurrent agent starts from the zero state at every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tensordict import NestedKey, TensorDictBase
from tensordict.nn import TensorDictModuleBase

from tdrl import keys
from tdrl._compat import (
    Categorical,
    Compose,
    Composite,
    EnvBase,
    InitTracker,
    OneHot,
    TensorDictPrimer,
    TensorSpec,
    Transform,
    TransformedEnv,
    Unbounded,
)
from tdrl.agents.base import Agent
from tdrl.agents.qpg.pearl_agent import PearlAgent
from tdrl.envs.torchrl_env import NOT_OBSERVED, observation_layout
from tdrl.envs.transforms import PrevActionReward
from tdrl.utils.checks import ArgumentError

#: TorchRL's key of the sampled action's log-probability (its PPO loss reads it).
ACTION_LOG_PROB = "action_log_prob"

#: The agent modes ``follow_mode`` sets, in the order of their codes.
MODES = ("sample", "train", "eval")


def policy_specs(
    env: EnvBase, observation_keys: Sequence[NestedKey] | None = None
) -> tuple[list[NestedKey], TensorSpec, TensorSpec]:
    """The observation keys, and the agent's observation and action specs, of one env.

    By default the agent observes what tdrl's samplers give it of the same env
    (``tdrl.envs.torchrl_env.observation_layout``), so an agent trained by a sampler acts
    in the env through ``AgentPolicy`` with the specs it was built for. Specs are per env (a
    batched env's leading dims removed). A ``OneHot`` action spec becomes the
    ``Categorical`` of its indices (what tdrl's discrete agents act with).

    Args:
        env: a TorchRL env.
        observation_keys: the keys the agent observes instead (their specs as declared).

    Returns:
        ``(observation keys, observation spec, action spec)``; the observation spec is the
        one entry's spec for a single key, else a ``Composite`` of the keys.

    Raises:
        ArgumentError: the env has no or several action keys, or an observation key is
            not in its observation spec.
    """
    if not isinstance(env, EnvBase):
        raise ArgumentError(f"env must be a TorchRL EnvBase, got {type(env).__name__}")
    index = (0,) * env.batch_dims
    if len(env.action_keys) != 1:
        raise ArgumentError(f"env must have one action key, got {env.action_keys}")
    action_spec = agent_action_spec(env.full_action_spec[env.action_keys[0]][index])
    if observation_keys is None:
        pairs, observation_spec = observation_layout(env)
        under_observation = all(batch != env_path for env_path, batch in pairs)
        found: list[NestedKey] = [keys.OBSERVATION] if under_observation else [p for p, _ in pairs]
        return found, observation_spec, action_spec
    spec = env.observation_spec[index]
    observation_keys = list(observation_keys)
    missing = [k for k in observation_keys if k not in spec.keys(True)]
    if missing or not observation_keys:
        leaves = [k for k in spec.keys(True, True) if _root(k) not in NOT_OBSERVED]
        raise ArgumentError(
            f"observation_keys {missing or observation_keys} are not observations of the env "
            f"(its observation keys: {leaves})"
        )
    if len(observation_keys) == 1:
        return observation_keys, spec[observation_keys[0]], action_spec
    observation_spec = Composite(shape=())
    for key in observation_keys:
        observation_spec[key] = spec[key]
    return observation_keys, observation_spec, action_spec


def agent_action_spec(action_spec: TensorSpec) -> TensorSpec:
    """The spec a tdrl agent acts in for an env's action spec (``OneHot`` -> indices)."""
    if isinstance(action_spec, OneHot):
        n = int(action_spec.space.n)
        return Categorical(n, shape=action_spec.shape[:-1], dtype=torch.int64)
    return action_spec


def _float32(x: Any) -> Any:
    """float64 observations (MuJoCo's) as float32, as tdrl's samplers store them."""
    if isinstance(x, TensorDictBase):
        return x.apply(_float32)
    return x.float() if x.dtype == torch.float64 else x


def _root(key: NestedKey) -> str:
    return key[0] if isinstance(key, tuple) else key


def _same_spec(a: TensorSpec, b: TensorSpec) -> bool:
    """Whether two specs have the same kind, keys, shapes and dtypes (bounds not compared)."""
    if isinstance(a, Composite) or isinstance(b, Composite):
        if not (isinstance(a, Composite) and isinstance(b, Composite)):
            return False
        leaves_a, leaves_b = set(a.keys(True, True)), set(b.keys(True, True))
        return leaves_a == leaves_b and all(_same_spec(a[k], b[k]) for k in leaves_a)
    same = type(a) is type(b) and a.shape == b.shape and a.dtype == b.dtype
    if same and isinstance(a, Categorical):
        return int(a.space.n) == int(b.space.n)
    return same


class AgentPolicy(TensorDictModuleBase):
    """A tdrl agent as a TorchRL policy (see the module docstring for keys and semantics).

    Given an env, the agent receives the env's specs (``agent.initialize``) when it has
    none yet, and is checked against them otherwise; without an env the agent must be
    initialised already, and observes ``observation``.

    Args:
        agent: the agent (any tdrl agent but ``PearlAgent``).
        env: the TorchRL env the policy will act in (None: the agent is initialised).
        observation_keys: the env keys the agent observes (None: ``observation`` when the
            env has it, else every observation key; see ``policy_specs``).
        log_prob_key: where the action's log-probability is also written, for TorchRL's
            losses (agents without one write nothing there).

    Raises:
        ArgumentError: (a ``ValueError`` and a ``TypeError``) ``agent`` is not a tdrl
            agent or is a ``PearlAgent``; no env and an uninitialised agent; the env's
            specs do not fit an initialised agent's.
        TypeError: the agent cannot act in the env's spaces (its own message).
    """

    def __init__(
        self,
        agent: Agent,
        env: EnvBase | None = None,
        *,
        observation_keys: Sequence[NestedKey] | None = None,
        log_prob_key: NestedKey = ACTION_LOG_PROB,
    ):
        super().__init__()
        if not isinstance(agent, Agent):
            raise ArgumentError(f"agent must be a tdrl Agent, got {type(agent).__name__}")
        if isinstance(agent, PearlAgent):
            raise ArgumentError(
                "PearlAgent acts with a task latent z inferred from the context it collected "
                "on each task; AgentPolicy cannot supply it (train PEARL with tdrl.runners.MetaRl)"
            )
        self.agent = agent
        if env is None:
            if agent.observation_spec is None or agent.action_spec is None:
                raise ArgumentError(
                    "agent is not initialised: pass the env (AgentPolicy(agent, env)) or call "
                    "agent.initialize(observation_spec, action_spec) first"
                )
            obs_keys = list(observation_keys or [keys.OBSERVATION])
            observation_spec, action_spec = agent.observation_spec, agent.action_spec
            env_action_spec = action_spec
        else:
            obs_keys, observation_spec, action_spec = policy_specs(env, observation_keys)
            env_action_spec = env.full_action_spec[env.action_keys[0]][(0,) * env.batch_dims]
            self._fit_agent(agent, env, observation_spec, action_spec)
        self.observation_keys = obs_keys
        self.action_spec = action_spec
        self.one_hot = isinstance(env_action_spec, OneHot)
        self.env_action_dtype = env_action_spec.dtype
        self.log_prob_key = log_prob_key
        self.recurrent = agent.recurrent
        rows = 1 if env is None else env.batch_size.numel()  # per-env epsilons: all envs
        info = self._example_info(observation_spec, rows)
        self.info_keys = list(info)
        self.has_log_prob = keys.LOG_PROB in info
        state_keys = [] if not self.recurrent else list(info[keys.NEXT_RNN_STATE].keys())
        self.in_keys = [*obs_keys, keys.PREV_ACTION, keys.PREV_REWARD]
        self.in_keys += [(keys.RNN_STATE, k) for k in state_keys]
        self.in_keys += [keys.IS_INIT] if self.recurrent else []
        self.out_keys = [keys.ACTION] + [k for k in self.info_keys if k != keys.NEXT_RNN_STATE]
        self.out_keys += [(*keys.NEXT_RNN_STATE, k) for k in state_keys]
        self.out_keys += [log_prob_key] if self.has_log_prob else []
        # (mode, itr) that every copy of the policy puts its agent in (``follow_mode``);
        # mode -1: leave the agent as it is. A buffer, so weight updates carry it to workers.
        self.register_buffer("mode_itr", torch.tensor([-1, 0]))
        self._applied = (-1, 0)

    @staticmethod
    def _fit_agent(
        agent: Agent, env: EnvBase, observation_spec: TensorSpec, action_spec: TensorSpec
    ) -> None:
        """Initialise ``agent`` with these specs, or check that it was with equal ones."""
        if agent.observation_spec is None or agent.action_spec is None:
            agent.initialize(observation_spec, action_spec)
            n_envs = env.batch_size.numel()
            agent.collector_initialize(n_envs, list(range(n_envs)))
            return
        for what, mine, theirs in (
            ("observation", agent.observation_spec, observation_spec),
            ("action", agent.action_spec, action_spec),
        ):
            if not _same_spec(mine, theirs):
                raise ArgumentError(
                    f"env's {what} spec does not fit the agent: the agent was initialised with "
                    f"{_describe(mine)}, the env gives {_describe(theirs)}"
                )

    def _example_info(self, observation_spec: TensorSpec, rows: int) -> dict[Any, Any]:
        """The agent's info for ``rows`` zero inputs (its draws leave the global RNG alone)."""
        device = self.agent.device
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            inputs = (
                observation_spec.zero((rows,)).to(device),
                self.action_spec.zero((rows,)).to(device),
                torch.zeros(rows, 1, device=device),
            )
            state = self.agent.initial_rnn_state(rows)
            _, info = self.agent.step(*inputs) if state is None else self.agent.step(*inputs, state)
        return info

    # ------------------------------------------------------------------ modes
    def follow_mode(self, mode: str, itr: int) -> None:
        """Make every copy of this policy put its agent in ``mode`` for iteration ``itr``.

        For copies in other processes (TorchRL's multi-process collectors): the setting is
        a buffer, so it travels with the weights (``update_policy_weights_``), and a copy
        calls ``agent.<mode>_mode(itr)`` at its next step after it changed; the epsilon
        schedule of ``DqnAgent`` or SAC's warm-up exploration then follow the runner's
        iterations there too. A policy on which it was never called leaves its agent's
        mode alone.

        Args:
            mode: ``"sample"``, ``"train"`` or ``"eval"`` (``agent.mode``).
            itr: the iteration passed to the agent's mode method.
        """
        if mode not in MODES:
            raise ArgumentError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode_itr.copy_(torch.tensor([MODES.index(mode), int(itr)]))

    def _apply_mode(self) -> None:
        code, itr = self.mode_itr.tolist()
        if (code, itr) != self._applied:
            self._applied = (code, itr)
            if code >= 0:
                agent = self.agent
                (agent.sample_mode, agent.train_mode, agent.eval_mode)[code](itr)

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Act for every row of ``tensordict`` (any batch size) and write the outputs in it."""
        self._apply_mode()
        batch = tensordict.batch_size
        n, dims = batch.numel(), len(batch)
        agent, device = self.agent, self.agent.device
        if len(self.observation_keys) == 1:
            observation = tensordict.get(self.observation_keys[0])
        else:
            observation = tensordict.select(*self.observation_keys)
        out_device = _device_of(observation)
        observation = _float32(observation.reshape(n, *observation.shape[dims:]).to(device))
        prev_action = tensordict.get(keys.PREV_ACTION, None)
        if prev_action is None:
            prev_action = self.action_spec.zero((n,)).to(device)
        else:
            prev_action = self.to_agent(prev_action.reshape(n, *prev_action.shape[dims:]))
            prev_action = prev_action.to(device)
        prev_reward = tensordict.get(keys.PREV_REWARD, None)
        if prev_reward is None:
            prev_reward = torch.zeros(n, 1, device=device)
        else:
            prev_reward = prev_reward.reshape(n, 1).to(device, torch.float32)
        if self.recurrent:
            action, info = agent.step(
                observation, prev_action, prev_reward, self._state(tensordict, n, dims)
            )
        else:
            action, info = agent.step(observation, prev_action, prev_reward)
        action = self.to_env(action)
        tensordict.set(keys.ACTION, _unflatten(action, batch).to(out_device))
        for key, value in info.items():
            tensordict.set(key, _unflatten(value, batch).to(out_device))
        if self.has_log_prob:
            tensordict.set(self.log_prob_key, tensordict.get(keys.LOG_PROB))
        return tensordict

    def _state(self, tensordict: TensorDictBase, n: int, dims: int) -> TensorDictBase:
        """The ``[n]`` state before the step: the stored one, zeros where absent or ``is_init``."""
        state = tensordict.get(keys.RNN_STATE, None)
        zero = self.agent.initial_rnn_state(n)
        if zero is None:
            raise RuntimeError("a recurrent agent's initial_rnn_state returned None")
        if state is None:
            return zero
        state = state.reshape(n).to(self.agent.device)
        is_init = tensordict.get(keys.IS_INIT, None)
        if is_init is None:
            return state
        reset = is_init.reshape(n).to(self.agent.device)
        return state.apply(
            lambda x, z: torch.where(reset.view(n, *[1] * (x.dim() - 1)), z, x), zero
        )

    def to_env(self, action: torch.Tensor) -> torch.Tensor:
        """The agent's actions in the env's format (one-hot for a ``OneHot`` spec)."""
        if self.one_hot:
            n = int(self.action_spec.space.n)
            return torch.nn.functional.one_hot(action, n).to(self.env_action_dtype)
        return action.to(self.env_action_dtype)

    def to_agent(self, action: torch.Tensor) -> torch.Tensor:
        """Env-format actions (e.g. ``prev_action``) in the agent's format (one-hot -> index)."""
        if self.one_hot:
            return action.argmax(-1)
        return action.to(self.action_spec.dtype)

    # ------------------------------------------------------------------ the env's side
    def make_tensordict_primer(self) -> TensorDictPrimer | None:
        """The primer of a recurrent agent's ``rnn_state`` (zeros at reset); None for FF agents.

        TorchRL's collectors find it (``auto_register_policy_transforms=True``) as they
        find an ``LSTMModule``'s.
        """
        if not self.recurrent:
            return None
        zero = self.agent.initial_rnn_state(1)
        assert zero is not None  # recurrent
        state = Composite(
            {k: Unbounded(shape=v.shape[1:], dtype=v.dtype) for k, v in zero.items()}, shape=()
        )
        return TensorDictPrimer(Composite({keys.RNN_STATE: state}, shape=()), expand_specs=True)

    def env_transforms(self, env: EnvBase) -> list[Transform]:
        """The transforms ``env`` lacks for this agent.

        ``PrevActionReward``, and for a recurrent agent ``InitTracker`` and the state primer
        (``make_tensordict_primer``), each unless the env has its entries already.
        """
        found = set(env.observation_spec.keys())
        needed: list[Transform] = []
        if keys.PREV_ACTION not in found or keys.PREV_REWARD not in found:
            needed.append(PrevActionReward())
        if self.recurrent and keys.IS_INIT not in found:
            needed.append(InitTracker())
        primer = self.make_tensordict_primer()
        if primer is not None and keys.RNN_STATE not in found:
            needed.append(primer)
        return needed

    def prepare_env(self, env: EnvBase) -> EnvBase:
        """``env`` with the transforms it lacks appended (``env_transforms``).

        ``env`` itself when it has them all; the env given is not modified (the result is a
        ``TransformedEnv`` over it).
        """
        needed = self.env_transforms(env)
        if not needed:
            return env
        return TransformedEnv(env, Compose(*needed))


def _unflatten(
    value: torch.Tensor | TensorDictBase, batch: torch.Size
) -> torch.Tensor | TensorDictBase:
    """``[n, ...]`` rows back to the input's batch size ``batch`` (``n = batch.numel()``)."""
    if isinstance(value, torch.Tensor):
        return value.reshape(batch + value.shape[1:])
    return value.reshape(batch)


def _device_of(value: torch.Tensor | TensorDictBase) -> torch.device | None:
    """The device of a tensor, or of a TensorDict's first leaf."""
    if isinstance(value, torch.Tensor):
        return value.device
    if value.device is not None:
        return value.device
    for leaf in value.values(True, True):
        return leaf.device
    return None


def _describe(spec: TensorSpec) -> str:
    """A short description of a spec for messages: its kind, shape and dtype."""
    if isinstance(spec, Composite):
        inner = ", ".join(f"{k}: {_describe(spec[k])}" for k in spec.keys(True, True))
        return f"Composite({inner})"
    n = f" n={int(spec.space.n)}" if isinstance(spec, Categorical) else ""
    return f"{type(spec).__name__}(shape={tuple(spec.shape)}, dtype={spec.dtype}{n})"
