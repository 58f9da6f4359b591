"""Runtime helpers shared by every adapter: device, seeding, mixed precision, atomic files,
logging and progress reporting."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from .errors import ConfigError, DataError

LOG = logging.getLogger("tavaal")
T = TypeVar("T")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is an error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was requested but torch.cuda.is_available() is False; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"device must be one of auto, cpu, cuda; got {name!r}")
    return torch.device(name)


def derive_seed(seed: int, *parts: object) -> int:
    """A stable 63-bit seed for one phase of one cycle.

    Every phase (initial pick, training of cycle 3, VAE of cycle 3, ...) starts from its own
    seed derived from the run seed, so a run resumed at any phase boundary replays exactly
    what an uninterrupted run would have done.
    """
    key = json.dumps([seed, *[str(p) for p in parts]]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & ((1 << 63) - 1)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch (CPU and CUDA) and return a CPU generator on that seed."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class Precision:
    """Mixed-precision policy: bf16 autocast where the GPU supports it, fp16 with a GradScaler
    otherwise, fp32 on CPU (unless ``force_cpu_bf16``, used by tests to exercise the AMP path)."""

    def __init__(self, device: torch.device, enabled: bool, force_cpu_bf16: bool = False) -> None:
        self.device = device
        if device.type == "cuda" and enabled:
            self.dtype: torch.dtype | None = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        elif device.type == "cpu" and enabled and force_cpu_bf16:
            self.dtype = torch.bfloat16
        else:
            self.dtype = None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def step(self, loss: torch.Tensor, optimizers: list[torch.optim.Optimizer]) -> None:
        """Backward + step for one or more optimizers sharing one loss (scaled under fp16)."""
        self.scaler.scale(loss).backward()
        for opt in optimizers:
            self.scaler.step(opt)
        self.scaler.update()


def new_file_mode() -> int:
    """The permissions ``open()`` gives a new file: 0o666 less the process umask (read from
    /proc on Linux; elsewhere by setting and restoring it)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers see the old file or
    the new one, never half of one, even if the process is killed mid-write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else new_file_mode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, mode)  # mkstemp makes 0600: the file gets what open() would give it (or keeps its mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


EXIF_ORIENTATION = 274  # EXIF tag; values 5..8 mean the pixels are stored rotated by 90 degrees


def displayed_image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image as decoders that honour EXIF orientation show it (OpenCV's
    imread, CVAT), from the file header only: the pixels are never decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = im.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DataError(f"cannot read image {path}: {err}") from err
    return (height, width) if orientation > 4 else (width, height)


def sweep_temp_files(folder: Path) -> list[Path]:
    """Delete the temp files of atomic writes a killed process left under ``folder`` (call it
    only while owning the folder, i.e. holding its run lock)."""
    swept = [p for p in Path(folder).rglob(".*.tmp") if p.is_file()]
    for p in swept:
        p.unlink(missing_ok=True)
    return swept


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


FILE_ONLY = "file_only"  # a log record with this attribute set goes to run.log, not to the terminal


def setup_logging(run_dir: Path | None = None, level: int = logging.INFO, prefix: str = "") -> None:
    """Log to stderr and, when a run dir is given, to ``run_dir/run.log``; ``prefix`` starts
    every line (``[rank 1]`` for the processes of a distributed run other than rank 0)."""
    LOG.setLevel(level)
    LOG.propagate = False
    for handler in list(LOG.handlers):
        LOG.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(message)s", "%H:%M:%S")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    stream.addFilter(lambda record: not getattr(record, FILE_ONLY, False))
    LOG.addHandler(stream)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(run_dir / "run.log", encoding="utf-8")
        file_handler.setFormatter(fmt)
        LOG.addHandler(file_handler)


def log_traceback(err: BaseException, run_dir: Path | None) -> str:
    """Write ``err``'s full traceback to ``run_dir/run.log`` (opening it if the run had not got
    that far) and return where it went; without a run dir, print it on stderr."""
    if run_dir is None:
        import traceback

        traceback.print_exception(err, file=sys.stderr)
        return "the output above"
    log_file = Path(os.path.abspath(Path(run_dir) / "run.log"))
    if not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == log_file for h in LOG.handlers):
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(log_file, encoding="utf-8")
        except OSError:  # the run dir itself cannot be written
            return log_traceback(err, None)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        LOG.addHandler(handler)
    LOG.error("internal error (exit code 1):", exc_info=err, extra={FILE_ONLY: True})
    return str(log_file)


def progress(iterable: Iterable[T], desc: str, total: int | None = None, log_every: int | None = 50) -> Iterator[T]:
    """tqdm bars on a terminal; plain periodic log lines otherwise (CI logs, nohup, files);
    nothing at all with ``log_every=None`` (the ranks other than 0 of a distributed run)."""
    if log_every is None:
        yield from iterable
        return
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True)
        return
    for i, item in enumerate(iterable, 1):
        if log_every > 0 and (i % log_every == 0 or (total is not None and i == total)):
            LOG.info("%s: %d/%s", desc, i, total if total is not None else "?")
        yield item
