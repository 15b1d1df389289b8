"""Hardware affinity: which CPU cores and GPU each run, and each process of a run, uses.

A machine is cut into *run slots*; every slot runs one experiment at a time. This module
holds the data: :class:`MachineSpec` (a machine and its cut, validated on construction)
and what it builds for one slot, an :class:`Affinity` (a sampling process group: master and
workers), an :class:`AsyncAffinity` (optimizer processes beside a sampler) or a tuple of
affinities (a synchronous multi-GPU run), with :func:`make_affinity` as the entry point.
``affinity_codes`` writes a ``MachineSpec`` as a short string for the launcher to hand
each run; ``pinning`` applies an affinity to the calling process.
"""

from __future__ import annotations

import dataclasses

from tdrl.utils.checks import check_choice, check_int

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

#: ``MachineSpec`` fields that are switches (the others are counts).
SWITCHES = ("async_sample", "alternating", "set_affinity")


@dataclasses.dataclass(frozen=True)
class MachineSpec:
    """A machine and how it is cut into run slots; validated on construction.

    The fields are :func:`make_affinity`'s arguments (see there). Counts must be whole
    numbers (ints, or whole floats such as ``2.0``, stored as ints: they are written into
    affinity codes), switches bools (or 0 and 1).

    Raises:
        ValueError: An inconsistent combination; the message names the argument.
    """

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
            if f.name in SWITCHES:
                value = bool(check_choice(f.name, value, (False, True)))
            else:  # whole floats (2.0) become ints, as every count in tdrl
                minimum = 1 if f.name in _AT_LEAST_ONE else 0
                maximum = 1 if f.name == "sample_gpu_per_run" else None
                value = check_int(f.name, value, minimum=minimum, maximum=maximum)
            object.__setattr__(self, f.name, value)
        if self.hyperthread_offset and self.hyperthread_offset < self.n_cpu_core:
            raise ValueError(
                f"hyperthread_offset must be 0 (no hyperthreads) or >= n_cpu_core "
                f"({self.n_cpu_core}), got {self.hyperthread_offset}"
            )
        if self.sample_gpu_per_run and not self.async_sample:
            raise ValueError("sample_gpu_per_run needs async_sample=True")
        if self.n_gpu == 0:
            self._check_cpu_only()
        else:
            self._check_gpu()
        if self.async_sample:
            cores = self.cores_per_slot
            workers = cores - self.cpu_reserved * self.gpu_per_run
        else:
            cores = self.cores_per_slot // (self.gpu_per_run if self.n_gpu else 1)
            workers = cores - self.cpu_reserved
        if workers < 1:
            raise ValueError(
                f"cpu_reserved ({self.cpu_reserved}) leaves no core for the sampler workers "
                f"of {cores} cores"
            )
        if workers % self.cpu_per_worker:
            raise ValueError(
                f"cpu_per_worker ({self.cpu_per_worker}) must divide the {workers} cores left "
                f"for sampler workers"
            )

    def _check_cpu_only(self) -> None:
        for name in ("contexts_per_gpu", "gpu_per_run"):
            if getattr(self, name) != 1:
                raise ValueError(f"{name}={getattr(self, name)} needs n_gpu > 0")
        if self.n_cpu_core % self.cpu_per_run:
            raise ValueError(
                f"cpu_per_run ({self.cpu_per_run}) must divide n_cpu_core ({self.n_cpu_core})"
            )

    def _check_gpu(self) -> None:
        if self.cpu_per_run != 1:
            raise ValueError(
                "cpu_per_run applies to CPU-only runs (n_gpu=0); with GPUs every GPU context "
                "gets n_cpu_core // (n_gpu * contexts_per_gpu) cores"
            )
        if self.n_cpu_core % self.n_gpu:
            raise ValueError(
                f"n_cpu_core ({self.n_cpu_core}) must be a multiple of n_gpu ({self.n_gpu})"
            )
        if (self.gpu_per_run > 1 or self.async_sample) and self.contexts_per_gpu != 1:
            raise ValueError("contexts_per_gpu must be 1 with gpu_per_run > 1 or async_sample")
        cpu_per_gpu = self.n_cpu_core // self.n_gpu
        if cpu_per_gpu % self.contexts_per_gpu:
            raise ValueError(
                f"contexts_per_gpu ({self.contexts_per_gpu}) must divide the {cpu_per_gpu} "
                f"cores per GPU (n_cpu_core // n_gpu)"
            )
        if self.n_gpu % self.gpus_per_slot:
            raise ValueError(
                f"n_gpu ({self.n_gpu}) must be a multiple of the {self.gpus_per_slot} GPUs "
                f"each run uses (gpu_per_run + sample_gpu_per_run)"
            )

    @property
    def gpus_per_slot(self) -> int:
        """GPUs of one run: its optimizer(s) and, asynchronously, its sampler."""
        return self.gpu_per_run + self.sample_gpu_per_run

    @property
    def n_run_slots(self) -> int:
        """How many runs the machine runs at once."""
        if self.n_gpu == 0:
            return self.n_cpu_core // self.cpu_per_run
        return self.n_gpu * self.contexts_per_gpu // self.gpus_per_slot

    @property
    def cores_per_slot(self) -> int:
        """CPU cores of one run slot."""
        if self.n_gpu == 0:
            return self.cpu_per_run
        return self.n_cpu_core // self.n_gpu * self.gpus_per_slot // self.contexts_per_gpu

    def build(self, run_slot: int) -> RunAffinity:
        """The affinity of run slot ``run_slot`` (see :func:`make_affinity`).

        Raises:
            ValueError: ``run_slot`` outside ``[0, n_run_slots)``.
        """
        run_slot = check_int("run_slot", run_slot, minimum=0, maximum=self.n_run_slots - 1)
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


#: Counts that must be at least 1 (the other counts at least 0).
_AT_LEAST_ONE = ("n_cpu_core", "contexts_per_gpu", "gpu_per_run", "cpu_per_run", "cpu_per_worker")


def _union(*cpu_sets: Cpus) -> Cpus:
    return tuple(sorted({c for cpus in cpu_sets for c in cpus}))


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
    spec = MachineSpec(
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
