"""Torch runtime of the CNN estimators: device, mixed precision, threads, checkpoints.

* :func:`resolve_device` turns ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` into a
  :class:`torch.device`, with a clear error for a device that is not there.
* ``_torch_runtime`` sets torch's CPU threads (and deterministic kernels) for one fit or
  prediction and restores them after.
* Per-epoch checkpoints (model, optimiser, random states and history, keyed by a fingerprint of
  the fit's settings, seed and data) let an interrupted fit resume exactly; they are written
  atomically.

Examples
--------
>>> from dynmass.models.torch_runtime import resolve_device
>>> resolve_device("cpu").type
'cpu'
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dynmass._io import atomic_path
from dynmass.errors import InputError
from dynmass.models.base import RUNTIME_SETTINGS

log = logging.getLogger(__name__)


def _dist() -> tuple[bool, int, int]:
    """(distributed?, rank, world size) of the current torch.distributed process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return True, dist.get_rank(), dist.get_world_size()
    return False, 0, 1


def resolve_device(name: str = "auto", strict: bool = True) -> torch.device:
    """The torch device for a ``device`` setting.

    Parameters
    ----------
    name : {"auto", "cpu", "cuda", "mps"}
        ``auto`` picks CUDA, then Apple MPS, then the CPU. Under ``torchrun`` the CUDA device
        is ``cuda:LOCAL_RANK``.
    strict : bool
        If true, asking for an unavailable device raises :class:`InputError`; otherwise the
        CPU is used with a warning (e.g. predicting on a laptop with a model trained on GPU).
    """
    name = str(name).lower()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("mps") if mps_ok else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name in ("cuda", "mps"):
        ok = torch.cuda.is_available() if name == "cuda" else mps_ok
        if ok:
            if name == "cuda":
                return torch.device("cuda", local_rank % torch.cuda.device_count())
            return torch.device("mps")
        if strict:
            raise InputError(f"device '{name}' was requested but is not available to torch "
                             f"(torch {torch.__version__}); use --device cpu or auto",
                             column="device")
        log.warning("device '%s' is not available; using the CPU", name)
        return torch.device("cpu")
    raise InputError(f"device must be auto, cpu, cuda or mps, not {name!r}", column="device")


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for the ``amp`` setting on ``device`` (None: full float32)."""
    amp = str(amp).lower()
    if amp not in ("auto", "off", "bf16", "fp16"):
        raise InputError(f"amp must be auto, off, bf16 or fp16, not {amp!r}", column="amp")
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


@contextlib.contextmanager
def _torch_runtime(num_threads: int | None, deterministic: bool = True) -> Iterator[None]:
    """Set torch threads and deterministic algorithms for a block, restoring them after."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    old_bench = torch.backends.cudnn.benchmark
    try:
        if num_threads:
            torch.set_num_threads(int(num_threads))
        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        yield
    finally:
        if num_threads:
            torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
        torch.backends.cudnn.benchmark = old_bench


# ----------------------------------------------------------------------------- estimator


def _best_epoch(history: list[dict[str, float]]) -> int | None:
    vals = [h["val_loss"] for h in history]
    if not vals or not np.all(np.isfinite(vals)):
        return None if not vals else int(history[-1]["epoch"])
    return int(history[int(np.argmin(vals))]["epoch"])


def _fingerprint(name: str, settings: dict[str, Any], seed: int, y: np.ndarray,
                 halo_id: np.ndarray, shape: tuple[int, ...]) -> str:
    """Identity of a fit (model, settings, seed, data labels) for checkpoint matching."""
    h = hashlib.sha256()
    keep = {k: v for k, v in settings.items() if k not in RUNTIME_SETTINGS}
    h.update(repr((name, sorted(keep.items()), int(seed), tuple(shape))).encode())
    h.update(np.ascontiguousarray(y, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(halo_id).astype(np.int64).tobytes())
    return h.hexdigest()


def _save_checkpoint(path: Path, fingerprint: str, net: nn.Module, opt: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler, gen: torch.Generator,
                     state: dict[str, Any], stopped: bool, elapsed: float) -> None:
    """Write the training state after an epoch atomically (transient file)."""
    payload = {
        "fingerprint": fingerprint,
        "net": net.state_dict(),
        "opt": opt.state_dict(),
        "scaler": scaler.state_dict(),
        "gen": gen.get_state(),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "epoch": state["epoch"],
        "best_val": state["best_val"],
        "bad": state["bad"],
        "history": state["history"],
        "best_state": state["best_state"],
        "stopped": stopped,
        "elapsed": float(elapsed),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _load_checkpoint(path: Path, fingerprint: str, net: nn.Module, opt: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler, gen: torch.Generator, device: torch.device,
                     state: dict[str, Any]) -> dict[str, Any]:
    """Restore the training state from ``path`` if it belongs to this fit; else start over."""
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a broken transient file is just discarded
        log.warning("ignoring unreadable checkpoint %s: %s", path, exc)
        return state
    if payload.get("fingerprint") != fingerprint:
        log.warning("checkpoint %s belongs to another fit (settings or data differ); "
                    "starting this fit from scratch", path)
        return state
    net.load_state_dict(payload["net"])
    opt.load_state_dict(payload["opt"])
    scaler.load_state_dict(payload["scaler"])
    gen.set_state(payload["gen"].cpu())
    torch.set_rng_state(payload["rng"].cpu())
    if payload["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in payload["cuda_rng"]])
    log.info("resuming from %s after epoch %d", path, payload["epoch"])
    return {
        "epoch": int(payload["epoch"]), "best_val": float(payload["best_val"]),
        "bad": int(payload["bad"]), "history": list(payload["history"]),
        "best_state": payload["best_state"], "stopped": bool(payload.get("stopped", False)),
        "elapsed": float(payload.get("elapsed", 0.0)),
    }
