"""Why a selection came out as it did, in numbers a study can aggregate (``logging.diagnostics``).

For the adversarial strategies (vaal, tavaal) the question is what the discriminator leans on to
tell labeled from unlabeled images: the VAE's μ (what an image looks like) or the ranker's r
(how hard the task model finds it). ``game_diagnostics`` measures it three ways, each as an AUC
over labeled (positive) vs scored candidates:

- ``sel_d_auc``: D(μ, r) as trained;
- ``sel_d_auc_mu_only`` / ``sel_d_auc_r_only``: the same D with r (resp. μ) replaced by its mean
  over labeled ∪ candidates, so only the other input can separate;
- ``sel_r_auc``: r itself with no learning at all (AUC of −r: labeled images have the lower
  predicted loss, because the task model was trained on them).

``pick_diagnostics`` describes the picks of any strategy: how far they follow r (Spearman of the
strategy's score with r over the candidates, overlap with the top-K by r, i.e. with lloss's
picks), and (oracle mode) their true loss against the candidates' and their class balance.
Every value is a plain float; keys start with ``sel_`` and become metrics.csv columns.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .vae import Discriminator


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks with ties sharing their mean rank (float64)."""
    v = values.detach().double().flatten().cpu()
    order = torch.argsort(v, stable=True)
    sorted_v = v[order]
    ranks = torch.empty_like(v)
    ranks[order] = torch.arange(1, len(v) + 1, dtype=torch.float64)
    # tie groups: positions where the sorted value changes start a new group
    starts = torch.ones(len(v), dtype=torch.bool)
    starts[1:] = sorted_v[1:] != sorted_v[:-1]
    group = torch.cumsum(starts.long(), 0) - 1
    sums = torch.zeros(int(group[-1]) + 1 if len(v) else 0, dtype=torch.float64).index_add_(0, group, ranks[order])
    counts = torch.bincount(group).double()
    ranks[order] = (sums / counts)[group]
    return ranks


def auc(positives: torch.Tensor, negatives: torch.Tensor) -> float:
    """P(score of a positive > score of a negative) + ½ P(tie) (Mann–Whitney U / n_pos·n_neg):
    1 = the score separates perfectly, 0.5 = not at all."""
    n_pos, n_neg = positives.numel(), negatives.numel()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = average_ranks(torch.cat([positives.flatten().double().cpu(), negatives.flatten().double().cpu()]))
    u = float(ranks[:n_pos].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Rank correlation of two aligned score vectors (nan when either is constant)."""
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    norm = math.sqrt(float((rx * rx).sum()) * float((ry * ry).sum()))
    return float((rx * ry).sum()) / norm if norm > 0 else float("nan")


@torch.inference_mode()
def game_diagnostics(disc: Discriminator, mu_l: torch.Tensor, mu_u: torch.Tensor, r_l: torch.Tensor | None,
                     r_u: torch.Tensor | None) -> dict[str, float]:
    """What the trained discriminator separates labeled from candidate images by (module doc).
    ``mu_*``: the VAE means of labeled and candidate images; ``r_*``: the r the game used
    (None for vaal)."""
    disc.eval()
    device = next(disc.parameters()).device

    def logits(mu: torch.Tensor, r: torch.Tensor | None) -> torch.Tensor:
        return disc(mu.float().to(device), None if r is None else r.float().to(device)).float().cpu()

    out = {"sel_d_auc": auc(logits(mu_l, r_l), logits(mu_u, r_u))}
    if r_l is None or r_u is None:
        return out
    mean_mu = torch.cat([mu_l, mu_u]).float().mean(0, keepdim=True)
    mean_r = torch.cat([r_l, r_u]).float().mean()
    out["sel_d_auc_mu_only"] = auc(logits(mu_l, torch.full_like(r_l, float(mean_r))),
                                   logits(mu_u, torch.full_like(r_u, float(mean_r))))
    out["sel_d_auc_r_only"] = auc(logits(mean_mu.expand_as(mu_l), r_l), logits(mean_mu.expand_as(mu_u), r_u))
    out["sel_r_auc"] = auc(-r_l.float().cpu(), -r_u.float().cpu())
    return out


def pick_diagnostics(candidates: np.ndarray, picks: np.ndarray, candidate_scores: np.ndarray | None,
                     r_candidates: torch.Tensor | None, true_loss: np.ndarray | None,
                     class_entropy: float | None) -> dict[str, float]:
    """How the picks relate to r, to the true loss and to the classes (module doc).
    ``candidate_scores`` and ``r_candidates`` are aligned with ``candidates``; ``true_loss`` too
    (oracle mode); ``class_entropy`` is the picks' class-count entropy when the task has one."""
    out: dict[str, float] = {}
    chosen = np.isin(candidates, picks)
    if r_candidates is not None:
        r = r_candidates.float().cpu()
        if candidate_scores is not None:
            out["sel_score_r_spearman"] = spearman(torch.as_tensor(candidate_scores), r)
        top_r = set(candidates[torch.argsort(r, descending=True, stable=True)[: len(picks)].numpy()].tolist())
        out["sel_top_r_overlap"] = len(top_r & set(picks.tolist())) / max(1, len(picks))
    if true_loss is not None and chosen.any():
        out["sel_true_loss_picks"] = float(np.mean(true_loss[chosen]))
        out["sel_true_loss_candidates"] = float(np.mean(true_loss))
    if class_entropy is not None:
        out["sel_class_entropy"] = float(class_entropy)
    return out
