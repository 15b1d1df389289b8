"""PEARL's context encoder: a task posterior ``q(z | c)`` from a set of transitions.

A context is a set of ``n`` transitions ``c_j = (o_j, a_j, r_j[, o'_j])`` per task, a
``[tasks, n, context_size]`` tensor (``context_from_transitions``). With the information
bottleneck (PEARL, Rakelly et al. 2019, https://arxiv.org/abs/1903.08254) an MLP maps each
transition to a Gaussian factor ``N(mu_j, sigma_j^2)`` (``sigma_j^2 = softplus(.)``) and the
posterior is their normalised product, in closed form per latent dim::

    sigma^2 = 1 / sum_j (1 / sigma_j^2)
    mu      = sigma^2 * sum_j (mu_j / sigma_j^2)

The KL term of the loss is ``kl_lambda * KL(q(z | c) || N(0, I))`` (``kl_to_standard_normal``).
Without the bottleneck the MLP outputs ``latent_size`` values per transition and ``z`` is
their mean over the transitions, deterministic (variance zeros), as in the reference.

Every function is batched over the leading (task) dims: one call encodes the contexts of a
whole meta-batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict import TensorDictBase
from torch import nn

from tdrl import keys
from tdrl.models.mlp import MlpModel
from tdrl.utils.checks import check_bool, check_int, check_int_list

#: Lower bound on every factor's variance before the product (the reference's clamp).
MIN_VARIANCE = 1e-7


def product_of_gaussians(
    mu: torch.Tensor, var: torch.Tensor, dim: int = -2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised product of diagonal Gaussian factors along ``dim``.

    Args:
        mu: factor means, e.g. ``[tasks, n, latent]``.
        var: factor variances (same shape), clamped to ``>= MIN_VARIANCE``.
        dim: the axis of the factors (default: the transitions axis of
            ``[..., n, latent]``).

    Returns:
        ``(mu, var)`` of the product, ``dim`` removed (``[tasks, latent]``): variance
        ``1 / sum(1 / var_j)``, mean ``var * sum(mu_j / var_j)``.
    """
    precision = 1.0 / torch.clamp(var, min=MIN_VARIANCE)
    var_out = 1.0 / precision.sum(dim)
    return var_out * (mu * precision).sum(dim), var_out


def kl_to_standard_normal(mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, diag var) || N(0, I))`` summed over the last (latent) dim.

    ``0.5 * sum(var + mu^2 - 1 - log var)``; ``var`` is clamped to ``>= MIN_VARIANCE``.

    Args:
        mu: posterior means ``[..., latent]``.
        var: posterior variances ``[..., latent]``.

    Returns:
        ``[...]``: one KL per task.
    """
    var = torch.clamp(var, min=MIN_VARIANCE)
    return 0.5 * (var + mu.pow(2) - 1.0 - torch.log(var)).sum(-1)


def context_from_transitions(td: TensorDictBase, *, use_next_obs: bool = False) -> torch.Tensor:
    """The ``[..., n, o + a + 1 (+ o)]`` float32 context of a batch of transitions.

    Concatenates ``observation``, ``action``, ``("next", "reward")`` and, with
    ``use_next_obs``, ``("next", "observation")`` along the last dim. Observations and
    actions must be flat vectors (Box spaces: integer actions are not one-hot encoded);
    the reward may be ``[..., n]`` or ``[..., n, 1]``.

    Args:
        td: a ``[tasks, n]`` (or any-shaped) TensorDict of transitions, e.g. a
            ``MultiTaskReplay.sample_context`` batch.
        use_next_obs: include ``o'`` (oyster's ``use_next_obs_in_context``, default False).

    Returns:
        ``[*td.batch_size, context_size]`` float32.
    """
    lead = tuple(td.batch_size)
    reward = td.get(keys.NEXT_REWARD).float().reshape(*lead, 1)
    parts = [td.get(keys.OBSERVATION).float(), td.get(keys.ACTION).float(), reward]
    if use_next_obs:
        parts.append(td.get(keys.NEXT_OBSERVATION).float())
    for p in parts:
        if p.dim() != len(lead) + 1:
            raise ValueError(
                f"context entries must be flat vectors [*{lead}, size], got shape {tuple(p.shape)}"
            )
    return torch.cat(parts, dim=-1)


class ContextEncoder(nn.Module):
    """Task posterior ``q(z | c)`` from ``[tasks, n, context_size]`` contexts (PEARL).

    See the module docstring for the product of Gaussians (``information_bottleneck``) and
    the deterministic mean without it.

    Args:
        context_size: size of one transition's vector (``context_from_transitions``).
        latent_size: size of ``z`` (oyster: 5).
        hidden_sizes: hidden layers of the per-transition MLP (oyster: 200, 200, 200).
        information_bottleneck: Gaussian factors combined by their product (True, oyster's
            default); False: the mean of the factors, with variance zeros.
    """

    def __init__(
        self,
        context_size: int,
        latent_size: int,
        *,
        hidden_sizes: Sequence[int] = (200, 200, 200),
        information_bottleneck: bool = True,
    ):
        super().__init__()
        self.context_size = check_int("context_size", context_size, minimum=1)
        self.latent_size = check_int("latent_size", latent_size, minimum=1)
        hidden = check_int_list("hidden_sizes", hidden_sizes, minimum=1)
        self.information_bottleneck = check_bool("information_bottleneck", information_bottleneck)
        out = 2 * self.latent_size if self.information_bottleneck else self.latent_size
        self.mlp = MlpModel(self.context_size, hidden, out)

    def factors(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-transition ``(mu_j, var_j)``, each ``[tasks, n, latent]`` (var: softplus).

        Without the bottleneck the variances are zeros.
        """
        if context.dim() < 2 or context.shape[-1] != self.context_size:
            raise ValueError(
                f"context must be [tasks, n, {self.context_size}], got {tuple(context.shape)}"
            )
        out = self.mlp(context.float())
        if not self.information_bottleneck:
            return out, torch.zeros_like(out)
        mu, pre_var = out.split(self.latent_size, dim=-1)
        return mu, nn.functional.softplus(pre_var)

    def forward(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior ``(mu, var)``, each ``[tasks, latent]``, from ``[tasks, n, context]``."""
        mu, var = self.factors(context)
        if not self.information_bottleneck:
            return mu.mean(-2), var.mean(-2)
        return product_of_gaussians(mu, var, dim=-2)

    def prior(
        self, tasks: int, *, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The prior ``N(0, I)``: ``(zeros, ones)`` of shape ``[tasks, latent]``."""
        shape = (check_int("tasks", tasks, minimum=1), self.latent_size)
        return torch.zeros(shape, device=device), torch.ones(shape, device=device)

    @staticmethod
    def sample(
        mu: torch.Tensor, var: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Reparameterised ``z = mu + sqrt(var) * eps``, ``eps ~ N(0, I)``.

        Gradients flow to ``mu`` and ``var``; with variance zeros ``z = mu``.
        """
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.sqrt(var) * eps

    @staticmethod
    def kl(mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """Per-task ``KL(q(z | c) || N(0, I))`` (``kl_to_standard_normal``)."""
        return kl_to_standard_normal(mu, var)
