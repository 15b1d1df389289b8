"""R2D1: recurrent replay DQN, rlpyt's non-distributed R2D2.

Kapturowski et al. 2019 (https://openreview.net/forum?id=r1lyTjAqYX). A replay batch holds
``N = batch_sequences`` sequences of ``L = warmup_T + sequence_length + n`` stored steps
(``SequenceReplayBuffer``) and the recurrent state before each sequence's first step. Per
sequence:

* **Burn-in.** The first ``warmup_T`` steps run through the online and the target network
  under ``no_grad`` from the stored state, reset to zeros exactly where an episode begins
  (``is_init``; rlpyt zeroed the state of a sequence with a ``done`` in its warm-up).
* **Training window** ``t = warmup_T .. warmup_T + sequence_length - 1``, with value rescaling
  ``h(x) = sign(x)(sqrt(|x| + 1) - 1) + eps x`` (``tdrl.utils.q_returns.value_rescale``)::

      R_t   = sum_{k<m} gamma^k r_{t+k}        (m <= n: the window stops at an episode end)
      a*    = argmax_a Q(s_{t+n}, a)           (argmax of Q_target without double_dqn)
      y_t   = h(R_t + [m == n, no end] gamma^n h^-1(Q_target(s_{t+n}, a*)))
      delta = y_t - Q(s_t, a_t)
      L     = sum_t,i w_i v_ti l(delta_ti) / sum_t,i v_ti,  l = 0.5 delta^2 (Huber: delta_clip)

  with importance weights ``w`` and valid steps ``v`` (``sequence_n_step_returns``): all but
  those whose window a time limit cut (no final observation to bootstrap from), the steps
  of an episode that begins inside the sequence included, as its state was reset exactly
  (rlpyt masked all steps after the first ``done``).
* **Priorities** over the valid steps: ``p = eta max_t |delta_t| + (1 - eta) mean_t |delta_t|``.
* **Input priorities** (rlpyt's ``compute_input_priorities``): each chunk of
  ``store_rnn_state_interval`` steps of a new sampler batch gets ``p`` of its TD errors
  from the recorded ``q`` (bootstrap ``max_a q``), moved back ``input_priority_shift``
  starts, to the sequence that trains on it; the buffer computes them at every append
  (its ``priority_fn``), ``AsyncRl``'s too. The TD errors use the loss's own target
  (bootstrap at ``t + n`` with ``gamma^n``), where rlpyt's bootstrap one step early without
  ``gamma^n`` and so disagree with rlpyt's own loss (docs/fidelity.md, section 4).

``R2D1`` derives from ``DQN`` (as rlpyt's does): set-up, optimizer, schedule, priorities
and state are DQN's, with ``batch_size = (warmup_T + sequence_length) * batch_sequences``
stored steps per update for the replay ratio and the runners' bookkeeping (rlpyt's), and
``batch_sequences`` sequences drawn per update. ``sequence_length`` and ``batch_sequences``
are rlpyt's ``batch_T`` and ``batch_B``, still accepted under those names (the sampler's
``[T, B]`` shape uses the same letters for something else).
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import torch
from tensordict import TensorDict, TensorDictBase

from tdrl import keys
from tdrl._compat import tensordict_from_trusted
from tdrl.agents.base import Agent
from tdrl.agents.dqn.r2d1_agent import R2d1Agent
from tdrl.algos.dqn.dqn import DQN
from tdrl.keys import BatchSpec
from tdrl.models.lstm import state_tensors
from tdrl.replays.sequence import SequenceReplayBuffer
from tdrl.replays.sequence_frame import SequenceFrameReplayBuffer
from tdrl.utils.checks import (
    ArgumentError,
    check_bool,
    check_int,
    check_mapping,
    check_optional_range,
    check_range,
)
from tdrl.utils.losses import huber
from tdrl.utils.q_returns import inv_value_rescale, sequence_n_step_returns, value_rescale
from tdrl.utils.returns import valid_mean


def sequence_priority(abs_delta: torch.Tensor, valid: torch.Tensor, eta: float) -> torch.Tensor:
    """``eta max_t |delta| + (1 - eta) mean_t |delta|`` over the valid steps (dim 0)."""
    masked = abs_delta * valid
    mean = masked.sum(0) / valid.sum(0).clamp_min(1.0)
    return eta * masked.max(0).values + (1.0 - eta) * mean


@dataclasses.dataclass(kw_only=True, eq=False)
class R2D1(DQN):
    """R2D1 with rlpyt's defaults (see the module docstring for the objective).

    Args:
        discount: gamma.
        sequence_length: trained steps per sequence (rlpyt's ``batch_T``, also accepted).
        batch_sequences: sequences per update (rlpyt's ``batch_B``, also accepted).
        warmup_T: burn-in steps per sequence, before the trained ones.
        store_rnn_state_interval: steps between stored states, where sequences start (0:
            none, sequences start anywhere from zeros); divides the sampler's ``batch_T``.
        min_steps_learn: env steps collected before the first update.
        delta_clip: Huber threshold (None: squared error).
        replay_size: replay capacity in steps.
        replay_ratio: stored steps replayed (burn-in included) per step collected.
        target_update_interval: updates between (hard) target updates.
        n_step_return: n of the n-step returns.
        learning_rate: optimizer step size.
        optim_cls: optimizer class.
        optim_kwargs: optimizer arguments (default for Adam: ``eps=1e-3``).
        clip_grad_norm: global gradient-norm clip (None: none).
        eps_steps: env steps over which epsilon anneals, starting at ``min_steps_learn``.
        double_dqn: pick the bootstrap action with the online network.
        prioritized_replay: sample sequences by priority.
        pri_alpha: priority exponent.
        pri_beta_init: initial importance-sampling exponent.
        pri_beta_final: final importance-sampling exponent.
        pri_beta_steps: env steps over which beta anneals, from ``min_steps_learn``.
        pri_eta: weight of the max in the sequence priority.
        default_priority: priority of sequences without one (default: ``delta_clip`` or 1).
        input_priorities: priorities for new data from the sampler's ``q`` (prioritized).
        input_priority_shift: starts an input priority moves back (default: ``warmup_T //
            store_rnn_state_interval``, to the sequence whose burn-in it covers).
        value_scale_eps: ``eps`` of the value rescaling (None: no rescaling).
        replay_storage: ``"memory"`` or ``"memmap"``.
        replay_scratch_dir: directory of memmap files.
        replay_device: where the replay buffer lives (None: the CPU).
        compile: each gradient step through ``torch.compile`` (the LSTM's reset cuts break
            the graph); results equal the eager step's up to rounding.
        batch_T: rlpyt's name of ``sequence_length`` (given, it wins).
        batch_B: rlpyt's name of ``batch_sequences`` (given, it wins).
    """

    priority_key = "priority"

    discount: float = 0.997
    sequence_length: int = 80
    batch_sequences: int = 64
    warmup_T: int = 40
    store_rnn_state_interval: int = 40
    min_steps_learn: int = 100_000
    delta_clip: float | None = None
    replay_ratio: float = 1.0
    target_update_interval: int = 2500
    n_step_return: int = 5
    learning_rate: float = 1e-4
    clip_grad_norm: float | None = 80.0
    double_dqn: bool = True
    prioritized_replay: bool = True
    pri_beta_init: float = 0.9
    pri_beta_final: float = 0.9
    pri_eta: float = 0.9
    input_priorities: bool = True
    input_priority_shift: int | None = None
    value_scale_eps: float | None = 1e-3
    batch_T: int | None = None
    batch_B: int | None = None
    # Set from the sequence shape, not arguments: hard target updates, and a "batch" of
    # every replayed step (burn-in included) for the replay ratio.
    batch_size: int = dataclasses.field(default=0, init=False)
    target_update_tau: float = dataclasses.field(default=1.0, init=False)

    def __post_init__(self) -> None:
        self.sequence_length = check_int(
            *(
                ("sequence_length", self.sequence_length)
                if self.batch_T is None
                else ("batch_T", self.batch_T)
            ),
            minimum=1,
        )
        self.batch_sequences = check_int(
            *(
                ("batch_sequences", self.batch_sequences)
                if self.batch_B is None
                else ("batch_B", self.batch_B)
            ),
            minimum=1,
        )
        self.batch_T, self.batch_B = None, None  # folded into the two above
        self.warmup_T = check_int("warmup_T", self.warmup_T, minimum=0)
        self.store_rnn_state_interval = check_int(
            "store_rnn_state_interval", self.store_rnn_state_interval, minimum=0
        )
        self.optim_kwargs = check_mapping("optim_kwargs", self.optim_kwargs)
        if self.optim_cls is torch.optim.Adam:
            self.optim_kwargs.setdefault("eps", 1e-3)
        self.batch_size = (self.sequence_length + self.warmup_T) * self.batch_sequences
        super().__post_init__()
        self.draw_size = self.batch_sequences
        self.pri_eta = check_range("pri_eta", self.pri_eta, 0.0, 1.0)
        self.input_priorities = check_bool("input_priorities", self.input_priorities)
        shift = self.input_priority_shift
        if shift is None:  # the start whose burn-in the chunk covers
            shift = self.warmup_T // max(self.store_rnn_state_interval, 1)
        self.input_priority_shift = check_int("input_priority_shift", shift, minimum=0)
        self.value_scale_eps = check_optional_range(
            "value_scale_eps", self.value_scale_eps, 0.0, 1.0
        )

    # ------------------------------------------------------------------ set-up
    def check_agent(self, agent: Agent) -> Any:
        """``agent`` if it is an ``R2d1Agent``, else a ``TypeError``."""
        if not isinstance(agent, R2d1Agent):
            raise TypeError(f"R2D1 needs an R2d1Agent, got {type(agent).__name__}")
        return agent

    def initialize(self, agent: Agent, *, n_itr: int, batch_spec: BatchSpec) -> None:
        """Check the sequence layout against the sampler, then ``DQN.initialize``.

        Raises:
            TypeError: ``agent`` is not an ``R2d1Agent``.
            ArgumentError: ``store_rnn_state_interval`` does not divide the sampler's
                ``batch_T``, or ``replay_size`` holds less than a sequence per env.
        """
        self.check_agent(agent)
        stride = max(self.store_rnn_state_interval, 1)
        if batch_spec.T % stride:
            raise ArgumentError(
                f"the sampler's batch_T={batch_spec.T} must be a multiple of "
                f"store_rnn_state_interval={self.store_rnn_state_interval}"
            )
        L = self.warmup_T + self.sequence_length + self.n_step_return
        size = self.replay.replay_size
        if size // batch_spec.B < L:
            raise ArgumentError(
                f"replay_size={size} holds {size // batch_spec.B} steps per env, fewer than "
                f"warmup_T + sequence_length + n_step_return = {L}"
            )
        super().initialize(agent, n_itr=n_itr, batch_spec=batch_spec)

    def make_replay_buffer(self, batch_spec: BatchSpec) -> Any:
        """Uniform or prioritized sequence replay; frame-based for uint8 frame stacks."""
        seed = int(torch.randint(2**31 - 1, ()).item())
        interval = self.store_rnn_state_interval
        size = self.replay.capacity(batch_spec)
        starts = SequenceReplayBuffer.start_capacity(
            size=size, batch_B=batch_spec.B, rnn_state_interval=interval
        )
        sampler = self.prioritized_sampler(starts, seed)
        buffer_cls = SequenceFrameReplayBuffer if self.frame_stacks() else SequenceReplayBuffer
        with_input = self.prioritized_replay and self.input_priorities
        return buffer_cls(
            size=size,
            batch_B=batch_spec.B,
            batch_T=self.warmup_T + self.sequence_length,
            n_step_return=self.n_step_return,
            rnn_state_interval=interval,
            input_priority_shift=cast(int, self.input_priority_shift),  # set by __post_init__
            priority_fn=self.sample_priorities if with_input else None,
            sampler=sampler,
            storage=self.replay.replay_storage,
            scratch_dir=self.replay.replay_scratch_dir,
            seed=seed,
            device=self.replay.replay_device,
        )

    # ------------------------------------------------------------------ the loss
    def _targets(
        self, steps: TensorDictBase, next_q: torch.Tensor, start: int, length: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``y`` and ``valid`` of steps ``start .. start + length - 1`` of ``[L, N]`` steps."""
        reward, done = steps.get(keys.NEXT_REWARD)[..., 0], steps.get(keys.NEXT_DONE)[..., 0]
        n, eps = self.n_step_return, self.value_scale_eps
        return_n, bootstrap, valid = sequence_n_step_returns(
            reward.to(next_q.dtype), done, steps.get(keys.NEXT_TERMINATED)[..., 0],
            n=n, discount=self.discount, start=start, length=length,
        )  # fmt: skip
        if eps is None:  # no value rescaling
            return return_n + bootstrap * self.discount**n * next_q, valid
        y = return_n + bootstrap * self.discount**n * inv_value_rescale(next_q, eps)
        return value_rescale(y, eps), valid

    def loss(self, batch: TensorDictBase) -> TensorDict:
        """R2D1 loss on a sequence replay batch (see the module docstring).

        Returns:
            ``loss`` with the diagnostics ``td_abs_err`` (mean over valid steps) and
            ``priority`` (``[N]``, the sequences' new priorities).
        """
        agent, wT, bT, n = self.agent, self.warmup_T, self.sequence_length, self.n_step_return
        seq = batch.get(keys.SEQUENCE)
        stored = batch.get(keys.RNN_STATE, None)
        online_state = target_state = state = None if stored is None else state_tensors(stored)
        if wT > 0:
            with torch.no_grad():
                _, online_state = agent.sequence_q(seq[:wT], state)
                _, target_state = agent.sequence_q(seq[:wT], state, target=True)
        rest = seq[wT:]  # the training window and the n steps after it
        q, _ = agent.sequence_q(rest, online_state)
        target_q, _ = agent.sequence_q(rest, target_state, target=True)
        q_a = q[:bT].gather(-1, rest.get(keys.ACTION)[:bT].long().unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():
            choose = q.detach() if self.double_dqn else target_q
            next_a = choose[n : n + bT].argmax(dim=-1, keepdim=True)
            y, valid = self._targets(seq, target_q[n : n + bT].gather(-1, next_a)[..., 0], wT, bT)
        delta = y - q_a
        loss = valid_mean(batch.get(keys.IS_WEIGHT)[None] * huber(delta, self.delta_clip), valid)
        abs_delta = self.abs_td(delta)
        priority = sequence_priority(abs_delta, valid, self.pri_eta)
        terms = {"loss": loss, "td_abs_err": valid_mean(abs_delta, valid), "priority": priority}
        return tensordict_from_trusted(terms, ())

    @torch.no_grad()
    def sample_priorities(self, samples: TensorDictBase) -> torch.Tensor:
        """Priorities ``[T // k, B]`` of a sampler batch's start rows, from its ``q``.

        The TD errors of the loss from the recorded Q-values (bootstrap ``max_a q``) for the
        steps whose window lies in the batch; each chunk of ``k = max(interval, 1)`` rows
        gets the priority of its valid steps (``default_priority`` without any).
        """
        q = samples.get(keys.Q).float()
        T, B = q.shape[:2]
        k, n = max(self.store_rnn_state_interval, 1), self.n_step_return
        out = torch.full((T // k, B), cast(float, self.default_priority))
        if n >= T:
            return out
        q_a = q[: T - n].gather(-1, samples.get(keys.ACTION)[: T - n].long()[..., None])[..., 0]
        y, valid = self._targets(samples, q[n:].max(dim=-1).values, 0, T - n)
        abs_delta, mask = torch.zeros(2, T, B)
        abs_delta[: T - n], mask[: T - n] = self.abs_td(y - q_a).cpu(), valid.cpu()
        chunks = (abs_delta.view(T // k, k, B).transpose(0, 1), mask.view(T // k, k, B))
        per_chunk = sequence_priority(chunks[0], chunks[1].transpose(0, 1), self.pri_eta)
        return torch.where(chunks[1].sum(1) > 0, per_chunk, out)

    def gradient_step(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """``DQN.gradient_step`` (R2D1's own entry point for ``torch.compile``'s cache)."""
        return DQN.gradient_step(self, batch)
