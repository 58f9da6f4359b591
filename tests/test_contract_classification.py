"""ClassificationAdapter against the adapter contract (tests/adapter_contract.py)."""
from adapter_contract import AdapterContract
from helpers import tiny_adapter, tiny_config


class TestClassificationAdapter(AdapterContract):
    @staticmethod
    def make_adapter(tmp_path):
        cfg = tiny_config(**{"train.batch_size": 4})
        return tiny_adapter(cfg, n_train=16, n_test=7), cfg
