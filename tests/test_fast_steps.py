"""The fast training steps (core.steps, train.fast_step / vae.fast_step) against the eager ones,
on what a CPU can run: the step runner's capture logic through a stand-in for torch.cuda's graph
calls, fused optimizers with device learning rates, losses summed on the device, the
augmentation drawn per epoch, and torch.compile (slow)."""
from __future__ import annotations

import logging
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import tiny_adapter, tiny_config
from tavaal_cls.adapter import crop_flip, crop_flip_draws
from tavaal_seg.core import steps as steps_module
from tavaal_seg.core import training
from tavaal_seg.core.distributed import Distributed
from tavaal_seg.core.ranker import LossRanker
from tavaal_seg.core.runtime import Precision
from tavaal_seg.core.steps import LearningRates, StepRunner, make_optimizer, resolve_fast_step

CPU = torch.device("cpu")


class StandInGraphs:
    """What StepRunner asks of torch.cuda, on the CPU: a capture records the step without running
    it, and a replay runs the recorded step again on the static input tensors, as a CUDA graph
    replays its kernels on the memory it was captured with."""

    def __init__(self) -> None:
        self.pool = None
        self.warmups = self.captures = self.replays = 0

    def warmup(self, fn):
        self.warmups += 1
        fn()

    def capture(self, fn):
        self.captures += 1

        def replay():
            self.replays += 1
            fn()

        return replay

    def synchronize(self):
        pass


class SumStep:
    """A step whose whole state is one tensor: the sum of every input it was applied to."""

    def __init__(self) -> None:
        self.total = torch.zeros(())

    def __call__(self, x, variant=None):
        self.total += x.sum() * (2.0 if variant else 1.0)


def test_runner_warms_up_captures_once_per_shape_and_variant_and_replays_fresh_inputs():
    graphs = StandInGraphs()
    step = SumStep()
    runner = StepRunner(step, capture=True, warmup=2, graphs=graphs)
    expected = 0.0
    gen = torch.Generator().manual_seed(0)
    # per "epoch": three full batches and a partial one; the second half "detached" (variant True)
    for epoch in range(6):
        for size in (8, 8, 8, 3):
            x = torch.randn(size, 4, generator=gen)
            runner(x, variant=epoch >= 3)
            expected += float(x.sum()) * (2.0 if epoch >= 3 else 1.0)
    # every call applied its own inputs exactly once: warm-ups ran, the capture did not, replays did
    assert float(step.total) == pytest.approx(expected, rel=1e-5)
    assert runner.captured == 4 and graphs.captures == 4  # (full, partial) x (variant False, True)
    assert graphs.warmups == 4 * 2
    assert graphs.replays == 6 * 4 - graphs.warmups
    runner.close()
    assert runner.captured == 0


def test_a_failed_capture_falls_back_to_eager_or_names_the_key():
    class Refuses(StandInGraphs):
        def capture(self, fn):
            raise RuntimeError("operation not permitted when stream is capturing")

    step = SumStep()
    runner = StepRunner(step, capture=True, fallback=True, warmup=1, graphs=Refuses(), name="train.fast_step")
    xs = [torch.full((2,), float(i)) for i in range(5)]
    for x in xs:
        runner(x)
    assert float(step.total) == sum(float(x.sum()) for x in xs) and not runner.capture
    strict = StepRunner(SumStep(), capture=True, fallback=False, warmup=1, graphs=Refuses(), name="vae.fast_step")
    strict(xs[0])
    with pytest.raises(RuntimeError, match="vae.fast_step=off"):
        strict(xs[1])


def test_fast_step_modes_resolve_by_device_precision_and_process_count():
    cpu32 = Precision(CPU, False)
    cuda = torch.device("cuda")
    bf16 = types.SimpleNamespace(scaler=types.SimpleNamespace(is_enabled=lambda: False))
    fp16 = types.SimpleNamespace(scaler=types.SimpleNamespace(is_enabled=lambda: True))
    assert resolve_fast_step("auto", "train.fast_step", CPU, cpu32) == "off"
    assert resolve_fast_step("auto", "train.fast_step", cuda, bf16) == "graphs"
    assert resolve_fast_step("auto", "train.fast_step", cuda, fp16) == "off"
    assert resolve_fast_step("auto", "train.fast_step", cuda, bf16, Distributed(0, 2, 0)) == "off"
    assert resolve_fast_step("compile", "vae.fast_step", CPU, cpu32) == "compile"
    assert resolve_fast_step("compile", "vae.fast_step", cuda, fp16) == "compile"
    assert resolve_fast_step("off", "vae.fast_step", cuda, bf16) == "off"
    with pytest.raises(ValueError, match="train.fast_step graphs: CUDA graphs need a CUDA device"):
        resolve_fast_step("graphs", "train.fast_step", CPU, cpu32)
    with pytest.raises(ValueError, match="vae.fast_step graphs: fp16"):
        resolve_fast_step("graphs", "vae.fast_step", cuda, fp16)
    with pytest.raises(ValueError, match="distributed"):
        resolve_fast_step("compile", "train.fast_step", cuda, bf16, Distributed(1, 2, 1))


@pytest.mark.parametrize("name,schedule", [("sgd", "multistep"), ("sgd", "poly"), ("adamw", "constant")])
def test_fused_optimizers_with_device_learning_rates_follow_the_eager_schedule(name, schedule):
    cfg = tiny_config(**{"train.optimizer": name, "train.schedule": schedule, "train.milestones": "[3, 6]",
                         "train.lr": 0.05})
    t = cfg.train
    cls, hyper = steps_module.OPTIMIZERS[name]
    factor = training.SCHEDULES[schedule](t, 1, 10)
    weights = {}
    for fast in (False, True):
        torch.manual_seed(0)
        model = torch.nn.Linear(5, 3)
        opt = make_optimizer(cls, model.parameters(), t.lr, fast, CPU, **hyper(t))
        lrs = LearningRates([opt], factor)
        lr_tensor = opt.param_groups[0]["lr"]
        gen = torch.Generator().manual_seed(1)
        for step in range(10):
            lrs.set(step)
            opt.zero_grad()
            model(torch.randn(4, 5, generator=gen)).pow(2).mean().backward()
            opt.step()
        if fast:  # a captured step reads the learning rate's memory: it is written in place
            assert opt.param_groups[0]["lr"] is lr_tensor and opt.param_groups[0]["fused"]
        assert float(opt.param_groups[0]["lr"]) == pytest.approx(t.lr * factor(9), rel=1e-6)
        weights[fast] = model.weight.detach().clone()
    torch.testing.assert_close(weights[True], weights[False], rtol=1e-5, atol=1e-6)


def _reference_random_crop_flip(x, crop, pad, generator):
    """The augmentation as it was drawn batch by batch before the fast path (its exact code)."""
    b, _, h, w = x.shape
    if pad:
        x = F.pad(x, (pad, pad, pad, pad))
        h, w = h + 2 * pad, w + 2 * pad
    oy = torch.randint(0, h - crop + 1, (b,), generator=generator).to(x.device)
    ox = torch.randint(0, w - crop + 1, (b,), generator=generator).to(x.device)
    flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
    ar = torch.arange(crop, device=x.device)
    rows = (oy[:, None] + ar)[:, :, None]
    cols = ox[:, None] + ar
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def test_an_epoch_of_augmentation_drawn_at_once_equals_batch_by_batch_draws():
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    sizes, order = [16, 16, 8], torch.randperm(40, generator=torch.Generator().manual_seed(1))
    draws = crop_flip_draws(sizes, 32, 32, 32, 4, torch.Generator().manual_seed(7))
    reference_gen = torch.Generator().manual_seed(7)
    start = 0
    for size in sizes:
        idx = order[start:start + size]
        got = crop_flip(images[idx], draws[:, start:start + size], 32, 4)
        torch.testing.assert_close(got, _reference_random_crop_flip(images[idx], 32, 4, reference_gen), rtol=0, atol=0)
        start += size


# ---------------------------------------------------------------- whole trainings, fast vs eager


def _fused_eager(monkeypatch):
    """Eager steps with the fast path's optimizers (fused, device learning rate): what is left
    between them and captured steps is the capture logic alone."""
    real = training.make_optimizer
    monkeypatch.setattr(training, "make_optimizer", lambda cls, params, lr, fast, device, **hyper:
                        real(cls, params, lr, True, device, **hyper))


class TwoTaps(torch.nn.Module):
    """A task model small enough to compile in seconds on two CPU cores (a ResNet-18's forward and
    backward take minutes there, whatever its width)."""

    tap_channels = (4, 8)

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        block = lambda i, o: torch.nn.Sequential(torch.nn.Conv2d(i, o, 3, 2, 1), torch.nn.BatchNorm2d(o),  # noqa: E731
                                                 torch.nn.ReLU())
        self.a, self.b, self.fc = block(3, 4), block(4, 8), torch.nn.Linear(8, classes)

    def forward(self, x):
        f1 = self.a(x)
        f2 = self.b(f1)
        return self.fc(f2.mean((2, 3))), [f1, f2]


def _tiny_training(mode: str, monkeypatch, fused_eager: bool = False, small_model: bool = False, **overrides):
    """One task-model training on the tiny synthetic set in ``mode``; graphs runs through the
    stand-in (resolve_fast_step is told the device can capture)."""
    sets = {"train.epochs": 10, "train.batch_size": 8, "ranker.detach_fraction": 0.5,
            "train.fast_step": "auto" if mode == "graphs" else mode,
            "train.schedule": "multistep", "train.milestones": "[6]", **overrides}
    cfg = tiny_config(**sets)
    adapter = tiny_adapter(cfg)
    if mode == "graphs":
        monkeypatch.setattr(training, "resolve_fast_step", lambda *a, **k: "graphs")
        monkeypatch.setattr(steps_module, "CudaGraphs", StandInGraphs)
    if fused_eager:
        _fused_eager(monkeypatch)
    torch.manual_seed(0)
    model = TwoTaps() if small_model else adapter.build_model()
    ranker = LossRanker(list(model.tap_channels), 16)
    labeled = np.arange(0, 20)  # batches of 8, 8 and a partial 4
    epochs = []
    result = training.train_task_model(model, ranker, adapter, labeled, cfg, Precision(CPU, False), CPU,
                                       torch.Generator().manual_seed(3),
                                       on_epoch=lambda e, task, rank: epochs.append((e, task, rank)))
    monkeypatch.undo()
    return result, model, ranker, epochs


def _weights(*modules):
    return [v for m in modules for v in m.state_dict().values()]


def test_captured_training_equals_eager_training(monkeypatch):
    fast, fast_model, fast_ranker, fast_epochs = _tiny_training("graphs", monkeypatch)
    assert fast.images == 10 * 20  # every image once per epoch, the partial batch included
    assert fast.captured_graphs == 4  # (8, 4) x (ranker attached, detached)
    assert [e for e, _, _ in fast_epochs] == list(range(10))
    # the same steps, schedule, detach epoch and loss sums: bit for bit, given the same optimizers
    same, same_model, same_ranker, same_epochs = _tiny_training("off", monkeypatch, fused_eager=True)
    assert same.captured_graphs == 0 and fast_epochs == same_epochs
    for a, b in zip(_weights(fast_model, fast_ranker), _weights(same_model, same_ranker)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # and the eager path's own optimizers differ by their rounding only (amplified over 30 steps at lr 0.1)
    eager, eager_model, eager_ranker, eager_epochs = _tiny_training("off", monkeypatch)
    assert eager.images == fast.images
    np.testing.assert_allclose(np.array(fast_epochs)[:, 1:], np.array(eager_epochs)[:, 1:], rtol=1e-3, atol=1e-6)
    for a, b in zip(_weights(fast_model, fast_ranker), _weights(eager_model, eager_ranker)):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3)


def test_eager_epoch_losses_are_the_host_sums_of_the_step_losses(monkeypatch):
    """The device-side float64 sums equal what the loop computed on the host before (float(loss) per step)."""
    seen = []
    real = training.TaskStep._losses

    def record(self, x, y, detached):
        out = real(self, x, y, detached)
        seen.append((float(out[1]), float(out[2])))
        return out

    monkeypatch.setattr(training.TaskStep, "_losses", record)
    result, _, _, epochs = _tiny_training("off", monkeypatch, **{"train.epochs": 2})
    per_epoch = [seen[:3], seen[3:]]
    for (_, task, rank), steps in zip(epochs, per_epoch):
        assert task == sum(s[0] for s in steps) / 3 and rank == sum(s[1] for s in steps) / 3


def _tiny_game(mode: str, monkeypatch, fused_eager: bool = False, size: int = 32):
    cfg = tiny_config(**{"vae.fast_step": "auto" if mode == "graphs" else mode, "vae.iterations": 9,
                         "vae.batch_size": 6, "logging.log_every": 4, "vae.size": f"[{size}, {size}]"})
    if mode == "graphs":
        monkeypatch.setattr(training, "resolve_fast_step", lambda *a, **k: "graphs")
        monkeypatch.setattr(steps_module, "CudaGraphs", StandInGraphs)
    if fused_eager:
        _fused_eager(monkeypatch)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (30, 3, size, size), dtype=torch.uint8, generator=gen)
    r = torch.randn(30, generator=gen)
    torch.manual_seed(5)  # the reparameterisation noise
    logged = []
    game = training.train_vae(images[:12], images[12:], r[:12], r[12:], cfg, Precision(CPU, False), CPU,
                              torch.Generator().manual_seed(2), on_log=lambda *a: logged.append(a))
    monkeypatch.undo()
    return game, logged


def test_captured_vae_game_equals_the_eager_one(monkeypatch):
    fast, fast_log = _tiny_game("graphs", monkeypatch)
    assert fast.iterations == 9 and fast.captured_graphs == 1
    assert [it for it, _, _ in fast_log] == [0, 4, 8]  # losses read back at the logging interval only
    same, same_log = _tiny_game("off", monkeypatch, fused_eager=True)
    assert fast_log == same_log and (fast.last_vae_loss, fast.last_disc_loss) == (same.last_vae_loss,
                                                                                   same.last_disc_loss)
    for a, b in zip(_weights(fast.vae, fast.discriminator), _weights(same.vae, same.discriminator)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    eager, eager_log = _tiny_game("off", monkeypatch)
    np.testing.assert_allclose(np.array(fast_log)[:, 1:], np.array(eager_log)[:, 1:], rtol=1e-3)
    for a, b in zip(_weights(fast.vae, fast.discriminator), _weights(eager.vae, eager.discriminator)):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3)


# ---------------------------------------------------------------- torch.compile on the CPU


@pytest.mark.slow
def test_compiled_training_and_vae_game_equal_the_eager_ones(monkeypatch, caplog):
    caplog.set_level(logging.WARNING)
    sets = {"train.epochs": 4, "train.batch_size": 10}  # 20 images: one batch shape, two variants (detach)
    eager, eager_model, _, eager_epochs = _tiny_training("off", monkeypatch, True, True, **sets)
    fast, fast_model, _, fast_epochs = _tiny_training("compile", monkeypatch, False, True, **sets)
    assert fast.images == eager.images
    np.testing.assert_allclose(np.array(fast_epochs)[:, 1:], np.array(eager_epochs)[:, 1:], rtol=1e-4, atol=1e-6)
    for a, b in zip(fast_model.state_dict().values(), eager_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # compiled code draws the VAE's reparameterisation noise from Inductor's own generator: the game
    # matches in distribution, not draw for draw
    eager_game, eager_log = _tiny_game("off", monkeypatch, fused_eager=True, size=16)
    fast_game, fast_log = _tiny_game("compile", monkeypatch, size=16)
    assert [it for it, _, _ in fast_log] == [it for it, _, _ in eager_log] and fast_game.iterations == 9
    np.testing.assert_allclose(np.array(fast_log)[:, 1:], np.array(eager_log)[:, 1:], rtol=5e-2)
    assert "recompile" not in caplog.text.lower()


# ---------------------------------------------------------------- resume with captured steps


def test_a_run_with_captured_steps_resumes_exactly(tmp_path, monkeypatch):
    """al_cls.py with both steps captured (through the stand-in), killed in cycle 2's training and
    resumed, ends as the uninterrupted run does."""
    from helpers import interrupted_on_call, run_outcome, tiny_run_args, write_image_folder
    from tavaal_cls.cli import main
    from tavaal_seg.core import loop as loop_module

    root = write_image_folder(tmp_path / "data")
    captures = []

    class Counted(StandInGraphs):
        def capture(self, fn):
            captures.append(fn)
            return super().capture(fn)

    monkeypatch.setattr(training, "resolve_fast_step", lambda *a, **k: "graphs")
    monkeypatch.setattr(steps_module, "CudaGraphs", Counted)
    args = lambda run, *extra: tiny_run_args(root, run, "--set", "logging.tensorboard=false",  # noqa: E731
                                             "--epochs", "10", *extra)
    assert main(args(tmp_path / "straight")) == 0
    # per cycle: (full, partial batch) x (ranker attached, detached) training graphs; one VAE graph
    # after each of the two selections
    assert len(captures) == 3 * 4 + 2
    real = loop_module.train_task_model
    monkeypatch.setattr(loop_module, "train_task_model", interrupted_on_call(real))  # in cycle 2's training
    assert main(args(tmp_path / "resumed")) == 130
    monkeypatch.setattr(loop_module, "train_task_model", real)
    assert main(args(tmp_path / "resumed", "--resume")) == 0
    assert run_outcome(tmp_path / "resumed") == run_outcome(tmp_path / "straight")
