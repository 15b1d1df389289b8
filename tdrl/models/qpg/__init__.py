"""Q-function policy-gradient models: actors, (ensembles of) Q-functions, state values."""

from tdrl.models.qpg.mlp import MuMlpModel, PiMlpModel, QEnsembleMlpModel, VMlpModel

__all__ = ["MuMlpModel", "PiMlpModel", "QEnsembleMlpModel", "VMlpModel"]
