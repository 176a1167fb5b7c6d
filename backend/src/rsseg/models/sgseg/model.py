"""SGSeg's network: CLIP dense features and class text -> a cost volume -> aggregation -> per-class logits.

    input     [B, 3, H, W] RGB or [B, 1, H, W] grey, in the engine's 0..1 (H, W multiples of the image tower's
              stride): a grey band is repeated to RGB, then CLIP's normalisation applies (so pan imagery works too)
    image     the CLIP image tower with trainable deltas (backbone.py): dense features [B, E, h, w] in the text
              space and two guidance maps from inner layers
    text      the frozen text tower: [K, P, E] per class and template (text.py), cached per class list
    cost      cosine(dense, text) [B, P, K, h, w] -> 7x7 conv per class -> [B, hidden, K, h, w]
    guide     image: 3x3 conv of the dense features; text: linear of the template mean
    aggregate layers x (two Swin blocks over each class's map, then linear attention across classes)
    decode    two up-sampling blocks with the inner layers' maps (plus the prototype memory's summary) as
              guidance, a 3x3 head: one logit per class at 1/4 of the tower's stride, then bilinear to H x W

In training, forward also returns the generalisation compensation: the POD distance between the student's
features and the frozen teacher's (the same tower without its deltas, compensation.py). `frozen_prefixes`
leaves the CLIP tower's own weights out of a bundle; they come from the CLIP's registry weights.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ModelError
from .aggregation import AggregatorLayer
from .backbone import make_backbone
from .compensation import compensation_loss
from .configs import VIT_B_16
from .decoder import CostDecoder
from .prototypes import PrototypeMemory
from .text import class_text, templates

COMPENSATION_LEVELS = ("dense", "intermediate")


def guidance_projection(channels: int, out: int, factor: int) -> nn.Module:
    """An inner layer's map to a decoder scale `factor` times finer (transposed conv), then 3x3 conv + ReLU."""
    resize = nn.ConvTranspose2d(channels, out, factor, stride=factor) if factor > 1 else nn.Conv2d(channels, out, 1)
    return nn.Sequential(resize, nn.Conv2d(out, out, 3, padding=1), nn.ReLU(inplace=True))


class SGSeg(nn.Module):
    """[B, 3 or 1, H, W] in 0..1 -> [B, K, H, W] logits for the current class list (`set_classes`); in training,
    (logits, compensation loss), and with `labels` the prototype memory learns from them."""

    frozen_prefixes = ("backbone.visual.",)
    normalised_as = "CLIP was"  # training/net_setup.py's note

    def __init__(self, config: dict[str, Any], num_classes: int, clip: nn.Module, tokenizer: Any,
                 clip_mean: Sequence[float], clip_std: Sequence[float], in_chans: int = 3) -> None:
        super().__init__()
        self.config = dict(config)
        cfg = {**VIT_B_16, **config}
        if cfg["compensation_levels"] not in COMPENSATION_LEVELS:
            raise ModelError(f"SGSeg: compensation_levels must be one of {', '.join(COMPENSATION_LEVELS)}")
        if in_chans not in (1, 3):
            raise ModelError(f"SGSeg reads RGB (or one grey band) through CLIP: it takes 3 bands or 1, not {in_chans} "
                             "(choose the red, green and blue bands)")
        self.in_chans = in_chans
        for name, values in (("clip_mean", clip_mean), ("clip_std", clip_std)):
            self.register_buffer(name, torch.tensor([float(v) for v in values]).view(1, 3, 1, 1), persistent=False)
        self.backbone = make_backbone(clip.visual.requires_grad_(False), cfg)
        self._text = (clip, tokenizer)  # in a tuple, not a submodule: the frozen text tower stays out of the state
        self.templates = templates(str(cfg["templates"]))
        e, hidden = self.backbone.dense_dim, int(cfg["hidden"])
        self.multiple = int(self.backbone.stride)
        self.compensation_weight = float(cfg["compensation_weight"])
        self.pod_scales = tuple(int(s) for s in cfg["pod_scales"])
        self.intermediate = cfg["compensation_levels"] == "intermediate"
        self.cost_embed = nn.Conv2d(len(self.templates), hidden, 7, padding=3)
        self.appearance = nn.Sequential(nn.Conv2d(e, int(cfg["appearance_dim"]), 3, padding=1), nn.ReLU(inplace=True))
        self.text_guidance = nn.Sequential(nn.Linear(e, int(cfg["text_dim"])), nn.ReLU(inplace=True))
        self.layers = nn.ModuleList(
            AggregatorLayer(hidden, int(cfg["appearance_dim"]), int(cfg["text_dim"]), int(cfg["heads"]),
                            int(cfg["swin_window"]), int(cfg["max_classes"])) for _ in range(int(cfg["layers"])))
        out_dims = [int(d) for d in cfg["decoder_guidance"]]
        scales = [self.multiple // 2 ** (i + 1) for i in range(len(out_dims))]  # the up-sampling blocks' strides
        if len(self.backbone.guidance_dims) != len(out_dims):
            raise ModelError(f"SGSeg: {len(self.backbone.guidance_dims)} guidance maps for {len(out_dims)} "
                             "up-sampling blocks")
        self.guidance = nn.ModuleList(
            guidance_projection(c, d, max(1, s // t))
            for c, d, s, t in zip(self.backbone.guidance_dims, out_dims, self.backbone.guidance_strides, scales))
        self.memory = PrototypeMemory(num_classes, e, out_dims, float(cfg["memory_momentum"])) if cfg["memory"] \
            else None
        self.decoder = CostDecoder(hidden, [int(d) for d in cfg["decoder_dims"]], out_dims)
        self._text_cache: dict[tuple[str, ...], torch.Tensor] = {}
        self.class_lines: tuple[str, ...] = ()

    @property
    def fixed_normalisation(self) -> tuple[list[float], list[float]]:
        """The identity: the network takes 0..1 values and applies CLIP's normalisation itself (prepare), so a run
        trains, and its bundle segments, with CLIP's statistics rather than its chips' (training/net_setup.py)."""
        return [0.0] * self.in_chans, [1.0] * self.in_chans

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """0..1 RGB (or grey, repeated to RGB) -> CLIP's input."""
        return (x.expand(-1, 3, -1, -1) - self.clip_mean) / self.clip_std

    def tuned_parameters(self) -> list[nn.Parameter]:
        """The image tower's deltas (they learn at backbone_lr_scale x the learning rate)."""
        return list(self.backbone.tuned_parameters())

    def set_classes(self, lines: Sequence[str]) -> None:
        """The class list the logits follow (any names; "a, b" lines are synonyms); text is kept per list."""
        key = tuple(str(line) for line in lines)
        if not key:
            raise ModelError("SGSeg needs at least one class name")
        if key not in self._text_cache:
            clip, tokenizer = self._text
            device = str(next(clip.parameters()).device)
            self._text_cache[key] = class_text(clip, tokenizer, key, self.templates, device).to(self.cost_embed.weight)
        self.class_lines, self.text = key, self._text_cache[key]

    def _apply(self, fn, *args, **kwargs):  # .to(device) also moves the cached text embeddings
        super()._apply(fn, *args, **kwargs)
        self._text_cache = {k: fn(t) for k, t in self._text_cache.items()}
        if self.class_lines:
            self.text = self._text_cache[self.class_lines]
        return self

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What does not depend on the class list: (dense, *guidance maps) of the tuned tower."""
        dense, guidance = self.backbone(self.prepare(x), tuned=True)
        return (dense, *guidance)

    def decode(self, features: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        dense, *inner = features
        dense = dense.float()
        b, _, h, w = dense.shape
        text = self.text.to(dense)  # [K, P, E]
        k, p = text.shape[:2]
        cost = torch.einsum("behw,kpe->bkphw", F.normalize(dense, dim=1), text)
        cost = self.cost_embed(cost.reshape(b * k, p, h, w)).reshape(b, k, -1, h, w).transpose(1, 2)
        appearance = self.appearance(dense)
        text_guide = self.text_guidance(text.mean(dim=1)).unsqueeze(0).expand(b, -1, -1)
        for layer in self.layers:
            cost = layer(cost, appearance, text_guide)
        guidance = [project(g.float()) for project, g in zip(self.guidance, inner)]
        if self.memory is not None:
            guidance = [g + F.interpolate(m, size=g.shape[-2:], mode="bilinear", align_corners=False)
                        for g, m in zip(guidance, self.memory(dense))]
        logits = self.decoder(cost, guidance)
        return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)

    def compensation(self, x: torch.Tensor, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """The POD distance of the student's features to the frozen teacher's (zero while the deltas are zero)."""
        with torch.no_grad():
            dense, guidance = self.backbone(self.prepare(x), tuned=False)
        teacher = [dense, *guidance] if self.intermediate else [dense]
        student = list(features) if self.intermediate else [features[0]]
        return compensation_loss(student, teacher, self.pod_scales, low_freq=self.intermediate)

    def forward(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None, ignore_index: int = -1) -> Any:
        features = self.encode(x)
        if self.training and labels is not None and self.memory is not None:
            self.memory.update(features[0].detach(), labels, ignore_index)
        logits = self.decode(features, x.shape[-2:])
        if not self.training:
            return logits
        return logits, self.compensation(x, features) if self.compensation_weight > 0 else logits.new_zeros(())


def _clip_spec(cfg: dict[str, Any]):
    from ..registry import get_spec

    return get_spec(str(cfg["clip"]))


def make_net(config: dict[str, Any], in_chans: int, num_classes: int, device: str = "cpu") -> SGSeg:
    """An SGSeg on the frozen CLIP of `config["clip"]` (its registry weights when it is a real model); the
    classes of `config["classes"]` until `set_classes`."""
    from ..clip.builder import load_clip
    from ..factory import warm

    cfg = {**VIT_B_16, **config}
    spec = _clip_spec(cfg)
    with torch.random.fork_rng(devices=[]):  # building a component (or finding it warm) leaves the seed alone
        clip, tokenizer = warm(spec, device, load_clip)  # shared with other users of these weights
    net = SGSeg(cfg, num_classes, clip, tokenizer, spec.preprocess.mean, spec.preprocess.std, in_chans).to(device)
    net.set_classes(cfg.get("classes") or [f"class {k + 1}" for k in range(num_classes)])
    return net


def count_parameters(config: dict[str, Any], num_classes: int = 17) -> tuple[int, int]:
    """(trainable, total) parameters of an entry's architecture with `num_classes` memory slots (17: DLRSD's),
    built on the meta device; the total counts both CLIP towers."""
    from ..catalog import _open_clip_architecture
    from ..clip.builder import build_vl_encoder

    cfg = {**VIT_B_16, **config}
    spec = _clip_spec(cfg)
    clip_config = _open_clip_architecture(spec.config) if "open_clip_model" in spec.config else spec.config
    with torch.device("meta"):
        clip = build_vl_encoder(clip_config)
        net = SGSeg(cfg, num_classes, clip, None, spec.preprocess.mean, spec.preprocess.std)
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in net.parameters() if not p.requires_grad) + trainable \
        + sum(p.numel() for name, p in clip.named_parameters() if not name.startswith("visual."))
