"""tdrl: rlpyt's research RL architecture rebuilt on TorchRL and TensorDict.

``import tdrl`` stays light: it needs torch, tensordict and torchrl only. Environments,
samplers, agents, algorithms and runners live in their role folders and are imported from
there (``from tdrl.samplers import SerialSampler``).
"""

__version__ = "0.1.0"
