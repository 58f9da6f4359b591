"""SegmentationAdapter against the adapter contract (tests/adapter_contract.py)."""
from adapter_contract import AdapterContract
from tavaal_seg.core.validation import load_config
from tavaal_seg.segmentation import SegConfig, SegmentationAdapter, write_street_scenes


class TestSegmentationAdapter(AdapterContract):
    @staticmethod
    def make_adapter(tmp_path):
        root = write_street_scenes(tmp_path / "streets", 10, 5, (32, 64), seed=0)
        cfg = load_config(SegConfig, None, ["data.crop=[32, 48]", "model.name=drn_d_22", "model.width=0.125",
                                            "train.batch_size=4", "train.epochs=1", "eval.batch_size=4", "device=cpu"])
        return SegmentationAdapter(cfg, root), cfg
