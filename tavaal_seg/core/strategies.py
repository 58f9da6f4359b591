"""Selection strategies, in one registry. Each says what it trains (the ranker? the VAE?) and
how it scores the unlabeled subset; the cycle loop does the rest the same way for all."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .adapter import TaskAdapter
from .config import BaseConfig
from .diagnostics import game_diagnostics
from .distributed import Distributed
from .diversity import k_center_order
from .ranker import LossRanker
from .registry import Registry
from .runtime import Precision
from .training import PassOutputs, discriminator_logits, model_pass, train_vae, transform_rank, vae_means


class StreamingTopK:
    """Keeps the k best (score, index) pairs seen so far: memory O(k + batch), whatever the
    number of scored items. Ties break towards the item pushed first, so the result is
    deterministic."""

    def __init__(self, k: int, largest: bool) -> None:
        self.k, self.largest = k, largest
        self.scores = torch.empty(0, dtype=torch.float64)
        self.items = torch.empty(0, dtype=torch.long)

    def push(self, scores: torch.Tensor, items: torch.Tensor) -> None:
        scores = torch.cat([self.scores, scores.detach().to(torch.float64).cpu()])
        items = torch.cat([self.items, items.to(torch.long).cpu()])
        keep = torch.sort(scores, descending=self.largest, stable=True).indices[: self.k]
        self.scores, self.items = scores[keep], items[keep]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.items.numpy(), self.scores.numpy()


def top_k(scores: torch.Tensor, candidates: np.ndarray, k: int, largest: bool, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    top = StreamingTopK(k, largest)
    for i in range(0, len(candidates), chunk):
        top.push(scores[i:i + chunk], torch.as_tensor(candidates[i:i + chunk]))
    return top.result()


@dataclass
class SelectionContext:
    """Everything a strategy may use to choose ``budget`` of ``candidates`` (pool indices)."""

    cfg: BaseConfig
    adapter: TaskAdapter
    model: torch.nn.Module
    ranker: LossRanker | None
    labeled: np.ndarray
    candidates: np.ndarray
    budget: int
    precision: Precision
    device: torch.device
    generator: torch.Generator
    log_scalar: Callable[[str, float, int], None]
    dist: Distributed = Distributed()  # passes are sharded over ranks; every rank gets every output

    def pass_over(self, indices: np.ndarray, want: frozenset[str]) -> PassOutputs:
        return model_pass(self.model, self.ranker, self.adapter, indices, want, self.cfg, self.precision, self.device,
                          self.dist)


@dataclass
class Selection:
    """Chosen pool indices in rank order, with the strategy's score for each (see ``score_meaning``)."""

    indices: np.ndarray
    scores: np.ndarray
    # the score of every candidate (aligned with ctx.candidates) when the strategy has one per
    # candidate; studies plot it against the true loss (None: coreset's distances change as it picks)
    candidate_scores: np.ndarray | None = None
    # the ranker's r of every candidate (lloss, tavaal) and what the strategy measured about its
    # own decision (logging.diagnostics; see core.diagnostics), for studies
    candidate_rank: torch.Tensor | None = None
    diagnostics: dict[str, float] = field(default_factory=dict)


SelectFn = Callable[[SelectionContext], Selection]


def _no_pass(n_labeled: int, n_candidates: int) -> int:
    return 0


@dataclass(frozen=True)
class Strategy:
    name: str
    trains_ranker: bool
    score_meaning: str
    select: SelectFn
    # what selecting costs, for the cost estimate before a run (--dry-run): images the task model
    # scores, from (labeled, candidates); whether the VAE game is trained (it then scores the candidates)
    model_pass: Callable[[int, int], int] = _no_pass
    trains_vae: bool = False

    def ranker_in_training(self, cfg: BaseConfig) -> bool:
        """Whether a cycle trains the task model with the loss-ranking head: the strategies that
        select with it, and every strategy under ``ranker.train_with_all_strategies`` (the
        reference's training-matched comparison, which the cost estimate must count too)."""
        return self.trains_ranker or cfg.ranker.train_with_all_strategies


def _random(ctx: SelectionContext) -> Selection:
    """Uniform without replacement (the reference's Random sampled with replacement)."""
    keys = torch.rand(len(ctx.candidates), generator=ctx.generator)
    return Selection(*top_k(keys, ctx.candidates, ctx.budget, largest=True), keys.numpy())


def _entropy(ctx: SelectionContext) -> Selection:
    out = ctx.pass_over(ctx.candidates, frozenset({"uncertainty"}))
    return Selection(*top_k(out.uncertainty, ctx.candidates, ctx.budget, largest=True), out.uncertainty.cpu().numpy())


def _lloss(ctx: SelectionContext) -> Selection:
    out = ctx.pass_over(ctx.candidates, frozenset({"rank"}))
    return Selection(*top_k(out.rank, ctx.candidates, ctx.budget, largest=True), out.rank.cpu().numpy(),
                     candidate_rank=out.rank.cpu())


def k_center_greedy(labeled: torch.Tensor, candidates: torch.Tensor, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Core-set greedy: repeatedly take the candidate farthest from its nearest center
    (labeled points and the picks so far). Distances are computed in chunks so memory stays
    O(candidates) rather than O(labeled × candidates). Returns positions into ``candidates``
    and the distance each had when picked."""
    candidates = candidates.double()
    min_dist = torch.full((len(candidates),), float("inf"), dtype=torch.float64)
    for i in range(0, len(labeled), chunk):
        d = torch.cdist(candidates, labeled[i:i + chunk].double())
        min_dist = torch.minimum(min_dist, d.min(dim=1).values)
    return k_center_order(candidates, k, min_dist=min_dist)


def _coreset(ctx: SelectionContext) -> Selection:
    want = frozenset({"embedding"})
    emb_l = ctx.pass_over(ctx.labeled, want).embedding
    emb_u = ctx.pass_over(ctx.candidates, want).embedding
    pos, dists = k_center_greedy(emb_l, emb_u, ctx.budget)
    return Selection(ctx.candidates[pos], dists)


def _adversarial(ctx: SelectionContext, conditioned: bool) -> Selection:
    """VAAL (conditioned=False) and TA-VAAL: train the VAE and discriminator on labeled vs
    subset images, then pick the subset images D finds least labeled-like."""
    cfg = ctx.cfg
    r_l = r_u = d_l = d_u = raw_u = None
    if conditioned:
        both = np.concatenate([ctx.labeled, ctx.candidates])
        raw = ctx.pass_over(both, frozenset({"rank"})).rank
        raw_u = raw[len(ctx.labeled):].cpu()
        n = len(ctx.labeled)
        r = transform_rank(raw, cfg.vae.rank_transform).to(ctx.device)
        d = transform_rank(raw, cfg.vae.disc_rank_transform or cfg.vae.rank_transform).to(ctx.device)
        r_l, r_u, d_l, d_u = r[:n], r[n:], d[:n], d[n:]
    images_l = ctx.adapter.vae_images(ctx.labeled, cfg.vae.size).to(ctx.device)
    images_u = ctx.adapter.vae_images(ctx.candidates, cfg.vae.size).to(ctx.device)

    def log(it: int, vae_loss: float, disc_loss: float) -> None:
        ctx.log_scalar("vae/vae_loss", vae_loss, it)
        ctx.log_scalar("vae/discriminator_loss", disc_loss, it)

    game = train_vae(images_l, images_u, r_l, r_u, cfg, ctx.precision, ctx.device, ctx.generator, log, ctx.dist,
                     disc_r_l=d_l, disc_r_u=d_u)
    logits = discriminator_logits(game.vae, game.discriminator, images_u, d_u, cfg.eval.batch_size, ctx.precision,
                                  ctx.dist)
    items, scores = top_k(logits, ctx.candidates, ctx.budget, largest=False)
    diagnostics = {}
    if cfg.logging.diagnostics:
        mu_l = vae_means(game.vae, images_l, cfg.eval.batch_size, ctx.precision, ctx.dist)
        mu_u = vae_means(game.vae, images_u, cfg.eval.batch_size, ctx.precision, ctx.dist)
        diagnostics = game_diagnostics(game.discriminator, mu_l, mu_u, d_l, d_u)
    return Selection(items, torch.sigmoid(torch.as_tensor(scores, dtype=torch.float64)).numpy(),
                     torch.sigmoid(logits.double()).cpu().numpy(),
                     candidate_rank=raw_u, diagnostics=diagnostics)


STRATEGIES: Registry[Strategy] = Registry("strategy", "active.strategy", "register_strategy", (
    (s.name, s) for s in (
        Strategy("random", False, "random priority in [0, 1) (higher first)", _random),
        Strategy("entropy", False, "predictive entropy (higher first)", _entropy, lambda n_l, n_c: n_c),
        Strategy("coreset", False, "distance to the nearest labeled/picked feature when picked", _coreset,
                 lambda n_l, n_c: n_l + n_c),
        Strategy("lloss", True, "predicted loss rank r (higher first)", _lloss, lambda n_l, n_c: n_c),
        Strategy("vaal", False, "discriminator P(labeled) (lower first)", lambda ctx: _adversarial(ctx, False),
                 trains_vae=True),
        Strategy("tavaal", True, "discriminator P(labeled | mu, r) (lower first)", lambda ctx: _adversarial(ctx, True),
                 lambda n_l, n_c: n_l + n_c, trains_vae=True),
    )
))


def register_strategy(name: str, select: SelectFn | None = None, *, score_meaning: str, trains_ranker: bool = False,
                      replace: bool = False) -> SelectFn | Callable[[SelectFn], SelectFn]:
    """Add a selection strategy: ``select(ctx: SelectionContext) -> Selection`` picks
    ``ctx.budget`` of ``ctx.candidates``. Usable as a decorator (``select`` omitted). From then on
    ``active.strategy``, ``--strategy``, :func:`get_strategy` and :func:`tavaal_seg.select` accept
    ``name``. ``trains_ranker``: the task model is trained with a loss-ranking head, passed as
    ``ctx.ranker``. ``score_meaning`` says what a selected item's score is (shown in docs and
    plots). Returns ``select`` (so a decorated function stays a plain function)."""

    def add(fn: SelectFn) -> SelectFn:
        STRATEGIES.register(name, Strategy(name, trains_ranker, score_meaning, fn), replace=replace)
        return fn

    return add if select is None else add(select)


def get_strategy(name: str) -> Strategy:
    return STRATEGIES.lookup(name)
