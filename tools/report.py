#!/usr/bin/env python
"""Write an HTML report of what a run selected: ``python tools/report.py --help``."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from tavaal_seg.core.report import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
