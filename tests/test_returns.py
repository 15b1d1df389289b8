"""``tdrl.utils.returns`` against plain reference loops (rlpyt semantics).

The references below are written element by element: ``delta_t = r_t + gamma * (1 -
terminated_t) * V(o_{t+1}) - V(o_t)``, accumulation cut where ``done_t``, and a step cut by
a time limit (``done`` without ``terminated``) still bootstraps from ``next_value``.
"""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from tdrl.utils.returns import (
    discount_return,
    generalized_advantage_estimate,
    valid_from_done,
    valid_mean,
)

T, B = 7, 5
DISCOUNTS = (0.0, 0.9, 0.99, 1.0)
LAMBDAS = (0.0, 0.5, 0.95, 1.0)
DONE_PATTERNS = (
    "none",
    "random",
    "all_done",
    "done_at_last_step",
    "truncation_only",
    "termination_at_t0",
)


def reference_gae(reward, value, next_value, done, terminated, discount, gae_lambda):
    advantage = torch.zeros(T, B)
    for b in range(B):
        running = 0.0
        for t in reversed(range(T)):
            not_term = 0.0 if terminated[t, b] else 1.0
            not_done = 0.0 if done[t, b] else 1.0
            delta = reward[t, b] + discount * not_term * next_value[t, b] - value[t, b]
            running = delta + discount * gae_lambda * not_done * running
            advantage[t, b] = running
    return advantage, advantage + value


def reference_discount_return(reward, done, terminated, next_value, discount):
    return_ = torch.zeros(T, B)
    for b in range(B):
        running = 0.0
        for t in reversed(range(T)):
            if t == T - 1 or done[t, b]:  # the trajectory is cut here: bootstrap
                running = 0.0 if terminated[t, b] else float(next_value[t, b])
            running = reward[t, b] + discount * running
            return_[t, b] = running
    return return_


def make_inputs(pattern: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    reward = torch.randn(T, B, generator=g)
    value = torch.randn(T, B, generator=g)
    next_value = torch.randn(T, B, generator=g)
    coin = torch.rand(T, B, generator=g) < 0.5
    done = torch.zeros(T, B, dtype=torch.bool)
    terminated = torch.zeros(T, B, dtype=torch.bool)
    if pattern == "random":
        done = torch.rand(T, B, generator=g) < 0.1
        done[2, 1] = done[4, 3] = True  # at least a few ends, whatever the draw
        terminated = done & coin
        terminated[2, 1], terminated[4, 3] = True, False
    elif pattern == "all_done":
        done[:] = True
        terminated = coin.clone()
    elif pattern == "done_at_last_step":
        done[-1] = terminated[-1] = True
    elif pattern == "truncation_only":
        done = torch.rand(T, B, generator=g) < 0.3
        done[3] = True
    elif pattern == "termination_at_t0":
        done[0] = terminated[0] = True
    else:
        assert pattern == "none"
    assert not (terminated & ~done).any()
    # Within a trajectory V(o_{t+1}) is the next step's V(o_t), as in sampled data; where
    # an episode ends it is the value of the final observation, unrelated to value[t + 1].
    same_traj = ~done[:-1]
    next_value[:-1][same_traj] = value[1:][same_traj]
    return reward, value, next_value, done, terminated


def gae_case(discount: float, gae_lambda: float, pattern: str):
    # gamma * lambda == 0 takes tdrl's one-step path (TorchRL's vectorised GAE cannot).
    return pytest.param(discount, gae_lambda, pattern)


@pytest.mark.parametrize(
    ("discount", "gae_lambda", "pattern"),
    [gae_case(d, lam, p) for d in DISCOUNTS for lam in LAMBDAS for p in DONE_PATTERNS],
)
def test_gae_matches_reference_loop(discount, gae_lambda, pattern):
    reward, value, next_value, done, terminated = make_inputs(pattern)
    advantage, return_ = generalized_advantage_estimate(
        reward, value, next_value, done, terminated, discount=discount, gae_lambda=gae_lambda
    )
    ref_adv, ref_ret = reference_gae(
        reward, value, next_value, done, terminated, discount, gae_lambda
    )
    assert advantage.shape == return_.shape == (T, B)
    assert_close(advantage, ref_adv, atol=1e-5, rtol=0)
    assert_close(return_, ref_ret, atol=1e-5, rtol=0)


@pytest.mark.parametrize("pattern", DONE_PATTERNS)
@pytest.mark.parametrize("discount", DISCOUNTS)
def test_discount_return_matches_reference_loop(discount, pattern):
    reward, _, next_value, done, terminated = make_inputs(pattern, seed=1)
    return_ = discount_return(reward, done, terminated, next_value, discount=discount)
    ref = reference_discount_return(reward, done, terminated, next_value, discount)
    assert return_.shape == (T, B)
    assert_close(return_, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("discount", "gae_lambda", "pattern"),
    [gae_case(d, 1.0, p) for d in DISCOUNTS for p in DONE_PATTERNS],
)
def test_gae_lambda_one_return_is_discount_return(discount, gae_lambda, pattern):
    reward, value, next_value, done, terminated = make_inputs(pattern, seed=2)
    return_ = discount_return(reward, done, terminated, next_value, discount=discount)
    _, gae_return = generalized_advantage_estimate(
        reward, value, next_value, done, terminated, discount=discount, gae_lambda=gae_lambda
    )
    assert_close(gae_return, return_, atol=1e-5, rtol=0)


def test_truncation_bootstraps_and_termination_does_not():
    """A hand-checked case: one env, three steps, cut after step 0."""
    reward = torch.tensor([[1.0], [2.0], [3.0]])
    next_value = torch.tensor([[10.0], [20.0], [30.0]])
    done = torch.tensor([[True], [False], [False]])
    truncated = discount_return(reward, done, torch.zeros_like(done), next_value, discount=0.5)
    assert_close(truncated, torch.tensor([[1.0 + 0.5 * 10.0], [2.0 + 0.5 * 18.0], [18.0]]))
    terminated = discount_return(reward, done, done, next_value, discount=0.5)
    assert_close(terminated, torch.tensor([[1.0], [11.0], [18.0]]))


@pytest.mark.parametrize(
    ("done", "expected"),
    [
        ([[0, 0], [1, 0], [0, 1], [0, 0]], [[1, 1], [1, 1], [0, 1], [0, 0]]),
        ([[1], [0], [1]], [[1], [0], [0]]),  # done at t=0: only the first step is valid
        ([[0], [0], [1]], [[1], [1], [1]]),  # done at the last step: all valid
        ([[0], [0], [0]], [[1], [1], [1]]),
        ([[1], [1], [1]], [[1], [0], [0]]),
    ],
)
def test_valid_from_done(done, expected):
    expected = torch.tensor(expected, dtype=torch.float32)
    for d in (torch.tensor(done, dtype=torch.bool), torch.tensor(done, dtype=torch.float32)):
        valid = valid_from_done(d)
        assert valid.dtype == torch.float32
        assert_close(valid, expected)


def test_valid_mean():
    x = torch.tensor([[1.0, 2.0], [3.0, 40.0]])
    assert_close(valid_mean(x), torch.tensor(11.5))
    assert_close(valid_mean(x, torch.tensor([[1.0, 1.0], [1.0, 0.0]])), torch.tensor(2.0))
    assert_close(valid_mean(x, torch.tensor([[0.0, 0.0], [0.0, 1.0]])), torch.tensor(40.0))
    # No valid entry: zero, not NaN.
    assert_close(valid_mean(x, torch.zeros(2, 2)), torch.tensor(0.0))
