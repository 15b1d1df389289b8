"""PEARL learns to adapt on point-robot, where a context-free SAC cannot (slow).

``example_12.py``'s default run (80 train / 20 test tasks, 52 iterations of 200 updates,
120k env steps) is trained twice on the same tasks with the same budget: PEARL, and the
context-free baseline (``PearlAgent(use_context=False)``: the same SAC v1 networks and
schedule with z fixed at zero). Each is then evaluated as oyster evaluates, on the 20
held-out test tasks, 4 online runs per task: the first trajectory from the prior, the
posterior inferred after each trajectory, the return of the last (third) trajectory.

A point-robot goal is invisible in the observation: without context the best policy heads
for the middle of the goal square; with the posterior it heads for the goal.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

#: Online evaluation runs per test task in the final comparison.
FINAL_EVALS = 4


def _load_example_12():
    spec = importlib.util.spec_from_file_location(
        "example_12", ROOT / "tdrl_examples" / "example_12.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["example_12"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _train_and_evaluate(example, *, use_context: bool) -> tuple[float, float]:
    """Mean last and first trajectory return on the test tasks after the default run."""
    torch.set_num_threads(1)
    runner = example.make_runner(example.Config(use_context=use_context))
    runner.train()
    runner.agent.eval_mode(runner.n_iterations)
    runner.num_evals = FINAL_EVALS
    finals, online = runner.online_returns(runner.eval_tasks)
    return float(np.mean(finals)), float(online[0])


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two 120k-step runs: ~4 min on a quiet 2-core machine, x7 margin
def test_pearl_beats_context_free_sac_on_point_robot():
    example = _load_example_12()
    pearl_last, pearl_first = _train_and_evaluate(example, use_context=True)
    free_last, free_first = _train_and_evaluate(example, use_context=False)
    numbers = (
        f"PEARL last {pearl_last:.2f} (first {pearl_first:.2f}); "
        f"context-free last {free_last:.2f} (first {free_first:.2f})"
    )
    print(numbers)
    assert pearl_last > free_last + 2.0, numbers  # clearly better on held-out tasks
    assert pearl_last > pearl_first + 2.0, numbers  # because it adapts from its context
