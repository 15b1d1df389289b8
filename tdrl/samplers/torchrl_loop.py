"""The env loop over TorchRL envs, and the choice between it and the gymnasium loop.

``TorchEnvRunner`` is ``EnvRunner``'s counterpart (same calls, same ``[T, B]`` columns, the
carried inputs, statistics and recurrent state of ``EnvLoop``) for TorchRL envs (``EnvBase``).
It steps them with TorchRL's own calls, so transforms act as in a TorchRL rollout:

* mid-batch reset: ``env.step_and_maybe_reset(td)``, which resets finished envs (a batched
  env partially, through its ``"_reset"`` mask) while ``("next", ...)`` keeps the final
  step (a hand-made shortcut for envs of batch size ``[]`` was measured slower than
  TorchRL 0.14.1's own call, 130 vs 123 us a ``GymEnv`` step, and removed);
* wait reset: ``env.step(td)`` then the env's ``step_mdp``; a finished column is frozen for the rest
  of the batch (an env of batch size ``[]`` is not stepped; a batched env gets TorchRL's
  partial-step mask ``"_step"``) and reset before the next batch by ``env.maybe_reset``.

Each env fills its columns (``tdrl.envs.torchrl_env``: one for batch size ``[]``, ``B'``
for ``[B']``). Per env and time step the loop sets the action under the env's action key
(continuous actions clipped to the spec's bounds, moved to the env's device), steps, and
copies the observation leaves, reward, done flags and extra keys of ``("next", ...)`` into
the buffer's columns, one tensor copy per entry. Env ``b`` is seeded with
``env.set_seed(seed + env_ranks[b])``; a batched env gets its first column's seed, and
TorchRL's ``set_seed`` seeds its sub-envs in turn from it. Decorrelation takes random
actions from the action spec, drawn from that seed.

A ``TrajInfo`` subclass's ``step_info`` and ``terminate`` receive the env's
``("next", ...)`` entries of that step (of that column, for a batched env) as a dict of
tensors (nested as in the env), where the gymnasium loop passes the step's ``info``.

``make_env_runner`` builds the right runner for the envs a sampler built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from tdrl import keys
from tdrl._compat import EnvBase
from tdrl.envs.torchrl_env import Path, TorchEnvLayout
from tdrl.envs.traj_info import TrajInfo
from tdrl.samplers.env_build import close_env
from tdrl.samplers.env_loop import EnvLoop, EnvRunner
from tdrl.samplers.env_setup import EnvSpecs


def make_env_runner(
    envs: list[Any],
    specs: EnvSpecs,
    *,
    env_ranks: Sequence[int],
    seed: int,
    traj_info_cls: type[TrajInfo],
    discount: float,
    mid_batch_reset: bool = True,
) -> EnvLoop:
    """The env loop for ``envs``: ``EnvRunner`` (gymnasium) or ``TorchEnvRunner`` (TorchRL).

    Args:
        envs: what ``tdrl.samplers.env_build.make_envs`` built.
        specs: their specs (``tdrl.samplers.base.env_specs``); a TorchRL layout picks the
            TorchRL loop.
        env_ranks: each column's index among all the sampler's envs.
        seed: base seed.
        traj_info_cls: per-episode record class.
        discount: for ``TrajInfo.DiscountedReturn``.
        mid_batch_reset: see ``EnvLoop``.

    The extra keys of ``specs`` are recorded where the buffer the runner is bound to has
    them (evaluation buffers do not).
    """
    common: dict[str, Any] = {
        "env_ranks": env_ranks,
        "seed": seed,
        "traj_info_cls": traj_info_cls,
        "discount": discount,
        "mid_batch_reset": mid_batch_reset,
        "extra_keys": tuple(specs.extras),
    }
    if specs.layout is None:
        return EnvRunner(
            envs, observation_spec=specs.observation, action_spec=specs.action, **common
        )
    return TorchEnvRunner(envs, layout=specs.layout, **common)


class TorchEnvRunner(EnvLoop):
    """Steps TorchRL envs into their columns of a ``[T, B]`` buffer (module docstring).

    Args:
        envs: the envs, each of ``layout.columns`` columns.
        layout: where each buffer entry comes from (``tdrl.envs.torchrl_env``).
        env_ranks: each column's index among all the sampler's envs.
        seed: base seed.
        traj_info_cls: per-episode record class.
        discount: for ``TrajInfo.DiscountedReturn``.
        mid_batch_reset: see ``EnvLoop``.
        extra_keys: keys recorded under ``("next", *key)`` (where the buffer has them).
    """

    def __init__(
        self,
        envs: list[EnvBase],
        *,
        layout: TorchEnvLayout,
        env_ranks: Sequence[int],
        seed: int,
        traj_info_cls: type[TrajInfo],
        discount: float,
        mid_batch_reset: bool = True,
        extra_keys: Sequence[Path] = (),
    ):
        c = layout.columns
        super().__init__(
            c * len(envs),
            env_ranks=env_ranks,
            seed=seed,
            observation_spec=layout.observation_spec,
            action_spec=layout.action_spec,
            traj_info_cls=traj_info_cls,
            discount=discount,
            mid_batch_reset=mid_batch_reset,
            extra_keys=extra_keys,
        )
        self.envs, self.layout = envs, layout
        self.cols = [slice(i * c, (i + 1) * c) for i in range(len(envs))]
        env_shape = tuple(layout.env_action_shape)
        self.action_shape = (c, *env_shape) if layout.batch_dims else env_shape
        self.reshape_action = env_shape != tuple(layout.action_spec.shape)
        self.join = torch.cat if layout.batch_dims else torch.stack
        self.carried: list[TensorDictBase] = []
        obs = self.obs.tensors
        self.obs_carry = [obs if not sub else obs.get(sub) for _, sub in layout.observation_keys]
        self.needs_info = traj_info_cls.terminate is not TrajInfo.terminate
        first = layout.done_key or layout.terminated_key
        self.done_keys = [first] + [
            k for k in (layout.terminated_key, layout.truncated_key) if k not in (None, first)
        ]

    # --------------------------------------------------------------------------- set-up
    def start(self, max_decorrelation_steps: int) -> None:
        """Seed and reset every env, then decorrelate it.

        Env ``i`` takes ``[0, max_decorrelation_steps)`` random steps (a number drawn from
        its first column's seed), so that episodes do not end in lockstep; those episodes
        are not reported, the one in progress keeps counting.
        """
        self.carried = []
        for i, env in enumerate(self.envs):
            seed = self.seed + self.env_ranks[self.cols[i].start]
            env.set_seed(seed)
            td = env.reset()
            n_steps = int(np.random.default_rng(seed).random() * max_decorrelation_steps)
            cuda = [env.device] if env.device is not None and env.device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(seed)
                for _ in range(n_steps):
                    td = self._random_step(i, env, td)
            self.carried.append(td)
            self._carry_obs(i, td)

    def _random_step(self, i: int, env: EnvBase, td: TensorDictBase) -> TensorDictBase:
        """One decorrelation step of env ``i`` with a random action; the next input."""
        layout, cols = self.layout, self.cols[i]
        action = env.full_action_spec[layout.action_key].rand()
        td.set(layout.action_key, action)
        out, td = env.step_and_maybe_reset(td)
        nxt = out.get(keys.NEXT)
        reward = nxt.get(layout.reward_key).reshape(-1).cpu().numpy()
        ended = self._ended(nxt).reshape(-1).cpu().numpy()
        stored = action.reshape(layout.columns, *self.action_spec.shape).cpu().numpy()
        for j, b in enumerate(range(cols.start, cols.stop)):
            if ended[j]:
                self.traj.reset_one(b)
                self.np_prev_action[b] = self.null_action
                self.np_prev_reward[b] = 0.0
            else:
                self.traj.step_one(b, float(reward[j]))
                self.np_prev_action[b] = stored[j]
                self.np_prev_reward[b] = reward[j]
        return td

    def _ended(self, nxt: TensorDictBase) -> torch.Tensor:
        """Whether each column's episode ended, from a ``("next", ...)`` TensorDict."""
        ended = nxt.get(self.done_keys[0])
        for key in self.done_keys[1:]:
            ended = ended | nxt.get(key)
        return ended

    def _carry_obs(self, i: int, td: TensorDictBase) -> None:
        """Keep env ``i``'s observation in ``td`` as the input of its next step."""
        cols = self.cols[i]
        for (key, _), dst in zip(self.layout.observation_keys, self.obs_carry, strict=True):
            dst[cols].copy_(td.get(key))

    def restart(self) -> None:
        """Start a fresh episode in every env (``env.reset()``, generators continued).

        The episodes in progress are dropped unreported, and the carried previous action
        and reward are the null action and 0.
        """
        for i, env in enumerate(self.envs):
            self.carried[i] = env.reset()
            self._carry_obs(i, self.carried[i])
        for b in range(len(self.waiting)):
            self.traj.reset_one(b)
        self._all_restarted()

    def bind(self, samples: TensorDict) -> None:
        """``EnvLoop.bind``, plus tensor views of row ``t``'s results, per time step."""
        super().bind(samples)
        T = samples.shape[0]
        layout = self.layout
        next_obs = samples.get(keys.NEXT_OBSERVATION)
        leaves = [next_obs if not sub else next_obs.get(sub) for _, sub in layout.observation_keys]
        self.t_next_obs = [[x[t] for x in leaves] for t in range(T)]
        self.t_reward = [samples.get(keys.NEXT_REWARD)[t] for t in range(T)]
        self.t_terminated = [samples.get(keys.NEXT_TERMINATED)[t] for t in range(T)]
        self.t_truncated = [samples.get(keys.NEXT_TRUNCATED)[t] for t in range(T)]
        self.t_extras = [[x[t] for _, x in self.extras] for t in range(T)]
        self.extra_env_keys = [path for path, _ in self.extras]
        actions = samples.get(keys.ACTION)
        self.t_action = [actions[t] for t in range(T)]

    # ------------------------------------------------------------------------- stepping
    def begin_batch(self) -> None:
        """Wait-reset: reset (``env.maybe_reset``) the envs that finished last batch."""
        if self.mid_batch_reset or not self.waiting.any():
            return
        for i, env in enumerate(self.envs):
            cols = self.cols[i]
            mask = self.waiting[cols]
            if not mask.any():
                continue
            td = self.carried[i]
            flag = torch.as_tensor(mask if self.layout.batch_dims else mask[0], device=env.device)
            for n, key in enumerate(self.done_keys):
                shape = td.get(key).shape
                td.set(
                    key, flag.reshape(shape) if n == 0 else torch.zeros_like(flag).reshape(shape)
                )
            self.carried[i] = td = env.maybe_reset(td)
            td.pop("_step", None)
            self._carry_obs(i, td)
        for b in np.flatnonzero(self.waiting):
            self.np_prev_action[b] = self.null_action
            self.np_prev_reward[b] = 0.0
            self._reset_state(b)
        self.waiting[:] = False

    def step_envs(self, t: int) -> list[TrajInfo]:
        """Step every env with ``action[t]`` and record the results in row ``t``.

        Each env steps in turn; then each entry of row ``t`` is written with one copy of
        all the envs' values (stacked), not one per env.

        Returns:
            The episodes that ended at this step.
        """
        layout, waiting = self.layout, self.waiting
        actions = self.t_action[t]
        if layout.action_low is not None:
            actions = torch.clamp(actions, layout.action_low, layout.action_high)
        env_actions = self._env_actions(actions)
        if self.np_valid is not None:
            self.np_valid[t] = ~waiting
        frozen = waiting.copy() if not self.mid_batch_reset else None
        nexts: list[TensorDictBase | None] = []
        for i, env in enumerate(self.envs):
            td = self.carried[i]
            if frozen is None:
                td.set(layout.action_key, env_actions[i])
                out, self.carried[i] = env.step_and_maybe_reset(td)
            else:  # wait reset: frozen columns are not stepped
                skip = frozen[self.cols[i]]
                if skip.all():
                    nexts.append(None)
                    continue
                td.set(layout.action_key, env_actions[i])
                if skip.any():
                    td.set("_step", torch.as_tensor(~skip, device=env.device))
                out = env.step(td)
                # TorchRL puts the mask back into a batched env's output: drop it, or it
                # would freeze the same columns at the next step too.
                out.pop("_step", None)
                self.carried[i] = env._step_mdp(out)  # TorchRL's own step_mdp
                self.carried[i].pop("_step", None)
            nexts.append(out.get(keys.NEXT))
        self._write_results(t, nexts)
        ended_now = self.np_terminated[t] | self.np_truncated[t]
        if frozen is None and ended_now.any():  # their next inputs come from a reset
            for i in np.unique(np.flatnonzero(ended_now) // self.layout.columns):
                self._carry_obs(int(i), self.carried[i])
        if frozen is not None:
            self._write_frozen(t, frozen)
            ended_now &= ~frozen
        ended: list[tuple[int, Any]] = []
        if ended_now.any() or self.traj.needs_info:
            ended = self._episode_ends(nexts, ended_now, frozen)
        return self.finish_step(t, ended, frozen)

    def _env_actions(self, actions: torch.Tensor) -> list[torch.Tensor]:
        """Each env's actions (views of row ``t``), shaped and placed as the env takes them."""
        layout = self.layout
        parts = actions.split(layout.columns) if layout.batch_dims else actions.unbind(0)
        if self.reshape_action:
            parts = [a.reshape(self.action_shape) for a in parts]
        if layout.device.type != "cpu":
            parts = [a.to(layout.device, non_blocking=True) for a in parts]
        return list(parts)

    def _write_results(self, t: int, nexts: list[TensorDictBase | None]) -> None:
        """Copy the envs' ``("next", ...)`` results into row ``t``; carry the observation.

        The carried observation is the next one; ``step_envs`` corrects it for the envs
        that were reset.
        """
        layout, join = self.layout, self.join
        ref = next((n for n in nexts if n is not None), None)
        if ref is None:  # every env frozen (wait reset)
            return

        def gather(key: Path) -> torch.Tensor:
            value = ref.get(key)
            if len(nexts) == 1 and layout.batch_dims:  # one batched env: no joined copy
                return value
            return join([value.new_zeros(()).expand_as(value) if n is None else n.get(key)
                         for n in nexts])  # fmt: skip

        for (key, _), dst in zip(layout.observation_keys, self.t_next_obs[t], strict=True):
            dst.copy_(gather(key))
        for key, dst in zip(self.extra_env_keys, self.t_extras[t], strict=True):
            dst.copy_(gather(key))
        dst = self.t_reward[t]
        dst.copy_(gather(layout.reward_key).reshape(dst.shape))
        term, trunc = self.t_terminated[t], self.t_truncated[t]
        done = None
        if layout.done_key is not None and None in (layout.terminated_key, layout.truncated_key):
            done = gather(layout.done_key).reshape(term.shape)
        if layout.terminated_key is not None:
            term.copy_(gather(layout.terminated_key).reshape(term.shape))
        else:
            term.copy_(done)
        if layout.truncated_key is not None:
            trunc.copy_(gather(layout.truncated_key).reshape(trunc.shape))
        elif done is not None:
            trunc.copy_(done.cpu() & ~term)
        else:
            trunc.zero_()
        for src, dst in zip(self.t_next_obs[t], self.obs_carry, strict=True):
            dst.copy_(src)  # the next input, but where an episode ended (``step_envs``)

    def _write_frozen(self, t: int, frozen: np.ndarray) -> None:
        """Wait-reset: the rows of frozen columns hold zeros, ``terminated`` and ``done``."""
        if not frozen.any():
            return
        index = torch.as_tensor(frozen)
        for dst in [*self.t_next_obs[t], *self.t_extras[t], self.t_reward[t], *self.obs_carry]:
            dst[index] = 0
        self.t_terminated[t][index] = True
        self.t_truncated[t][index] = False

    def _episode_ends(
        self, nexts: list[TensorDictBase | None], ended: np.ndarray, frozen: np.ndarray | None
    ) -> list[tuple[int, Any]]:
        """``(column, info)`` of the episodes that ended; in wait reset they wait from now.

        ``info`` holds the column's ``("next", ...)`` entries (a dict of tensors) where the
        ``TrajInfo`` class reads it (``step_info``, ``terminate``), else it is empty;
        ``step_info`` is called here.
        """
        traj, c = self.traj, self.layout.columns
        batched = self.layout.batch_dims > 0
        found = []
        if traj.needs_info:  # step_info sees every column at every step
            columns: Any = range(len(ended))
        else:  # only the ended ones matter: no Python work per column otherwise
            columns = np.flatnonzero(ended if frozen is None else ended & ~frozen).tolist()
        for b in columns:
            if frozen is not None and frozen[b]:
                continue
            info: Any = {}
            if traj.needs_info or self.needs_info:
                nxt = nexts[b // c]
                assert nxt is not None  # only frozen envs have none, and they are skipped
                info = (nxt[b % c] if batched else nxt).to_dict()
            if traj.needs_info:
                traj.step_info(b, info)
            if ended[b]:
                found.append((b, info))
                if not self.mid_batch_reset:
                    self.waiting[b] = True
                    for leaf in self.obs_carry:
                        leaf[b] = 0
        return found

    def close(self) -> None:
        """Close every env."""
        for env in self.envs:
            close_env(env)
