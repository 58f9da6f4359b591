#!/usr/bin/env python
"""Export a run's selections for a labeling tool: ``python tools/export_selection.py --help``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tavaal_seg.core.export_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
