"""Weights from files and model hubs, for every adapter.

- :func:`read_state_dict` reads a local checkpoint (``torch.save`` file loaded with
  ``weights_only=True``, or a ``.safetensors`` file), unwrapping ``{"state_dict": ...}`` and
  this package's own ``{"model": ..., "ranker": ...}`` checkpoints;
- :func:`fit_state_dict` checks a state dict against a model and names what does not fit;
- :func:`hub_file` fetches a pretrained file into the torch hub cache once, and offline says
  which file it wanted and where to put it;
- :func:`load_run_checkpoint` loads a run's ``checkpoints/cycle_NN.pt`` back (model and ranker).
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from .errors import InputNotFound, WeightsError

LOG = logging.getLogger("tavaal")
RUN_CHECKPOINT_KEYS = ("model", "ranker")


def _load_file(path: Path) -> object:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


def read_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """A local checkpoint as a flat ``{name: tensor}`` state dict (a file cannot run code:
    ``weights_only``). ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers are unwrapped and a
    DDP ``module.`` prefix is dropped. Errors name ``what`` (e.g. "model.weights file") and the path."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFound(f"{what} {path} does not exist")
    try:
        state = _load_file(path)
    except Exception as err:  # noqa: BLE001 - zip, pickle and weights_only refusals all mean "not a checkpoint"
        raise WeightsError(f"{what} {path}: cannot read it as a torch checkpoint or .safetensors file "
                           f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from err
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{what} {path}: expected a state dict of tensors, got {type(state).__name__}")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def _listed(keys: Sequence[str], limit: int = 6) -> str:
    keys = list(keys)
    return f"{len(keys)} {keys[:limit]}{'...' if len(keys) > limit else ''}"


def fit_state_dict(model_state: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], *, what: str,
                   kind: str, optional: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """The tensors of ``state`` that load into a module whose own state is ``model_state``.

    Every key of ``state`` must be a model key of the same shape, and every model key must be in
    ``state`` -- except keys starting with one of ``optional`` (a classifier head shaped by the
    number of classes; the part of the model an encoder-only file does not cover), which stay
    at their initialisation when the file lacks them or shapes them otherwise (logged).
    ``kind`` says what the file was taken for, for the message. Raises :class:`WeightsError`
    naming the missing, unexpected and mis-shaped keys."""
    def is_optional(key: str) -> bool:
        return any(key.startswith(prefix) for prefix in optional)

    unexpected = [k for k in state if k not in model_state]
    mismatched = [k for k in state if k in model_state and tuple(state[k].shape) != tuple(model_state[k].shape)]
    missing = [k for k in model_state if k not in state and not is_optional(k)]
    blocking = [k for k in mismatched if not is_optional(k)]
    if unexpected or missing or blocking:
        shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(model_state[k].shape)}" for k in blocking]
        raise WeightsError(f"{what} does not fit the model (read as {kind}): missing keys {_listed(missing)}, "
                           f"unexpected keys {_listed(unexpected)}, shape mismatches {_listed(shapes, 4)}")
    reshaped = [k for k in mismatched if is_optional(k)]
    if reshaped:  # a head for another number of classes: fine for transfer, worth a look otherwise
        LOG.warning("%s (%s): %d tensors shaped for another number of classes keep their initialisation (%s)",
                    what, kind, len(reshaped), ", ".join(f"{k} {tuple(state[k].shape)} -> {tuple(model_state[k].shape)}"
                                                         for k in reshaped[:3]))
    absent = [k for k in model_state if is_optional(k) and k not in state]
    if absent:
        LOG.info("%s (%s): %d tensors the file does not cover keep their initialisation (%s, ...)", what, kind,
                 len(absent), ", ".join(absent[:3]))
    return {k: v for k, v in state.items() if k not in mismatched}


def load_fitted(module: nn.Module, state: Mapping[str, torch.Tensor], **fit: object) -> None:
    """:func:`fit_state_dict` then ``load_state_dict`` (non-strict only for the kept-at-init keys)."""
    module.load_state_dict(fit_state_dict(module.state_dict(), state, **fit), strict=False)  # type: ignore[arg-type]


def hub_cache_path(url: str) -> Path:
    """Where torch hub keeps (or would keep) the file of ``url``: ``$TORCH_HOME/hub/checkpoints/<name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def hub_file(url: str, what: str) -> Path:
    """The torch hub cache's copy of ``url``, downloaded there on first use (hash-checked when the
    file name carries torch hub's hash prefix, ``name-<sha256 prefix>.pth``). Without a network
    it raises :class:`WeightsError` naming the file it wanted and the path to put it at."""
    target = hub_cache_path(url)
    cache, name = target.parent, target.name
    if target.is_file():
        return target
    match = torch.hub.HASH_REGEX.search(name)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        # written to a temp file and moved into place: never half a file at ``target``
        torch.hub.download_url_to_file(url, str(target), match.group(1) if match else None,
                                       progress=sys.stderr.isatty())
    except (OSError, RuntimeError) as err:  # URLError is an OSError; a hash mismatch is a RuntimeError
        raise WeightsError(
            f"{what}: cannot download {url} ({err}); without internet, fetch {name} on another machine and put "
            f"it at {target} (the torch hub cache, $TORCH_HOME/hub/checkpoints), or pass the file as model.weights"
        ) from err
    return target


def run_checkpoint_path(run_dir: str | Path, cycle: int) -> Path:
    """Where a run keeps cycle ``cycle``'s trained model and ranker."""
    return Path(run_dir) / "checkpoints" / f"cycle_{cycle:02d}.pt"


def load_run_checkpoint(path: str | Path, model: nn.Module, ranker: nn.Module | None = None,
                        map_location: str | torch.device = "cpu") -> None:
    """Load a run's ``checkpoints/cycle_NN.pt`` (``{"model": ..., "ranker": ...}``) into ``model``
    and, when given, ``ranker``, strictly: a checkpoint of another model names what differs."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFound(f"checkpoint {path} does not exist")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or set(ckpt) != set(RUN_CHECKPOINT_KEYS):
        raise WeightsError(f"checkpoint {path}: expected this package's {{'model': ..., 'ranker': ...}} checkpoint, "
                           f"got {sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__}")
    parts = [(model, ckpt["model"], "model")]
    if ranker is not None:
        if ckpt["ranker"] is None:
            raise WeightsError(f"checkpoint {path} holds no ranker (its run's strategy trains none)")
        parts.append((ranker, ckpt["ranker"], "ranker"))
    for module, state, name in parts:
        load_fitted(module, state, what=f"checkpoint {path} ({name})", kind=f"a {name} state dict")
