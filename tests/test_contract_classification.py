"""ClassificationAdapter against the adapter contract (tests/adapter_contract.py)."""
from adapter_contract import AdapterContract
from helpers import tiny_adapter, tiny_config


class TestClassificationAdapter(AdapterContract):
    @staticmethod
    def make_adapter(tmp_path):
        cfg = tiny_config(**{"train.batch_size": 4})
        return tiny_adapter(cfg, n_train=16, n_test=7), cfg


def test_extend_pool_takes_new_files_under_new_ids_only(tmp_path):
    import numpy as np
    import pytest
    from PIL import Image

    adapter = tiny_adapter(tiny_config(), n_train=16, n_test=7)
    known = adapter.pool().ids[3]
    with pytest.raises(ValueError, match=rf"already in the pool: \['{known}'\], given more than once: \[\]"):
        adapter.extend_pool([tmp_path / "a.png"], [known], ["a.png"])
    with pytest.raises(ValueError, match=r"already in the pool: \[\], given more than once: \['new/a'\]"):
        adapter.extend_pool([tmp_path / "a.png"] * 2, ["new/a", "new/a"], ["a.png"] * 2)
    assert len(adapter.pool()) == 16  # refused calls change nothing
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(tmp_path / name)
    added = adapter.extend_pool([tmp_path / "a.png", tmp_path / "b.png"], ["new/a", "new/b"], ["a.png", "b.png"])
    assert added.tolist() == [16, 17] and list(adapter.pool().ids[16:]) == ["new/a", "new/b"]
