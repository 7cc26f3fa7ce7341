"""The Deep Sets network (Zaheer et al. 2017, NeurIPS, arXiv:1703.06114) on member lists.

Input: a batch of padded member lists from
:class:`~dynmass.features_members.MemberListFeaturizer`, shape ``(batch, slots, n_features +
n_context + 1)``: per galaxy ``n_features`` inputs (``R / aperture``, ``v / vcut``, extra
columns), then ``n_context`` per-view inputs (the same in every slot) and a 0/1 mask.

* **phi**, applied to every galaxy alone: ``n_features -> phi_hidden[0] -> ... ->
  phi_hidden[-1]``, ReLU after every layer;
* **masked mean** over the galaxies of a view (padding excluded). The mean, not the sum: the
  summary is the average of ``phi`` over the view's galaxies, which does not grow with their
  number and is unchanged in expectation when a survey observes a random fraction of them (the
  number of galaxies is not an input; max pooling is left out too, as the maximum of more draws
  grows with their number);
* **layer normalisation** of the mean (:class:`torch.nn.LayerNorm`, per view, with a learned
  scale and offset; ``pool_norm``): the means of ``phi`` over ~100 galaxies differ little
  between views at the start, and without it some fits stalled at a constant prediction until
  early stopping ended them (seen on 1 of 5 folds of a 210-view mock, with ``phi`` widths 32);
  it acts on each view alone, so it keeps permutation invariance and needs no batch statistics;
* **rho** on ``[normalised mean, context]``: ``-> rho_hidden[0] -> ... -> 1`` (ReLU, dropout
  after each hidden layer), the scaled ``log10 M200c`` like the CNNs' output.
* **member dropout** (training only; ``member_keep``): every view of a training batch keeps
  each of its galaxies with a probability drawn per view, log-uniform in ``member_keep``, and at
  least ``min_keep`` of them (the random input dropout of PointNet++, Qi et al. 2017,
  arXiv:1706.02413). A mean is unchanged *in expectation* by random sampling, but one galaxy
  can still betray the number of galaxies: with the true centre the central galaxy sits at
  ``R = 0, v = 0`` exactly, and a sharp ``phi`` there averages to ``1 / N`` -- richness. A set
  model trained on complete views can learn it (:mod:`dynmass.models.deepset` gives the
  numbers); dropout makes ``N`` and the central's presence carry little mass information. In
  evaluation mode nothing is dropped.

Permutation invariant by construction; slots whose mask is 0 never reach the output (``phi``
runs on the galaxies only, so even non-finite garbage in the padding is harmless), and the cost
of ``phi`` follows the number of galaxies, not the padded width. For member-list models of cluster masses
see Wang & Thiele 2025 (arXiv:2507.20378).

Examples
--------
>>> import torch
>>> from dynmass.models.setnet import DeepSetNet
>>> _ = torch.manual_seed(0)
>>> net = DeepSetNet(n_features=2, phi_hidden=(8, 8), rho_hidden=(8,))
>>> x = torch.rand(4, 10, 3)
>>> x[..., -1] = (torch.arange(10) < 6).float()  # 6 galaxies per view, 4 padding slots
>>> y = net(x)
>>> tuple(y.shape)
(4, 1)
>>> bool(torch.allclose(net(x[:, torch.randperm(10)]), y, atol=1e-6))  # order-free
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from dynmass.errors import InputError

__all__ = ["DeepSetNet"]


def _mlp(sizes: Sequence[int], dropout: float, last_act: bool) -> nn.Sequential:
    """Dense layers ``sizes[0] -> sizes[1] -> ...`` with ReLU (and dropout if > 0) after each
    hidden layer, and after the last one if ``last_act``; Glorot weights, zero biases."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        lin = nn.Linear(a, b)
        nn.init.xavier_uniform_(lin.weight)
        nn.init.zeros_(lin.bias)
        layers.append(lin)
        if i < len(sizes) - 2 or last_act:
            layers.append(nn.ReLU(inplace=True))  # in place: one array pass less per layer
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class DeepSetNet(nn.Module):
    """Deep Sets regression of one number per member list (module docs).

    Parameters
    ----------
    n_features : int
        Per-galaxy inputs per slot (2: ``R / aperture`` and ``v / vcut``, plus extra columns).
    n_context : int
        Per-view inputs after them (read from slot 0); 0: none.
    phi_hidden : sequence of int
        Widths of the per-galaxy network's layers (the last is the summary's size).
    rho_hidden : sequence of int
        Widths of the hidden layers of the network on the pooled summary.
    dropout : float
        Dropout probability after each hidden layer of rho (0: none).
    pool_norm : bool
        Layer-normalise the pooled mean (module docs).
    member_keep : (float, float)
        Range of the per-view probability to keep a galaxy while training (log-uniform;
        module docs); ``(1, 1)``: no member dropout.
    min_keep : int
        Fewest galaxies a view keeps under member dropout (all of a smaller view).
    """

    def __init__(self, n_features: int = 2, n_context: int = 0,
                 phi_hidden: Sequence[int] = (32, 32, 32), rho_hidden: Sequence[int] = (32, 32),
                 dropout: float = 0.0, pool_norm: bool = True,
                 member_keep: Sequence[float] = (1.0, 1.0), min_keep: int = 3) -> None:
        super().__init__()
        lo, hi = (float(k) for k in member_keep)
        if not (0.0 < lo <= hi <= 1.0) or int(min_keep) < 1:
            raise InputError(f"member dropout needs 0 < member_keep[0] <= member_keep[1] <= 1 "
                             f"and min_keep >= 1, got member_keep={list(member_keep)}, "
                             f"min_keep={min_keep}", column="member_keep")
        self.member_keep, self.min_keep = (lo, hi), int(min_keep)
        phi_hidden, rho_hidden = [int(w) for w in phi_hidden], [int(w) for w in rho_hidden]
        if n_features < 1 or n_context < 0 or not phi_hidden or min(phi_hidden + rho_hidden,
                                                                   default=1) < 1:
            raise InputError(f"bad Deep Sets sizes: n_features={n_features}, n_context="
                             f"{n_context}, phi_hidden={phi_hidden}, rho_hidden={rho_hidden}")
        self.n_features, self.n_context = int(n_features), int(n_context)
        self.phi = _mlp([self.n_features, *phi_hidden], 0.0, last_act=True)
        self.norm = nn.LayerNorm(phi_hidden[-1]) if pool_norm else nn.Identity()
        self.rho = _mlp([phi_hidden[-1] + self.n_context, *rho_hidden, 1], float(dropout),
                        last_act=False)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Masked mean of phi over each view's galaxies, normalised, then the context:
        ``(batch, phi_hidden[-1] + n_context)``.

        Parameters
        ----------
        x : torch.Tensor
            Member lists, ``(batch, slots, n_features + n_context + 1)``.
        """
        if x.ndim != 3 or x.shape[-1] != self.n_features + self.n_context + 1:
            raise InputError(f"Deep Sets input must be (batch, slots, "
                             f"{self.n_features + self.n_context + 1}), got {tuple(x.shape)}")
        mask = x[..., -1] > 0.5
        if self.training and self.member_keep[0] < 1.0:
            mask = self.drop_members(mask)
        ctx = x[:, 0, self.n_features:self.n_features + self.n_context]
        used = mask.any(0)
        if x.shape[1] > 1 and not bool(used[-1]):  # cut trailing empty slots
            last = int(used.nonzero().max()) + 1 if bool(used.any()) else 1
            x, mask = x[:, :last], mask[:, :last]
        # phi runs on the galaxies alone (the padding never reaches it, whatever it holds, NaN
        # included: about half the work of a padded batch of real views); its outputs go back
        # into their slots over zeros, and the mean is one batched product (views, 1, slots)
        # @ (views, slots, width)
        hf = self.phi(x[..., :self.n_features][mask])
        h = hf.new_zeros(x.shape[0], x.shape[1], hf.shape[1])
        h[mask] = hf
        weight = mask.to(h.dtype)
        weight = weight / weight.sum(1, keepdim=True).clamp(min=1)
        pooled = self.norm(torch.bmm(weight.unsqueeze(1), h).squeeze(1))
        return torch.cat([pooled, ctx.to(pooled.dtype)], 1) if self.n_context else pooled

    def drop_members(self, mask: torch.Tensor) -> torch.Tensor:
        """Member dropout: ``mask`` with each galaxy kept with the view's drawn probability.

        Each view draws its keep probability log-uniformly in ``member_keep``; a galaxy is
        kept if its uniform draw is below it or among the view's ``min_keep`` smallest draws.
        Draws come from torch's global generator (seeded and checkpointed like dropout).

        Parameters
        ----------
        mask : torch.Tensor
            Boolean ``(batch, slots)``: which slots hold a galaxy.

        Returns
        -------
        torch.Tensor
            Boolean ``(batch, slots)``, a subset of ``mask``.
        """
        lo, hi = self.member_keep
        b, slots = mask.shape
        log_rate = math.log(lo) + torch.rand(b, 1, device=mask.device) * math.log(hi / lo)
        u = torch.rand(b, slots, device=mask.device).masked_fill(~mask, 2.0)
        k = min(self.min_keep, slots)
        kth = torch.topk(u, k, dim=1, largest=False).values[:, k - 1:k]
        return mask & ((u < log_rate.exp()) | (u <= kth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One output per member list, ``(batch, 1)``.

        Parameters
        ----------
        x : torch.Tensor
            Member lists, ``(batch, slots, n_features + n_context + 1)``.
        """
        return self.rho(self.pool(x))
