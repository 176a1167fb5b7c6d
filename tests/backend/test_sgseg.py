"""SGSeg's network on tiny random CLIPs: shapes for 1, 7 and 40 classes, class permutation, the frozen teacher
and its compensation loss, what trains, the prototype memory, and the tile model's windows and feature reuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rsseg.models.registry import get_spec
from rsseg.models.sgseg.family import SGSegTileModel
from rsseg.models.sgseg.model import make_net
from rsseg.models.sgseg.prototypes import PrototypeMemory
from rsseg.training.base import TrainConfig
from rsseg.training.sgseg import SGSegTrainer, bce_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ENTRIES = ("sgseg-vit-b-16-tiny", "sgseg-convnext-l-tiny")
NAMES = [f"class {i}" for i in range(40)]


def _net(entry: str = "sgseg-vit-b-16-tiny", classes=("building", "road", "water"), seed: int = 0, **config):
    torch.manual_seed(seed)
    return make_net({**get_spec(entry).config, "classes": list(classes), **config}, 3, len(classes), "cpu")


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("k", [1, 7, 40])
def test_one_logit_per_class_and_pixel(entry, k):
    net = _net(entry).eval()
    net.set_classes(NAMES[:k])
    size = 64 if "convnext" in entry else 48
    with torch.no_grad():
        out = net(torch.randn(2, 3, size, size + net.multiple))
    assert out.shape == (2, k, size, size + net.multiple) and torch.isfinite(out).all()


@pytest.mark.parametrize("entry", ENTRIES)
def test_permuting_the_classes_permutes_the_logits(entry):
    net = _net(entry).eval()
    x = torch.randn(1, 3, 64, 64)
    names = NAMES[:7]
    order = [3, 0, 6, 1, 5, 2, 4]
    with torch.no_grad():
        net.set_classes(names)
        straight = net(x)
        net.set_classes([names[i] for i in order])
        permuted = net(x)
    assert torch.allclose(permuted, straight[:, order], atol=1e-4)


def test_the_teacher_is_frozen_and_compensation_is_zero_until_the_student_drifts():
    net = _net().train()
    x = torch.randn(2, 3, 48, 48)
    _, at_start = net(x)
    assert float(at_start.detach()) == 0.0
    visual = dict(net.backbone.visual.named_parameters())
    assert all(not p.requires_grad for p in visual.values())
    before = {n: p.detach().clone() for n, p in visual.items()}
    losses = []
    for scale in (0.02, 0.1, 0.5):
        with torch.no_grad():
            for i, p in enumerate(net.tuned_parameters()):
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(i)) * scale)
            losses.append(float(net(x)[1]))
    assert 0 < losses[0] < losses[1] < losses[2]
    assert all(torch.equal(before[n], p) for n, p in visual.items())  # the deltas never touch the teacher


def test_a_training_step_moves_the_intended_parameters_only_and_the_deltas_learn_slower():
    net = _net()
    clip = net._text[0]
    text_before = {n: p.detach().clone() for n, p in clip.named_parameters() if not n.startswith("visual.")}
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    tuned = {id(p) for p in net.tuned_parameters()}
    assert tuned and all(not n.startswith("backbone.visual.") for n in trainable)
    assert {n for n, p in net.named_parameters() if id(p) in tuned} <= {n for n in trainable if "backbone" in n}
    image = torch.rand(4, 3, 48, 48)
    label = torch.randint(0, 3, (4, 48, 48))
    trainer = SGSegTrainer(net, "sgseg-vit-b-16-tiny", [0], TrainConfig(steps=2, lr=1e-2, progress=False), _Reader(),
                           *net.fixed_normalisation, ["building", "road", "water"])
    rates = {len(g["params"]): g["lr"] for g in trainer.optimizer.param_groups}
    assert sorted(rates.values()) == [pytest.approx(1e-4), pytest.approx(1e-2)]  # 0.01x for the tower's deltas
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    trainer.optimizer.zero_grad()
    trainer.compute_loss((image, label)).backward()
    trainer.optimizer.step()
    moved = {n for n, p in net.named_parameters() if not torch.equal(before[n], p)}
    assert moved and moved <= trainable
    assert all(torch.equal(text_before[n], p) for n, p in clip.named_parameters() if n in text_before)
    assert bool(net.memory.filled.all())  # every labelled class left a prototype


class _Reader:
    class labels:  # noqa: N801 - the attribute SemanticTrainer reads
        ignore_index = 255


def test_bce_ignores_unlabelled_pixels_and_is_zero_free_when_none_are_labelled():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    label = torch.full((1, 4, 4), 255)
    assert float(bce_loss(logits, label, 255).detach()) == 0.0
    label[0, 0, 0] = 1
    loss = bce_loss(logits, label, 255)
    loss.backward()
    assert float(loss.detach()) > 0 and logits.grad[0, :, 1:, :].abs().sum() == 0


def test_the_prototype_memory_moves_further_for_a_class_that_looks_different():
    memory = PrototypeMemory(2, 4, [3], momentum=0.9)
    base = torch.tensor([1.0, 0, 0, 0]).view(1, 4, 1, 1).expand(1, 4, 2, 2)
    label = torch.zeros(1, 4, 4, dtype=torch.long)
    memory.update(base, label, 255)
    assert torch.allclose(memory.prototypes[0], torch.tensor([1.0, 0, 0, 0])) and not memory.filled[1]
    near = torch.tensor([0.9, 0.1, 0, 0]).view(1, 4, 1, 1).expand(1, 4, 2, 2)
    far = torch.tensor([0.0, 1.0, 0, 0]).view(1, 4, 1, 1).expand(1, 4, 2, 2)
    moved = []
    for new in (near, far):
        memory.prototypes[0] = torch.tensor([1.0, 0, 0, 0])
        memory.update(new, label, 255)
        moved.append(float((memory.prototypes[0] - torch.tensor([1.0, 0, 0, 0])).norm()))
    assert 0 < moved[0] < moved[1]
    assert memory(torch.randn(1, 4, 3, 3))[0].shape == (1, 3, 3, 3)


def _tile_model(classes, net=None):
    return SGSegTileModel(net or _net(), classes, "cpu", "sgseg:test")


def test_the_tile_model_covers_a_tile_with_windows_and_a_global_view_and_reuses_features_across_class_lists():
    model = _tile_model(["building", "road", "water"])
    tile = np.random.default_rng(0).random((2, 3, 150, 170), dtype=np.float32)
    _, _, wh, ww, corners, global_view = model._layout(150, 170)
    assert (wh, ww) == (96, 96) and len(corners) == 6 and global_view  # 160 x 176 padded: 2 x 3
    features = model.encode(tile)
    first = model.decode(features)
    assert first.shape == (2, 3, 150, 170) and np.isfinite(first).all()
    assert np.array_equal(first, model(tile))
    reordered = _tile_model(["water", "building", "road"], net=model.net).decode(features)  # no image encoder
    np.testing.assert_allclose(reordered, first[:, [2, 0, 1]], atol=1e-4)
    other = _tile_model(["water", "building", "road, street"], net=model.net)
    again = other.decode(features)
    assert other.class_names == ("water", "building", "road") and again.shape == (2, 3, 150, 170)
    assert not np.allclose(again[:, 2], first[:, 1], atol=1e-4)  # a synonym changes that class's text


def test_a_tile_smaller_than_a_window_is_padded_to_the_tower_s_stride():
    model = _tile_model(["building", "water"])
    out = model(np.random.default_rng(1).random((1, 3, 40, 70), dtype=np.float32))
    assert out.shape == (1, 2, 40, 70) and model._layout(40, 70)[-1] is False


def test_sgseg_takes_rgb_or_one_grey_band_as_grey_rgb():
    from rsseg.errors import ModelError

    with pytest.raises(ModelError, match="3 bands or 1, not 4"):
        make_net(get_spec("sgseg-vit-b-16-tiny").config, 4, 2, "cpu")
    grey = make_net({**get_spec("sgseg-vit-b-16-tiny").config, "classes": ["a", "b"]}, 1, 2, "cpu").eval()
    rgb = make_net({**get_spec("sgseg-vit-b-16-tiny").config, "classes": ["a", "b"]}, 3, 2, "cpu").eval()
    rgb.load_state_dict(grey.state_dict())
    band = torch.rand(1, 1, 48, 48)
    with torch.no_grad():
        assert torch.allclose(grey(band), rgb(band.expand(-1, 3, -1, -1)), atol=1e-5)
    assert grey.fixed_normalisation == ([0.0], [1.0]) and _tile_model(["a", "b"], net=grey).n_inputs == 1


def test_rsseg_models_shows_trainable_against_total_parameters(tmp_path, monkeypatch):
    from rsseg.models.catalog import clear_parameter_cache, parameter_counts

    monkeypatch.setenv("RSSEG_CACHE_DIR", str(tmp_path))
    clear_parameter_cache()
    for entry in ("sgseg-vit-b-16", "sgseg-convnext-l", *ENTRIES):
        trainable, total = parameter_counts(get_spec(entry))
        assert 0 < trainable < total
    trainable, total = parameter_counts(get_spec("sgseg-vit-b-16"))
    assert 140e6 < total < 170e6  # OpenAI ViT-B/16 CLIP (150M) and the head
