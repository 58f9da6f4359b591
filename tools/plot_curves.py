#!/usr/bin/env python
"""Figures of a study made with tools/run_study.py: ``python tools/plot_curves.py --help``."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from tavaal_seg.studies import plot_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(plot_main())
