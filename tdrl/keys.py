"""The data contract: canonical TensorDict keys and the batch shape every role shares.

Samples are TensorDicts of batch size ``[T, B]`` (time first, dim named ``"time"``). Each
row ``[t, b]`` holds the agent's inputs at step t, what it output, and under ``"next"`` what
the environment returned:

============================  ===========================================================
key                           meaning
============================  ===========================================================
``observation``               o_t (a tensor, or a nested TensorDict for Dict spaces)
``prev_action``               a_{t-1}; the null action (zeros) right after a reset
``prev_reward``               r_{t-1}; 0.0 right after a reset
``action``                    a_t
``("next", "observation")``   o_{t+1} (the final observation when the episode ended)
``("next", "reward")``        r_t
``("next", "done")``          terminated or truncated: the episode ended at this step
``("next", "terminated")``    a true terminal state: no bootstrapping from o_{t+1}
``("next", "truncated")``     cut by a time limit: o_{t+1} still bootstraps
``log_prob``                  log pi(a_t | o_t) under the sampling policy
``value``                     V(o_t) estimated by the sampling agent
``logits`` / ``loc`` ...      the action distribution's parameters (agent specific)
``rnn_state``                 a recurrent agent's state before step t (a TensorDict, e.g.
                              ``h`` and ``c`` of shape ``[layers, hidden]`` per row)
``("next", "rnn_state")``     its state after step t (what the next step starts from
                              unless the episode ended)
``is_init``                   step t starts an episode: the state was reset to zeros
============================  ===========================================================

Recurrent entries exist only in the batches of recurrent agents (``agent.recurrent``).

Algorithms add ``advantage`` and ``return`` (``value_target``) to a batch they process.

A replay batch (``ReplayBuffer.sample_batch``) is a flat ``[N]`` TensorDict with the agent
inputs and ``action`` at step t, under ``"next"`` the agent inputs to bootstrap from, and:

==================  ===========================================================
key                 meaning
==================  ===========================================================
``return_n``        discounted n-step return ``sum_{k<m} gamma^k r_{t+k}``
``discount_n``      bootstrap discount ``gamma^m``, 0 when the window hit a terminal state
``done_n``          the window ended at a terminal state
``steps_n``         m, the steps in the window (``<= n``)
``is_weight``       importance-sampling weight (ones for uniform replay)
``index``           flat storage index, for priority updates
==================  ===========================================================

A sequence replay batch (``SequenceReplayBuffer.sample_batch``) is a TensorDict of batch
size ``[]`` with ``sequence`` (a time-major ``[L, N]`` TensorDict of stored steps, the
keys above), ``rnn_state`` (the stored state at each sequence's first step, ``[N]``),
``is_weight`` and ``index`` (``[N]``, the sequence starts, for priority updates).

A meta-RL batch (PEARL's ``update``) is a TensorDict of batch size ``[tasks]`` with
``rl`` (a ``[tasks, n]`` replay batch of the keys above, from the tasks' RL buffers) and
``context`` (``[tasks, m]`` transitions of the same tasks, from their encoder buffers:
``observation``, ``action``, ``("next", "reward")`` and, where the encoder uses it,
``("next", "observation")``).

This module is the bottom of tdrl's import order: it imports nothing from tdrl, and every
role may import it.
"""

from __future__ import annotations

from typing import NamedTuple

OBSERVATION = "observation"
ACTION = "action"
PREV_ACTION = "prev_action"
PREV_REWARD = "prev_reward"
NEXT = "next"
REWARD = "reward"
DONE = "done"
TERMINATED = "terminated"
TRUNCATED = "truncated"
NEXT_OBSERVATION = (NEXT, OBSERVATION)
NEXT_REWARD = (NEXT, REWARD)
NEXT_DONE = (NEXT, DONE)
NEXT_TERMINATED = (NEXT, TERMINATED)
NEXT_TRUNCATED = (NEXT, TRUNCATED)

LOG_PROB = "log_prob"
VALUE = "value"
LOGITS = "logits"
LOC = "loc"
SCALE = "scale"
LOG_STD = "log_std"
Q = "q"
ADVANTAGE = "advantage"
RETURN = "return"
VALID = "valid"

TIME_DIM_NAME = "time"

#: Keys every agent receives (rlpyt's ``AgentInputs``).
AGENT_INPUTS = (OBSERVATION, PREV_ACTION, PREV_REWARD)

#: Recurrent agents (see the module docstring).
RNN_STATE = "rnn_state"
NEXT_RNN_STATE = (NEXT, RNN_STATE)
IS_INIT = "is_init"

# Replay batches (see the module docstring).
RETURN_N = "return_n"
DISCOUNT_N = "discount_n"
DONE_N = "done_n"
STEPS_N = "steps_n"
IS_WEIGHT = "is_weight"
INDEX = "index"
SEQUENCE = "sequence"

# Meta-RL batches (see the module docstring).
META_RL = "rl"
CONTEXT = "context"


class BatchSpec(NamedTuple):
    """Shape of one sampler batch: ``T`` time steps of ``B`` envs."""

    T: int
    B: int

    @property
    def size(self) -> int:
        """Samples in one batch, ``T * B``."""
        return self.T * self.B
