"""oyster's PEARL settings per task family, as plain data in tdrl's names.

``configs/default.py`` and ``configs/<env>.json`` of oyster (PEARL's reference code), split
by the object each part configures (``agent``: ``PearlAgent``, ``algo``: ``PEARL``,
``runner``: ``MetaRl``, ``env``: the family), and where tdrl's preset departs from them.
``tdrl.runners.meta_presets`` builds runs from them; ``tdrl.presets`` lists them in the one
registry. This module imports nothing, so the command line can read it cheaply.
"""

from __future__ import annotations

from typing import Any

from tdrl.utils.meta_env_names import META_ENV_NAMES

__all__ = ["DEPARTURES", "OYSTER_CONFIGS", "oyster_settings"]

#: ``configs/default.py``, in tdrl's names.
DEFAULT_AGENT = {
    "latent_size": 5,
    "hidden_sizes": (300, 300, 300),  # net_size: policy, Q and V
    "encoder_hidden_sizes": (200, 200, 200),  # launch_experiment.py's MlpEncoder
    "information_bottleneck": True,
    "use_next_obs_in_context": False,
}
DEFAULT_ALGO = {
    "discount": 0.99,
    "batch_size": 256,
    "embedding_batch_size": 64,
    "meta_batch": 16,
    "kl_lambda": 0.1,
    "kl_reduction": "sum",  # oyster's compute_kl_div sums over the meta-batch's tasks
    "reward_scale": 5.0,
    "target_update_tau": 0.005,  # soft_target_tau
    "policy_lr": 3e-4,
    "q_lr": 3e-4,
    "v_lr": 3e-4,
    "context_lr": 3e-4,
}
DEFAULT_RUNNER = {
    "n_train_tasks": 2,
    "n_eval_tasks": 2,
    "num_initial_steps": 2000,
    "num_tasks_sample": 5,
    "num_steps_prior": 400,
    "num_steps_posterior": 0,
    "num_extra_rl_steps_posterior": 400,
    "num_train_steps_per_itr": 2000,
    "update_post_train": 1,
    "num_exp_traj_eval": 1,
    "num_steps_per_eval": 600,
    "num_evals": 2,
    "replay_size": 1_000_000,  # MetaRLAlgorithm's replay_buffer_size, per task
    "sparse_rewards": False,
}
DEFAULT_ENV = {"max_episode_steps": 200}  # max_path_length

#: ``configs/<env>.json`` by part, in tdrl's names: only what differs from the default.
OYSTER_CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    "cheetah-dir": {
        "algo": {"meta_batch": 4, "embedding_batch_size": 256},
        "runner": {
            "num_steps_prior": 1000,
            "num_extra_rl_steps_posterior": 1000,
            "num_evals": 4,
            "num_exp_traj_eval": 2,
        },
    },
    "cheetah-vel": {
        "algo": {"embedding_batch_size": 100},
        "runner": {
            "n_train_tasks": 100,
            "n_eval_tasks": 30,
            "num_extra_rl_steps_posterior": 600,
            "num_evals": 1,
            "num_exp_traj_eval": 2,
        },
    },
    "ant-dir": {
        "algo": {"meta_batch": 4, "embedding_batch_size": 256},
        "runner": {
            "num_extra_rl_steps_posterior": 600,
            "num_train_steps_per_itr": 4000,
            "num_evals": 4,
            "num_exp_traj_eval": 2,
        },
        "env": {"forward_backward": True},
    },
    "ant-goal": {
        "algo": {"meta_batch": 10, "embedding_batch_size": 256, "kl_lambda": 1.0},
        "runner": {
            "n_train_tasks": 150,
            "n_eval_tasks": 30,
            "num_extra_rl_steps_posterior": 600,
            "num_train_steps_per_itr": 4000,
            "num_evals": 1,
            "num_exp_traj_eval": 2,
        },
    },
    "humanoid-dir": {
        "algo": {"embedding_batch_size": 256},
        "runner": {
            "n_train_tasks": 100,
            "n_eval_tasks": 30,
            "num_extra_rl_steps_posterior": 600,
            "num_train_steps_per_itr": 4000,
            "num_evals": 1,
            "num_exp_traj_eval": 2,
        },
    },
    "point-robot": {
        "algo": {"reward_scale": 100.0, "kl_lambda": 0.1},
        "runner": {
            "n_train_tasks": 80,
            "n_eval_tasks": 20,
            "num_initial_steps": 200,
            "num_steps_prior": 200,
            "num_extra_rl_steps_posterior": 200,
            "num_train_steps_per_itr": 1000,
            "num_steps_per_eval": 60,
        },
        "env": {"max_episode_steps": 20},
    },
    "sparse-point-robot": {
        "algo": {
            "embedding_batch_size": 1024,
            "discount": 0.9,
            "reward_scale": 100.0,
            "kl_lambda": 1.0,
        },
        "runner": {
            "n_train_tasks": 80,
            "n_eval_tasks": 20,
            "num_initial_steps": 200,
            "num_tasks_sample": 10,
            "num_steps_prior": 100,
            "num_steps_posterior": 900,
            "num_extra_rl_steps_posterior": 0,
            "num_train_steps_per_itr": 1000,
            "num_steps_per_eval": 400,
            "num_exp_traj_eval": 5,
            "sparse_rewards": True,
        },
        "env": {"max_episode_steps": 20},
    },
}
#: hopper_rand_params.json and walker_rand_params.json (the same settings).
RAND_PARAMS: dict[str, dict[str, Any]] = {
    "agent": {"use_next_obs_in_context": True},
    "algo": {"meta_batch": 10, "embedding_batch_size": 100},
    "runner": {
        "n_train_tasks": 40,
        "n_eval_tasks": 10,
        "num_extra_rl_steps_posterior": 600,
        "num_train_steps_per_itr": 4000,
        "num_exp_traj_eval": 2,
    },
}
OYSTER_CONFIGS["hopper-rand-params"] = RAND_PARAMS
OYSTER_CONFIGS["walker-rand-params"] = RAND_PARAMS

#: Where a preset departs from oyster, and why (families not listed: no departure).
DEPARTURES = {
    "ant-dir": (
        "forward_backward=True (tasks {0, pi}, the paper's Ant-Fwd-Back): oyster's "
        "ant-dir.json leaves AntDirEnv's forward_backward=False, which draws its 2 "
        "directions from U[0, 2 pi]"
    ),
}


def oyster_settings(name: str) -> dict[str, dict[str, Any]]:
    """The family ``name``'s settings by part (``agent``, ``algo``, ``runner``, ``env``).

    Each part is oyster's default updated with the family's config (new dicts).

    Raises:
        KeyError: ``name`` is not a family of ``META_ENV_NAMES``.
    """
    if name not in META_ENV_NAMES:
        raise KeyError(name)
    config = OYSTER_CONFIGS[name]
    return {
        "agent": {**DEFAULT_AGENT, **config.get("agent", {})},
        "algo": {**DEFAULT_ALGO, **config.get("algo", {})},
        "runner": {**DEFAULT_RUNNER, **config.get("runner", {})},
        "env": {**DEFAULT_ENV, **config.get("env", {})},
    }
