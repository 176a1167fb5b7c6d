"""The network a training run builds for a trainable registry entry: the one place that turns an entry, the
run's classes and normalisation (and, for a fusion family, the trained host bundle it fuses into) into a
network. Train from layers (layers_run.py) and train on a benchmark dataset (dataset_run.py) both call it.

A family whose network must see its input exactly as another model saw it (RFM-Seg, whose frozen host was
trained with its own mean and std) sets `net.fixed_normalisation = (mean, std)` (and may say whose it is in
`net.normalised_as`); the run then normalises with those values and the bundle records them, instead of the
statistics of the run's own chips.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

from ..errors import ParameterError
from ..models.registry import get_spec
from ..models.segmenter import get_net_maker
from ..spec import ModelSpec


@dataclass
class TrainingNet:
    net: torch.nn.Module
    mean: list[float]  # the normalisation the run trains with and the bundle records
    std: list[float]
    notes: list[str] = field(default_factory=list)


def takes_host(spec: ModelSpec) -> bool:
    """Whether the entry fuses into a trained host bundle (its config names the host family it takes)."""
    return bool(spec.config.get("host_family"))


def build_training_net(spec: ModelSpec, n_inputs: int, class_names: Sequence[str], mean: Sequence[float],
                       std: Sequence[float], device: str, host: Optional[str] = None) -> TrainingNet:
    """The family's network for `n_inputs` bands and `class_names`, seeded by the caller's torch seed.

    `mean`/`std`: the run's own band statistics (a frozen encoder undoes them to see the engine's [0, 1]
    values). `host`: the bundle folder a fusion family (takes_host) fuses into; refused for other families.
    ImageNet initialisation is used only when its weights are installed (else a note says so)."""
    from ..weights import weights_present

    if takes_host(spec) and not host:
        raise ParameterError(f"{spec.id} fuses into a trained {spec.config['host_family']} model: choose that "
                             "model's folder as the host", subject="host")
    if host and not takes_host(spec):
        raise ParameterError(f"{spec.id} trains on its own and takes no host model: leave the host empty",
                             subject="host")
    config: dict[str, Any] = {**spec.config, "input_mean": list(mean), "input_std": list(std),
                              "classes": list(class_names)}
    notes: list[str] = []
    if host:
        config["host"] = str(host)
    pretrained = config.get("pretrained")
    if pretrained and not weights_present(get_spec(pretrained)):
        config.pop("pretrained")
        notes.append(f"trained from scratch: the ImageNet weights ({pretrained}) are not installed; download them "
                     "for a better start")
    net = get_net_maker(spec.builder)(config, n_inputs, len(class_names), device)
    fixed = getattr(net, "fixed_normalisation", None)
    if fixed is not None:
        mean, std = fixed
        notes.append(f"normalised as {getattr(net, 'normalised_as', 'its pretrained parts were')} trained")
    return TrainingNet(net, [float(v) for v in mean], [float(v) for v in std], notes)
