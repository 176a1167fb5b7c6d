"""The frozen teacher keeps SGSeg general: trained with the compensation loss, the tuned image tower's features on
held-out scenes stay closer to the teacher's than trained without it (both distances are printed).

Two tiny SGSegs train from the same seed on the same chips, one with the default compensation weight (0.1),
one with none. The tower's deltas learn at the full rate here (backbone_lr_scale 1) so that a short run
drifts measurably; the distance is the mean cosine distance between student and teacher dense features.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from rsseg.models.registry import get_spec
from rsseg.models.sgseg.model import make_net
from rsseg.training.base import TrainConfig
from rsseg.training.sgseg import SGSegTrainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CLASSES = ["background", "building", "water"]
COLOURS = {1: (0.8, 0.25, 0.2), 2: (0.15, 0.25, 0.8)}
SIZE = 48


def chips(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Green fields with red and blue rectangles; labels 0 field, 1 building, 2 water."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, 3, SIZE, SIZE), np.float32)
    labels = np.zeros((n, SIZE, SIZE), np.int64)
    for i in range(n):
        images[i] = np.array([0.3, 0.55, 0.25], np.float32)[:, None, None]
        for kind in (1, 2, 1, 2):
            w, h = rng.integers(8, 20, 2)
            c, r = rng.integers(0, SIZE - w), rng.integers(0, SIZE - h)
            images[i, :, r:r + h, c:c + w] = np.array(COLOURS[kind], np.float32)[:, None, None]
            labels[i, r:r + h, c:c + w] = kind
    images += rng.normal(0, 0.03, images.shape).astype(np.float32)
    return torch.from_numpy(images.clip(0, 1)), torch.from_numpy(labels)


class ChipTrainer(SGSegTrainer):
    """SGSegTrainer on chips held in memory (the trainer's loss, optimizer and schedule unchanged)."""

    chips: TensorDataset

    def train_dataset(self) -> TensorDataset:
        return self.chips


class _Reader:
    class labels:  # noqa: N801 - what SemanticTrainer reads of a chip reader
        ignore_index = 255


def _train(weight: float, data: TensorDataset):
    torch.manual_seed(0)
    config = {**get_spec("sgseg-vit-b-16-tiny").config, "classes": CLASSES, "backbone_lr_scale": 1.0,
              "compensation_weight": weight}
    net = make_net(config, 3, len(CLASSES), "cpu")
    trainer = ChipTrainer(net, "sgseg-vit-b-16-tiny", list(range(len(data))),
                          TrainConfig(steps=40, batch_size=8, lr=2e-3, weight_decay=1e-4, progress=False),
                          _Reader(), *net.fixed_normalisation, CLASSES)
    trainer.chips = data
    trainer.train()
    return trainer


@torch.no_grad()
def _drift(trainer: ChipTrainer, images: torch.Tensor) -> float:
    net = trainer.model.eval()
    x = net.prepare(trainer.normalise(images))
    student, _ = net.backbone(x, tuned=True)
    teacher, _ = net.backbone(x, tuned=False)
    return float((1 - F.cosine_similarity(student, teacher, dim=1)).mean())


def test_compensation_keeps_the_student_s_features_closer_to_the_teacher_s():
    data = TensorDataset(*chips(32, seed=0))
    held_out, _ = chips(8, seed=1)
    with_teacher, without = _train(0.1, data), _train(0.0, data)
    kept, drifted = _drift(with_teacher, held_out), _drift(without, held_out)
    print(f"held-out feature distance to the teacher (1 - cosine): with compensation {kept:.4f}, "
          f"without {drifted:.4f}; final losses {with_teacher.last_loss:.3f} / {without.last_loss:.3f}")
    assert drifted > 0
    assert kept < 0.8 * drifted
