"""tdrl agents as TorchRL policies (``AgentPolicy``): rollouts, collectors, recurrent state.

Each check replays the agent's own ``step`` on the inputs TorchRL gave the policy, with
the same torch seed, and compares: actions, info, the carried recurrent state and the
previous action and reward the env recorded.
"""

from __future__ import annotations

import functools

import pytest
import torch

from tdrl import keys
from tdrl._compat import Collector, GymEnv, SerialEnv
from tdrl.agents import (
    AgentPolicy,
    CategoricalPgAgent,
    DdpgAgent,
    DqnAgent,
    GaussianPgAgent,
    PearlAgent,
    R2d1Agent,
    SacAgent,
)
from tdrl.utils.checks import ArgumentError

SMALL = {"hidden_sizes": (16,)}


def _lstm_pg():
    return CategoricalPgAgent(recurrent=True, model_kwargs={"hidden_sizes": (16,), "lstm_size": 8})


AGENTS = {
    "categorical_pg": (lambda: CategoricalPgAgent(model_kwargs=SMALL), "CartPole-v1"),
    "gaussian_pg": (lambda: GaussianPgAgent(model_kwargs=SMALL), "Pendulum-v1"),
    "dqn": (lambda: DqnAgent(model_kwargs=SMALL, eps_init=0.5), "CartPole-v1"),
    "sac": (lambda: SacAgent(model_kwargs=SMALL, q_model_kwargs=SMALL), "Pendulum-v1"),
    "ddpg": (lambda: DdpgAgent(model_kwargs=SMALL, q_model_kwargs=SMALL), "Pendulum-v1"),
    "ddpg_ou": (
        lambda: DdpgAgent(model_kwargs=SMALL, q_model_kwargs=SMALL, exploration_noise="ou"),
        "Pendulum-v1",
    ),
    "recurrent_pg": (_lstm_pg, "CartPole-v1"),
    "r2d1": (lambda: R2d1Agent(model_kwargs={"lstm_size": 8}, eps_init=0.5), "CartPole-v1"),
}


def _gym_env(env_id: str) -> GymEnv:
    # Short episodes, so that every rollout crosses resets.
    return GymEnv(env_id, max_episode_steps=7)


def _agent_format(action, policy):
    """Env-format actions as the agent's (one-hot -> index), written out independently."""
    return action.argmax(-1) if policy.one_hot else action


def _replay(agent, policy, data, seed):
    """``agent.step`` over ``data`` (``[B, T]``), carrying the state as the policy should.

    Returns the actions (agent format), the info and the recurrent state before each step.
    """
    torch.manual_seed(seed)
    B, T = data.batch_size
    state = agent.initial_rnn_state(B)
    actions, infos, states = [], [], []
    for t in range(T):
        row = data[:, t]
        inputs = (
            row["observation"],
            _agent_format(row["prev_action"], policy),
            row["prev_reward"],
        )
        if state is None:
            action, info = agent.step(*inputs)
        else:
            reset = row["is_init"].reshape(B)
            state = state.apply(lambda x, r=reset: x * (~r).view(B, *[1] * (x.dim() - 1)))
            states.append(state)
            action, info = agent.step(*inputs, state)
            state = info[keys.NEXT_RNN_STATE]
        actions.append(action)
        infos.append(info)
    return torch.stack(actions, 1), infos, states


def _check_prev_action_reward(data, policy):
    """``prev_action`` / ``prev_reward``: a_{t-1} / r_{t-1} in an episode, zeros after a reset."""
    done = data["next", "done"][..., 0]
    prev_action, prev_reward = data["prev_action"], data["prev_reward"]
    assert (prev_action[:, 0] == 0).all() and (prev_reward[:, 0] == 0).all()
    after_reset = done[:, :-1]
    assert after_reset.any(), "the rollout should cross an episode end"
    zero_a = (prev_action[:, 1:] == 0).reshape(*after_reset.shape, -1).all(-1)
    assert zero_a[after_reset].all()
    assert (prev_reward[:, 1:][after_reset] == 0).all()
    same_a = (prev_action[:, 1:] == data["action"][:, :-1]).reshape(*after_reset.shape, -1)
    assert same_a.all(-1)[~after_reset].all()
    same_r = prev_reward[:, 1:] == data["next", "reward"][:, :-1]
    assert same_r[..., 0][~after_reset].all()


@pytest.mark.parametrize("name", list(AGENTS))
def test_rollout_acts_as_agent_step(name):
    make_agent, env_id = AGENTS[name]
    agent = make_agent()
    env = _gym_env(env_id)
    policy = AgentPolicy(agent, env)
    env = policy.prepare_env(env)
    agent.sample_mode(0)
    env.set_seed(0)
    torch.manual_seed(3)
    data = env.rollout(30, policy, break_when_any_done=False).unsqueeze(0)  # [1, T]
    actions, infos, states = _replay(agent, policy, data, seed=3)
    torch.testing.assert_close(_agent_format(data["action"], policy), actions)
    for t, info in enumerate(infos):
        for key, value in info.items():
            torch.testing.assert_close(data[:, t][key], value)
    if keys.LOG_PROB in infos[0]:
        torch.testing.assert_close(data["action_log_prob"], data[keys.LOG_PROB])
    if agent.recurrent:  # the state carried by TorchRL's step_mdp, reset where is_init
        assert data["is_init"][:, 1:].any()
        for t, state in enumerate(states):
            torch.testing.assert_close(data[:, t][keys.RNN_STATE], state)
        for leaf in data[keys.RNN_STATE].values(include_nested=True, leaves_only=True):
            assert (leaf[data["is_init"][..., 0]] == 0).all()
    _check_prev_action_reward(data, policy)


@pytest.mark.parametrize("name", ["categorical_pg", "r2d1"])
def test_collector_acts_as_agent_step(name):
    make_agent, env_id = AGENTS[name]
    agent = make_agent()
    make = functools.partial(SerialEnv, 2, functools.partial(_gym_env, env_id))
    policy = AgentPolicy(agent, make())
    agent.sample_mode(0)
    collector = Collector(
        lambda: policy.prepare_env(make()),
        policy,
        frames_per_batch=2 * 25,
        total_frames=-1,
        auto_register_policy_transforms=False,
    )
    collector.set_seed(0)
    torch.manual_seed(5)
    data = next(iter(collector))
    collector.shutdown()
    assert data.batch_size == (2, 25)
    actions, _, states = _replay(agent, policy, data, seed=5)
    torch.testing.assert_close(_agent_format(data["action"], policy), actions)
    for t, state in enumerate(states):
        torch.testing.assert_close(data[:, t][keys.RNN_STATE], state)
    _check_prev_action_reward(data, policy)


def test_torchrl_registers_the_state_primer():
    agent = _lstm_pg()
    make = functools.partial(SerialEnv, 2, functools.partial(GymEnv, "CartPole-v1"))
    policy = AgentPolicy(agent, make())
    assert policy.make_tensordict_primer() is not None
    collector = Collector(
        make, policy, frames_per_batch=20, total_frames=-1, auto_register_policy_transforms=True
    )
    data = next(iter(collector))
    collector.shutdown()
    assert data[keys.RNN_STATE]["h"].shape == (2, 10, 1, 8)
    torch.testing.assert_close(  # carried: the state entering t+1 left t
        data[keys.RNN_STATE]["h"][:, 1:][~data["is_init"][:, 1:, 0]],
        data["next", keys.RNN_STATE]["h"][:, :-1][~data["is_init"][:, 1:, 0]],
    )
    assert AgentPolicy(CategoricalPgAgent(), GymEnv("CartPole-v1")).make_tensordict_primer() is None


def test_modes_and_formats():
    agent = CategoricalPgAgent(model_kwargs=SMALL, eval_deterministic=True)
    env = GymEnv("CartPole-v1")  # one-hot actions
    policy = AgentPolicy(agent, env)
    assert agent.action_spec.space.n == 2 and agent.action_spec.shape == ()
    td = env.reset()
    agent.eval_mode(0)
    out = policy(td.clone())  # eval mode: the greedy action, one-hot, under no_grad
    assert out["action"].shape == (2,) and out["action"].sum() == 1
    assert out["action"].argmax() == out["logits"].argmax()
    assert not out["logits"].requires_grad
    policy.follow_mode("sample", 7)  # what worker copies follow
    policy(td.clone())
    assert agent.mode == "sample"
    # Without PrevActionReward the agent sees the null action and reward 0.
    assert keys.PREV_ACTION not in set(env.reset().keys())
    assert len(policy.env_transforms(env)) == 1
    assert policy.env_transforms(policy.prepare_env(env)) == []
    # A nested batch is handed to the agent as rows.
    batch = env.reset().expand(3, 2).clone()
    assert policy(batch)["action"].shape == (3, 2, 2)


def _one_line(excinfo):
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


def test_bad_input_is_refused_in_one_line():
    with pytest.raises(ArgumentError) as e:
        AgentPolicy(CategoricalPgAgent())
    assert "not initialised" in _one_line(e)
    with pytest.raises(TypeError) as e:
        AgentPolicy(CategoricalPgAgent(), GymEnv("Pendulum-v1"))
    assert "Discrete" in _one_line(e)
    agent = CategoricalPgAgent()
    AgentPolicy(agent, GymEnv("CartPole-v1"))
    with pytest.raises(ArgumentError) as e:
        AgentPolicy(agent, GymEnv("Acrobot-v1"))
    assert "observation spec does not fit" in _one_line(e)
    with pytest.raises(ArgumentError) as e:
        AgentPolicy(CategoricalPgAgent(), GymEnv("CartPole-v1"), observation_keys=["pixels"])
    assert "pixels" in _one_line(e)
    with pytest.raises(ArgumentError) as e:
        AgentPolicy(PearlAgent(), GymEnv("Pendulum-v1"))
    assert "PearlAgent" in _one_line(e)
    with pytest.raises(ArgumentError) as e:
        AgentPolicy(torch.nn.Linear(2, 2))  # type: ignore[arg-type]
    _one_line(e)


def test_recurrent_state_resets_where_is_init():
    agent = _lstm_pg()
    env = GymEnv("CartPole-v1")
    policy = AgentPolicy(agent, env)
    td = policy.prepare_env(SerialEnv(2, functools.partial(GymEnv, "CartPole-v1"))).reset()
    state = agent.initial_rnn_state(2).apply(lambda x: torch.randn_like(x))
    td.set(keys.RNN_STATE, state)
    td.set(keys.IS_INIT, torch.tensor([[True], [False]]))
    torch.manual_seed(0)
    out = policy(td.clone())
    torch.manual_seed(0)
    given = state.clone()
    given[0] = agent.initial_rnn_state(1)[0]
    _, info = agent.step(td["observation"], td["prev_action"].argmax(-1), td["prev_reward"], given)
    torch.testing.assert_close(out["next", keys.RNN_STATE], info[keys.NEXT_RNN_STATE])
    torch.testing.assert_close(out["logits"], info["logits"])
    no_state = td.exclude(keys.RNN_STATE)  # absent: zeros
    torch.manual_seed(0)
    _, zero_info = agent.step(
        td["observation"], td["prev_action"].argmax(-1), td["prev_reward"], None
    )
    torch.testing.assert_close(policy(no_state)["logits"], zero_info["logits"])


def test_agent_policy_observes_what_the_sampler_gives_the_agent():
    """One rule for both (``observation_layout``): an env with an observation beside
    ``observation``, ``is_init`` (InitTracker) and ``prev_action``/``prev_reward``."""
    from torchrl.envs import GymEnv, InitTracker, TransformedEnv
    from torchrl.envs.transforms import UnsqueezeTransform

    from tdrl.agents.torchrl_policy import AgentPolicy, policy_specs
    from tdrl.envs import PrevActionReward
    from tdrl.samplers import SerialSampler
    from tdrl.testing.torchrl_envs import NestedFixedAgent

    def make_env():
        env = GymEnv("CartPole-v1", categorical_action_encoding=True)
        env = TransformedEnv(env, InitTracker())
        env.append_transform(UnsqueezeTransform(-1, in_keys=["is_init"], out_keys=["flag"]))
        env.append_transform(PrevActionReward())
        return env

    class Agent2Keys(NestedFixedAgent):
        def step(self, observation, prev_action, prev_reward, rnn_state=None):
            cart = observation.get("observation")[..., 0]
            return (cart > 0).long() + self.model.offset.long(), {}

    sampler = SerialSampler(make_env, {}, batch_T=4, batch_B=2, max_decorrelation_steps=0)
    agent = Agent2Keys(n_actions=2)
    sampler.initialize(agent, seed=0)
    samples, _ = sampler.obtain_samples(0)
    assert set(samples["observation"].keys()) == {"observation", "flag"}  # no is_init
    env = make_env()
    found, observation_spec, _ = policy_specs(env)
    assert found == [("observation",), ("flag",)] and "is_init" not in set(observation_spec.keys())
    policy = AgentPolicy(agent, env)  # the sampler-built agent fits without an error
    out = env.rollout(3, policy)
    assert out["action"].shape[0] == 3
