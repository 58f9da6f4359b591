"""Registries users add to: strategies, classification and segmentation models. A registered name
is accepted by config validation, listed by --help, built by name; built-ins stay fixed."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from torch import nn

import tavaal_cls
import tavaal_seg
import tavaal_seg.segmentation as seg
from helpers import tiny_adapter, tiny_config
from tavaal_cls.cli import main as cls_main
from tavaal_seg.core.config import BaseConfig, ConfigError
from tavaal_seg.core.registry import Registry
from tavaal_seg.core.strategies import STRATEGIES, Selection, get_strategy, top_k
from tavaal_seg.core.validation import load_config


@contextlib.contextmanager
def registered(registry: Registry, name: str):
    """Take ``name`` out of ``registry`` when the test ends (registries outlive tests)."""
    try:
        yield
    finally:
        if name in registry:
            registry.unregister(name)


def test_registry_is_a_read_only_mapping_with_named_errors():
    reg: Registry[int] = Registry("widget", "data.widget", "register_widget", [("one", 1), ("two", 2)])
    assert list(reg) == ["one", "two"] and reg["two"] == 2 and len(reg) == 2 and "one" in reg
    assert not hasattr(reg, "__setitem__") and not hasattr(reg, "__delitem__")
    with pytest.raises(ValueError, match=r"unknown widget 'tow' \(data.widget\) \(did you mean 'two'\?\); choose one "
                                         r"of one, two, or add your own with register_widget"):
        reg.lookup("tow")

    @reg.register("three")
    def three() -> int:
        return 3

    assert reg["three"] is three and list(reg) == ["one", "two", "three"]
    with pytest.raises(ValueError, match="already registered; pass replace=True"):
        reg.register("three", 33)
    assert reg.register("three", 33, replace=True) == 33 and reg["three"] == 33
    with pytest.raises(ValueError, match="'one' is already built-in; choose another name"):
        reg.register("one", 11, replace=True)
    with pytest.raises(ValueError, match="built in and cannot be unregistered"):
        reg.unregister("one")
    assert reg.unregister("three") == 33 and "three" not in reg
    with pytest.raises(ValueError, match="non-empty string"):
        reg.register(" x", 0)


def test_a_registered_strategy_is_validated_listed_and_runs(capsys, tmp_path):
    with registered(STRATEGIES, "lowest_entropy"):
        with pytest.raises(ConfigError, match="active.strategy"):
            load_config(BaseConfig, None, ["active.strategy=lowest_entropy"])

        @tavaal_seg.register_strategy("lowest_entropy", score_meaning="predictive entropy (lower first)")
        def lowest_entropy(ctx):
            out = ctx.pass_over(ctx.candidates, frozenset({"uncertainty"}))
            return Selection(*top_k(out.uncertainty, ctx.candidates, ctx.budget, largest=False))

        assert load_config(BaseConfig, None, ["active.strategy=lowest_entropy"]).active.strategy == "lowest_entropy"
        strategy = get_strategy("lowest_entropy")
        assert strategy.select is lowest_entropy and not strategy.trains_ranker
        with pytest.raises(SystemExit):
            cls_main(["--help"])
        assert "lowest_entropy" in capsys.readouterr().out

        # its selection on tiny in-memory data, then a whole two-cycle run with it
        cfg = tiny_config(**{"active.strategy": "lowest_entropy"})
        x = torch.linspace(0, 1, 60).view(60, 1, 1, 1).expand(60, 3, 8, 8).contiguous()
        adapter = tavaal_seg.InMemoryAdapter(x, torch.arange(60) % 2, test=x[:10], test_targets=torch.arange(10) % 2,
                                             model=lambda: tavaal_seg.tap_layers(_TinyNet(), ["features"],
                                                                                 example_input=x[:2]),
                                             num_classes=2)
        picks = select_with(adapter, cfg, "lowest_entropy")
        assert len(picks) == 10 and len(set(picks)) == 10
        state = tavaal_seg.run_active_learning(cfg, adapter, tmp_path / "run")
        assert [s.strategy for s in state.selections] == ["initial", "lowest_entropy"]
        assert len(state.labeled) == 30 and len(state.cycles) == 2
    assert "lowest_entropy" not in STRATEGIES


def select_with(adapter, cfg, name):
    from tavaal_seg.core.runtime import Precision
    from tavaal_seg.core.strategies import SelectionContext

    torch.manual_seed(0)
    model = adapter.build_model()
    ctx = SelectionContext(cfg=cfg, adapter=adapter, model=model, ranker=None, labeled=np.arange(20),
                           candidates=np.arange(20, 60), budget=10, precision=Precision(torch.device("cpu"), False),
                           device=torch.device("cpu"), generator=torch.Generator().manual_seed(0),
                           log_scalar=lambda *a: None)
    picked = get_strategy(name).select(ctx)
    with torch.no_grad():
        entropy = adapter.uncertainty(model(adapter.data.fetch(np.arange(20, 60))[0])[0])
    # the strategy's order is the rising entropy order of the candidates
    assert picked.indices.tolist() == (20 + torch.argsort(entropy, stable=True)[:10]).tolist()
    return picked.indices.tolist()


class _TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_a_registered_classification_model_is_built_by_name(tmp_path):
    name = "tiny_cls_test_model"
    with registered(tavaal_cls.CLS_MODELS, name):
        with pytest.raises(ConfigError, match="model.name"):
            tiny_config(**{"model.name": name})

        @tavaal_cls.register_cls_model(name)
        def build(num_classes: int, width: float) -> nn.Module:
            net = _TinyNet()
            net.head = nn.Linear(4, num_classes)
            return tavaal_seg.tap_layers(net, ["features"], example_input=torch.zeros(2, 3, 32, 32))

        cfg = tiny_config(**{"model.name": name})
        model = tiny_adapter(cfg).build_model()
        assert model.tap_channels == [4] and model(torch.zeros(2, 3, 32, 32))[0].shape == (2, 4)
        weights = tmp_path / "w.pt"
        torch.save({k: v * 0 + 0.5 for k, v in model.state_dict().items()}, weights)
        loaded = tavaal_cls.build_cls_model(name, 4, 1.0, str(weights))
        assert torch.all(loaded.model.head.weight == 0.5)  # model.weights reaches a registered model too
    with pytest.raises(ValueError, match="unknown classification model .*register_cls_model"):
        tavaal_cls.build_cls_model(name, 4)


def test_a_registered_segmentation_model_gets_the_model_section(tmp_path):
    name = "tiny_seg_test_model"
    seen = {}
    with registered(seg.SEG_MODELS, name):
        @seg.register_seg_model(name)
        def build(num_classes: int, **kwargs):
            seen.update(kwargs)
            return seg.build_seg_model("drn_d_22", num_classes, width=0.25, taps=kwargs.get("taps", ["layer8"]))

        root = seg.write_street_scenes(tmp_path / "streets", 4, 2, (32, 64), seed=0)
        cfg = load_config(seg.SegConfig, None, [f"model.name={name}", "model.width=0.5", "model.taps=[layer5]",
                                                "data.crop=[32, 32]", "device=cpu"])
        model = seg.SegmentationAdapter(cfg, root).build_model()
        assert seen == {"width": 0.5, "weights": None, "taps": ["layer5"]}
        assert model(torch.zeros(2, 3, 32, 64))[0].shape == (2, 19, 32, 64)
        with pytest.raises(ConfigError, match=f"model.encoder_weights: expected null for {name}"):
            load_config(seg.SegConfig, None, [f"model.name={name}", "model.encoder_weights=imagenet"])
    with pytest.raises(ValueError, match="unknown segmentation model"):
        seg.build_seg_model(name, 3)
