"""The names of the meta-RL task families, in a module that imports nothing.

``tdrl.envs.meta.make_meta_env`` builds each family by its oyster name; the ``tdrl``
command line lists and checks the names without importing gymnasium or any env code.
"""

#: The families ``tdrl.envs.meta.make_meta_env`` builds, by their oyster names.
META_ENV_NAMES = (
    "ant-dir",
    "ant-goal",
    "cheetah-dir",
    "cheetah-vel",
    "hopper-rand-params",
    "humanoid-dir",
    "point-robot",
    "sparse-point-robot",
    "walker-rand-params",
)
