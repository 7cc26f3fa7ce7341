"""The CNN1D and CNN2D network architectures of Ho et al. 2019 (ApJ 887, 25), as torch modules.

Both networks read a kernel density estimate (KDE) image of a cluster view and return one number
per view, the scaled ``log10 M200c`` [Msun/h] (see :mod:`dynmass.models.cnn` for the estimator
that trains them):

- **CNN1D**: KDE of ``v`` on ``n_bins`` bins over [-vcut, vcut] km/s, input
  ``(batch, 1, n_bins)`` -> Conv1d(1 -> 10, width 5) ReLU -> Conv1d(10 -> 5, width 3) ReLU ->
  MaxPool1d(2) -> Dropout -> Flatten -> Dense 128 ReLU -> Dense 64 ReLU -> Dense 1.
- **CNN2D**: KDE of ``(R, v)`` on ``n_bins x n_bins`` bins, input
  ``(batch, n_bins [R channels over 0..aperture comoving Mpc/h], n_bins [v])``; the
  convolutions run along ``v``: Conv1d(n_bins -> 24, width 5) ReLU -> Conv1d(24 -> 10, width 3)
  ReLU -> MaxPool1d(4) -> Dropout -> Flatten -> Dense 128 ReLU -> Dense 64 ReLU -> Dense 1.

Weights start as in the paper's Keras code: Glorot-uniform weights and zero biases.

Examples
--------
>>> import torch
>>> from dynmass.models.networks import build_network
>>> _ = torch.manual_seed(0)
>>> net = build_network("cnn2d", n_bins=16)
>>> tuple(net(torch.zeros(3, 16, 16)).shape)
(3, 1)
"""

from __future__ import annotations

from torch import nn

from dynmass.errors import InputError
from dynmass.features import N_BINS

__all__ = ["build_network"]


def build_network(kind: str, n_bins: int = N_BINS, dropout: float = 0.25) -> nn.Sequential:
    """The CNN1D or CNN2D network of Ho et al. 2019.

    Parameters
    ----------
    kind : {"cnn1d", "cnn2d"}
        Which network.
    n_bins : int
        KDE bins per axis (48 in the paper). CNN1D input: ``(batch, 1, n_bins)``; CNN2D input:
        ``(batch, n_bins [R channels], n_bins [v])``.
    dropout : float
        Dropout probability after the pooling layer.

    Returns
    -------
    torch.nn.Sequential
        Maps a batch of KDE images to one number per view (the scaled log mass).

    Raises
    ------
    InputError
        For an unknown ``kind`` or an ``n_bins`` too small for the convolutions and pooling.
    """
    if kind == "cnn1d":
        convs = [nn.Conv1d(1, 10, 5), nn.ReLU(), nn.Conv1d(10, 5, 3), nn.ReLU(), nn.MaxPool1d(2)]
        pool, out_ch = 2, 5
    elif kind == "cnn2d":
        convs = [nn.Conv1d(n_bins, 24, 5), nn.ReLU(), nn.Conv1d(24, 10, 3), nn.ReLU(),
                 nn.MaxPool1d(4)]
        pool, out_ch = 4, 10
    else:
        raise InputError(f"unknown network kind {kind!r}")
    length = (n_bins - 4 - 2) // pool
    if length < 1:
        raise InputError(f"n_bins={n_bins} is too small for {kind} (need >= {6 + pool})")
    net = nn.Sequential(
        *convs,
        nn.Dropout(dropout),
        nn.Flatten(),
        nn.Linear(out_ch * length, 128), nn.ReLU(),
        nn.Linear(128, 64), nn.ReLU(),
        nn.Linear(64, 1),
    )
    # Keras' defaults, as in the paper's code: Glorot-uniform weights, zero biases. (PyTorch's
    # default init gives biases as large as the signal of a sum-1 48x48 KDE, and CNN2D then
    # stalls at a constant prediction for many epochs.)
    for layer in net:
        if isinstance(layer, (nn.Conv1d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return net
