"""Launching: hardware affinity, variant grids and a launcher for many runs at once.

``affinity`` says which CPUs and GPU each run (and each of its processes) uses and encodes
that as a short string; ``variants`` builds grids of config changes with one log directory
each; ``launcher`` runs every (variant, run) as a subprocess over the machine's run slots.
See ``docs/launching.md``.

Example::

    from tdrl.launch import VariantLevel, encode_affinity, make_variants, run_experiments

    code = encode_affinity(n_cpu_core=2, cpu_per_run=1)  # two runs at once
    variants, log_dirs = make_variants(
        VariantLevel(["learning_rate"], [[1e-3], [3e-4]], ["lr_1e-3", "lr_3e-4"])
    )
    results = run_experiments("train.py", code, "lr_sweep", 2, variants, log_dirs)
"""

from tdrl.launch.affinity import (
    ABBREVIATIONS,
    Affinity,
    AsyncAffinity,
    OptimizerAffinity,
    affinity_from_code,
    apply_affinity,
    decode_affinity,
    encode_affinity,
    get_n_run_slots,
    make_affinity,
    pin_process,
    prepend_run_slot,
    remove_run_slot,
)
from tdrl.launch.launcher import (
    OUTPUT_FILE,
    SUMMARY_FILE,
    RunArgs,
    RunResult,
    get_run_args,
    run_experiments,
)
from tdrl.launch.variants import (
    VARIANT_FILE,
    VariantLevel,
    load_variant,
    make_variants,
    save_variant,
    update_config,
)

__all__ = [
    "ABBREVIATIONS",
    "OUTPUT_FILE",
    "SUMMARY_FILE",
    "VARIANT_FILE",
    "Affinity",
    "AsyncAffinity",
    "OptimizerAffinity",
    "RunArgs",
    "RunResult",
    "VariantLevel",
    "affinity_from_code",
    "apply_affinity",
    "decode_affinity",
    "encode_affinity",
    "get_n_run_slots",
    "get_run_args",
    "load_variant",
    "make_affinity",
    "make_variants",
    "pin_process",
    "prepend_run_slot",
    "remove_run_slot",
    "run_experiments",
    "save_variant",
    "update_config",
]
