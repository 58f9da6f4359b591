"""Selection from Python with your own trained model and data: no run directory, no lock, no
config file. :func:`select` scores the unlabeled items with any registered strategy, through the
same passes and strategies a run uses (docs/api.md)."""
from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .adapter import batch_slices, shuffled_batches
from .config import BaseConfig, ConfigError
from .memory import InMemoryAdapter, VAEView
from .ranker import RANK_LOSSES, LossRanker
from .runtime import Precision, resolve_device
from .steps import OPTIMIZERS, make_optimizer
from .strategies import SelectionContext, get_strategy
from .tasks import IGNORE_NONE
from .training import SCHEDULES, model_pass, true_losses
from .validation import load_config


class TappedModule(nn.Module):
    """Any model, with the outputs of some of its layers tapped by forward hooks: ``forward(x)``
    returns ``(logits, [tapped maps in layer order])``, the form every strategy and the loss
    ranker read. Hooks rather than graph tracing: any module works, data-dependent control flow
    included, and the weights stay the wrapped model's own (``.model``).

    ``model(x)`` may return the logits, a mapping holding them under ``output_key`` (torchvision's
    segmentation models: ``"out"``) or a tuple whose first element they are. ``tap_channels`` is
    known after the first forward, or at once when ``example_input`` is given."""

    def __init__(self, model: nn.Module, layers: Sequence[str] = (), output_key: str = "out",
                 example_input: torch.Tensor | None = None) -> None:
        super().__init__()
        self.model, self.layers, self.output_key = model, tuple(layers), output_key
        modules = dict(model.named_modules())
        for name in self.layers:
            if name not in modules or not name:
                close = difflib.get_close_matches(name, list(modules), n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise ValueError(f"tap_layers: {type(model).__name__} has no layer {name!r}{hint}; layer names are "
                                 f"those of model.named_modules(), e.g. {', '.join(list(modules)[1:8])}")
        self._captured: dict[str, torch.Tensor] = {}
        self._capturing = False  # only this wrapper's forward captures: a direct model(x) keeps nothing
        self._channels: list[int] | None = None if self.layers else []
        self._hooks = [modules[name].register_forward_hook(self._keeper(name)) for name in self.layers]
        if example_input is not None:
            was_training = model.training
            model.eval()
            with torch.no_grad():
                self(example_input)
            model.train(was_training)

    def _keeper(self, name: str) -> Any:
        def keep(module: nn.Module, args: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"tap_layers: layer {name!r} returns {type(output).__name__}, not a tensor; "
                                "tap a layer whose output is a feature map")
            if self._capturing:
                self._captured[name] = output
        return keep

    def remove_hooks(self) -> None:
        """Take the hooks off the wrapped model (the wrapper cannot tap any more)."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    @property
    def tap_channels(self) -> list[int]:
        if self._channels is None:
            raise RuntimeError("tap_channels is known after the first forward; pass example_input to tap_layers")
        return list(self._channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if len(self._hooks) != len(self.layers):
            raise RuntimeError("tap_layers: this wrapper's hooks were removed")
        self._captured.clear()
        self._capturing = True
        try:
            out = self.model(x)
        finally:
            self._capturing = False
        if isinstance(out, Mapping):
            out = out[self.output_key]
        elif isinstance(out, (tuple, list)):
            out = out[0]
        missing = [n for n in self.layers if n not in self._captured]
        if missing:
            raise RuntimeError(f"tap_layers: layers {missing} did not run in the forward pass")
        feats = [self._captured.pop(n) for n in self.layers]
        self._channels = [f.shape[1] for f in feats]
        return out, feats


def tap_layers(model: nn.Module, layers: Sequence[str], output_key: str = "out",
               example_input: torch.Tensor | None = None) -> TappedModule:
    """Wrap ``model`` so that its forward also returns the outputs of ``layers`` (names from
    ``model.named_modules()``, e.g. ``["layer3", "layer4"]`` for a torchvision ResNet)."""
    return TappedModule(model, layers, output_key, example_input)


@dataclass(frozen=True)
class SelectionResult:
    """The chosen unlabeled items in rank order (positions in the ``unlabeled`` data), with the
    strategy's score for each; ``candidate_scores`` holds every unlabeled item's score where the
    strategy has one per item (None for coreset, whose distances change as it picks)."""

    indices: np.ndarray
    scores: np.ndarray
    strategy: str
    score_meaning: str
    candidate_scores: np.ndarray | None = None


def fit_ranker(model: nn.Module, adapter: InMemoryAdapter, labeled: np.ndarray, cfg: BaseConfig,
               precision: Precision, device: torch.device, generator: torch.Generator) -> LossRanker:
    """A loss-ranking head for a trained model that has none: trained on the frozen tapped
    features of the labeled items to order them as the model's true losses on them do, with the
    run's ranking loss (``ranker.loss``, ``ranker.margin``, ``ranker.hidden``) and optimizer
    schedule (``train.*``: epochs, batch size, optimizer, learning rate, schedule). The head pools
    each map first, so training it on pooled features equals training it on the maps."""
    if len(labeled) < 2:
        raise ValueError(f"fitting a loss ranker needs at least 2 labeled items with targets, got {len(labeled)}")
    features = model_pass(model, None, adapter, labeled, frozenset({"features"}), cfg, precision, device).features
    losses = torch.as_tensor(true_losses(model, adapter, labeled, cfg, precision, device))
    channels = list(model.tap_channels)  # type: ignore[union-attr]
    if not channels:
        raise ValueError("a loss ranker reads tapped feature maps; the model taps none (tap_layers(model, [...]))")
    ranker = LossRanker(channels, cfg.ranker.hidden).to(device)
    t = cfg.train
    optimizer_cls, hyper = OPTIMIZERS[t.optimizer]
    optimizer = make_optimizer(optimizer_cls, ranker.parameters(), t.lr, False, device, **hyper(t))  # eager
    steps_per_epoch = len(batch_slices(np.arange(len(labeled)), t.batch_size))  # counted without a shuffle's draw
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, SCHEDULES[t.schedule](t, steps_per_epoch,
                                                                                  steps_per_epoch * t.epochs))
    rank_loss = RANK_LOSSES[cfg.ranker.loss]
    ranker.train()
    for _ in range(t.epochs):
        for batch in shuffled_batches(np.arange(len(labeled)), t.batch_size, generator):
            idx = torch.as_tensor(batch)
            feats = [f.to(device) for f in torch.split(features[idx], channels, dim=1)]
            loss = rank_loss(ranker(feats), losses[idx].to(device), cfg.ranker.margin)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return ranker.eval()


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """The global torch RNG (the VAE's noise) seeded for the call and given back afterwards."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def select(model: nn.Module, unlabeled: Any, budget: int, *, strategy: str, labeled: Any = None,
           labeled_targets: Any = None, taps: Sequence[str] | None = None, ranker: nn.Module | None = None,
           config: BaseConfig | None = None, overrides: Sequence[str] = (), device: str | torch.device | None = None,
           seed: int = 0, ignore_index: int = IGNORE_NONE, vae_view: VAEView | None = None) -> SelectionResult:
    """Rank ``unlabeled`` for labeling with a trained ``model`` and pick ``budget`` items.

    Data: a tensor N×… or a map-style dataset (items: image tensors, or ``(image, target)``);
    ``labeled`` likewise, with ``labeled_targets`` when its items carry none. ``model``: any
    ``nn.Module`` returning logits (B×C or B×C×H×W); ``taps`` names layers whose outputs
    feature-based strategies read (coreset: the last; lloss/tavaal: all); a model of this package
    (forward gives ``(logits, feats)``) needs none. ``lloss``/``tavaal`` use ``ranker`` (a module
    mapping the tapped maps to a score per item) or, without one, fit a
    :class:`LossRanker` on the labeled items' tapped features and true losses (:func:`fit_ranker`).
    ``config``/``overrides`` (``"vae.iterations=200"``, as ``--set``) set the VAE, the fitted
    ranker and batch sizes; ``device`` defaults to the model's. The model is left in the
    train/eval mode it came in; the caller's torch RNG state is restored."""
    chosen = get_strategy(strategy)
    if config is not None and overrides:
        raise ConfigError("pass config or overrides, not both (apply overrides with load_config first)")
    cfg = config if config is not None else load_config(BaseConfig, None, overrides)
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise ValueError(f"budget: expected a positive number of items, got {budget!r}")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = resolve_device("auto") if device == "auto" else torch.device(device)
    n_labeled = 0 if labeled is None else len(labeled)
    adapter = InMemoryAdapter(labeled if labeled is not None else torch.empty(0), labeled_targets,
                              unlabeled=unlabeled, ignore_index=ignore_index, vae_view=vae_view)
    candidates = np.arange(n_labeled, len(adapter.data), dtype=np.int64)
    if budget > len(candidates):
        raise ValueError(f"budget {budget} is larger than the {len(candidates)} unlabeled items")
    labeled_with_targets = n_labeled > 0 and bool(adapter.data.has_targets(np.arange(n_labeled)).all())
    if chosen.trains_ranker and ranker is None and not labeled_with_targets:
        raise ValueError(f"strategy {strategy!r} reads a loss ranker: pass ranker=..., or labeled items with targets "
                         "to fit one on (labeled=..., labeled_targets=...)")
    precision = Precision(device, cfg.train.amp, force_cpu_bf16=cfg.train.amp_on_cpu)
    generator = torch.Generator().manual_seed(seed)
    labeled_idx = np.arange(n_labeled, dtype=np.int64)
    was_training = model.training
    if taps is not None:
        net: nn.Module = TappedModule(model, taps)
    elif hasattr(model, "tap_channels"):
        net = model  # forward already gives (logits, feats)
    else:
        net = TappedModule(model)
    try:
        with _seeded(seed, device):
            if chosen.trains_ranker and ranker is None:
                ranker = fit_ranker(net, adapter, labeled_idx, cfg, precision, device, generator)
            ctx = SelectionContext(cfg=cfg, adapter=adapter, model=net, ranker=ranker,  # type: ignore[arg-type]
                                   labeled=labeled_idx, candidates=candidates, budget=budget, precision=precision,
                                   device=device, generator=generator, log_scalar=lambda tag, value, step: None)
            picked = chosen.select(ctx)
    finally:
        model.train(was_training)
        if net is not model and isinstance(net, TappedModule):
            net.remove_hooks()
    return SelectionResult(picked.indices - n_labeled, picked.scores, chosen.name, chosen.score_meaning,
                           picked.candidate_scores)
