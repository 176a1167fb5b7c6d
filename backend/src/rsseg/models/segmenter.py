"""What the trainable semantic families (UNetFormer, the SAM head) share: a network as a TileModel,
the part of its state a bundle holds, and the one builder that rebuilds it from a bundle.

A family provides `make_net(config, in_chans, num_classes, device) -> nn.Module`, whose forward takes
normalised [B, in_chans, H, W] (H, W multiples of `net.multiple`) and returns [B, K, H, W] logits in
eval mode (in train mode it may return (logits, auxiliary logits)). Parameters under
`net.frozen_prefixes` (a frozen pretrained encoder, loaded from its own registry weights) are not
stored in bundles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ..errors import ModelError
from ..execution.host_to_device import tiles_to_device
from ..execution.tile_model import SIGMOID, SOFTMAX
from ..spec import ModelSpec
from .factory import _lookup, _registrar

if TYPE_CHECKING:
    import torch
    from torch import nn

MakeNet = Callable[[dict[str, Any], int, int, str], "nn.Module"]
NETS: dict[str, MakeNet] = {}  # builder name -> the family's make_net (the trainer builds networks with it)
net_maker = _registrar(NETS, "net maker")  # @net_maker("unetformer") def make_net(config, in_chans, ...)


def get_net_maker(builder: str) -> MakeNet:
    """The make_net of a family's builder name ("unetformer", "sam_head"), importing its
    models/<family>/family.py the first time, as the factory does for builders."""
    return _lookup(NETS, builder, "net maker")


def trained_state(net: "nn.Module") -> "dict[str, torch.Tensor]":
    """The state a bundle or a checkpoint holds: everything but the frozen pretrained parts."""
    frozen = tuple(getattr(net, "frozen_prefixes", ()))
    return {k: v for k, v in net.state_dict().items() if not (frozen and k.startswith(frozen))}


def load_trained_state(net: "nn.Module", state: "dict[str, torch.Tensor]", where: str) -> None:
    """Load `state` (from `trained_state`); a missing or unexpected key is an error naming `where`."""
    expected = set(trained_state(net))
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ModelError(f"the weights of {where} do not fit its architecture: "
                         f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected "
                         f"(e.g. {unexpected[:2]}): the bundle is damaged or from another version")
    net.load_state_dict(state, strict=False)


class SegmenterTileModel:
    """A trained semantic segmenter as a TileModel: normalises the engine's [0, 1] tiles with the
    training mean/std, pads to the network's multiple, and keeps the requested classes' channels.

    All its classes: softmax logits. Some of them: a pixel takes a requested class only where the network
    ranks that class above every class left out (else it stays unlabelled), so asking for "water" alone
    does not paint every pixel water. The channels are then SIGMOID logits log(p_c / p_best left out),
    whose sigmoid p_c / (p_c + p_best left out) passes the engine's 0.5 exactly where c beats them all.
    """

    def __init__(self, net: "nn.Module", class_names: Sequence[str], mean: Sequence[float], std: Sequence[float],
                 device: str, keep: Sequence[int] | None = None):
        import torch

        self.net = net.to(device).eval()
        self.device = device
        self.n_inputs = len(mean)
        self.keep = list(range(len(class_names))) if keep is None else list(keep)
        self.left_out = [i for i in range(len(class_names)) if i not in self.keep]
        self.activation = SIGMOID if self.left_out else SOFTMAX
        self.class_names = tuple(class_names[i] for i in self.keep)
        self.multiple = int(getattr(net, "multiple", 32))
        self._mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def prepare(self, batch: np.ndarray) -> "tuple[torch.Tensor, tuple[int, int]]":
        """The normalised batch on the device, padded to the network's multiple, and its unpadded size."""
        import torch.nn.functional as F

        x = (tiles_to_device(batch, self.device) - self._mean) / self._std
        h, w = x.shape[-2:]
        m = self.multiple
        pad_h, pad_w = -h % m, -w % m
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect" if min(h, w) > max(pad_h, pad_w) else "replicate")
        return x, (h, w)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x, (h, w) = self.prepare(batch)
        with torch.inference_mode():
            logits = self.net(x)
        return self.pick(logits[:, :, :h, :w])

    def pick(self, logits: "torch.Tensor") -> np.ndarray:
        """The network's [B, K, h, w] logits -> the requested classes' logits (see the class docstring)."""
        if not self.left_out:
            return logits[:, self.keep].float().cpu().numpy()
        log_p = logits.float().log_softmax(dim=1)
        rest = log_p[:, self.left_out].amax(dim=1, keepdim=True)
        return (log_p[:, self.keep] - rest).cpu().numpy()


def choose_classes(spec: ModelSpec, prompts: list[str]) -> list[int]:
    """Channel indices of the requested classes: a bundle segments into its own classes, and a class list
    picks some of them (in any order). A class line with synonyms ("building, roof, house", as `rsseg eval`
    passes a class-name file's lines) is the bundle's class named by the whole line or, failing that, by the
    first of its synonyms the bundle has."""
    from .prompts import synonyms

    own = [str(c) for c in spec.config["classes"]]
    lookup = {c.strip().lower(): i for i, c in enumerate(own)}

    def find(prompt: str) -> "int | None":
        for name in (prompt, *synonyms(prompt)):
            if name.strip().lower() in lookup:
                return lookup[name.strip().lower()]
        return None

    found = [find(p) for p in prompts]
    unknown = [p for p, i in zip(prompts, found) if i is None]
    if unknown:
        raise ModelError(f"{spec.config.get('bundle_name', spec.id)} was trained on {', '.join(own)}; it cannot "
                         f"segment {', '.join(unknown)} (leave the class list empty for all of its classes)")
    return [int(i) for i in found if i is not None]


def load_bundle_net(spec: ModelSpec, make_net: MakeNet, device: str) -> "tuple[nn.Module, Any]":
    """(the family's network with the checked weights of the bundle of `spec` (bundles/spec.py), its manifest)."""
    from ..bundles.format import load_state, read_bundle

    folder = spec.config["bundle"]
    info = read_bundle(folder)
    net = make_net(info.config, info.n_inputs, len(info.classes), device)
    load_trained_state(net, load_state(folder, info), folder)
    return net, info


def bundle_encoder_id(family: str, spec: ModelSpec, info: Any) -> str:
    """What a bundle's cached encoder features are (EncodedTileModel.encoder_id): its folder and weights, and the
    weights of the frozen CLIP (config "clip") it builds on."""
    from .factory import weights_id
    from .registry import get_spec

    clip = weights_id(get_spec(str(info.config["clip"])))
    return f"{family}:{spec.config['bundle']}:{info.weights_sha256[:16]}:{clip}"


def build_from_bundle(spec: ModelSpec, prompts: list[str], device: str, make_net: MakeNet) -> SegmenterTileModel:
    """The TileModel of a bundle's spec: the family's network with the bundle's weights, for the requested
    classes."""
    net, info = load_bundle_net(spec, make_net, device)
    return SegmenterTileModel(net, info.classes, info.mean, info.std, device,
                              keep=choose_classes(spec, prompts) if prompts else None)
