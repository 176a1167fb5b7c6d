"""RFM-Seg's parts on tiny random models: CLIP features, the batched VL-map against a per-window reference,
connectors that start as the identity, and a frozen host and CLIP while the connectors train."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rsseg.models.factory import load_component
from rsseg.models.registry import get_spec
from rsseg.models.rfm_seg import resnet_branch
from rsseg.models.rfm_seg.connectors import Connectors, Fuse, VConnector, VLConnector
from rsseg.models.rfm_seg.model import RFMSeg
from rsseg.models.rfm_seg.prompts import TEMPLATES, class_prompts
from rsseg.models.rfm_seg.resnet_branch import feature_channels, visual_features, window_embeddings
from rsseg.models.rfm_seg.vl_map import vl_map
from rsseg.models.unetformer.model import make_net as make_unetformer

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CLASSES = ["building", "road", "tree", "water"]


@pytest.fixture(scope="module")
def clip():
    model, tokenizer = load_component("remoteclip-rn50-tiny")
    return model, tokenizer


def _host(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return make_unetformer({**get_spec("unetformer-r18-tiny").config, "pretrained": None}, 3, len(CLASSES))


def _net(clip, vote: str = "hard", host=None) -> RFMSeg:
    model, tokenizer = clip
    spec = get_spec("remoteclip-rn50-tiny")
    config = {**get_spec("rfm-seg-r18-rn50-tiny").config, "vote": vote, "input_mean": [0.4, 0.5, 0.3],
              "input_std": [0.2, 0.25, 0.2], "classes": CLASSES}
    torch.manual_seed(1)
    return RFMSeg(config, 3, len(CLASSES), host or _host(), model, tokenizer, spec.preprocess.mean,
                  spec.preprocess.std)


def test_clip_features_are_the_trunk_s_own_at_the_host_s_strides(clip):
    visual = clip[0].visual
    image = torch.randn(2, 3, 96, 160)
    with torch.no_grad():
        stem, c2, c3, c4, layer4 = visual_features(visual, image)
        trunk = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(image)))))
    assert torch.equal(layer4, trunk)
    assert [tuple(f.shape[1:]) for f in (stem, c2, c3, c4)] == [(16, 24, 40), (32, 12, 20), (64, 6, 10), (128, 3, 5)]
    assert feature_channels(visual) == (16, 32, 64, 128)  # the tiny host's widths, as RN50's are ResNet-18's


def _reference_vl_map(visual, layer4, text, prompt_class, num_classes, vote, window=7):
    """The published loop, per image and per window, made correct per image (and soft votes alike)."""
    b, _, h, w = layer4.shape
    out = torch.zeros(b, num_classes, h, w)
    for n in range(b):
        votes = torch.zeros(num_classes, h, w)
        for i in range(h - window + 1):
            for j in range(w - window + 1):
                pooled = F.normalize(visual.attnpool(layer4[n:n + 1, :, i:i + window, j:j + window]), dim=-1)
                probs = (100.0 * pooled @ text.T).softmax(dim=-1)[0]
                per_class = torch.zeros(num_classes).index_add_(0, prompt_class, probs)
                if vote == "hard":
                    per_class = F.one_hot(prompt_class[probs.argmax()], num_classes).float()
                votes[:, i:i + window, j:j + window] += per_class[:, None, None]
        if vote == "hard":
            out[n] = F.one_hot(votes.argmax(dim=0), num_classes).permute(2, 0, 1).float()
        else:
            out[n] = votes / votes.sum(dim=0, keepdim=True)
    return out


@pytest.mark.parametrize("vote", ["hard", "soft"])
def test_the_batched_vl_map_equals_the_per_window_loop(clip, vote, monkeypatch):
    visual = clip[0].visual
    torch.manual_seed(3)
    layer4 = torch.randn(3, 512, 10, 12).relu()
    with torch.no_grad():
        windows = window_embeddings(visual, layer4, 7)
        assert windows.shape == (3, 32, 4, 6)
        # prompts near some windows' embeddings, so that windows (and images) vote for different classes
        picks = windows[[0, 1, 2, 0, 1], :, [0, 3, 1, 2, 0], [0, 5, 2, 4, 3]]
        text = F.normalize(picks + 0.02 * torch.randn_like(picks), dim=-1)
        prompt_class = torch.tensor([0, 1, 2, 3, 1])
        batched = vl_map(windows, text, prompt_class, len(CLASSES), (10, 12), 7, 100.0, vote)
        reference = _reference_vl_map(visual, layer4, text, prompt_class, len(CLASSES), vote)
        monkeypatch.setattr(resnet_branch, "WINDOW_ELEMENTS", 1)  # one row of windows at a time: the same
        assert torch.allclose(window_embeddings(visual, layer4, 7), windows, atol=1e-6)
    assert batched.shape == (3, len(CLASSES), 10, 12)
    assert torch.allclose(batched, reference, atol=1e-5)
    assert not torch.equal(batched[0], batched[1])  # each image its own map (the public code kept the last one)
    if vote == "hard":
        assert set(batched.sum(dim=1).unique().tolist()) == {1.0}
    else:
        assert torch.allclose(batched.sum(dim=1), torch.ones(3, 10, 12), atol=1e-5)


def test_a_map_smaller_than_a_window_is_one_padded_window(clip):
    visual = clip[0].visual
    layer4 = torch.randn(2, 512, 4, 5)
    with torch.no_grad():
        windows = window_embeddings(visual, layer4, 7)
        padded = window_embeddings(visual, F.pad(layer4, (0, 2, 0, 3), mode="replicate"), 7)
    assert windows.shape == (2, 32, 1, 1) and torch.allclose(windows, padded)
    text = F.normalize(torch.randn(3, 32), dim=-1)
    classes = vl_map(windows, text, torch.tensor([0, 1, 1]), 2, (4, 5), 7, 100.0, "hard")
    assert classes.shape == (2, 2, 4, 5) and torch.all(classes.sum(dim=1) == 1)


@pytest.mark.parametrize("size", [(8, 8), (4, 6), (1, 1)])
def test_connectors_keep_the_host_s_shapes_and_start_as_the_identity(size):
    torch.manual_seed(0)
    x, y, vl = torch.randn(2, 32, *size), torch.randn(2, 48, *size), torch.randn(2, 5, *size)
    fuse, v, v_same = Fuse(32, 48, 8), VConnector(32, 48), VConnector(32, 32)
    vlc = VLConnector(32, 48, 5)
    for module in (fuse, v, v_same, vlc):
        module.train()  # batch statistics: BN makes no output zero or non-zero by itself
    assert torch.equal(fuse(x, y), torch.zeros_like(x))
    assert torch.equal(v(x, y), x) and torch.equal(v_same(x, x), x) and torch.equal(vlc(x, y, vl), x)
    with torch.no_grad():
        for module in (v, vlc):  # once trained (non-zero last layers), they change the features, same shape
            for p in module.parameters():
                p.add_(0.1 * torch.randn_like(p))
    assert v(x, y).shape == x.shape and not torch.allclose(v(x, y), x)
    assert vlc(x, y, vl).shape == x.shape and not torch.allclose(vlc(x, y, vl), x)


def test_at_initialisation_rfm_seg_segments_exactly_as_its_host(clip):
    host = _host()
    net = _net(clip, host=host).eval()
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        assert torch.equal(net(x), host.eval()(x))
    connect = Connectors([16, 32, 64, 128], [16, 32, 64, 128], len(CLASSES))
    assert {n for n, _ in net.named_parameters() if _.requires_grad} == {f"connect.{n}" for n, _ in
                                                                         connect.named_parameters()}


def test_a_training_step_moves_only_the_connectors(clip):
    from rsseg.training.rfm_seg import RFMSegTrainer

    net = _net(clip)
    frozen = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("connect.")}
    clip_before = {k: v.clone() for k, v in clip[0].state_dict().items()}
    connect_before = {k: v.clone() for k, v in net.connect.state_dict().items()}
    net.train()
    assert not net.host.training and not net.clip.training and net.host.decoder.training
    x, label = torch.randn(2, 3, 64, 64), torch.randint(0, len(CLASSES), (2, 64, 64))
    main, aux = net(x)  # the host's auxiliary head answers in training
    loss = F.cross_entropy(main, label, label_smoothing=RFMSegTrainer.label_smoothing) + F.cross_entropy(aux, label)
    loss.backward()
    assert all(p.grad is None for n, p in net.named_parameters() if not n.startswith("connect."))
    torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2).step()
    after = net.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())  # host weights and BN statistics unchanged
    assert all(torch.equal(clip[0].state_dict()[k], v) for k, v in clip_before.items())
    changed = [k for k, v in net.connect.state_dict().items() if not torch.equal(v, connect_before[k])]
    assert any(".mix." in k for k in changed) and any("vl.mlp" in k for k in changed)


def test_prompts_come_from_the_run_then_the_dataset_sets_then_templates(clip):
    prompts = class_prompts(["impervious surface", "car", "solar panel"], {"car": ["a parked car"]}, "vaihingen")
    assert prompts[0][0] == "nothing" and prompts[1] == ["a parked car"]
    assert prompts[2] == [t.format("solar panel") for t in TEMPLATES]
    net = _net(clip)
    text = net.text
    net.set_prompts([["a roof"], ["asphalt"], ["canopy"], ["lake"]])
    assert net.text.shape == (4, 32) and not torch.equal(net.text[:1], text[:1])
    with pytest.raises(Exception, match="2 prompt lists for 4 classes"):
        net.set_prompts([["a"], ["b"]])


def test_the_vit_branch_gives_four_features_and_windows_of_mean_dense_patches():
    from rsseg.models.clip.dense import dense_features
    from rsseg.models.rfm_seg import vit_branch

    model, tokenizer = load_component_or_entry("remoteclip-vit-b-32-tiny")
    visual = model.visual
    image = torch.randn(2, 3, 160, 128)
    with torch.no_grad():
        v, windows = vit_branch.features(visual, image, 7)
        patches, _ = dense_features(visual, image)
    assert vit_branch.stride(visual) == 16 and vit_branch.taps(12) == [3, 6, 9, 11] and vit_branch.taps(2) == [1] * 4
    assert [tuple(f.shape) for f in v] == [(2, 64, 10, 8)] * 4
    assert windows.shape == (2, 32, 4, 2)
    assert torch.allclose(windows[:, :, 1, 0], F.normalize(patches[:, :, 1:8, 0:7].mean(dim=(2, 3)), dim=-1),
                          atol=1e-5)
    host = _host()
    spec = get_spec("remoteclip-vit-b-32-tiny")
    config = {**get_spec("rfm-seg-r18-vit-b-32-tiny").config, "input_mean": [0.5] * 3, "input_std": [0.25] * 3,
              "classes": CLASSES}
    net = RFMSeg(config, 3, len(CLASSES), host, model, tokenizer, spec.preprocess.mean, spec.preprocess.std).eval()
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        assert torch.equal(net(x), host.eval()(x))  # the identity at initialisation, whatever the branch
    net.train()
    main, aux = net(x)
    (main.sum() + aux.sum()).backward()
    assert all(p.grad is None for n, p in net.named_parameters() if not n.startswith("connect."))


def load_component_or_entry(model_id: str):
    from rsseg.models.clip.builder import load_clip
    from rsseg.models.factory import warm

    return warm(get_spec(model_id), "cpu", load_clip)


def test_rsseg_models_shows_trainable_against_total_parameters(tmp_path, monkeypatch):
    from rsseg.models import catalog

    monkeypatch.setenv(catalog.ENV_CACHE_DIR, str(tmp_path))
    catalog.clear_parameter_cache()
    rows = {r["id"]: r for r in catalog.model_rows() if r["id"].startswith("rfm-seg")}
    counted = {k: (r["parameters_trainable"], r["parameters_total"]) for k, r in rows.items()}
    assert counted["rfm-seg-r18-rn50"] == (2_904_512, 116_636_543)  # docs/rfm-seg.md; 3 bands, 6 classes
    assert counted["rfm-seg-r18-rn50-tiny"] == (202_352, 3_888_213)
    vit_trainable, vit_total = counted["rfm-seg-r18-vit-b-32"]
    assert 0 < vit_trainable < vit_total // 10


def test_the_config_a_bundle_records_keeps_its_prompts(clip):
    net = _net(clip)
    assert net.config["prompts"] == dict(zip(CLASSES, net.prompts))
    model, tokenizer = clip
    spec = get_spec("remoteclip-rn50-tiny")
    recorded = {**net.config, "prompts": {**net.config["prompts"], "building": ["a red roof"]}}
    again = RFMSeg(recorded, 3, len(CLASSES), _host(), model, tokenizer, spec.preprocess.mean, spec.preprocess.std)
    assert again.prompts == [["a red roof"], *net.prompts[1:]]  # the recorded prompts, not today's presets


def test_a_bundle_asked_for_some_of_its_classes_labels_them_only_where_they_beat_the_others():
    from rsseg.models.segmenter import SegmenterTileModel
    from rsseg.raster.engine import decide

    torch.manual_seed(0)
    net = make_unetformer({**get_spec("unetformer-r18-tiny").config, "pretrained": None}, 3, 4).eval()
    with torch.no_grad():  # a random head's logits hardly vary: widen them, so that the winner changes by pixel
        net.decoder.segmentation_head[-1].weight.mul_(100.0)
    tiles = torch.rand(2, 3, 64, 64).numpy()
    every = SegmenterTileModel(net, CLASSES, [0.5] * 3, [0.25] * 3, "cpu")
    full = every(tiles)
    assert every.activation == "softmax" and full.shape == (2, 4, 64, 64)
    some = SegmenterTileModel(net, CLASSES, [0.5] * 3, [0.25] * 3, "cpu", keep=[3, 0])
    assert some.activation == "sigmoid" and some.class_names == ("water", "building")
    valid, seen = np.ones((64, 64), bool), set()
    for tile in range(2):
        classes, _ = decide(some(tiles)[tile], valid, some.activation, None)
        winner = full[tile].argmax(axis=0)
        expected = np.select([winner == 3, winner == 0], [1, 2], 0)  # ids follow the request; 0 unlabelled
        assert np.array_equal(classes, expected)
        seen |= set(np.unique(expected).tolist())
    assert {0, 1} <= seen  # the tiles test both sides of the rule
