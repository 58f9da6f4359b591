#!/usr/bin/env python
"""Active learning for semantic segmentation: ``python tools/al_seg.py --help``."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from tavaal_seg.segmentation.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
