"""Environment factories and per-episode statistics."""

from tdrl.envs.atari import AtariEnv, AtariTrajInfo, make_atari_env
from tdrl.envs.gym import make_env, make_gym_env, unwrap_gym_env
from tdrl.envs.meta import MultiTaskEnv, make_meta_env
from tdrl.envs.nonfinite import NonFiniteTrajInfo, ZeroNonFinite
from tdrl.envs.spaces import space_to_spec
from tdrl.envs.traj_info import TrajInfo
from tdrl.envs.transforms import PrevActionReward
from tdrl.envs.vector_cartpole import VectorCartPole

__all__ = [
    "AtariEnv",
    "AtariTrajInfo",
    "MultiTaskEnv",
    "NonFiniteTrajInfo",
    "PrevActionReward",
    "TrajInfo",
    "VectorCartPole",
    "ZeroNonFinite",
    "make_atari_env",
    "make_env",
    "make_gym_env",
    "make_meta_env",
    "space_to_spec",
    "unwrap_gym_env",
]
