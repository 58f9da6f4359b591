"""Run tools/al_cls.py in this process and SIGKILL it at the Nth call of one function.

Used by tests/test_run_safety.py and tests/test_distributed.py:
``python tests/kill_driver.py POINT N -- AL_CLS_ARGS...`` (POINT ``none``: never die).
A real SIGKILL (no cleanup handlers, no finally blocks) is what an OOM killer or a pulled
plug does; the test then resumes the run and compares it with an uninterrupted one.

Under torchrun: ``KILL_RANK=k`` makes only rank k die; ``WRITE_TRACE=PREFIX`` appends the
path of every atomic write this process makes to ``PREFIX.rank<RANK>``; ``FINALIZE_TRACE=PREFIX``
writes ``PREFIX.rank<RANK>`` if the interpreter's shutdown runs (its atexit handlers).
"""
import atexit
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tavaal_cls.adapter  # noqa: E402
import tavaal_seg.core.loop  # noqa: E402
import tavaal_seg.core.runtime  # noqa: E402
import tavaal_seg.core.training  # noqa: E402
from tavaal_cls.cli import main  # noqa: E402


def dies_on_call(fn, n, only=lambda *a, **k: True):
    count = 0

    def wrapper(*args, **kwargs):
        nonlocal count
        if only(*args, **kwargs):
            count += 1
            if count == n:
                os.kill(os.getpid(), signal.SIGKILL)
        return fn(*args, **kwargs)

    return wrapper


# where to die -> (module, attribute, which calls count)
POINTS = {
    "train": (tavaal_cls.adapter, "crop_flip", None),               # one call per training batch
    "vae": (tavaal_seg.core.training, "vae_loss", None),            # two calls per VAE step
    "export": (tavaal_seg.core.loop, "export_selection", None),     # selection made, not yet exported/recorded
    "state_write": (tavaal_seg.core.runtime.os, "replace",          # temp state written, not yet renamed
                    lambda src, dst, *a, **k: str(dst).endswith("state.json")),
}

def traced(fn, log_path):
    def wrapper(path, data):
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(f"{path}\n")
        return fn(path, data)

    return wrapper


if __name__ == "__main__":
    point, n, sep, *argv = sys.argv[1:]
    assert sep == "--"
    rank = os.environ.get("RANK", "0")
    if point != "none" and os.environ.get("KILL_RANK", rank) == rank:
        module, attr, only = POINTS[point]
        setattr(module, attr, dies_on_call(getattr(module, attr), int(n), only or (lambda *a, **k: True)))
    if os.environ.get("WRITE_TRACE"):
        runtime = tavaal_seg.core.runtime  # atomic_write_text and atomic_torch_save go through it
        runtime.atomic_write_bytes = traced(runtime.atomic_write_bytes, f"{os.environ['WRITE_TRACE']}.rank{rank}")
    if os.environ.get("FINALIZE_TRACE"):
        mark = Path(f"{os.environ['FINALIZE_TRACE']}.rank{rank}")
        atexit.register(mark.write_text, "the interpreter's shutdown ran\n")
    sys.exit(main(argv))
