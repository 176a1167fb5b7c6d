"""RFM-Seg's network: a frozen host segmenter and a frozen RemoteCLIP joined by trainable connectors.

    input     [B, bands, H, W] (H, W multiples of 32), normalised with the host's mean and std
    host      encoder -> res1..res4 (1/4 .. 1/32), frozen, eval mode, no autograd
    clip      the host's normalisation undone, bands 1-3 (cycled for fewer) as RGB, CLIP's normalisation;
              four V features and the window embeddings the VL-map votes with, frozen, eval mode, no autograd:
              a ResNet CLIP's branch (resnet_branch.py: RN50's stem and bottlenecks at 1/4 .. 1/32) or a ViT's
              (vit_branch.py: token maps of four blocks and mean dense patch embeddings at 1/patch)
    VL-map    windows x prompt embeddings -> per-pixel class map [B, K, h, w] at 1/32 (1/patch) -> 1x1 conv (an
              embedding of the class) to the host's 1/32 width, L2-normalised over channels (vl_map.py)
    connect   res1..3 = V connector(res_i, V feature i); res4 = VL connector(res4, inner4, VL-map)
    decode    the host's frozen decoder on the connected features (its auxiliary head in training)

Only the connectors and the class embedding train. `frozen_prefixes = ("clip.",)`: a bundle holds the host's
weights too, so it segments without the host's folder; CLIP comes from its registry weights.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import nn

from ...errors import ModelError
from . import resnet_branch, vit_branch
from .configs import R18_RN50
from .connectors import Connectors
from .prompts import class_prompts
from .vl_map import encode_prompts, vl_map

VOTES = ("hard", "soft")
BRANCHES = {"ModifiedResNet": resnet_branch, "VisionTransformer": vit_branch}  # CLIP's visual tower -> its branch


def clip_branch(visual: nn.Module):
    """The module that reads V features and window embeddings from this kind of CLIP image tower."""
    try:
        return BRANCHES[type(visual).__name__]
    except KeyError:
        raise ModelError(f"RFM-Seg takes a ResNet or ViT CLIP, not a {type(visual).__name__}") from None


def _vector(values: Sequence[float], n: int, name: str) -> torch.Tensor:
    if len(values) != n:
        raise ModelError(f"RFM-Seg: {name} has {len(values)} values for {n} input bands")
    return torch.tensor([float(v) for v in values], dtype=torch.float32).view(1, n, 1, 1)


class RFMSeg(nn.Module):
    """[B, in_chans, H, W] -> [B, K, H, W] logits ((logits, auxiliary logits) in training, from the host's
    auxiliary head)."""

    multiple = 32
    frozen_prefixes = ("clip.",)
    normalised_as = "the host model was"  # training/net_setup.py's note

    def __init__(self, config: dict[str, Any], in_chans: int, num_classes: int, host: nn.Module, clip: nn.Module,
                 tokenizer: Any, clip_mean: Sequence[float], clip_std: Sequence[float]) -> None:
        super().__init__()
        self.config = dict(config)
        cfg = {**R18_RN50, **config}
        if cfg["vote"] not in VOTES:
            raise ModelError(f"RFM-Seg: vote must be one of {', '.join(VOTES)}, got {cfg['vote']!r}")
        self.vote, self.window, self.temperature = str(cfg["vote"]), int(cfg["window"]), float(cfg["temperature"])
        self.num_classes = num_classes
        self.host = host.requires_grad_(False)
        self.clip = clip.visual.requires_grad_(False)
        self.branch = clip_branch(self.clip)
        self._text = (clip, tokenizer)  # in a tuple, not a submodule: the shared component's text tower stays out
        self.register_buffer("input_mean", _vector(cfg["input_mean"], in_chans, "input_mean"), persistent=False)
        self.register_buffer("input_std", _vector(cfg["input_std"], in_chans, "input_std"), persistent=False)
        self.register_buffer("clip_mean", _vector(clip_mean, 3, "clip mean"), persistent=False)
        self.register_buffer("clip_std", _vector(clip_std, 3, "clip std"), persistent=False)
        self.bands = [i % in_chans for i in range(3)]
        self.connect = Connectors(list(host.encoder.feature_info.channels()), self.branch.feature_channels(self.clip),
                                  num_classes, int(cfg["kernel"]), int(cfg["mlp_ratio"]))
        self.prompts: list[list[str]] = []
        self._text_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        classes = cfg.get("classes") or [f"class {k + 1}" for k in range(num_classes)]
        self.set_prompts(class_prompts(classes, cfg.get("prompts"), cfg.get("dataset")))
        self.config["prompts"] = dict(zip(classes, self.prompts))  # a bundle keeps the prompts it trained with

    @property
    def fixed_normalisation(self) -> tuple[list[float], list[float]]:
        """The host's normalisation: the run trains, and the bundle segments, with it (training/net_setup.py)."""
        return [float(v) for v in self.config["input_mean"]], [float(v) for v in self.config["input_std"]]

    def set_prompts(self, prompts: Sequence[Sequence[str]]) -> None:
        """The VL-map prompts per class (one non-empty list per output class); text embeddings are kept per
        prompt set, so switching back costs no text encoder pass."""
        prompts = [list(p) for p in prompts]
        if len(prompts) != self.num_classes or not all(prompts):
            raise ModelError(f"RFM-Seg: {len(prompts)} prompt lists for {self.num_classes} classes (each needs one "
                             "prompt or more)")
        key = tuple(tuple(p) for p in prompts)
        if key not in self._text_cache:
            clip, tokenizer = self._text
            text, owner = encode_prompts(clip, tokenizer, prompts, str(next(clip.parameters()).device))
            self._text_cache[key] = (text.to(self.input_mean.device), owner.to(self.input_mean.device))
        self.prompts = prompts
        self.text, self.prompt_class = self._text_cache[key]

    def _apply(self, fn, *args, **kwargs):  # .to(device) also moves the cached text embeddings
        super()._apply(fn, *args, **kwargs)
        self._text_cache = {k: (fn(t), fn(c)) for k, (t, c) in self._text_cache.items()}
        if self.prompts:
            self.text, self.prompt_class = self._text_cache[tuple(tuple(p) for p in self.prompts)]
        return self

    def train(self, mode: bool = True) -> "RFMSeg":
        super().train(mode)
        self.host.eval()  # frozen: norms and dropouts keep their inference behaviour
        self.clip.eval()
        self.host.decoder.training = mode  # only the flag that makes the host return its auxiliary logits
        return self

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What does not depend on the prompts: the host's encoder features, CLIP's V features and window
        embeddings (the feature cache keeps these per tile)."""
        res = self.host.encoder(x)
        rgb = (x * self.input_std + self.input_mean)[:, self.bands]
        v, windows = self.branch.features(self.clip, (rgb - self.clip_mean) / self.clip_std, self.window)
        return (*res, *v, windows)

    def decode(self, features: Sequence[torch.Tensor], size: Sequence[int]) -> Any:
        *res, v1, v2, v3, v4, windows = features
        step = self.branch.stride(self.clip)
        classes = vl_map(windows, self.text, self.prompt_class, self.num_classes, (size[0] // step, size[1] // step),
                         self.window, self.temperature, self.vote)
        return self.host.decoder(*self.connect(res, (v1, v2, v3, v4), classes), size)

    def forward(self, x: torch.Tensor) -> Any:
        return self.decode(self.encode(x), x.shape[-2:])


def load_host(folder: str, in_chans: int, classes: Optional[Sequence[str]], family: str,
              device: str) -> tuple[nn.Module, Any]:
    """The trained host of bundle `folder` with its checked weights, and its manifest; its bands and classes
    must be the run's."""
    from ...bundles.format import load_state, read_bundle
    from ..segmenter import get_net_maker, load_trained_state

    info = read_bundle(folder)
    if info.builder != family:
        raise ModelError(f"the host {folder} is a {info.builder} model; RFM-Seg fuses into a trained {family} model "
                         "(train one from your layers first)")
    if info.n_inputs != in_chans:
        raise ModelError(f"the host {folder} takes {info.n_inputs} bands, the training data has {in_chans}: use the "
                         f"bands the host was trained on ({', '.join(map(str, info.bands))})")
    if classes is not None and [c.lower() for c in classes] != [c.lower() for c in info.classes]:
        raise ModelError(f"the host {folder} segments {', '.join(info.classes)}; the labels give "
                         f"{', '.join(classes)}: train RFM-Seg on labels with the host's classes")
    host = get_net_maker(family)({**info.config, "pretrained": None}, in_chans, len(info.classes), device)
    load_trained_state(host, load_state(folder, info), folder)
    return host, info


def make_net(config: dict[str, Any], in_chans: int, num_classes: int, device: str = "cpu") -> RFMSeg:
    """For training, `config["host"]` names the host's bundle (its architecture, weights, classes and
    normalisation are taken from there and recorded in the config); a bundle's config has `host_config` and
    its state holds the host's weights."""
    from ..clip.builder import load_clip
    from ..factory import warm
    from ..registry import get_spec
    from ..segmenter import get_net_maker

    cfg = {**R18_RN50, **config}
    family = str(cfg["host_family"])
    if cfg.get("host"):
        host, info = load_host(str(cfg["host"]), in_chans, cfg.get("classes"), family, device)
        cfg = {**cfg, "host": None, "host_config": dict(info.config), "host_name": info.name,
               "classes": list(info.classes), "input_mean": list(info.mean), "input_std": list(info.std)}
    elif cfg.get("host_config"):
        host = get_net_maker(family)({**cfg["host_config"], "pretrained": None}, in_chans, num_classes, device)
    else:
        raise ModelError("RFM-Seg needs a host: the trained model it fuses into")
    clip_spec = get_spec(str(cfg["clip"]))
    with torch.random.fork_rng(devices=[]):  # building a component (or finding it warm) leaves the seed alone
        clip, tokenizer = warm(clip_spec, device, load_clip)  # shared with other users of these weights
    net = RFMSeg(cfg, in_chans, num_classes, host, clip, tokenizer, clip_spec.preprocess.mean,
                 clip_spec.preprocess.std)
    return net.to(device)


def count_parameters(config: dict[str, Any], in_chans: int = 3, num_classes: int = 6) -> tuple[int, int]:
    """(trainable, total) parameters of an entry's architecture for `in_chans` bands and `num_classes` classes
    (6: Vaihingen's) on the host architecture of `host_entry`, built on the meta device."""
    from ..catalog import _open_clip_architecture
    from ..clip.builder import build_vl_encoder
    from ..registry import get_spec
    from ..segmenter import get_net_maker

    cfg = {**R18_RN50, **config}
    host_config = get_spec(str(cfg["host_entry"])).config
    with torch.device("meta"):
        host = get_net_maker(str(cfg["host_family"]))({**host_config, "pretrained": None}, in_chans, num_classes,
                                                               "meta")
        clip_config = get_spec(str(cfg["clip"])).config
        if "open_clip_model" in clip_config:
            clip_config = _open_clip_architecture(clip_config)
        clip = build_vl_encoder(clip_config)
        branch = clip_branch(clip.visual)
        connect = Connectors(list(host.encoder.feature_info.channels()), branch.feature_channels(clip.visual),
                             num_classes, int(cfg["kernel"]), int(cfg["mlp_ratio"]))
    trainable = sum(p.numel() for p in connect.parameters())
    return trainable, trainable + sum(p.numel() for m in (host, clip) for p in m.parameters())
