"""R2D1 and PEARL keep the declared contracts of ``tdrl.algos.base`` like every algorithm.

* R2D1 is a ``ReplayAlgorithm``; PEARL a ``MetaAlgorithm`` (one ``[tasks]`` TensorDict with
  the RL batch under ``"rl"`` and the context under ``"context"``);
* ``loss(batch)`` is pure: it changes neither the batch nor any parameter or optimizer
  state, and returns ``loss`` with gradient plus detached diagnostics;
* ``update(batch)`` is ``loss`` plus an optimizer step: with the same random draws its loss
  terms equal ``loss(batch)``'s before it, and it moves the parameters;
* every diagnostic name is in ``DIAGNOSTICS``;
* no agent moves its own inputs: a ``step`` gets them on the agent's device from the
  sampler (checked on the source of every agent).
"""

from __future__ import annotations

import ast
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict

import tdrl
from tdrl import keys
from tdrl.agents import PearlAgent, R2d1Agent
from tdrl.algos import DIAGNOSTICS, PEARL, R2D1, ReplayAlgorithm
from tdrl.algos.base import MetaAlgorithm
from tdrl.envs import space_to_spec
from tdrl.keys import BatchSpec

OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)


def _state(algo, agent):
    out = {f"agent.{k}": v.detach().clone() for k, v in agent.state_dict().items()}
    for k, v in algo.state_dict().items():
        if isinstance(v, torch.Tensor):
            out[f"algo.{k}"] = v.detach().clone()
    return out


def _check_pure_and_update(algo, agent, batch, loss, update):
    before, batch_before = _state(algo, agent), batch.clone()
    terms = loss()
    assert terms["loss"].requires_grad and torch.isfinite(terms["loss"])
    for key, value in terms.items():
        if key != "loss" and not key.startswith("loss_"):
            assert not value.requires_grad, f"diagnostic {key} is not detached"
    assert set(terms.keys()) <= set(DIAGNOSTICS), sorted(set(terms.keys()) - set(DIAGNOSTICS))
    for key, value in _state(algo, agent).items():
        assert torch.equal(value, before[key]), f"loss changed {key}"
    assert (batch == batch_before).all()
    info = update()
    assert set(info) <= set(DIAGNOSTICS), sorted(set(info) - set(DIAGNOSTICS))
    for key in [k for k in terms.keys() if k.startswith("loss")]:  # noqa: SIM118
        assert torch.allclose(info[key], terms[key].detach()), key
    moved = [k for k, v in _state(algo, agent).items() if not torch.equal(v, before[k])]
    assert any(k.startswith("agent.model.") for k in moved), moved
    assert algo.update_counter == 1
    assert (batch == batch_before).all()


def _sequence_batch(N=4, L=11):
    g = torch.Generator().manual_seed(0)
    done = torch.rand(L, N, 1, generator=g) < 0.2
    is_init = torch.zeros(L, N, dtype=torch.bool)
    is_init[1:] = done[:-1, :, 0]
    seq = TensorDict(
        {
            keys.OBSERVATION: torch.randn(L, N, 3, generator=g),
            keys.PREV_ACTION: torch.randint(3, (L, N), generator=g),
            keys.PREV_REWARD: torch.randn(L, N, 1, generator=g),
            keys.ACTION: torch.randint(3, (L, N), generator=g),
            keys.NEXT: {
                keys.REWARD: torch.randn(L, N, 1, generator=g),
                keys.DONE: done,
                keys.TERMINATED: done,
                keys.TRUNCATED: torch.zeros_like(done),
            },
            keys.IS_INIT: is_init,
        },
        batch_size=[L, N],
    )
    state = TensorDict(
        {"h": torch.randn(N, 1, 8, generator=g), "c": torch.randn(N, 1, 8, generator=g)},
        batch_size=[N],
    )
    return TensorDict(
        {
            keys.SEQUENCE: seq,
            keys.RNN_STATE: state,
            keys.IS_WEIGHT: torch.rand(N, generator=g) + 0.5,
            keys.INDEX: torch.arange(N),
        },
        batch_size=[],
    )


def test_r2d1_keeps_the_replay_algorithm_contract():
    torch.manual_seed(0)
    agent = R2d1Agent(model_kwargs={"hidden_sizes": (8,), "lstm_size": 8, "head_sizes": (8,)})
    agent.initialize(space_to_spec(OBS), space_to_spec(gym.spaces.Discrete(3)))
    algo = R2D1(batch_T=5, warmup_T=3, n_step_return=3, replay_size=1000)
    algo.initialize(agent, n_itr=10, batch_spec=BatchSpec(40, 2))
    assert isinstance(algo, ReplayAlgorithm)
    batch = _sequence_batch()
    _check_pure_and_update(algo, agent, batch, lambda: algo.loss(batch), lambda: algo.update(batch))


def _meta_batch(tasks=3, n=5, m=4):
    g = torch.Generator().manual_seed(1)

    def transitions(k):
        return {
            keys.OBSERVATION: torch.randn(tasks, k, 3, generator=g),
            keys.ACTION: torch.rand(tasks, k, 2, generator=g) * 2 - 1,
            keys.NEXT: {
                keys.OBSERVATION: torch.randn(tasks, k, 3, generator=g),
                keys.REWARD: torch.randn(tasks, k, generator=g),
            },
        }

    rl = TensorDict(
        {
            **transitions(n),
            keys.RETURN_N: torch.randn(tasks, n, generator=g),
            keys.DISCOUNT_N: torch.full((tasks, n), 0.99),
        },
        batch_size=[tasks, n],
    )
    context = TensorDict(transitions(m), batch_size=[tasks, m])
    return TensorDict({keys.META_RL: rl, keys.CONTEXT: context}, batch_size=[tasks])


@pytest.mark.parametrize("value_network", [True, False])
def test_pearl_keeps_the_meta_algorithm_contract(value_network):
    torch.manual_seed(0)
    agent = PearlAgent(
        latent_size=2,
        encoder_hidden_sizes=(8,),
        hidden_sizes=(8, 8),
        value_network=value_network,
    )
    box = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    agent.initialize(space_to_spec(OBS), space_to_spec(box))
    algo = PEARL(value_network=value_network)
    algo.initialize(agent, n_itr=1, batch_spec=BatchSpec(1, 1))
    assert isinstance(algo, MetaAlgorithm)
    assert {"meta_batch", "batch_size", "embedding_batch_size"} <= set(algo.settings())
    batch = _meta_batch()

    def draw():  # the same z draws (generator) and policy draws (torch's) each time
        torch.manual_seed(5)
        return torch.Generator().manual_seed(5)

    _check_pure_and_update(
        algo,
        agent,
        batch,
        lambda: algo.loss(batch, generator=draw()),
        lambda: algo.update(batch, generator=draw()),
    )


#: Not agents: ``AgentPolicy`` is the adapter that plays the sampler's part when TorchRL's
#: rollouts and collectors drive an agent, so it moves the env's tensors to the agent.
NOT_AGENTS = ("torchrl_policy.py",)


def _agent_step_functions():
    root = Path(tdrl.__file__).resolve().parent / "agents"
    for path in sorted(root.rglob("*.py")):
        if path.name in NOT_AGENTS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name in ("step", "forward"):
                yield path.relative_to(root.parent), node


def test_no_agent_moves_its_own_inputs():
    moving = []
    for path, fn in _agent_step_functions():
        for node in ast.walk(fn):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                if name in ("to", "to_device", "cuda", "cpu"):
                    moving.append(f"{path}:{node.lineno} {fn.name} calls {name}()")
    assert not moving, "agents get their inputs on their device:\n" + "\n".join(moving)
