#!/usr/bin/env python3
"""The whole GPU benchmark of docs/benchmarks.md in one call of at most ~8 minutes.

Here (a machine with the shared data and wheels), once:

    python tools/gpu_benchmark.py prepare            # .gpu/: wheels, CIFAR-10 JPEGs, a CamVid subset; git-excluded

On the GPU machine (the repository's root; .gpu carried along):

    python3 tools/gpu_benchmark.py run --out $OUT    # results: $OUT/summary.md (also printed), $OUT/gpu_benchmark.tar.gz

What ``run`` does, in this order, each step bounded by what is left of ``--budget`` seconds
(a step that does not fit is skipped and says so; ``--steps`` picks steps for a second call):

  setup     install the wheels (--target /tmp/site), extract CIFAR-10 and the CamVid subset
  bench     tools/bench_cycle.py, the issue's command (5,000 labeled, 10,000 subset, 3 epochs, 300 VAE
            iterations), eager against CUDA-graph steps, plus the steady step after warm-up
  estimate  al_cls.py --dry-run of the whole 10-cycle protocol (the warm-up estimate, against the real run)
  paper     a real TA-VAAL run of the paper's CIFAR-10 protocol (configs/cifar10.yaml), 3 cycles,
            extrapolated per cycle to the 10-cycle trial
  pack      N = 1, 2, 4, 6, 8 bench processes side by side on the GPU, started together: aggregate img/s
  study     run_study.py --jobs 6 --device cuda on short runs: the packing itself (memory check, GPU per run)
  compile   bench with train/vae.fast_step compile (torch.compile, reduce-overhead), first calls included
  seg       DeepLabV3+ R50 training steps, eager against graphs: CamVid 352x480 and synthetic 512x1024 crops

Rehearse on a CPU with tiny settings (CUDA graphs cannot run there, so the variants are eager ones):

    python tools/gpu_benchmark.py run --out /tmp/gpu_out --tiny --device cpu
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CAMVID_SUBSET = (48, 8)  # train and test images of the CamVid subset (352x480 crops of 360x480 images)
TINY_SETS = ["--set", "model.width=0.0625", "--set", "vae.width=0.03125", "--set", "vae.z_dim=8",
             "--set", "vae.batch_size=16", "--set", "train.batch_size=16", "--set", "eval.batch_size=64",
             "--set", "data.train_per_class=20", "--set", "data.test_per_class=5"]
PAPER = {"cycles": 10, "initial": 1000, "budget": 1000, "subset": 10000, "epochs": 200, "vae_epochs": 100,
         "vae_batch": 128}


def vae_iterations_of(labeled: int, subset: int) -> int:
    return max(1, (labeled + subset) * PAPER["vae_epochs"] // PAPER["vae_batch"])


# ---------------------------------------------------------------------------- prepare (here)

def prepare(args: argparse.Namespace) -> int:
    assets = REPO / args.assets
    shared = Path(os.environ.get("TAVAAL_SHARED_DATA", REPO.parent / "shared" / "data"))
    wheels = Path(args.wheels) if args.wheels else shared.parent / "wheels-gpu"
    for need in (shared / "cifar10-jpg.tar.gz", shared / "camvid" / "train.txt", wheels):
        if not need.exists():
            print(f"gpu_benchmark.py prepare: {need} not found (set TAVAAL_SHARED_DATA / --wheels)", file=sys.stderr)
            return 2
    (assets / "wheels").mkdir(parents=True, exist_ok=True)
    for whl in wheels.glob("*.whl"):
        shutil.copyfile(whl, assets / "wheels" / whl.name)
    shutil.copyfile(shared / "cifar10-jpg.tar.gz", assets / "cifar10-jpg.tar.gz")
    camvid = shared / "camvid"
    with tarfile.open(assets / "camvid_subset.tar.gz", "w:gz") as tar:
        for split, n in zip(("train", "test"), CAMVID_SUBSET):
            lines = (camvid / f"{split}.txt").read_text().splitlines()[:n]
            listing = REPO / args.assets / f"{split}.txt"
            listing.write_text("\n".join(lines) + "\n")
            tar.add(listing, arcname=f"camvid/{split}.txt")
            listing.unlink()
            for line in lines:
                for rel in line.split():
                    tar.add(camvid / rel, arcname=f"camvid/{rel}")
    exclude = subprocess.run(["git", "rev-parse", "--git-path", "info/exclude"], cwd=REPO, capture_output=True,
                             text=True).stdout.strip()
    if exclude:
        path = (REPO / exclude) if not Path(exclude).is_absolute() else Path(exclude)
        path.parent.mkdir(parents=True, exist_ok=True)
        if f"/{args.assets}/" not in (path.read_text() if path.exists() else ""):
            with open(path, "a") as fh:
                fh.write(f"/{args.assets}/\n")
    size = sum(p.stat().st_size for p in assets.rglob("*") if p.is_file()) / 2**20
    print(f"{assets}: {size:.1f} MiB (wheels, cifar10-jpg.tar.gz, camvid_subset.tar.gz); carry it: "
          f"run(command='python3 tools/gpu_benchmark.py run --out $OUT', carry=['{args.assets}'], timeout_s=540)")
    return 0


# ---------------------------------------------------------------------------- run (there)

@dataclass
class Bench:
    args: argparse.Namespace
    out: Path
    logs: Path
    env: dict[str, str]
    deadline: float
    results: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def left(self) -> float:
        return self.deadline - time.time()

    def sh(self, name: str, cmd: list[str], timeout: float, env: dict[str, str] | None = None,
           wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
        """Run ``cmd`` with its output in logs/<name>.log, killed after ``timeout`` seconds."""
        log = open(self.logs / f"{name}.log", "w")
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env or self.env, cwd=REPO,
                                start_new_session=False)
        if not wait:
            proc._log = log  # type: ignore[attr-defined]
            return proc
        try:
            code = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
            log.write(f"\n[gpu_benchmark: killed after {timeout:.0f} s]\n")
            self.notes.append(f"{name}: killed after {timeout:.0f} s (time budget)")
        log.close()
        return subprocess.CompletedProcess(cmd, code)

    @property
    def py(self) -> str:
        return sys.executable

    def data_sets(self) -> list[str]:
        return TINY_SETS if self.args.tiny else []


def step_setup(b: Bench) -> dict:
    assets = REPO / b.args.assets
    wheels = sorted((assets / "wheels").glob("*.whl"))
    if wheels and not b.args.tiny:
        b.sh("pip", [b.py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
                     "--upgrade", "--target", "/tmp/site", *map(str, wheels)], timeout=120)
        b.env["PYTHONPATH"] = f"/tmp/site:{REPO}"
    for archive, target in (("cifar10-jpg.tar.gz", b.args.cifar), ("camvid_subset.tar.gz", "/tmp")):
        if (assets / archive).is_file() and not (Path(target) / ("train" if "cifar" in archive else "camvid")).exists():
            Path(target).mkdir(parents=True, exist_ok=True)
            with tarfile.open(assets / archive) as tar:
                tar.extractall(target, filter="data")
    info = subprocess.run([b.py, "-c", "import torch, platform; print(torch.__version__, torch.cuda.is_available() "
                           "and torch.cuda.get_device_name(0), platform.python_version())"],
                          capture_output=True, text=True, env=b.env, cwd=REPO).stdout.strip()
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip() if shutil.which("nvidia-smi") else ""
    return {"torch_gpu_python": info, "nvidia_smi": smi, "cpus": os.cpu_count(), "wheels": len(wheels)}


def _variants(b: Bench, compile_only: bool = False) -> list[str]:
    if compile_only:
        return ["--variant", "compile:train.fast_step=compile,vae.fast_step=compile"]
    fast = [] if b.args.device == "cpu" else ["--variant", "graphs:train.fast_step=graphs,vae.fast_step=graphs"]
    return ["--variant", "eager:train.fast_step=off,vae.fast_step=off", *fast]


def _bench_cmd(b: Bench, name: str, labeled: int, subset: int, epochs: int, vae_its: int, phases: list[str],
               variants: list[str], extra: list[str] = (), task: str = "cls", config: str = "configs/cifar10.yaml",
               root: str | None = None) -> list[str]:
    return [b.py, "tools/bench_cycle.py", "--task", task, "--config", config, "--data-root", root or b.args.cifar,
            "--device", b.args.device, "--labeled", str(labeled), "--subset", str(subset), "--epochs", str(epochs),
            "--vae-iterations", str(vae_its), "--phases", *phases, *variants, "--json", str(b.out / f"{name}.json"),
            *(b.data_sets() if task == "cls" else []), *extra]


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _rates(result: dict | None) -> dict:
    """phase -> (seconds, images/s) per variant."""
    if result is None:
        return {}
    return {name: {row["phase"]: (round(row["seconds"], 4), round(row["images"] / max(row["seconds"], 1e-9), 1))
                   for row in v["rows"]} | {"notes": v["notes"]} for name, v in result["variants"].items()}


def step_bench(b: Bench) -> dict:
    scale = (64, 64, 1, 3) if b.args.tiny else (5000, 10000, 3, 300)
    b.sh("bench", _bench_cmd(b, "bench", *scale, ["train", "infer", "score", "vae", "steady"], _variants(b)),
         timeout=min(b.left, 200))
    return _rates(_read(b.out / "bench.json"))


def step_compile(b: Bench) -> dict:
    scale = (64, 64, 1, 3) if b.args.tiny else (5120, 10000, 3, 300)  # 5,120: one batch shape, fewer compiles
    b.sh("compile", _bench_cmd(b, "compile", *scale, ["train", "vae", "steady"], _variants(b, compile_only=True)),
         timeout=min(b.left, 60 if b.args.tiny else 240))
    return _rates(_read(b.out / "compile.json"))


def _tiny_protocol(b: Bench) -> list[str]:
    return ["--cycles", "3", "--initial", "40", "--budget", "20", "--subset", "60", "--epochs", "1",
            *TINY_SETS] if b.args.tiny else []


def _paper_extrapolation(metrics: list[dict], load_s: float | None) -> dict:
    """Per-cycle times of the real run -> the 10-cycle protocol: training scales with the images
    trained (epochs x labeled), the selection with the VAE iterations, evaluation is per cycle."""
    train_per_image = sum(float(m["train_s"]) for m in metrics) / sum(PAPER["epochs"] * int(m["n_labeled"])
                                                                     for m in metrics)
    selecting = [m for m in metrics if m.get("select_s")]
    select_per_it = (sum(float(m["select_s"]) for m in selecting)
                     / sum(vae_iterations_of(int(m["n_labeled"]), PAPER["subset"]) for m in selecting)) \
        if selecting else None
    eval_s = sum(float(m["eval_s"]) for m in metrics) / len(metrics)
    c = PAPER
    labeled = [c["initial"] + c["budget"] * k for k in range(c["cycles"])]
    train = sum(train_per_image * c["epochs"] * n for n in labeled)
    select = sum((select_per_it or 0.0) * vae_iterations_of(n, c["subset"]) for n in labeled[:-1])
    total = train + select + eval_s * c["cycles"] + (load_s or 0.0)
    return {"cycles_measured": len(metrics), "train_img_per_s": round(1 / train_per_image, 1),
            "selection_s_per_vae_iteration": select_per_it, "eval_s_per_cycle": round(eval_s, 2),
            "trial_train_min": round(train / 60, 2), "trial_selection_min": round(select / 60, 2),
            "trial_total_min": round(total / 60, 2), "load_s": load_s}


def step_paper(b: Bench) -> dict:
    run = Path("/tmp/gpu_bench_runs/paper")
    shutil.rmtree(run, ignore_errors=True)
    start = time.time()
    b.sh("paper", [b.py, "tools/al_cls.py", "--config", "configs/cifar10.yaml", "--data-root", b.args.cifar,
                   "--device", b.args.device, "--strategy", "tavaal", "--cycles", "3", "--run-dir", str(run),
                   "--set", "logging.tensorboard=false", *_tiny_protocol(b)], timeout=min(b.left, 210))
    wall = time.time() - start
    metrics_csv = run / "metrics.csv"
    if not metrics_csv.is_file():
        return {"error": "no cycle finished", "wall_s": wall}
    shutil.copy2(metrics_csv, b.out / "paper_metrics.csv")
    shutil.copy2(run / "run.log", b.out / "paper_run.log")
    metrics = list(csv.DictReader(metrics_csv.open()))
    load_s = (_read(b.out / "bench.json") or {}).get("load_s")  # the CIFAR-10 decode, as the bench measured it
    log = (run / "run.log").read_text()
    out = {"wall_s": round(wall, 1), "metrics": metrics}
    if not b.args.tiny:
        out["extrapolated"] = _paper_extrapolation(metrics, load_s)
    out["log_tail"] = log.splitlines()[-3:]
    return out


def step_estimate(b: Bench) -> dict:
    extra = _tiny_protocol(b)
    proc = subprocess.run([b.py, "tools/al_cls.py", "--config", "configs/cifar10.yaml", "--data-root", b.args.cifar,
                           "--device", b.args.device, "--strategy", "tavaal", "--run-dir", "/tmp/gpu_bench_runs/dry",
                           "--dry-run", "json", *extra], capture_output=True, text=True, env=b.env, cwd=REPO,
                          timeout=max(1.0, min(b.left, 120)))
    (b.logs / "estimate.log").write_text(proc.stdout + proc.stderr)
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"error": f"exit {proc.returncode}"}
    return {"estimated_min": round(data["estimated_s"] / 60, 2), "seconds": data["seconds"], "rates": data["rates"],
            "peak_gpu_mib": data["peak_gpu_mib"]}


def step_pack(b: Bench) -> dict:
    ns = (1, 2) if b.args.tiny else (1, 2, 4, 6, 8)
    scale = (32, 16, 1, 2) if b.args.tiny else (5120, 2560, 4, 400)
    sets = [] if b.args.tiny else ["--set", "data.train_per_class=800", "--set", "data.test_per_class=10"]
    out = {}
    for n in ns:
        if b.left < (40 if not b.args.tiny else 5):
            b.notes.append(f"pack: N={n} and more skipped (time budget)")
            break
        start_at = time.time() + (25 if not b.args.tiny else 15)
        env = {**b.env, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // n))}
        procs = [b.sh(f"pack_{n}_{i}", _bench_cmd(b, f"pack_{n}_{i}", *scale, ["train", "vae"], [], [
            *sets, "--start-at", str(start_at)]), timeout=0, env=env, wait=False) for i in range(n)]
        deadline = time.time() + min(b.left, 120)
        for proc in procs:
            try:
                proc.wait(timeout=max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                b.notes.append(f"pack N={n}: a process was killed at the time limit")
            proc._log.close()  # type: ignore[attr-defined]
        runs = [_read(b.out / f"pack_{n}_{i}.json") for i in range(n)]
        runs = [r for r in runs if r is not None]
        row = {"processes_reporting": len(runs)}
        for phase_key, label in (("task+ranker training", "train"), ("VAE+discriminator", "vae")):
            spans = [row_ for r in runs for v in r["variants"].values() for row_ in v["rows"]
                     if row_["phase"].startswith(phase_key)]
            if spans:
                union = max(s["end"] for s in spans) - min(s["start"] for s in spans)
                row[f"{label}_aggregate_per_s"] = round(sum(s["images"] for s in spans) / union, 1)
                row[f"{label}_per_process_per_s"] = round(
                    sum(s["images"] / s["seconds"] for s in spans) / len(spans), 1)
                row[f"{label}_union_s"] = round(union, 2)
        out[str(n)] = row
    return out


def step_study(b: Bench) -> dict:
    """run_study.py --jobs 6 on the GPU: the packing itself (nvidia-smi, the --dry-run memory warm-up,
    a GPU per run), on short runs."""
    out_dir = Path("/tmp/gpu_bench_runs/study")
    shutil.rmtree(out_dir, ignore_errors=True)
    protocol = ["--cycles", "2", "--initial", "40", "--budget", "20", "--subset", "60", "--epochs", "1",
                *TINY_SETS] if b.args.tiny else \
        ["--cycles", "2", "--epochs", "5", "--set", "data.train_per_class=500", "--set", "data.test_per_class=100",
         "--set", "vae.iterations=200"]
    jobs = "2" if b.args.tiny else "6"
    b.sh("study", [b.py, "tools/run_study.py", "--config", "configs/cifar10.yaml", "--strategies", "random,tavaal",
                   "--seeds", "0,1,2", "--jobs", jobs, "--out", str(out_dir), "--", "--data-root", b.args.cifar,
                   "--device", b.args.device, "--set", "logging.tensorboard=false", *protocol],
         timeout=min(b.left, 150))
    log = (b.logs / "study.log").read_text()
    # whole lines: "6 runs at a time on GPU 0 (...): N MiB each (...)" and "[i/n] tavaal seed 0: fresh on GPU 0 ..."
    placed = [line.strip() for line in log.splitlines() if " runs at a time on " in line or ": fresh on " in line]
    runs = list(csv.DictReader((out_dir / "runs.csv").open())) if (out_dir / "runs.csv").is_file() else []
    return {"placement": placed, "runs": [{k: r[k] for k in ("strategy", "seed", "status", "wall_s")} for r in runs]}


def step_seg(b: Bench) -> dict:
    out = {}
    camvid = "/tmp/camvid"
    tiny = ["--set", "model.encoder=resnet18", "--set", "model.decoder_channels=32", "--set", "data.crop=[64,96]",
            "--set", "data.num_workers=0", "--set", "train.batch_size=4", "--set", "vae.size=[32,32]",
            "--set", "vae.width=0.0625", "--set", "vae.batch_size=8"] if b.args.tiny else \
        ["--set", "data.num_workers=8"]
    scale = (8, 4, 1, 2) if b.args.tiny else (32, 8, 3, 20)
    if Path(camvid).is_dir():
        b.sh("seg_camvid", _bench_cmd(b, "seg_camvid", *scale, ["train", "steady"], _variants(b), tiny, task="seg",
                                      config="configs/camvid.yaml", root=camvid), timeout=min(b.left, 150))
        out["camvid_352x480"] = _rates(_read(b.out / "seg_camvid.json"))
    if b.left > 60:
        synth = ["--set", "data.synthetic_train=24", "--set", "data.synthetic_val=2",
                 "--set", "data.synthetic_size=" + ("[128,256]" if b.args.tiny else "[1024,2048]")]
        if b.args.tiny:
            synth += [*tiny, "--set", "data.crop=[64,128]", "--set", "vae.size=[32,64]"]
        else:
            synth += ["--set", "data.num_workers=8"]
        b.sh("seg_cityscapes", _bench_cmd(b, "seg_cityscapes", *scale, ["train", "steady"], _variants(b), synth,
                                          task="seg", config="configs/cityscapes.yaml", root="/tmp/streets"),
             timeout=min(b.left, 150))
        out["synthetic_cityscapes_512x1024"] = _rates(_read(b.out / "seg_cityscapes.json"))
    return out


# in the order they run: what the targets need first
STEPS: dict[str, Callable[[Bench], dict]] = {
    "setup": step_setup, "bench": step_bench, "estimate": step_estimate, "paper": step_paper, "pack": step_pack,
    "study": step_study, "compile": step_compile, "seg": step_seg,
}


def summary_markdown(b: Bench) -> str:
    r = b.results
    lines = ["# GPU benchmark", "", f"- setup: {json.dumps(r.get('setup', {}))}"]
    for name in STEPS:
        if name == "setup" or name not in r:
            continue
        lines += ["", f"## {name}", "", "```", json.dumps(r[name], indent=1, default=str)[:6000], "```"]
    if b.notes:
        lines += ["", "## notes", *[f"- {n}" for n in b.notes]]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(REPO)}
    b = Bench(args, out, logs, env, deadline=time.time() + args.budget)
    steps = args.steps.split(",") if args.steps else list(STEPS)
    if "setup" not in steps:
        steps.insert(0, "setup")
    for name in steps:
        if name not in STEPS:
            print(f"gpu_benchmark.py: unknown step {name!r}; choose from {', '.join(STEPS)}", file=sys.stderr)
            return 2
        if b.left < (20 if not args.tiny else 1) and name != "setup":
            b.notes.append(f"{name}: skipped (time budget)")
            continue
        started = time.time()
        try:
            b.results[name] = STEPS[name](b)
        except Exception as err:  # one failing step must not lose the others' numbers
            b.results[name] = {"error": f"{type(err).__name__}: {err}"}
        b.results.setdefault(name, {})
        b.notes.append(f"{name}: {time.time() - started:.0f} s")
        (out / "results.json").write_text(json.dumps(b.results, indent=1, default=str))
        print(f"[gpu_benchmark] {name} done after {time.time() - started:.0f} s; {b.left:.0f} s left", flush=True)
    text = summary_markdown(b)
    (out / "summary.md").write_text(text)
    with tarfile.open(out / "gpu_benchmark.tar.gz", "w:gz") as tar:
        for path in sorted(out.iterdir()):
            if path.name != "gpu_benchmark.tar.gz":
                tar.add(path, arcname=f"gpu_benchmark/{path.name}")
    shutil.rmtree(logs)
    for path in out.glob("*.json"):
        if path.name != "results.json":
            path.unlink()
    for path in out.glob("paper_*"):
        path.unlink()
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    pp = sub.add_parser("prepare", help="copy wheels, CIFAR-10 and a CamVid subset into --assets (here)")
    pp.add_argument("--assets", default=".gpu")
    pp.add_argument("--wheels", help="folder of the GPU machine's missing wheels (default: $TAVAAL_SHARED_DATA/../wheels-gpu)")
    pr = sub.add_parser("run", help="run the benchmark (on the GPU machine)")
    pr.add_argument("--out", required=True)
    pr.add_argument("--assets", default=".gpu")
    pr.add_argument("--cifar", default="/tmp/cifar", help="where CIFAR-10 is (extracted there from the assets)")
    pr.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    pr.add_argument("--budget", type=float, default=450.0, help="seconds for all steps (default 450)")
    pr.add_argument("--steps", help=f"comma-separated subset of: {', '.join(STEPS)}")
    pr.add_argument("--tiny", action="store_true", help="tiny widths and data: a CPU rehearsal of the script")
    args = p.parse_args(argv)
    return prepare(args) if args.command == "prepare" else run(args)


if __name__ == "__main__":
    sys.exit(main())
