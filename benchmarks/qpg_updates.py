"""Off-policy update rate: gradient updates per second of SAC/TD3 at HalfCheetah-v5 shapes.

Every implementation trains the same sizes (observation 17, action 6, batch 256, 256-256
MLPs for the actor and each of two critics) from a replay buffer holding the same ~10k
*real* HalfCheetah-v5 transitions (10 episodes of 1,000 steps, uniform random actions,
collected once with gymnasium). One timed "update" includes drawing the batch from that
implementation's own replay buffer.

* ``tdrl-sac``: ``tdrl.agents.qpg.SacAgent()`` + ``tdrl.algos.qpg.SAC(min_steps_learn=0)``,
  timed ``algo.update(algo.replay_buffer.sample_batch(256))``.
* ``tdrl-td3``: ``Td3Agent`` (256-256 actor and critics instead of rlpyt's 400-300) +
  ``TD3(min_steps_learn=0, batch_size=256, policy_update_interval=2)`` when they import
  (skipped otherwise); same timing; one update is one critic update (actor and targets
  every 2nd).
* ``sb3-sac`` / ``sb3-td3``: Stable-Baselines3 with ``net_arch=[256, 256]`` (TD3's default
  would be 400-300), buffer filled with ``replay_buffer.add``, timed
  ``model.train(gradient_steps=N, batch_size=256)``; TD3 counts critic updates
  (``policy_delay=2``).
* ``torchrl-sac``: ``torchrl.objectives.SACLoss`` (``ProbabilisticActor`` + ``TanhNormal``,
  ``ValueOperator`` Q with ``num_qvalue_nets=2``), ``SoftUpdate(tau=0.005)``, one Adam per
  loss-term group, batches from ``ReplayBuffer(storage=LazyTensorStorage(...))``; timed
  sample + loss + backward + steps + target update.

Each implementation is built and warmed up once; then every repeat runs ``--updates``
updates of each implementation in rotated (interleaved) order. The table gives the median
rate over repeats. Run: ``python benchmarks/qpg_updates.py [--updates 300] [--repeats 3]
[--warmup 30] [--impls ...]``; about 1.5-2 minutes with the defaults.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict

torch.set_num_threads(1)

ENV_ID = "HalfCheetah-v5"
BATCH = 256
HIDDEN = [256, 256]
N_EPISODES = 10  # x 1000 steps = 10k transitions
TARGET = 2.0  # issue target: tdrl SAC >= 2x SB3 SAC's update rate
IMPLS = ("tdrl-sac", "tdrl-td3", "sb3-sac", "sb3-td3", "torchrl-sac")


# ------------------------------------------------------------------------------- data
def collect(seed: int = 0) -> dict[str, np.ndarray]:
    """``N_EPISODES`` random-action episodes as ``[T, B]`` arrays (column b = episode b)."""
    env = gym.make(ENV_ID)
    env.action_space.seed(seed)
    cols: list[dict[str, np.ndarray]] = []
    for ep in range(N_EPISODES):
        obs, _ = env.reset(seed=seed + ep)
        rows: dict[str, list] = {k: [] for k in ("obs", "act", "rew", "next_obs", "term", "trunc")}
        done = False
        while not done:
            act = env.action_space.sample()
            nobs, rew, term, trunc, _ = env.step(act)
            for k, v in zip(rows, (obs, act, rew, nobs, term, trunc), strict=True):
                rows[k].append(v)
            obs, done = nobs, term or trunc
        cols.append({k: np.asarray(v) for k, v in rows.items()})
    env.close()
    T = min(len(c["rew"]) for c in cols)
    data = {k: np.stack([c[k][:T] for c in cols], axis=1) for k in cols[0]}
    data["trunc"][-1] |= ~data["term"][-1]  # the buffer ends every column
    return {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in data.items()}


def flat(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Episode-major ``[T * B, ...]`` view for the flat buffers."""
    return {
        k: np.ascontiguousarray(v.swapaxes(0, 1)).reshape(-1, *v.shape[2:]) for k, v in data.items()
    }


# ------------------------------------------------------------------------------- tdrl
def sampler_td(data: dict[str, np.ndarray]) -> TensorDict:
    """The data as a ``[T, B]`` sampler batch (tdrl's ``build_samples_buffer`` keys)."""
    act = torch.from_numpy(data["act"])
    rew = torch.from_numpy(data["rew"]).unsqueeze(-1)
    term = torch.from_numpy(data["term"]).unsqueeze(-1)
    trunc = torch.from_numpy(data["trunc"]).unsqueeze(-1)
    prev_act = torch.cat([torch.zeros_like(act[:1]), act[:-1]])
    prev_rew = torch.cat([torch.zeros_like(rew[:1]), rew[:-1]])
    T, B = act.shape[:2]
    td = TensorDict(
        {
            "observation": torch.from_numpy(data["obs"]),
            "prev_action": prev_act,
            "prev_reward": prev_rew,
            "action": act,
            "next": TensorDict(
                {
                    "observation": torch.from_numpy(data["next_obs"]),
                    "reward": rew,
                    "done": term | trunc,
                    "terminated": term,
                    "truncated": trunc,
                },
                batch_size=(T, B),
            ),
        },
        batch_size=(T, B),
    )
    td.names = ["time", None]
    return td


def make_tdrl(kind: str, data: dict[str, np.ndarray]) -> Callable[[int], None]:
    from tdrl.envs import space_to_spec
    from tdrl.samplers import BatchSpec

    env = gym.make(ENV_ID)
    spec_o = space_to_spec(env.observation_space)
    spec_a = space_to_spec(env.action_space)
    env.close()
    if kind == "sac":
        from tdrl.agents.qpg import SacAgent
        from tdrl.algos.qpg import SAC

        agent, algo = SacAgent(), SAC(min_steps_learn=0)
    else:
        from tdrl.agents.qpg import Td3Agent  # ImportError: skipped by the caller
        from tdrl.algos.qpg import TD3

        nets = {"hidden_sizes": tuple(HIDDEN)}  # Td3Agent's default is rlpyt's 400-300
        agent = Td3Agent(model_kwargs=nets, q_model_kwargs=nets)
        algo = TD3(min_steps_learn=0, batch_size=BATCH, policy_update_interval=2)
    agent.initialize(spec_o, spec_a)
    td = sampler_td(data)
    algo.initialize(agent, n_itr=1, batch_spec=BatchSpec(*td.batch_size))
    algo.replay_buffer.append_samples(td)
    agent.train_mode(0)

    def run(n: int) -> None:
        for _ in range(n):
            algo.update(algo.replay_buffer.sample_batch(BATCH))

    return run


# ------------------------------------------------------------------------------- SB3
def make_sb3(kind: str, data: dict[str, np.ndarray]) -> Callable[[int], None]:
    from stable_baselines3 import SAC, TD3
    from stable_baselines3.common.logger import configure

    cls = SAC if kind == "sac" else TD3
    model = cls(
        "MlpPolicy",
        ENV_ID,
        batch_size=BATCH,
        policy_kwargs={"net_arch": HIDDEN},
        learning_starts=0,
        buffer_size=100_000,
        device="cpu",
        seed=0,
    )
    model.set_logger(configure(None, []))
    d = flat(data)
    rb = model.replay_buffer
    for i in range(len(d["rew"])):
        trunc = bool(d["trunc"][i])
        rb.add(
            d["obs"][i][None],
            d["next_obs"][i][None],
            d["act"][i][None],
            d["rew"][i : i + 1],
            np.array([bool(d["term"][i]) or trunc]),
            [{"TimeLimit.truncated": trunc and not bool(d["term"][i])}],
        )

    def run(n: int) -> None:
        model.train(gradient_steps=n, batch_size=BATCH)

    return run


# ------------------------------------------------------------------------------- TorchRL
def make_torchrl(data: dict[str, np.ndarray]) -> Callable[[int], None]:
    from tensordict.nn import NormalParamExtractor, TensorDictModule
    from torch import nn
    from torchrl.data import Bounded, LazyTensorStorage, ReplayBuffer
    from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator
    from torchrl.objectives import SACLoss, SoftUpdate

    n_obs, n_act = data["obs"].shape[-1], data["act"].shape[-1]
    actor_net = nn.Sequential(
        MLP(in_features=n_obs, out_features=2 * n_act, num_cells=HIDDEN, activation_class=nn.ReLU),
        NormalParamExtractor(),
    )
    actor = ProbabilisticActor(
        TensorDictModule(actor_net, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        spec=Bounded(-1.0, 1.0, (n_act,)),
        distribution_class=TanhNormal,
        distribution_kwargs={"low": -torch.ones(n_act), "high": torch.ones(n_act)},
        return_log_prob=False,
    )
    qnet = MLP(
        in_features=n_obs + n_act, out_features=1, num_cells=HIDDEN, activation_class=nn.ReLU
    )
    qvalue = ValueOperator(qnet, in_keys=["observation", "action"])
    loss = SACLoss(actor_network=actor, qvalue_network=qvalue, num_qvalue_nets=2)
    loss.make_value_estimator(gamma=0.99)
    target = SoftUpdate(loss, tau=0.005)
    opt_actor = torch.optim.Adam(loss.actor_network_params.flatten_keys().values(), lr=3e-4)
    opt_critic = torch.optim.Adam(loss.qvalue_network_params.flatten_keys().values(), lr=3e-4)
    opt_alpha = torch.optim.Adam([loss.log_alpha], lr=3e-4)
    optims = (opt_actor, opt_critic, opt_alpha)

    d = flat(data)
    n = len(d["rew"])
    term = torch.from_numpy(d["term"]).reshape(n, 1)
    trunc = torch.from_numpy(d["trunc"]).reshape(n, 1)
    td = TensorDict(
        {
            "observation": torch.from_numpy(d["obs"]),
            "action": torch.from_numpy(d["act"]),
            "next": {
                "observation": torch.from_numpy(d["next_obs"]),
                "reward": torch.from_numpy(d["rew"]).reshape(n, 1),
                "done": term | trunc,
                "terminated": term,
                "truncated": trunc,
            },
        },
        batch_size=[n],
    )
    rb = ReplayBuffer(storage=LazyTensorStorage(100_000), batch_size=BATCH)
    rb.extend(td)

    def run(k: int) -> None:
        for _ in range(k):
            out = loss(rb.sample())
            total = out["loss_actor"] + out["loss_qvalue"] + out["loss_alpha"]
            total.backward()
            for opt in optims:
                opt.step()
                opt.zero_grad(set_to_none=True)
            target.step()

    return run


# ------------------------------------------------------------------------------- main
def build(name: str, data: dict[str, np.ndarray]) -> Callable[[int], None]:
    lib, kind = name.split("-")
    if lib == "tdrl":
        return make_tdrl(kind, data)
    if lib == "sb3":
        return make_sb3(kind, data)
    return make_torchrl(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=300, help="timed updates per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    args = parser.parse_args()

    t0 = time.perf_counter()
    data = collect()
    T, B = data["rew"].shape
    print(
        f"# {ENV_ID}: {T * B} real transitions ({B} random-action episodes x {T}) "
        f"collected in {time.perf_counter() - t0:.1f} s"
    )
    runners: dict[str, Callable[[int], None]] = {}
    skipped: dict[str, str] = {}
    for name in args.impls:
        try:
            runners[name] = build(name, data)
        except ImportError as exc:  # tdrl TD3 may not exist yet
            skipped[name] = f"not available ({exc})"
            continue
        torch.manual_seed(0)
        runners[name](args.warmup)

    times: dict[str, list[float]] = {n: [] for n in runners}
    names = list(runners)
    for r in range(args.repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            runners[name](args.updates)
            times[name].append(time.perf_counter() - start)

    rate = {n: statistics.median(args.updates / t for t in ts) for n, ts in times.items()}
    ref = rate.get("sb3-sac")
    print(
        f"\n{datetime.date.today()}, {platform.node()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, 1 thread; batch {BATCH}, 256-256 MLPs; "
        f"{args.updates} updates x {args.repeats} repeats (interleaved), "
        f"warm-up {args.warmup}; load average {os.getloadavg()[0]:.2f}\n"
    )
    print("| impl | updates/s (median) | ms/update | runs (updates/s) | ratio vs SB3 SAC |")
    print("|---|---:|---:|---|---:|")
    for name in args.impls:
        if name in skipped:
            print(f"| {name} | n/a | n/a | {skipped[name]} | n/a |")
            continue
        runs = ", ".join(f"{args.updates / t:.1f}" for t in times[name])
        ratio = f"{rate[name] / ref:.2f}x" if ref else "n/a"
        print(f"| {name} | {rate[name]:.1f} | {1e3 / rate[name]:.2f} | {runs} | {ratio} |")
    if "td3" in " ".join(runners):
        print("\nTD3 rows count critic updates (actor and targets every 2nd, policy delay 2).")
    if ref and "tdrl-sac" in rate:
        ratio = rate["tdrl-sac"] / ref
        verdict = "PASS" if ratio >= TARGET else "FAIL"
        print(f"\nTarget tdrl SAC >= {TARGET:.0f}x SB3 SAC updates/s: {ratio:.2f}x -> {verdict}")


if __name__ == "__main__":
    main()
