"""Runners: the training loop connecting a sampler, an agent and an algorithm."""

from tdrl.runners.minibatch_rl import MinibatchRl, MinibatchRlEval

__all__ = ["MinibatchRl", "MinibatchRlEval"]
