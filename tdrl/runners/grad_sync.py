"""Keeping ``SyncRl``'s replicas equal: equal start, averaged gradients, shared statistics.

Every rank holds a full replica (agent and algorithm with its optimizers). They stay equal
because they start equal and then take the same optimizer steps:

* **Equal start.** ``Replicas`` broadcasts rank 0's agent parameters and buffers (target
  networks and observation statistics included) and the trained tensors the algorithm
  holds outside the agent (SAC's ``log_alpha``).
* **Averaged gradients.** ``GradAverager`` puts a post-accumulate-grad hook on every
  trained parameter (the agent's trainable parameters, then those of the algorithm's
  optimizers that the agent does not hold). The first hook that fires in a backward pass
  queues an autograd callback (the mechanism ``DistributedDataParallel`` itself uses) that
  runs once the whole pass has finished: it all-reduces the gradients this pass produced,
  in one flat bucket per dtype and device, and divides them by the world size. The
  average is thus taken inside ``backward()``, before the algorithm clips gradient norms
  and steps: the unchanged clip and step code then acts on equal gradients on every rank,
  and clips the mean gradient exactly as one process on the ranks' whole batch would.
* **Shared statistics.** The running statistics the agent reports (``agent.statistics()``:
  its model's ``RunningMeanStd`` observation normaliser) get ``sync_across_ranks = True``
  for the run: each update merges the batches of all ranks.
* **A check.** ``Replicas.check_equal`` compares checksums of all the agent's parameters
  (targets included) and the extra trained tensors after every iteration, so an
  algorithm that changes parameters outside the synchronised backward passes fails at
  once instead of training diverging replicas.

**Devices.** Every tensor a collective sends is on the backend's device
(``collective_device``): the rank's GPU for NCCL (``SyncRl(cuda=True)`` calls
``torch.cuda.set_device`` first, which the object collectives also rely on), the CPU for
gloo. A tensor held elsewhere (a CPU tensor in an NCCL run) is copied there and back, so a
stray one costs a copy instead of failing the run; in the usual case (everything on the
rank's device) nothing is copied.

Why not ``torch.nn.parallel.DistributedDataParallel``: DDP averages only the gradients
of passes that go through its own ``forward()``. The algorithms call ``agent.model`` (and
the critics, value networks and temperature of DDPG, TD3, SAC and SAC-V) from inside the
agent and the loss, so DDP would need the agent patched to route each gradient-producing
forward through a wrapper, and would still not cover the tensors trained outside one
module. The hook gives DDP's exact average for every algorithm, with nothing patched.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.distributed as dist

from tdrl.agents.base import Agent
from tdrl.algos.base import Algorithm


class GradAverager:
    """Averages across ranks the gradients that every backward pass leaves on ``params``.

    A post-accumulate-grad hook on each parameter records which ones received a gradient;
    the first one of a backward pass queues a callback that autograd runs once that whole
    pass has finished. The callback all-reduces those gradients, in one flat bucket per
    dtype and device, and divides by the world size. Parameters without gradient in a pass
    (the critics frozen for the actor's loss) are left alone; all ranks run the same code,
    so the same parameters receive gradients everywhere. A gradient already present before
    the pass (accumulated over several passes) was averaged by its own pass and is equal
    on all ranks, so averaging the sum is still exact.

    Args:
        params: the trained parameters, in the same order on every rank.
        world_size: number of ranks.
        device: where the all-reduce runs (``collective_device``); None: where each bucket is.
    """

    def __init__(
        self, params: Sequence[torch.Tensor], world_size: int, device: torch.device | None = None
    ):
        self.params = list(params)
        self.world_size = world_size
        self.device = device
        self._received: set[int] = set()
        self._queued = False
        self._handles = [
            p.register_post_accumulate_grad_hook(functools.partial(self._on_grad, i))
            for i, p in enumerate(self.params)
        ]

    def _on_grad(self, index: int, param: torch.Tensor) -> None:
        self._received.add(index)
        if not self._queued:
            self._queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._average)

    def _average(self) -> None:
        received = sorted(self._received)  # the parameters' order, not autograd's
        self._received.clear()
        self._queued = False
        buckets: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
        for index in received:
            grad = self.params[index].grad
            if grad is not None:
                buckets.setdefault((grad.device, grad.dtype), []).append(grad)
        for grads in buckets.values():
            flat = torch.cat([g.reshape(-1) for g in grads])
            if self.device is not None:
                flat = flat.to(self.device)  # a no-op in the usual case
            dist.all_reduce(flat)
            flat.div_(self.world_size)
            for grad, mean in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
                grad.copy_(mean.view_as(grad))

    def remove(self) -> None:
        """Remove the hooks (copies and pickles of the agent never carried them)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


class Replicas:
    """Makes this rank's replica equal to rank 0's and keeps it so (see the module doc).

    Needs an initialised process group and an initialised algorithm; ``close()`` undoes
    everything but the equal start.

    Args:
        agent: this rank's agent (on its device).
        algo: this rank's algorithm, bound to ``agent``.
        world_size: number of ranks.

    Raises:
        ValueError: nothing is trained (no trainable parameter to synchronise).
    """

    def __init__(self, agent: Agent, algo: Algorithm, world_size: int):
        agent_params = {id(p) for p in agent.parameters()}
        extra = optimized_outside(algo, agent_params)
        trained = [p for p in agent.parameters() if p.requires_grad] + extra
        if not trained:
            raise ValueError(
                f"{type(agent).__name__} has no trainable parameter to synchronise "
                f"({type(algo).__name__})"
            )
        self.algo_name = type(algo).__name__
        self.world_size = world_size
        self.device = collective_device()
        with torch.no_grad():  # rank 0's parameters and buffers, targets included
            for tensor in [*agent.state_dict().values(), *extra]:
                if isinstance(tensor, torch.Tensor):
                    _broadcast_inplace(tensor, self.device)
        # Checked after every iteration: all agent parameters (targets too) and log_alpha.
        self.checked = [*agent.parameters(), *extra]
        self.statistics = agent.statistics()
        for rms in self.statistics:
            rms.sync_across_ranks = True
        self.averager = GradAverager(trained, world_size, self.device)

    def check_equal(self, itr: int) -> None:
        """Raise ``RuntimeError`` unless all ranks hold the same parameters (a collective)."""
        params = [p.detach().to(self.device, torch.float64) for p in self.checked]
        local = torch.stack([s for p in params for s in (p.sum(), p.square().sum())])
        gathered = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(gathered, local)
        for rank, other in enumerate(gathered[1:], start=1):
            if not torch.allclose(other, gathered[0], rtol=1e-5, atol=1e-8):
                raise RuntimeError(
                    f"SyncRl: the parameters of rank {rank} differ from rank 0's after "
                    f"iteration {itr}: {self.algo_name} changed them outside the "
                    "synchronised backward passes (e.g. a parameter updated without its "
                    "gradient, or backward passes that differ between ranks), so it is not "
                    "supported by SyncRl"
                )

    def close(self) -> None:
        """Remove the gradient hooks and make the statistics local again."""
        self.averager.remove()
        for rms in self.statistics:
            rms.sync_across_ranks = False


def optimized_outside(algo: Algorithm, agent_params: set[int]) -> list[torch.Tensor]:
    """Trainable tensors of the algorithm's optimizers that the agent does not hold.

    Such as SAC's ``log_alpha``; in ``algo.optimizers()`` and parameter-group order.
    """
    found: dict[int, torch.Tensor] = {}
    for optimizer in algo.optimizers():
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.requires_grad and id(p) not in agent_params:
                    found.setdefault(id(p), p)
    return list(found.values())


def collective_device() -> torch.device:
    """Where the default group's collectives take tensors: the current GPU for NCCL, else CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _broadcast_inplace(tensor: torch.Tensor, device: torch.device) -> None:
    if tensor.is_contiguous() and tensor.device == device:
        dist.broadcast(tensor, src=0)
    else:
        buffer = tensor.to(device).contiguous()
        dist.broadcast(buffer, src=0)
        tensor.copy_(buffer)
