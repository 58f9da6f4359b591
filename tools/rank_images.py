#!/usr/bin/env python
"""Rank a folder of new images with a run's trained model: ``python tools/rank_images.py --help``."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from tavaal_seg.ranking import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
