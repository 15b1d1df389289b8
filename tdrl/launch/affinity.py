"""Hardware affinity: which CPU cores and GPU each run, and each process of a run, uses.

A machine is cut into *run slots*; every slot runs one experiment at a time. An affinity
*code* is a short string describing the machine and the cut, in rlpyt's format: pieces
``"{number}{abbreviation}"`` joined by ``_``, with an optional run-slot prefix::

    "4cpu_0gpu_2cpr"          # 4 cores, no GPU, 2 cores per run: 2 run slots
    "1slt_4cpu_0gpu_2cpr"     # the same machine, run slot 1 (cores 2 and 3)

The launcher hands every run the code of its own slot; the run turns it back into an
affinity with :func:`affinity_from_code` and pins itself with :func:`apply_affinity`.

Abbreviations (argument of :func:`make_affinity` in brackets): ``cpu`` (n_cpu_core),
``gpu`` (n_gpu), ``cxg`` (contexts_per_gpu), ``gpr`` (gpu_per_run), ``cpr``
(cpu_per_run), ``cpw`` (cpu_per_worker), ``res`` (cpu_reserved), ``hto``
(hyperthread_offset), ``ass`` (async_sample), ``sgr`` (sample_gpu_per_run), ``alt``
(alternating), ``saf`` (set_affinity) and ``slt`` (run slot).
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

#: Affinity argument name -> its three-letter abbreviation in a code (rlpyt's).
ABBREVIATIONS: dict[str, str] = {
    "n_cpu_core": "cpu",
    "n_gpu": "gpu",
    "contexts_per_gpu": "cxg",
    "gpu_per_run": "gpr",
    "cpu_per_run": "cpr",
    "cpu_per_worker": "cpw",
    "cpu_reserved": "res",
    "hyperthread_offset": "hto",
    "async_sample": "ass",
    "sample_gpu_per_run": "sgr",
    "alternating": "alt",
    "set_affinity": "saf",
}
RUN_SLOT_ABBREVIATION = "slt"
_ARGUMENTS = {abbr: name for name, abbr in ABBREVIATIONS.items()}
_PIECE = re.compile(r"^(\d+)([a-z]{3})$")

Cpus = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Affinity:
    """The hardware of one sampling process group: a master and its sampler workers.

    A serial or parallel run gets one of these (rlpyt's CPU/GPU affinity); a synchronous
    multi-GPU run gets one per GPU; an asynchronous run gets one as its ``sampler`` part.

    Attributes:
        master_cpus: CPUs of the master process (the runner, or the sampler's master).
        workers_cpus: One tuple of CPUs per sampler worker process. With ``alternating``
            there are two workers per group of cores (one per alternating half).
        torch_threads: Torch intra-op threads for the master (its number of cores).
        worker_torch_threads: Torch threads for each worker (``cpu_per_worker``).
        cuda_idx: The GPU of the master, or None to run on CPU.
        alternating: Whether the sampler should alternate two halves of its envs.
        set_affinity: Whether to pin processes to their CPUs at all.
        run_slot: The run slot this affinity belongs to.
    """

    master_cpus: Cpus
    workers_cpus: tuple[Cpus, ...]
    torch_threads: int
    worker_torch_threads: int = 1
    cuda_idx: int | None = None
    alternating: bool = False
    set_affinity: bool = True
    run_slot: int = 0

    @property
    def all_cpus(self) -> Cpus:
        """Every CPU used by the master or a worker, sorted."""
        return _union(self.master_cpus, *self.workers_cpus)

    @property
    def n_workers(self) -> int:
        """Number of sampler worker processes."""
        return len(self.workers_cpus)


@dataclasses.dataclass(frozen=True)
class OptimizerAffinity:
    """The hardware of one optimizer process of an asynchronous run.

    Attributes:
        cpus: CPUs of the optimizer process.
        torch_threads: Torch intra-op threads (its number of cores).
        cuda_idx: Its GPU, or None to optimise on CPU.
        set_affinity: Whether to pin the process to ``cpus``.
    """

    cpus: Cpus
    torch_threads: int
    cuda_idx: int | None = None
    set_affinity: bool = True


@dataclasses.dataclass(frozen=True)
class AsyncAffinity:
    """The hardware of an asynchronous run: optimizer process(es) beside a sampler.

    Attributes:
        optimizer: One entry per optimizer process (one per optimizer GPU, or one on CPU).
        sampler: The sampler's master and workers.
        set_affinity: Whether to pin processes to their CPUs at all.
        run_slot: The run slot this affinity belongs to.
    """

    optimizer: tuple[OptimizerAffinity, ...]
    sampler: Affinity
    set_affinity: bool = True
    run_slot: int = 0

    @property
    def all_cpus(self) -> Cpus:
        """Every CPU used by the optimizer(s) or the sampler, sorted."""
        return _union(*(o.cpus for o in self.optimizer), self.sampler.all_cpus)


RunAffinity = Affinity | AsyncAffinity | tuple[Affinity, ...]


@dataclasses.dataclass(frozen=True)
class _Spec:
    """The machine and how it is cut into run slots; validated on construction."""

    n_cpu_core: int = 1
    n_gpu: int = 0
    contexts_per_gpu: int = 1
    gpu_per_run: int = 1
    cpu_per_run: int = 1
    cpu_per_worker: int = 1
    cpu_reserved: int = 0
    hyperthread_offset: int = 0
    async_sample: bool = False
    sample_gpu_per_run: int = 0
    alternating: bool = False
    set_affinity: bool = True

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "bool":
                if not isinstance(value, bool | int) or value not in (0, 1):
                    raise ValueError(f"{f.name} must be a bool, got {value!r}")
                object.__setattr__(self, f.name, bool(value))
            elif not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{f.name} must be an int, got {value!r}")
        for name in ("n_cpu_core", "contexts_per_gpu", "gpu_per_run", "cpu_per_run"):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        _check(self.cpu_per_worker >= 1, f"cpu_per_worker must be >= 1, got {self.cpu_per_worker}")
        for name in ("n_gpu", "cpu_reserved", "hyperthread_offset", "sample_gpu_per_run"):
            _check(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        _check(
            self.hyperthread_offset == 0 or self.hyperthread_offset >= self.n_cpu_core,
            f"hyperthread_offset must be 0 (no hyperthreads) or >= n_cpu_core "
            f"({self.n_cpu_core}), got {self.hyperthread_offset}",
        )
        _check(
            self.sample_gpu_per_run in (0, 1),
            f"sample_gpu_per_run must be 0 (CPU sampler) or 1, got {self.sample_gpu_per_run}",
        )
        _check(
            self.async_sample or self.sample_gpu_per_run == 0,
            "sample_gpu_per_run needs async_sample=True",
        )
        if self.n_gpu == 0:
            self._check_cpu_only()
        else:
            self._check_gpu()
        if self.async_sample:
            cores, workers = (
                self.cores_per_slot,
                self.cores_per_slot - self.cpu_reserved * (self.gpu_per_run),
            )
        else:
            cores = self.cores_per_slot // (self.gpu_per_run if self.n_gpu else 1)
            workers = cores - self.cpu_reserved
        _check(
            workers >= 1,
            f"cpu_reserved ({self.cpu_reserved}) leaves no core for the sampler workers of "
            f"{cores} cores",
        )
        _check(
            workers % self.cpu_per_worker == 0,
            f"cpu_per_worker ({self.cpu_per_worker}) must divide the {workers} cores left for "
            f"sampler workers",
        )

    def _check_cpu_only(self) -> None:
        for name in ("contexts_per_gpu", "gpu_per_run"):
            _check(getattr(self, name) == 1, f"{name}={getattr(self, name)} needs n_gpu > 0")
        _check(
            self.n_cpu_core % self.cpu_per_run == 0,
            f"cpu_per_run ({self.cpu_per_run}) must divide n_cpu_core ({self.n_cpu_core})",
        )

    def _check_gpu(self) -> None:
        _check(
            self.cpu_per_run == 1,
            "cpu_per_run applies to CPU-only runs (n_gpu=0); with GPUs every GPU context gets "
            "n_cpu_core // (n_gpu * contexts_per_gpu) cores",
        )
        _check(
            self.n_cpu_core % self.n_gpu == 0,
            f"n_cpu_core ({self.n_cpu_core}) must be a multiple of n_gpu ({self.n_gpu})",
        )
        cpu_per_gpu = self.n_cpu_core // self.n_gpu
        if self.gpu_per_run > 1 or self.async_sample:
            _check(
                self.contexts_per_gpu == 1,
                "contexts_per_gpu must be 1 with gpu_per_run > 1 or async_sample",
            )
        _check(
            cpu_per_gpu % self.contexts_per_gpu == 0,
            f"contexts_per_gpu ({self.contexts_per_gpu}) must divide the {cpu_per_gpu} cores "
            f"per GPU (n_cpu_core // n_gpu)",
        )
        gpus = self.gpus_per_slot
        _check(
            self.n_gpu % gpus == 0,
            f"n_gpu ({self.n_gpu}) must be a multiple of the {gpus} GPUs each run uses "
            f"(gpu_per_run + sample_gpu_per_run)",
        )

    @property
    def gpus_per_slot(self) -> int:
        return self.gpu_per_run + self.sample_gpu_per_run

    @property
    def n_run_slots(self) -> int:
        if self.n_gpu == 0:
            return self.n_cpu_core // self.cpu_per_run
        return self.n_gpu * self.contexts_per_gpu // self.gpus_per_slot

    @property
    def cores_per_slot(self) -> int:
        if self.n_gpu == 0:
            return self.cpu_per_run
        return self.n_cpu_core // self.n_gpu * self.gpus_per_slot // self.contexts_per_gpu

    def encode(self, run_slot: int | None = None) -> str:
        pieces = [] if run_slot is None else [f"{run_slot}{RUN_SLOT_ABBREVIATION}"]
        for f in dataclasses.fields(self):
            value = int(getattr(self, f.name))
            if f.name in ("n_cpu_core", "n_gpu") or value != int(f.default):
                pieces.append(f"{value}{ABBREVIATIONS[f.name]}")
        return "_".join(pieces)

    def build(self, run_slot: int) -> RunAffinity:
        _check(
            isinstance(run_slot, int) and 0 <= run_slot < self.n_run_slots,
            f"run_slot must be in [0, {self.n_run_slots}) for this affinity "
            f"({self.n_run_slots} run slots), got {run_slot!r}",
        )
        n = self.cores_per_slot
        first_core = run_slot * n
        cores = tuple(range(first_core, first_core + n))
        if self.n_gpu == 0:
            if self.async_sample:
                return self._async(run_slot, cores, first_gpu=None)
            return self._sampler(run_slot, cores, cores[self.cpu_reserved :], cuda_idx=None)
        first_gpu = run_slot * self.gpus_per_slot // self.contexts_per_gpu
        if self.async_sample:
            return self._async(run_slot, cores, first_gpu=first_gpu)
        if self.gpu_per_run == 1:
            return self._sampler(run_slot, cores, cores[self.cpu_reserved :], first_gpu)
        per_gpu = n // self.gpu_per_run
        parts = []
        for i in range(self.gpu_per_run):
            gpu_cores = cores[i * per_gpu : (i + 1) * per_gpu]
            parts.append(
                self._sampler(run_slot, gpu_cores, gpu_cores[self.cpu_reserved :], first_gpu + i)
            )
        return tuple(parts)

    def _async(self, run_slot: int, cores: Cpus, first_gpu: int | None) -> AsyncAffinity:
        res = self.cpu_reserved
        optimizers = []
        for i in range(self.gpu_per_run):
            opt_cores = cores[i * res : (i + 1) * res] if res else cores
            optimizers.append(
                OptimizerAffinity(
                    cpus=self._with_hyperthreads(opt_cores),
                    torch_threads=len(opt_cores),
                    cuda_idx=None if first_gpu is None else first_gpu + i,
                    set_affinity=self.set_affinity,
                )
            )
        sampler_cores = cores[res * self.gpu_per_run :]
        sampler_gpu = None
        if first_gpu is not None and self.sample_gpu_per_run:
            sampler_gpu = first_gpu + self.gpu_per_run
        sampler = self._sampler(run_slot, sampler_cores, sampler_cores, sampler_gpu)
        return AsyncAffinity(
            optimizer=tuple(optimizers),
            sampler=sampler,
            set_affinity=self.set_affinity,
            run_slot=run_slot,
        )

    def _sampler(
        self, run_slot: int, cores: Cpus, worker_cores: Cpus, cuda_idx: int | None
    ) -> Affinity:
        cpw = self.cpu_per_worker
        groups = tuple(worker_cores[i : i + cpw] for i in range(0, len(worker_cores), cpw))
        hto = self.hyperthread_offset
        if hto:
            siblings = tuple(tuple(c + hto for c in g) for g in groups)
            if self.alternating:  # the second half of the workers runs on the siblings
                workers = groups + siblings
            else:
                workers = tuple(g + s for g, s in zip(groups, siblings, strict=True))
        else:
            workers = groups + groups if self.alternating else groups
        return Affinity(
            master_cpus=self._with_hyperthreads(cores),
            workers_cpus=workers,
            torch_threads=len(cores),
            worker_torch_threads=cpw,
            cuda_idx=cuda_idx,
            alternating=self.alternating,
            set_affinity=self.set_affinity,
            run_slot=run_slot,
        )

    def _with_hyperthreads(self, cores: Cpus) -> Cpus:
        hto = self.hyperthread_offset
        return cores + tuple(c + hto for c in cores) if hto else cores


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _union(*cpu_sets: Cpus) -> Cpus:
    return tuple(sorted({c for cpus in cpu_sets for c in cpus}))


def encode_affinity(
    *,
    n_cpu_core: int = 1,
    n_gpu: int = 0,
    contexts_per_gpu: int = 1,
    gpu_per_run: int = 1,
    cpu_per_run: int = 1,
    cpu_per_worker: int = 1,
    cpu_reserved: int = 0,
    hyperthread_offset: int = 0,
    async_sample: bool = False,
    sample_gpu_per_run: int = 0,
    alternating: bool = False,
    set_affinity: bool = True,
    run_slot: int | None = None,
) -> str:
    """Encodes a machine and its cut into run slots as an affinity code.

    The code names ``n_cpu_core`` and ``n_gpu`` always and every other argument only when
    it differs from its default, e.g. ``"4cpu_0gpu_2cpr"``.

    Args:
        n_cpu_core: See :func:`make_affinity` for this and the following arguments.
        n_gpu: Number of GPUs.
        contexts_per_gpu: Runs sharing each GPU.
        gpu_per_run: GPUs per run.
        cpu_per_run: Cores per run, without GPUs.
        cpu_per_worker: Cores per sampler worker.
        cpu_reserved: Cores per run kept off the sampler workers.
        hyperthread_offset: Id of core 0's hyperthread sibling, or 0.
        async_sample: Asynchronous sampling and optimisation.
        sample_gpu_per_run: GPUs of an asynchronous run's sampler (0 or 1).
        alternating: Alternating sampler.
        set_affinity: Pin processes to their CPUs.
        run_slot: Prefix the code with this run slot (``"{run_slot}slt_..."``); None: no
            prefix.

    Returns:
        The code; :func:`affinity_from_code` and :func:`decode_affinity` invert it.

    Raises:
        ValueError: An inconsistent combination (the message names the argument), or a
            ``run_slot`` outside ``[0, n_run_slots)``.
    """
    spec = _Spec(
        n_cpu_core=n_cpu_core,
        n_gpu=n_gpu,
        contexts_per_gpu=contexts_per_gpu,
        gpu_per_run=gpu_per_run,
        cpu_per_run=cpu_per_run,
        cpu_per_worker=cpu_per_worker,
        cpu_reserved=cpu_reserved,
        hyperthread_offset=hyperthread_offset,
        async_sample=async_sample,
        sample_gpu_per_run=sample_gpu_per_run,
        alternating=alternating,
        set_affinity=set_affinity,
    )
    if run_slot is not None:
        spec.build(run_slot)  # validates the slot
    return spec.encode(run_slot)


def make_affinity(
    *,
    n_cpu_core: int = 1,
    n_gpu: int = 0,
    contexts_per_gpu: int = 1,
    gpu_per_run: int = 1,
    cpu_per_run: int = 1,
    cpu_per_worker: int = 1,
    cpu_reserved: int = 0,
    hyperthread_offset: int = 0,
    async_sample: bool = False,
    sample_gpu_per_run: int = 0,
    alternating: bool = False,
    set_affinity: bool = True,
    run_slot: int = 0,
) -> RunAffinity:
    """The affinity of one run slot of a machine (rlpyt's ``make_affinity``).

    Cores are numbered ``0 .. n_cpu_core - 1`` and given to run slots in contiguous
    blocks. Without GPUs each run gets ``cpu_per_run`` cores; with GPUs each GPU gets
    ``n_cpu_core // n_gpu`` cores, split between its ``contexts_per_gpu`` runs.

    Example::

        aff = make_affinity(n_cpu_core=4, cpu_per_run=2, run_slot=1)
        aff.master_cpus, aff.workers_cpus  # (2, 3), ((2,), (3,))

    Args:
        n_cpu_core: Physical cores of the machine to use.
        n_gpu: GPUs to use; 0 runs everything on CPU.
        contexts_per_gpu: Runs sharing each GPU (with ``gpu_per_run=1``).
        gpu_per_run: GPUs per run. Above 1 a synchronous run gets one :class:`Affinity` per
            GPU (a tuple, in rank order); an asynchronous run one optimizer per GPU.
        cpu_per_run: Cores per run when ``n_gpu == 0``; must divide ``n_cpu_core``.
        cpu_per_worker: Cores per sampler worker; must divide the cores left for workers.
        cpu_reserved: Cores of each run (of each GPU with ``gpu_per_run > 1``) that only the
            master uses, not the sampler workers. With ``async_sample`` these are the
            optimizer's cores (per optimizer GPU); 0 lets the optimizer share the sampler's.
        hyperthread_offset: Id of the hyperthread sibling of core 0 (core ``c``'s sibling is
            ``c + hyperthread_offset``, e.g. ``n_cpu_core`` on most Linux machines); 0 uses
            no hyperthreads. Siblings join the master's CPUs and each worker's, or with
            ``alternating`` host the second half of the workers.
        async_sample: Asynchronous run: returns an :class:`AsyncAffinity` with separate
            ``optimizer`` and ``sampler`` parts.
        sample_gpu_per_run: Asynchronous runs only: 1 gives the sampler its own GPU after
            the optimizer GPUs; 0 samples on CPU.
        alternating: Alternating sampler: each group of worker cores hosts two workers.
        set_affinity: Pin processes to their CPUs; False leaves scheduling to the OS (e.g.
            on shared cloud machines).
        run_slot: Which run slot, in ``[0, n_run_slots)``.

    Returns:
        An :class:`Affinity` (serial or parallel run), a tuple of them (synchronous
        multi-GPU run) or an :class:`AsyncAffinity`.

    Raises:
        ValueError: An inconsistent combination, naming the argument (e.g. ``cpu_per_run``
            must divide ``n_cpu_core``), or ``run_slot`` out of range.
    """
    spec = _Spec(
        n_cpu_core=n_cpu_core,
        n_gpu=n_gpu,
        contexts_per_gpu=contexts_per_gpu,
        gpu_per_run=gpu_per_run,
        cpu_per_run=cpu_per_run,
        cpu_per_worker=cpu_per_worker,
        cpu_reserved=cpu_reserved,
        hyperthread_offset=hyperthread_offset,
        async_sample=async_sample,
        sample_gpu_per_run=sample_gpu_per_run,
        alternating=alternating,
        set_affinity=set_affinity,
    )
    return spec.build(run_slot)


def decode_affinity(code: str) -> dict[str, Any]:
    """The keyword arguments of :func:`encode_affinity` that ``code`` stands for.

    Args:
        code: An affinity code, with or without a run-slot prefix.

    Returns:
        Every argument (defaults filled in), plus ``run_slot`` (None without a prefix).

    Raises:
        ValueError: A malformed piece, an unknown or repeated abbreviation, or an
            inconsistent combination.
    """
    run_slot, spec = _decode(code)
    return {**dataclasses.asdict(spec), "run_slot": run_slot}


def _decode(code: str) -> tuple[int | None, _Spec]:
    if not isinstance(code, str) or not code:
        raise ValueError(f"affinity code must be a non-empty string, got {code!r}")
    values: dict[str, int] = {}
    for piece in code.split("_"):
        match = _PIECE.match(piece)
        if match is None:
            raise ValueError(
                f"affinity code {code!r}: piece {piece!r} is not '<number><abbreviation>'"
            )
        number, abbr = int(match.group(1)), match.group(2)
        if abbr != RUN_SLOT_ABBREVIATION and abbr not in _ARGUMENTS:
            known = ", ".join([*ABBREVIATIONS.values(), RUN_SLOT_ABBREVIATION])
            raise ValueError(
                f"affinity code {code!r}: unknown abbreviation {abbr!r} (known: {known})"
            )
        if abbr in values:
            raise ValueError(f"affinity code {code!r}: {abbr!r} given twice")
        values[abbr] = number
    run_slot = values.pop(RUN_SLOT_ABBREVIATION, None)
    kwargs: dict[str, Any] = {_ARGUMENTS[abbr]: n for abbr, n in values.items()}
    for name in ("async_sample", "alternating", "set_affinity"):
        if name in kwargs:
            if kwargs[name] not in (0, 1):
                raise ValueError(
                    f"affinity code {code!r}: {name} ({ABBREVIATIONS[name]}) must be 0 or 1"
                )
            kwargs[name] = bool(kwargs[name])
    return run_slot, _Spec(**kwargs)


def affinity_from_code(code: str) -> RunAffinity:
    """The affinity a (run-slot) code stands for; the inverse of :func:`encode_affinity`.

    Args:
        code: An affinity code; without a run-slot prefix, run slot 0 is meant.

    Returns:
        What :func:`make_affinity` returns for the same arguments.

    Raises:
        ValueError: See :func:`decode_affinity`; also a run slot out of range.
    """
    run_slot, spec = _decode(code)
    return spec.build(0 if run_slot is None else run_slot)


def get_n_run_slots(code: str) -> int:
    """How many runs the machine of ``code`` runs at once (its run slot is ignored)."""
    return _decode(code)[1].n_run_slots


def remove_run_slot(code: str) -> tuple[int | None, str]:
    """Splits ``code`` into its run slot (None without one) and the code without it."""
    run_slot, spec = _decode(code)
    return run_slot, spec.encode()


def prepend_run_slot(code: str, run_slot: int) -> str:
    """``code`` for run slot ``run_slot`` (replacing any slot it has).

    Raises:
        ValueError: ``run_slot`` out of range for the machine of ``code``.
    """
    spec = _decode(code)[1]
    spec.build(run_slot)
    return spec.encode(run_slot)


# --------------------------------------------------------------------------- applying


def pin_process(cpus: Sequence[int], pid: int = 0) -> bool:
    """Pins process ``pid`` (0: this one) to ``cpus`` with :func:`os.sched_setaffinity`.

    Where pinning is unsupported (macOS, Windows) or refused (CPUs outside this
    container's cpuset), it warns with a :class:`RuntimeWarning` and leaves the process
    unpinned.

    Returns:
        Whether the process is now pinned.
    """
    if not hasattr(os, "sched_setaffinity"):
        warnings.warn(
            "CPU pinning is not supported on this platform; processes run unpinned",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    try:
        os.sched_setaffinity(pid, list(cpus))
    except OSError as e:
        warnings.warn(
            f"could not pin process {pid or os.getpid()} to CPUs {list(cpus)} ({e}); "
            f"it runs unpinned",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


def apply_affinity(
    affinity: Affinity | OptimizerAffinity | Mapping[str, Any], *, worker: int | None = None
) -> Cpus | None:
    """Pins the calling process to its CPUs and sets its torch threads.

    Runners call this for the master (``worker=None``), sampler workers with their index
    and asynchronous optimizers with ``affinity.optimizer[i]``.

    Args:
        affinity: An :class:`Affinity`, an :class:`OptimizerAffinity`, or a plain dict with
            rlpyt's keys (``master_cpus`` or ``cpus``, ``workers_cpus``,
            ``master_torch_threads`` or ``torch_threads``, ``worker_torch_threads``,
            ``set_affinity``); missing keys leave that setting alone.
        worker: Index of the sampler worker calling; None for the master.

    Returns:
        The CPUs the process is pinned to, or None when pinning was off or failed (a
        :class:`RuntimeWarning` says why).

    Raises:
        TypeError: An :class:`AsyncAffinity` or a tuple (pass one of its parts).
        IndexError: ``worker`` beyond the affinity's workers.
    """
    if isinstance(affinity, AsyncAffinity | tuple):
        raise TypeError(
            "apply_affinity needs one process's affinity: pass affinity.optimizer[i] or "
            "affinity.sampler of an AsyncAffinity, or one element of a multi-GPU tuple"
        )
    if isinstance(affinity, Affinity | OptimizerAffinity):
        affinity = dataclasses.asdict(affinity)
    if worker is None:
        cpus = affinity.get("master_cpus", affinity.get("cpus"))
        threads = affinity.get("master_torch_threads", affinity.get("torch_threads"))
    else:
        workers = affinity.get("workers_cpus") or ()
        if not 0 <= worker < len(workers):
            raise IndexError(f"worker {worker} out of range: the affinity has {len(workers)}")
        cpus = workers[worker]
        threads = affinity.get("worker_torch_threads", len(cpus))
    pinned = None
    if cpus and affinity.get("set_affinity", True) and pin_process(cpus):
        pinned = tuple(cpus)
    if threads:
        import torch  # only here: the launcher itself never needs torch

        torch.set_num_threads(int(threads))
    return pinned
