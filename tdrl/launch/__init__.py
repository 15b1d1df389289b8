"""Launching: script configs, hardware affinity, variant grids and a launcher for many runs.

``config`` turns a script's config dataclass into its command line and wraps training in
the run's logger. ``affinity`` says which CPUs and GPU each run (and each of its processes)
uses, ``affinity_codes`` writes that as a short string and ``pinning`` applies it to a
process. ``variants`` builds grids of config changes with one log directory each, and
``launcher`` runs every (variant, run) as a subprocess over the machine's run slots;
``command`` is the ``tdrl launch`` subcommand on top of it. See ``docs/launching.md``.

Example::

    from tdrl.launch import VariantLevel, encode_affinity, make_variants, run_experiments

    code = encode_affinity(n_cpu_core=2, cpu_per_run=1)  # two runs at once
    variants, log_dirs = make_variants(
        VariantLevel(["learning_rate"], [[1e-3], [3e-4]], ["lr_1e-3", "lr_3e-4"])
    )
    results = run_experiments("train.py", code, "lr_sweep", 2, variants, log_dirs)
"""

from tdrl.launch.affinity import (
    Affinity,
    AsyncAffinity,
    OptimizerAffinity,
    make_affinity,
)
from tdrl.launch.affinity_codes import (
    ABBREVIATIONS,
    affinity_from_code,
    decode_affinity,
    encode_affinity,
    get_n_run_slots,
    prepend_run_slot,
    remove_run_slot,
)
from tdrl.launch.config import (
    RunConfig,
    config_parser,
    option,
    parse_config,
    train_and_log,
)
from tdrl.launch.launcher import run_experiments
from tdrl.launch.pinning import apply_affinity, pin_process
from tdrl.launch.run_args import RunArgs, get_run_args
from tdrl.launch.runs import FINISHED_FILE, OUTPUT_FILE, SUMMARY_FILE, RunResult
from tdrl.launch.variants import (
    VARIANT_FILE,
    VariantLevel,
    load_variant,
    make_variants,
    safe_dir_name,
    save_variant,
    update_config,
)

__all__ = [
    "ABBREVIATIONS",
    "FINISHED_FILE",
    "OUTPUT_FILE",
    "SUMMARY_FILE",
    "VARIANT_FILE",
    "Affinity",
    "AsyncAffinity",
    "OptimizerAffinity",
    "RunArgs",
    "RunConfig",
    "RunResult",
    "VariantLevel",
    "affinity_from_code",
    "apply_affinity",
    "config_parser",
    "decode_affinity",
    "encode_affinity",
    "get_n_run_slots",
    "get_run_args",
    "load_variant",
    "make_affinity",
    "make_variants",
    "option",
    "parse_config",
    "pin_process",
    "prepend_run_slot",
    "remove_run_slot",
    "run_experiments",
    "safe_dir_name",
    "save_variant",
    "train_and_log",
    "update_config",
]
