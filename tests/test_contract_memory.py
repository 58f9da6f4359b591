"""InMemoryAdapter (tensors, a torchvision model tapped by hooks) against the adapter contract."""
import torch
import torchvision

from adapter_contract import AdapterContract
from tavaal_seg import InMemoryAdapter, tap_layers
from tavaal_seg.core.config import BaseConfig
from tavaal_seg.core.validation import load_config


class TestInMemoryAdapter(AdapterContract):
    @staticmethod
    def make_adapter(tmp_path):
        g = torch.Generator().manual_seed(0)
        images, labels = torch.randn(12, 3, 24, 24, generator=g), torch.arange(12) % 3
        cfg = load_config(BaseConfig, None, ["train.batch_size=4", "train.epochs=1", "eval.batch_size=4"])
        return InMemoryAdapter(images, labels, test=images[:5], test_targets=labels[:5], num_classes=3,
                               model=lambda: tap_layers(torchvision.models.resnet18(num_classes=3),
                                                        ["layer2", "layer4"], example_input=images[:2])), cfg
