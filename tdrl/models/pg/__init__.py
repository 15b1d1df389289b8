"""Policy-gradient models: a policy head and a value head (feed-forward or recurrent)."""

from tdrl.models.pg.atari import AtariFfModel, atari_pg_trunk
from tdrl.models.pg.lstm import PgLstmModel, mlp_trunk
from tdrl.models.pg.mlp import CategoricalPgMlpModel, GaussianPgMlpModel

__all__ = [
    "AtariFfModel",
    "CategoricalPgMlpModel",
    "GaussianPgMlpModel",
    "PgLstmModel",
    "atari_pg_trunk",
    "mlp_trunk",
]
