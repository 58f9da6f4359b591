"""docs/api.md's examples run as written (every ```python block, in order, in one namespace)."""
from __future__ import annotations

import re
from pathlib import Path

import tavaal_cls
import tavaal_seg.segmentation as seg
from tavaal_seg.core.strategies import STRATEGIES

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def test_api_doc_examples_run(tmp_path, monkeypatch):
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 7
    registries = (STRATEGIES, tavaal_cls.CLS_MODELS, seg.SEG_MODELS)
    before = [set(r) for r in registries]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "api_doc"}
    try:
        for k, block in enumerate(blocks, 1):
            exec(compile(block, f"{DOC.name} block {k}", "exec"), namespace)
    finally:  # the examples register names; registries outlive the test
        for registry, names in zip(registries, before):
            for name in set(registry) - names:
                registry.unregister(name)
    assert "margin" not in STRATEGIES
