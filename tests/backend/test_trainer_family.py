"""Any model family can train with the base loop: proved with a toy per-pixel segmentation family.

The toy (a two-layer conv net with channel dropout, "is this pixel reddish?") lives here, not in the
package: it subclasses `BaseTrainer`, fills in only the family hooks (model, dataset, loss,
validation) and registers itself by family name. The base gives it the schedule, accumulation,
clipping, checkpoints, exact resume, progress and cancel; `rsseg train` finds it through a registry
entry whose builder names the family, like any other.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from rsseg.datasets.referring import RefSample
from rsseg.errors import Cancelled, ModelError
from rsseg.models.registry import MODELS, register
from rsseg.progress import CancelToken, Progress
from rsseg.spec import ModelSpec
from rsseg.training.base import BaseTrainer, TrainConfig
from rsseg.training.registry import TRAINERS, family_of, find_trainer, get_trainer, trainer
from rsseg.weights.trained_checkpoint import load_checkpoint

TOY_CONFIG = {"hidden": 8, "dropout": 0.2}


class ToySeg(torch.nn.Module):
    """Per-pixel two-class logits from a 3x3 conv, ReLU, channel dropout and a 1x1 conv."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = dict(config)
        hidden = config["hidden"]
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, hidden, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Dropout2d(config["dropout"]), torch.nn.Conv2d(hidden, 2, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


class PixelDataset(Dataset):
    """(image [3, H, W] in 0..1, label [H, W] 0/1) of samples with `pixels()` and `mask` (RefSample's)."""

    def __init__(self, samples):
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.samples[index]
        image = torch.from_numpy(np.ascontiguousarray(sample.pixels())).permute(2, 0, 1).float() / 255.0
        return {"image": image, "label": torch.from_numpy(np.asarray(sample.mask, np.int64))}


@trainer("toyseg")
class ToySegTrainer(BaseTrainer):
    """The whole family-specific part of a trainer: four hooks."""

    @classmethod
    def build_model(cls, spec: ModelSpec, seed: int = 0) -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return ToySeg(spec.config)

    def train_dataset(self) -> Dataset:
        return PixelDataset(self.train_data)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        images, labels = batch["image"].to(self.cfg.device), batch["label"].to(self.cfg.device)
        with self.autocast():
            logits = self.model(images)
        return F.cross_entropy(logits.float(), labels)

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        was_training = self.model.training
        self.model.eval()
        right = total = 0
        for item in PixelDataset(self.val_data):
            pred = self.model(item["image"][None].to(self.cfg.device))[0].argmax(0).cpu()
            right, total = right + int((pred == item["label"]).sum()), total + item["label"].numel()
        self.model.train(was_training)
        return {"accuracy": right / total, "pixels": total}


def toy_samples(n: int, seed: int, size: int = 16) -> list[RefSample]:
    """Random 4x4-pixel blocks, reddish (the target) or bluish, with per-pixel colour noise: the
    target is a per-pixel rule (red above blue), with a margin so a few dozen updates can learn it."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        mask = np.kron(rng.random((size // 4, size // 4)) < 0.5, np.ones((4, 4), bool))
        red, blue = np.where(mask, 190, 70), np.where(mask, 70, 190)
        image = np.stack([red, rng.integers(0, 256, mask.shape), blue], -1) + rng.normal(0, 25, (size, size, 3))
        samples.append(RefSample(np.clip(image, 0, 255).astype(np.uint8), "", mask, f"toy{i}", f"toy{i}"))
    return samples


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data() -> tuple[list[RefSample], list[RefSample]]:
    return toy_samples(16, seed=0), toy_samples(4, seed=1)


SPEC = ModelSpec(id="toyseg-test", task="classes", builder="toyseg", description="toy per-pixel family",
                 config=TOY_CONFIG)


def _config(**kw) -> TrainConfig:
    return TrainConfig(**{"steps": 40, "batch_size": 4, "lr": 2e-2, "warmup_steps": 4, "progress": False, **kw})


def _trainer(data, **kw) -> ToySegTrainer:
    return ToySegTrainer(ToySegTrainer.build_model(SPEC), SPEC.id, data[0], _config(**kw), data[1])


def test_the_family_registers_its_trainer_by_name():
    assert get_trainer("toyseg") is ToySegTrainer and ToySegTrainer.family == "toyseg"
    assert family_of("toyseg") == "toyseg" and family_of("clip:open-vocab") == "clip"
    assert get_trainer("rsrefseg").__name__ == "RSRefSegTrainer"  # imported from training/rsrefseg.py on demand
    assert find_trainer("colour_prototype") is None
    with pytest.raises(ModelError, match="no trainer is registered for model family 'colour_prototype'"):
        get_trainer("colour_prototype")
    with pytest.raises(ValueError, match="registered twice"):
        trainer("toyseg")(type("Other", (ToySegTrainer,), {}))
    assert TRAINERS["toyseg"] is ToySegTrainer


def test_the_toy_family_learns_with_the_base_loop(data, tmp_path):
    """A few dozen updates: the loss falls and validation accuracy rises well above the start."""
    toy = _trainer(data, out_dir=str(tmp_path), eval_every=20)
    before = toy.evaluate()["accuracy"]
    result = toy.train()
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    print(f"\ntoy: loss {first:.3f} -> {last:.3f}, accuracy {before:.3f} -> {result.metrics['accuracy']:.3f}")
    assert result.step == 40 and len(result.losses) == 40
    assert last < 0.6 * first
    assert result.metrics["accuracy"] > 0.9 and result.metrics["accuracy"] > before + 0.2
    assert [m["step"] for m in toy.history] == [20, 40]
    ckpt = load_checkpoint(result.checkpoint)  # the base default: the whole state_dict
    assert set(ckpt.model) == set(toy.model.state_dict()) and ckpt.record["model_config"] == TOY_CONFIG
    assert ckpt.record["model"] == "toyseg-test" and ckpt.step == 40
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["losses"] == result.losses and metrics["metrics"]["accuracy"] == result.metrics["accuracy"]


def test_the_toy_family_resumes_exactly(data, tmp_path):
    """10 + 10 updates with a resume == 20 straight, bit for bit: weights, optimizer, schedule, the
    dropout RNG and the position in the batch order all come back. A resume that loses the RNG is off
    by up to ~50% on a loss (the control at the end)."""
    straight = _trainer(data, steps=20, checkpoint_every=10, out_dir=str(tmp_path / "a"))
    a = straight.train()
    _trainer(data, steps=20, out_dir=str(tmp_path / "b")).train(until=10)
    torch.manual_seed(1234)  # the resumed run must not depend on the RNG it starts with
    second = _trainer(data, steps=20, out_dir=str(tmp_path / "b"))
    second.resume(tmp_path / "b" / "checkpoints" / "step-0000010.json")
    b = second.train()
    assert b.step == 20 and b.losses == a.losses[10:]
    assert all(torch.equal(second.model.state_dict()[k], v) for k, v in straight.model.state_dict().items())
    assert b.metrics == a.metrics
    control = _trainer(data, steps=20, out_dir=str(tmp_path / "c"))
    control.resume(tmp_path / "b" / "checkpoints" / "step-0000010.json")
    torch.manual_seed(1234)  # other dropout masks than the saved RNG would give
    assert control.train().losses != pytest.approx(a.losses[10:], rel=1e-6)


def test_cancel_stops_between_updates_and_writes_no_partial_checkpoint(data, tmp_path):
    token, events = CancelToken(), []

    def progress(event: Progress) -> None:
        events.append((event.stage, event.done, event.total))
        if event.done == 3:
            token.cancel()

    toy = _trainer(data, steps=10, checkpoint_every=2, out_dir=str(tmp_path))
    with pytest.raises(Cancelled, match="training cancelled at step 3"):
        toy.train(cancel=token, progress=progress)
    assert events == [("train", 1, 10), ("train", 2, 10), ("train", 3, 10)] and toy.step == 3
    saved = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert saved == ["step-0000002.json", "step-0000002.safetensors"]  # the complete earlier one only
    assert not (tmp_path / "metrics.json").exists()
    with pytest.raises(Cancelled):  # a token cancelled beforehand: not a single update
        _trainer(data, out_dir=str(tmp_path / "early")).train(cancel=token)
    assert not (tmp_path / "early").exists()


@pytest.fixture
def toy_entry():
    register(SPEC)
    yield SPEC
    del MODELS[SPEC.id]


def test_rsseg_train_picks_the_trainer_of_the_models_family(toy_entry, tmp_path, capsys):
    from rsseg.cli.main import main

    out = tmp_path / "run"
    code = main(["train", "--model", "toyseg-test", "--data", "synthetic", "--scenes", "2", "--val-scenes", "1",
                 "--scene-size", "32", "--steps", "3", "--batch-size", "2", "--lr", "1e-2", "--out", str(out),
                 "--device", "cpu", "--threads", "1", "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "trained 3 steps" in printed and "validation accuracy " in printed
    ckpt = load_checkpoint(out / "checkpoints" / "step-0000003.json")
    assert ckpt.record["model"] == "toyseg-test" and ckpt.record["model_config"] == TOY_CONFIG
    assert set(ckpt.model) == {"body.0.weight", "body.0.bias", "body.3.weight", "body.3.bias"}
    # eval-refer scores referring (RSRefSeg) models only
    assert main(["eval-refer", "--model", "toyseg-test", "--data", "synthetic", "--val-scenes", "1"]) == 2
    assert "not a trainable referring model" in capsys.readouterr().err
