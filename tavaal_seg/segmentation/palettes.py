"""The colours each dataset's own tools draw its classes in (thumbnails with the predicted mask
overlaid); datasets without one get the core's generated palette."""
from __future__ import annotations

import types

# Cityscapes' 19 train ids, in cityscapesScripts' label colours
CITYSCAPES_COLORS = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
# CamVid's 11 classes (Sky ... Bicyclist), in the SegNet tutorial's colours
CAMVID_COLORS = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)
PALETTES = types.MappingProxyType({"cityscapes": CITYSCAPES_COLORS, "camvid": CAMVID_COLORS})
