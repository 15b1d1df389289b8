"""Q-function policy-gradient models: actors, (ensembles of) Q-functions, state values."""

from tdrl.models.qpg.context import (
    ContextEncoder,
    context_from_transitions,
    kl_to_standard_normal,
    product_of_gaussians,
)
from tdrl.models.qpg.mlp import MuMlpModel, PiMlpModel, QEnsembleMlpModel, VMlpModel

__all__ = [
    "ContextEncoder",
    "MuMlpModel",
    "PiMlpModel",
    "QEnsembleMlpModel",
    "VMlpModel",
    "context_from_transitions",
    "kl_to_standard_normal",
    "product_of_gaussians",
]
