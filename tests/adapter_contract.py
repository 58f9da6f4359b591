"""The task-adapter contract (core.adapter.TaskAdapter), checked on tiny inputs by one base
tester in the style of segmentation-models-pytorch's ``tests/models/base.py``: a test file per
adapter subclasses :class:`AdapterContract` and says how to build its adapter in a few lines.
The checks are what the core relies on: stable pool ids, batches in the order asked, a model
whose forward gives ``(logits, feats)`` matching ``tap_channels``, per-sample losses the ranker
can learn from, mergeable metrics, the VAE's uint8 view, and the label hooks."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tavaal_seg.core.adapter import TaskAdapter, shuffled_batches
from tavaal_seg.core.config import BaseConfig
from tavaal_seg.core.ranker import LossRanker
from tavaal_seg.core.runtime import Precision
from tavaal_seg.core.training import evaluate, model_pass, train_task_model

CPU = torch.device("cpu")


class AdapterContract:
    """Subclass as ``TestXAdapter`` and implement the static :meth:`make_adapter` (return the
    adapter and a config whose core sections suit tiny data: at least 8 pool items, 4 test items)."""

    batch_size = 3

    @pytest.fixture(scope="class")
    @classmethod
    def built(cls, tmp_path_factory: pytest.TempPathFactory) -> tuple[TaskAdapter, BaseConfig]:
        torch.manual_seed(0)
        return cls.make_adapter(tmp_path_factory.mktemp(cls.__name__))

    @staticmethod
    def make_adapter(tmp_path: Path) -> tuple[TaskAdapter, BaseConfig]:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def adapter(cls, built: tuple[TaskAdapter, BaseConfig]) -> TaskAdapter:
        return built[0]

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls, adapter: TaskAdapter) -> torch.nn.Module:
        torch.manual_seed(0)
        return adapter.build_model().eval()

    # ------------------------------------------------------------------ pool, model, batches

    def test_describes_itself(self, adapter):
        assert isinstance(adapter.metric_name, str) and adapter.metric_name
        assert len(adapter.class_names) >= 2 and all(isinstance(c, str) for c in adapter.class_names)
        assert isinstance(adapter.label_help, str) and adapter.label_help
        assert adapter.data_root is not None

    def test_pool_has_stable_unique_ids(self, adapter):
        pool = adapter.pool()
        assert len(pool) >= 8 and len(set(pool.ids)) == len(pool)
        assert all(isinstance(p, str) for p in pool.paths)
        assert adapter.pool().ids == pool.ids

    def test_model_forward_gives_logits_and_the_tapped_maps(self, adapter, model):
        x = next(iter(adapter.pool_batches(np.arange(2), 2, CPU)))
        with torch.no_grad():
            logits, feats = model(x)
        assert logits.shape[:2] == (2, len(adapter.class_names))
        assert [f.shape[1] for f in feats] == list(model.tap_channels) and len(feats) >= 1
        assert all(f.shape[0] == 2 for f in feats)

    def test_pool_batches_follow_the_order_asked(self, adapter):
        order = np.array([5, 0, 3, 1, 7])
        batches = list(adapter.pool_batches(order, 2, CPU))
        assert sum(b.shape[0] for b in batches) == len(order) and all(b.shape[0] <= 3 for b in batches)
        singles = torch.cat([next(iter(adapter.pool_batches(np.array([i]), 1, CPU))) for i in order])
        assert torch.allclose(torch.cat(batches), singles)
        assert torch.equal(torch.cat(list(adapter.pool_batches(order, 2, CPU))), torch.cat(batches))

    def test_labeled_pool_batches_pair_the_pool_images_with_targets(self, adapter):
        order = np.array([4, 2, 6])
        images = torch.cat(list(adapter.pool_batches(order, 2, CPU)))
        pairs = list(adapter.labeled_pool_batches(order, 2, CPU))
        assert torch.equal(torch.cat([x for x, _ in pairs]), images)
        assert all(y.shape[0] == x.shape[0] and not y.is_floating_point() for x, y in pairs)

    def test_train_batches_keep_the_batches_and_replay_by_generator(self, adapter):
        batches = shuffled_batches(np.arange(7), 3, torch.Generator().manual_seed(0))
        first = list(adapter.train_batches(batches, torch.Generator().manual_seed(1), CPU))
        again = list(adapter.train_batches(batches, torch.Generator().manual_seed(1), CPU))
        assert [x.shape[0] for x, _ in first] == [len(b) for b in batches]
        assert all(x.is_floating_point() and y.shape[0] == x.shape[0] for x, y in first)
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))

    def test_test_batches_shard_into_contiguous_parts(self, adapter):
        whole = list(adapter.test_batches(self.batch_size, CPU))
        parts = [list(adapter.test_batches(self.batch_size, CPU, (k, 2))) for k in range(2)]
        assert all(x.shape[0] <= self.batch_size for x, _ in whole)
        assert torch.equal(torch.cat([y for part in parts for _, y in part]), torch.cat([y for _, y in whole]))

    # ------------------------------------------------------------------ losses, scores, metric

    def test_per_sample_loss_is_per_sample_and_learnable(self, adapter, model):
        x, y = next(iter(adapter.labeled_pool_batches(np.arange(4), 4, CPU)))
        with torch.no_grad():
            logits = model(x)[0].detach().requires_grad_(True)
        loss = adapter.per_sample_loss(logits, y)
        assert loss.shape == (4,) and loss.dtype == torch.float32 and torch.isfinite(loss).all()
        assert (loss >= 0).all()
        loss.sum().backward()
        assert logits.grad is not None and logits.grad.abs().sum() > 0
        confident = torch.nn.functional.one_hot(y.clamp(0, logits.shape[1] - 1), logits.shape[1]).movedim(-1, 1)
        assert (adapter.per_sample_loss(confident.float() * 50, y) <= loss.detach() + 1e-6).all()

    def test_uncertainty_is_highest_for_uniform_logits(self, adapter, model):
        x = next(iter(adapter.pool_batches(np.arange(2), 2, CPU)))
        with torch.no_grad():
            logits = model(x)[0]
        n = logits.shape[1]
        assert adapter.uncertainty(torch.zeros_like(logits)) == pytest.approx([math.log(n)] * 2, rel=1e-5)
        sharp = torch.zeros_like(logits)
        sharp[:, 0] = 100.0
        assert adapter.uncertainty(sharp) == pytest.approx([0.0, 0.0], abs=1e-4)
        assert adapter.uncertainty(logits).shape == (2,)

    def test_metric_merges_to_the_whole(self, adapter, model):
        whole, parts = adapter.new_metric(), [adapter.new_metric(), adapter.new_metric()]
        for k, (x, y) in enumerate(adapter.test_batches(self.batch_size, CPU)):
            with torch.no_grad():
                logits = model(x)[0]
            whole.update(logits, y)
            parts[k % 2].update(logits, y)
        parts[0].merge(parts[1])
        assert adapter.metric_name in whole.compute()
        assert whole.compute() == pytest.approx(parts[0].compute(), nan_ok=True)
        assert 0.0 <= whole.compute()[adapter.metric_name] <= 1.0

    def test_labeled_stats_are_numbers(self, adapter):
        stats = adapter.labeled_stats(np.arange(4))
        assert all(isinstance(k, str) and isinstance(v, float) for k, v in stats.items())

    def test_vae_images_are_uint8_in_order(self, adapter):
        x = adapter.vae_images(np.array([3, 1, 2]), [16, 32])
        assert x.shape == (3, 3, 16, 32) and x.dtype == torch.uint8
        assert torch.equal(adapter.vae_images(np.array([1]), [16, 32])[0], x[1])

    def test_predictions_and_previews_describe_each_item(self, adapter, model):
        indices = np.array([2, 0])
        with torch.no_grad():
            logits, _ = model(next(iter(adapter.pool_batches(indices, 2, CPU))))
        for full_size in (False, True):
            preds = adapter.predict(logits, indices, full_size)
            assert len(preds) == 2
            for p in preds:
                assert p.class_share.shape == (len(adapter.class_names),)
                assert p.class_share.sum() == pytest.approx(1.0) and 0.0 < p.confidence <= 1.0
                assert (p.label is None) != (logits.dim() == 2)  # classification says which class
                assert p.mask is None or (full_size and p.mask.dtype == np.uint8 and p.mask.ndim == 2)
        image = adapter.preview_image(0)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3

    # ------------------------------------------------------------------ labels from people

    def test_label_hooks(self, adapter):
        assert adapter.missing_labels(np.arange(4)) == []  # an oracle pool: every label is there
        assert isinstance(adapter.label_path(0), str)
        with pytest.raises(ValueError, match="from-the-contract-test"):
            adapter.assign_labels({0: "no such class name"}, "from-the-contract-test")

    # ------------------------------------------------------------------ the core over it

    def test_the_core_trains_evaluates_and_scores_through_it(self, built):
        adapter, cfg = built
        torch.manual_seed(0)
        model = adapter.build_model()
        ranker = LossRanker(list(model.tap_channels), 8)
        before = [p.detach().clone() for p in model.parameters()]
        precision = Precision(CPU, False)
        result = train_task_model(model, ranker, adapter, np.arange(6), cfg, precision, CPU,
                                  torch.Generator().manual_seed(0))
        assert result.images == 6 * cfg.train.epochs and all(math.isfinite(v) for v in result.epoch_rank_loss)
        assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
        metrics = evaluate(model, adapter, cfg, precision, CPU)
        assert 0.0 <= metrics[adapter.metric_name] <= 1.0
        out = model_pass(model, ranker, adapter, np.array([6, 7, 2]), frozenset({"rank", "uncertainty", "embedding"}),
                         cfg, precision, CPU)
        assert out.rank.shape == (3,) and out.uncertainty.shape == (3,) and out.embedding.shape[0] == 3
