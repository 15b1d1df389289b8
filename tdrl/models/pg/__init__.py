"""Policy-gradient models: a policy head and a value head."""

from tdrl.models.pg.mlp import CategoricalPgMlpModel, GaussianPgMlpModel

__all__ = ["CategoricalPgMlpModel", "GaussianPgMlpModel"]
