"""A ViT-B-sized model with random weights, so the benchmark shows what share of the time the
engine takes when a real-size network dominates (no weights are downloaded)."""

from __future__ import annotations

import numpy as np


class RandomViTTileModel:
    """TileModel around timm's ViT-B/16 (random init): patch tokens -> linear class head -> upsample."""

    activation = "softmax"
    n_inputs = 3

    def __init__(self, class_names: list[str], device: str = "cpu"):
        from ..compat import ensure_torchvision

        ensure_torchvision()
        import timm
        import torch

        self.torch = torch
        self.class_names = tuple(class_names)
        self.device = device
        torch.manual_seed(0)
        self.net = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0,
                                     dynamic_img_size=True).eval().to(device)
        self.head = torch.nn.Linear(self.net.embed_dim, len(class_names)).eval().to(device)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)
            b, _, h, w = x.shape
            tokens = self.net.forward_features(x)[:, self.net.num_prefix_tokens:]
            gh, gw = h // 16, w // 16
            logits = self.head(tokens).transpose(1, 2).reshape(b, -1, gh, gw)
            logits = torch.nn.functional.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
            return logits.float().cpu().numpy()
