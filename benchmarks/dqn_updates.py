"""DQN update rate on Atari shapes: gradient updates per second with rlpyt's conv net.

Every implementation trains the same network, tdrl's default DQN Atari model (rlpyt's
Nature conv net: 32x8x8 stride 4, 64x4x4 stride 2 padding 1, 64x3x3 stride 1 padding 1,
then 512 and one Q per action; 4 stacked uint8 frames of 104x80, 6 actions), batch 32,
from its own replay buffer holding the same ``--replay-size`` transitions, on one device
(``--device cpu|cuda``). The data are consistent frame stacks of random uint8 frames
(stack t+1 is stack t shifted by one new frame, zero frames after an episode start,
episodes ending about every 500 steps, half terminated and half truncated), 8 env columns,
written as sampler batches. One timed "update" includes drawing the batch (rebuilding frame
stacks where the buffer stores frames) and moving it to the device.

* ``tdrl-dqn``: ``DqnAgent()`` + ``DQN(min_steps_learn=0)``; the buffer is tdrl's
  ``FrameReplayBuffer`` (each frame stored once, chosen automatically for uint8 frame
  stacks), the agent placed on the device before ``algo.initialize``; timed
  ``algo.optimize_agent(itr, None)`` (``--chunk`` updates per call, one diagnostics
  synchronisation per call: the runners' path).
* ``tdrl-dqn-compiled``: the same with ``DQN(compile=True)``.
* ``...-devreplay``: the same with ``replay_device=<device>`` (frames, n-step arrays and
  index sampling on the device).
* ``tdrl-dqn-bf16``: the same with the conv model under bf16 autocast
  (``DqnAgent(model_kwargs={"autocast": True})``; on CUDA only, the model warns and runs in
  float32 elsewhere); reported as not available when the installed tdrl has no such option.
* ``sb3-dqn``: Stable-Baselines3 ``DQN("CnnPolicy")`` on the device with the same network
  (a features extractor with rlpyt's paddings, ``net_arch=[]``; SB3's default NatureCNN
  has no padding), buffer filled with ``replay_buffer.add`` (observation and next
  observation stored in full, in NumPy), timed ``model.train(gradient_steps=N,
  batch_size=32)`` (its target update happens outside ``train``, every 10k env steps).
* ``torchrl-dqn``: ``torchrl.objectives.DQNLoss`` (``QValueActor`` over the same network,
  smooth-L1, delayed target), ``HardUpdate`` every 312 updates, Adam, gradient clip 10,
  batches from ``ReplayBuffer(storage=LazyTensorStorage(..., device=<device>))`` holding
  full stacks of observation and next observation (what TorchRL's Atari DQN stores).

Timing, budget, printing and exit status as in ``qpg_updates.py`` (whose machinery this
script imports). Target (issue 11): tdrl DQN (best variant) >= 2x SB3 DQN's update rate on
the GPU; the CPU has none. Run: ``python benchmarks/dqn_updates.py [--device cpu|cuda]
[--replay-size 20000] [--updates 200] [--seconds 0] [--repeats 3] [--budget-s S]
[--impls ...]``.
"""

from __future__ import annotations

import argparse
import inspect
import os
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from qpg_updates import (
    Budget,
    Step,
    add_common_args,
    check_target,
    flags,
    header,
    measure,
    pick_device,
    print_table,
    tdrl_algo_kwargs,
)
from tensordict import TensorDict
from torch import nn

torch.set_num_threads(1)

C, H, W = 4, 104, 80
N_ACTIONS = 6
BATCH = 32
ENV_B = 8
CHUNK_T = 250
EPISODE = 500
TARGET = 2.0  # issue 11: tdrl DQN Atari >= 2x SB3 DQN's update rate on one GPU
CPU_IMPLS = ("tdrl-dqn", "sb3-dqn", "torchrl-dqn")
CUDA_IMPLS = (
    "tdrl-dqn",
    "tdrl-dqn-devreplay",
    "tdrl-dqn-compiled",
    "tdrl-dqn-compiled-devreplay",
    "tdrl-dqn-bf16",
    "sb3-dqn",
    "torchrl-dqn",
)
IMPLS = (*CUDA_IMPLS, "tdrl-dqn-bf16-devreplay", "tdrl-dqn-compiled-bf16")


# ------------------------------------------------------------------------------- data
def chunks(n_transitions: int, seed: int = 0) -> list[TensorDict]:
    """``[CHUNK_T, ENV_B]`` sampler batches of consistent frame stacks, ``n_transitions``
    in all (rounded up to whole chunks); each chunk continues the previous one."""
    g = torch.Generator().manual_seed(seed)
    n_chunks = -(-n_transitions // (CHUNK_T * ENV_B))
    stack = torch.zeros(ENV_B, C, H, W, dtype=torch.uint8)
    action = torch.zeros(ENV_B, dtype=torch.long)
    reward = torch.zeros(ENV_B, 1)
    out = []
    for _ in range(n_chunks):
        obs = torch.empty(CHUNK_T, ENV_B, C, H, W, dtype=torch.uint8)
        next_obs = torch.empty_like(obs)
        acts = torch.randint(0, N_ACTIONS, (CHUNK_T, ENV_B), generator=g)
        rews = torch.randn(CHUNK_T, ENV_B, 1, generator=g)
        done = torch.rand(CHUNK_T, ENV_B, 1, generator=g) < 1 / EPISODE
        terminated = done & (torch.rand(CHUNK_T, ENV_B, 1, generator=g) < 0.5)
        prev_a, prev_r = torch.empty_like(acts), torch.empty_like(rews)
        for t in range(CHUNK_T):
            obs[t] = stack
            prev_a[t], prev_r[t] = action, reward
            frame = torch.randint(0, 256, (ENV_B, H, W), dtype=torch.uint8, generator=g)
            stack = torch.cat([stack[:, 1:], frame[:, None]], dim=1)
            next_obs[t] = stack
            action, reward = acts[t], rews[t]
            ended = done[t, :, 0]
            if ended.any():  # the env resets: a fresh stack, zeros but the first frame
                first = torch.randint(0, 256, (ENV_B, H, W), dtype=torch.uint8, generator=g)
                reset = torch.zeros_like(stack)
                reset[:, -1] = first
                stack = torch.where(ended[:, None, None, None], reset, stack)
                action = torch.where(ended, 0, action)
                reward = torch.where(ended[:, None], 0.0, reward)
        out.append(
            TensorDict(
                {
                    "observation": obs,
                    "prev_action": prev_a,
                    "prev_reward": prev_r,
                    "action": acts,
                    "next": {
                        "observation": next_obs,
                        "reward": rews,
                        "done": done,
                        "terminated": terminated,
                        "truncated": done & ~terminated,
                    },
                },
                batch_size=[CHUNK_T, ENV_B],
            )
        )
    out[-1]["next", "truncated"][-1] |= ~out[-1]["next", "terminated"][-1]  # ends every column
    out[-1]["next", "done"][-1] = True
    return out


def transitions(data: list[TensorDict]) -> TensorDict:
    """Episode-major ``[N]`` rows (column by column) for the flat buffers."""
    td = torch.cat(data, dim=0)  # [T, B]
    return td.transpose(0, 1).reshape(-1)


# ------------------------------------------------------------------------------- tdrl
def bf16_model_kwargs() -> dict[str, Any]:
    """tdrl's bf16-autocast option of the Atari DQN model; raises when it has none."""
    from tdrl.models.dqn.atari import AtariDqnModel

    if "autocast" not in inspect.signature(AtariDqnModel).parameters:
        raise NotImplementedError("AtariDqnModel takes no autocast argument: no bf16 autocast")
    return {"autocast": True}


def make_tdrl(
    name: str, data: list[TensorDict], device: torch.device, chunk: int, replay_size: int
) -> Step:
    from tdrl.agents.dqn import DqnAgent
    from tdrl.algos.dqn import DQN
    from tdrl.envs import space_to_spec
    from tdrl.replays import FrameReplayBuffer
    from tdrl.samplers import BatchSpec

    _, _, opts = flags(name)
    extra = tdrl_algo_kwargs(opts, device)
    model_kwargs = bf16_model_kwargs() if "bf16" in name.split("-") else {}
    batch_spec = BatchSpec(CHUNK_T, ENV_B)
    algo = DQN(
        batch_size=BATCH,
        min_steps_learn=0,
        replay_size=replay_size,
        replay_ratio=chunk * BATCH / batch_spec.size,  # `chunk` updates per call
        **extra,
    )
    agent = DqnAgent(model_kwargs=model_kwargs)
    agent.initialize(
        space_to_spec(gym.spaces.Box(0, 255, (C, H, W), np.uint8)),
        space_to_spec(gym.spaces.Discrete(N_ACTIONS)),
    )
    agent.to(device)  # where the runners place it: before algo.initialize
    algo.initialize(agent, n_itr=1, batch_spec=batch_spec)
    assert isinstance(algo.replay_buffer, FrameReplayBuffer)
    for td in data:
        algo.replay_buffer.append_samples(td)
    agent.train_mode(0)
    assert algo.updates_per_optimize == chunk, algo.updates_per_optimize

    def step() -> int:
        before = algo.update_counter
        algo.optimize_agent(1, None)
        return algo.update_counter - before

    return step


# ------------------------------------------------------------------------------- peers
def rlpyt_conv(in_channels: int = C) -> nn.Sequential:
    """tdrl's (rlpyt's) Atari conv trunk on [0, 1] inputs, flattened."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 8, 4, 0),
        nn.ReLU(),
        nn.Conv2d(32, 64, 4, 2, 1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, 1, 1),
        nn.ReLU(),
        nn.Flatten(),
    )


def conv_out(net: nn.Module) -> int:
    with torch.no_grad():
        return int(net(torch.zeros(1, C, H, W)).shape[-1])


def sb3_extractor_cls() -> type:
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    class RlpytCnn(BaseFeaturesExtractor):
        """rlpyt's conv trunk and its 512 layer (SB3 divides the uint8 pixels by 255)."""

        def __init__(self, observation_space: Any, features_dim: int = 512):
            super().__init__(observation_space, features_dim)
            self.cnn = rlpyt_conv(observation_space.shape[0])
            self.linear = nn.Sequential(nn.Linear(conv_out(self.cnn), features_dim), nn.ReLU())

        def forward(self, observations: torch.Tensor) -> torch.Tensor:
            return self.linear(self.cnn(observations))

    return RlpytCnn


class FrameEnv(gym.Env):
    """Only the spaces SB3 needs to build a model (never stepped)."""

    observation_space = gym.spaces.Box(0, 255, (C, H, W), np.uint8)
    action_space = gym.spaces.Discrete(N_ACTIONS)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def make_sb3(data: list[TensorDict], device: torch.device, chunk: int, replay_size: int) -> Step:
    from stable_baselines3 import DQN
    from stable_baselines3.common.logger import configure

    model = DQN(
        "CnnPolicy",
        FrameEnv(),
        batch_size=BATCH,
        buffer_size=replay_size,
        learning_starts=0,
        learning_rate=2.5e-4,
        policy_kwargs={"features_extractor_class": sb3_extractor_cls(), "net_arch": []},
        device=str(device),
        seed=0,
    )
    model.set_logger(configure(None, []))
    rows = transitions(data)
    obs, next_obs = rows["observation"].numpy(), rows["next", "observation"].numpy()
    act, rew = rows["action"].numpy(), rows["next", "reward"].numpy()
    term, trunc = rows["next", "terminated"].numpy(), rows["next", "truncated"].numpy()
    rb = model.replay_buffer
    for i in range(len(rows)):
        rb.add(
            obs[i][None],
            next_obs[i][None],
            act[i : i + 1],
            rew[i],
            np.array([bool(term[i, 0] or trunc[i, 0])]),
            [{"TimeLimit.truncated": bool(trunc[i, 0])}],
        )

    def step() -> int:
        model.train(gradient_steps=chunk, batch_size=BATCH)
        return chunk

    return step


class _Pixels(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() / 255.0


def make_torchrl(
    data: list[TensorDict], device: torch.device, chunk: int, replay_size: int
) -> Step:
    from torchrl.data import Categorical, LazyTensorStorage, ReplayBuffer
    from torchrl.modules import QValueActor
    from torchrl.objectives import DQNLoss, HardUpdate

    trunk = rlpyt_conv()
    net = nn.Sequential(
        _Pixels(), trunk, nn.Linear(conv_out(trunk), 512), nn.ReLU(), nn.Linear(512, N_ACTIONS)
    ).to(device)
    actor = QValueActor(
        net,
        in_keys=["observation"],
        spec=Categorical(N_ACTIONS, device=device),
        action_space="categorical",
    )
    loss = DQNLoss(actor, loss_function="smooth_l1", delay_value=True, action_space="categorical")
    loss = loss.to(device)
    loss.make_value_estimator(gamma=0.99)
    target = HardUpdate(loss, value_network_update_interval=312)
    params = list(loss.value_network_params.flatten_keys().values())
    optim = torch.optim.Adam(params, lr=2.5e-4)
    rows = transitions(data).select(
        "observation",
        "action",
        ("next", "observation"),
        ("next", "reward"),
        ("next", "done"),
        ("next", "terminated"),
    )
    rb = ReplayBuffer(storage=LazyTensorStorage(replay_size, device=device), batch_size=BATCH)
    rb.extend(rows)

    def step() -> int:
        for _ in range(chunk):
            out = loss(rb.sample())
            out["loss"].backward()
            nn.utils.clip_grad_norm_(params, 10.0)
            optim.step()
            optim.zero_grad(set_to_none=True)
            target.step()
        return chunk

    return step


# ------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_common_args(parser, updates=200, warmup=20)
    parser.add_argument("--chunk", type=int, default=50, help="updates per call")
    parser.add_argument("--replay-size", type=int, default=20_000, help="transitions stored")
    parser.add_argument(
        "--impls", nargs="+", default=None, choices=IMPLS, help="default: by device"
    )
    args = parser.parse_args(argv)
    budget = Budget(args.budget_s)
    device = pick_device(args.device)
    names = args.impls or list(CUDA_IMPLS if device.type == "cuda" else CPU_IMPLS)
    header(
        "dqn_updates",
        device,
        f"{C}x{H}x{W} uint8 stacks, {N_ACTIONS} actions, batch {BATCH}, rlpyt's conv net, "
        f"{args.replay_size} transitions, >= {args.updates} updates and >= {args.seconds:g} s "
        f"x {args.repeats} repeats (interleaved), warm-up {args.warmup}, chunks of "
        f"{args.chunk}, budget {args.budget_s or 'none'} s",
    )
    t0 = time.perf_counter()
    data = chunks(args.replay_size)
    n = sum(td.numel() for td in data)
    print(f"# {n} transitions of random frame stacks made in {time.perf_counter() - t0:.1f} s",
          flush=True)  # fmt: skip
    replay_size = n

    def build(name: str) -> Step:
        lib = name.split("-")[0]
        if lib == "tdrl":
            return make_tdrl(name, data, device, args.chunk, replay_size)
        if lib == "sb3":
            return make_sb3(data, device, args.chunk, replay_size)
        return make_torchrl(data, device, args.chunk, replay_size)

    rates, problems = measure(names, build, args, device, budget)
    print(f"\nDQN Atari shapes on {device}; load average {os.getloadavg()[0]:.2f}")
    median = print_table(names, rates, problems, "sb3-dqn")
    print()
    tdrl = {k: v for k, v in median.items() if k.startswith("tdrl")}
    best = max(tdrl, key=tdrl.__getitem__) if tdrl else None
    met = True
    if device.type == "cuda":
        met = check_target(
            f"tdrl DQN (best: {best}) vs SB3 DQN updates/s",
            tdrl.get(best) if best else None,
            median.get("sb3-dqn"),
            TARGET,
        )
    elif best and "sb3-dqn" in median:
        print(f"tdrl DQN (best: {best}) vs SB3 DQN: {tdrl[best] / median['sb3-dqn']:.2f}x "
              "(no target on the CPU)")  # fmt: skip
    broken = [
        n
        for n in names
        if n.startswith("tdrl")
        and not problems.get(n, "skipped").startswith("skipped")
        and "bf16 autocast" not in problems.get(n, "")
    ]
    if broken:
        print(f"tdrl implementations that did not run: {', '.join(broken)}")
    return 1 if broken or (args.strict and not met) else 0


if __name__ == "__main__":
    raise SystemExit(main())
