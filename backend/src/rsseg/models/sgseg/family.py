"""The SGSeg family registers its net maker (for the trainer) and its bundle builder.

An SGSeg bundle segments any class list, classes it never saw included (an empty list: the classes it was
trained on). Inside each engine tile it runs CAT-Seg's inference: sliding windows (384 px, overlap 1/3) plus
a global view (the whole tile resized to one window), their logits averaged. It is split at the image tower
(EncodedTileModel): a second class list over the same tiles takes the tower's features from the feature
cache and runs only the text tower, the cost volume, the aggregation and the decoder.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...execution.host_to_device import tiles_to_device
from ...execution.tile_model import SOFTMAX
from ...spec import ModelSpec
from ...windows import tile_starts
from ..factory import builder, refuse_options
from ..prompts import display_name
from ..segmenter import bundle_encoder_id, load_bundle_net, net_maker
from .configs import VIT_B_16
from .model import SGSeg, make_net

net_maker("sgseg")(make_net)
DECODE_BUDGET = 64  # crops x classes decoded at once: bounds the decoder's memory for long class lists


def _starts(length: int, window: int, stride: int) -> tuple[int, list[int]]:
    size = min(window, length)
    return size, tile_starts(length, size, max(0, size - stride))


class SGSegTileModel:
    """EncodedTileModel over a trained SGSeg for one class list."""

    def __init__(self, net: SGSeg, lines: Sequence[str], device: str, encoder_id: str):
        self.net, self.device, self.encoder_id = net.to(device).eval(), device, encoder_id
        net.set_classes(list(lines))
        self.class_names = tuple(display_name(line) for line in lines)
        self.activation = SOFTMAX
        self.n_inputs = net.in_chans
        cfg = {**VIT_B_16, **net.config}
        self.window, self.stride, self.global_view = int(cfg["window"]), int(cfg["stride"]), bool(cfg["global_view"])

    def _layout(self, height: int, width: int) -> tuple[int, int, int, int, list[tuple[int, int]], bool]:
        """(padded height, width, window height, width, window corners, global view?) for a tile."""
        m = self.net.multiple
        ph, pw = height + (-height % m), width + (-width % m)
        wh, ys = _starts(ph, self.window - self.window % m, self.stride)
        ww, xs = _starts(pw, self.window - self.window % m, self.stride)
        corners = [(y, x) for y in ys for x in xs]
        return ph, pw, wh, ww, corners, self.global_view and len(corners) > 1

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(batch))

    @torch.no_grad()
    def encode(self, batch: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Tiles [B, bands, H, W] in 0..1 -> the tower's features of every window (and the global view) [B, n, ...]
        and the tile size; nothing here depends on the class list."""
        x = tiles_to_device(batch, self.device)
        b, _, h, w = x.shape
        ph, pw, wh, ww, corners, global_view = self._layout(h, w)
        if (ph, pw) != (h, w):
            mode = "reflect" if min(h, w) > max(ph - h, pw - w) else "replicate"
            x = F.pad(x, (0, pw - w, 0, ph - h), mode=mode)
        crops = [x[:, :, y:y + wh, c:c + ww] for y, c in corners]
        if global_view:
            crops.append(F.interpolate(x, size=(wh, ww), mode="bilinear", align_corners=False))
        stacked = torch.stack(crops, dim=1).flatten(0, 1)
        features = self.net.encode(stacked)
        size = torch.tensor([[h, w]] * b, dtype=torch.int64)
        return tuple(f.reshape(b, len(crops), *f.shape[1:]).float().cpu() for f in features) + (size,)

    @torch.no_grad()
    def decode(self, features: tuple) -> np.ndarray:
        *parts, size = features
        h, w = (int(v) for v in size[0])
        ph, pw, wh, ww, corners, global_view = self._layout(h, w)
        b, n = parts[0].shape[:2]
        k = len(self.class_names)
        flat = [p.flatten(0, 1) for p in parts]
        step = max(1, DECODE_BUDGET // k)
        logits = torch.cat([self.net.decode([p[i:i + step].to(self.device) for p in flat], (wh, ww)).float().cpu()
                            for i in range(0, b * n, step)]).reshape(b, n, k, wh, ww)
        canvas = torch.zeros(b, k, ph, pw)
        count = torch.zeros(1, 1, ph, pw)
        for i, (y, x) in enumerate(corners):
            canvas[:, :, y:y + wh, x:x + ww] += logits[:, i]
            count[:, :, y:y + wh, x:x + ww] += 1
        canvas /= count
        if global_view:
            whole = F.interpolate(logits[:, -1], size=(ph, pw), mode="bilinear", align_corners=False)
            canvas = (canvas + whole) / 2
        return canvas[:, :, :h, :w].numpy().astype(np.float32)


@builder("sgseg")
def build_sgseg(spec: ModelSpec, prompts: list[str], activation: str, device: str,
                options: dict[str, Any]) -> SGSegTileModel:
    refuse_options(spec, options)
    net, info = load_bundle_net(spec, make_net, device)
    return SGSegTileModel(net, prompts or list(info.classes), device, bundle_encoder_id("sgseg", spec, info))
