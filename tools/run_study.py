#!/usr/bin/env python
"""A label-efficiency study (strategies x seeds) and its summary: ``python tools/run_study.py --help``."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from tavaal_seg.studies import run_study_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_study_main())
