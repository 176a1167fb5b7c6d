"""The trainable semantic families (UNetFormer, the SAM head): shapes for any bands and classes, what
trains and what stays frozen, ImageNet initialisation, and a bundle's way from a network to a job.

Tiny configurations only (random weights, 64-pixel tiles): the code paths are the real ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from rsseg.bundles import WEIGHTS_FILE, BundleInfo, write_bundle
from rsseg.errors import ModelError, WeightsError
from rsseg.models import build_model
from rsseg.models.registry import MODELS
from rsseg.models.segmenter import SegmenterTileModel, get_net_maker, load_trained_state, trained_state

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NEON = Path(__file__).parents[1] / "data" / "neon_osbs_rgb.tif"
UNETFORMER = {**MODELS["unetformer-r18-tiny"].config}
SAM_HEADS = ["sam-head-litemedsam-tiny", "sam-head-sam-vit-b-tiny"]


def unetformer(bands: int, classes: int, pretrained: bool = False):
    from rsseg.models.unetformer.model import make_net

    return make_net({**UNETFORMER, "pretrained": UNETFORMER["pretrained"] if pretrained else None}, bands, classes)


def sam_head(model_id: str, bands: int, classes: int, **overrides):
    from rsseg.models.sam_head.model import make_net

    return make_net({**MODELS[model_id].config, **overrides}, bands, classes, "cpu")


def tile_outputs(net, bands: int, classes: int, shape=(50, 70)) -> np.ndarray:
    """Non-square tiles through SegmenterTileModel (pads to the network's multiple, crops back)."""
    model = SegmenterTileModel(net, [f"class {i}" for i in range(classes)], [0.3] * bands, [0.2] * bands, "cpu")
    return model(np.random.default_rng(0).random((2, bands, *shape), dtype=np.float32))


# --- shapes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bands,classes", [(1, 2), (3, 5), (4, 2)])
def test_unetformer_shapes_for_any_bands_and_classes(bands, classes):
    net = unetformer(bands, classes)
    assert net.multiple == 32 and net.frozen_prefixes == () and net.config["decode_channels"] == 16
    x = torch.randn(2, bands, 64, 96)
    logits, aux = net.train()(x)  # training: the auxiliary head's logits too, both at input size
    assert logits.shape == aux.shape == (2, classes, 64, 96)
    with torch.inference_mode():
        assert net.eval()(x).shape == (2, classes, 64, 96)
        assert net(torch.randn(1, bands, 32, 32)).shape == (1, classes, 32, 32)  # a 1x1 map at 1/32
    out = tile_outputs(net, bands, classes)
    assert out.shape == (2, classes, 50, 70) and np.isfinite(out).all()


@pytest.mark.parametrize("model_id", SAM_HEADS)
@pytest.mark.parametrize("bands,classes", [(1, 5), (3, 2), (4, 5)])
def test_sam_head_shapes_for_any_bands_and_classes(model_id, bands, classes):
    net = sam_head(model_id, bands, classes)
    assert net.frozen_prefixes == ("encoder.",) and (net.adapter is None) == (bands == 3)
    x = torch.rand(2, bands, 64, 96)
    assert net.train()(x).shape == (2, classes, 64, 96)  # no auxiliary output
    with torch.inference_mode():
        assert net.eval()(x).shape == (2, classes, 64, 96)
    out = tile_outputs(net, bands, classes)
    assert out.shape == (2, classes, 50, 70) and np.isfinite(out).all()


@pytest.mark.parametrize("model_id", ["unetformer-r18-tiny", *SAM_HEADS])
def test_mixed_precision_and_tiles_larger_than_the_encoder_input(model_id):
    """bf16 autocast (what training on a GPU uses) forward and backward; a 288-pixel tile is shrunk
    (antialiased, in fp32) to a 256² SAM encoder."""
    spec = MODELS[model_id]
    net = get_net_maker(spec.builder)({**spec.config, "pretrained": None}, 4, 3, "cpu").train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.rand(1, 4, 288, 288))
    (out[0] if isinstance(out, tuple) else out).float().mean().backward()
    with torch.inference_mode():
        assert net.eval()(torch.rand(1, 4, 288, 256)).shape == (1, 3, 288, 256)


def test_sam_head_undoes_a_bundle_normalisation_before_the_encoder():
    mean, std = [0.4, 0.5, 0.3], [0.2, 0.25, 0.1]
    plain = sam_head("sam-head-litemedsam-tiny", 3, 2)
    normalised = sam_head("sam-head-litemedsam-tiny", 3, 2, input_mean=mean, input_std=std)
    x = torch.rand(1, 3, 64, 64)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    with torch.inference_mode():
        torch.testing.assert_close(normalised.eval().embed((x - m) / s), plain.eval().embed(x))
    with pytest.raises(ModelError, match="input_mean has 3 values for 4 input bands"):
        sam_head("sam-head-litemedsam-tiny", 4, 2, input_mean=mean)


# --- what trains -------------------------------------------------------------------------------------


def test_unetformer_trains_everything_and_its_aux_head():
    net = unetformer(3, 2).train()
    logits, aux = net(torch.randn(2, 3, 64, 64))
    (logits.mean() + aux.mean()).backward()
    assert all(p.grad is not None for p in net.parameters())
    assert set(trained_state(net)) == set(net.state_dict())  # the bundle holds the encoder too
    assert not any("relative_position_index" in k for k in net.state_dict())  # derived, not stored


@pytest.mark.parametrize("model_id", SAM_HEADS)
def test_sam_head_trains_its_decoder_not_the_encoder(model_id):
    net = sam_head(model_id, 3, 2).train()
    assert not net.encoder.training  # train() leaves the frozen encoder in eval mode
    net(torch.rand(2, 3, 64, 64)).square().mean().backward()
    assert all(not p.requires_grad and p.grad is None for p in net.encoder.parameters())
    decoder = [p for n, p in net.named_parameters() if not n.startswith("encoder.")]
    assert decoder and all(p.grad is not None and p.grad.abs().sum() > 0 for p in decoder)
    state = trained_state(net)
    assert state and not any(k.startswith("encoder.") for k in state)
    assert {k.split(".")[0] for k in state} == {"neck", "detail2", "detail4", "fuse4", "fuse2", "head"}


def test_sam_head_band_adapter_trains_through_the_frozen_encoder_only_when_asked():
    net = sam_head("sam-head-litemedsam-tiny", 4, 2).train()
    assert torch.equal(net.adapter.weight[:, :, 0, 0], torch.eye(3, 4))  # starts as bands 1, 2, 3
    net(torch.rand(1, 4, 64, 64)).mean().backward()
    assert net.adapter.weight.grad is not None and net.adapter.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.encoder.parameters())
    assert "adapter.weight" in trained_state(net)
    fixed = sam_head("sam-head-litemedsam-tiny", 4, 2, train_adapter=False).train()
    fixed(torch.rand(1, 4, 64, 64)).mean().backward()
    assert fixed.adapter.weight.grad is None  # the encoder ran without autograd
    grey = sam_head("sam-head-litemedsam-tiny", 1, 2).train()  # 1 band: the grey mapping stays fixed
    assert not grey.train_adapter and grey.embedding_is_fixed and not net.embedding_is_fixed


def test_trained_state_round_trip_and_mismatch():
    from rsseg.models.unetformer.model import make_net

    net, other = unetformer(3, 2), unetformer(3, 2)
    load_trained_state(other, trained_state(net), "a test")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))
    with pytest.raises(ModelError, match="do not fit its architecture"):
        load_trained_state(make_net({**UNETFORMER, "aux": False, "pretrained": None}, 3, 2), trained_state(net),
                           "a test")  # no auxiliary head: its weights are unexpected


def test_net_makers_are_found_by_builder_name():
    from rsseg.models.sam_head.model import make_net as sam_head_net
    from rsseg.models.unetformer.model import make_net as unetformer_net

    assert get_net_maker("unetformer") is unetformer_net and get_net_maker("sam_head") is sam_head_net
    with pytest.raises(ModelError, match="no net maker 'nosuchfamily'"):
        get_net_maker("nosuchfamily")


# --- ImageNet initialisation ---------------------------------------------------------------------------


@pytest.mark.parametrize("bands", [3, 4, 1])
def test_unetformer_encoder_starts_from_the_component_weights(bands):
    from timm.models import adapt_input_conv

    from rsseg.models import load_component

    net = unetformer(bands, 2, pretrained=True)
    source = load_component(UNETFORMER["pretrained"]).state_dict()
    encoder = net.encoder.state_dict()
    assert set(encoder) == {k for k in source if not k.startswith("fc.")}
    assert all(torch.equal(encoder[k], source[k]) for k in encoder if k != "conv1.weight")
    assert torch.equal(encoder["conv1.weight"], source["conv1.weight"] if bands == 3
                       else adapt_input_conv(bands, source["conv1.weight"].clone()))


def test_encoder_component_loads_checked_weights(tmp_path, monkeypatch):
    """The component loader reads the registry's file after its sha256 check (a tiny stand-in file here)."""
    from safetensors.torch import save_file

    from rsseg.models.unetformer.model import build_classifier, load_classifier
    from rsseg.spec import WeightFile

    monkeypatch.setenv("RSSEG_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.delenv("RSSEG_WEIGHTS_MIRROR", raising=False)
    tiny = MODELS["resnet18-imagenet-tiny"]
    reference = build_classifier(tiny.config)
    path = tmp_path / "tiny-resnet.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    data = path.read_bytes()
    spec = replace(tiny, weights=(WeightFile(path.name, len(data), hashlib.sha256(data).hexdigest()),))
    loaded = load_classifier(spec)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), reference.state_dict().values()))
    path.write_bytes(data[:-8] + bytes(8))  # damaged
    with pytest.raises(WeightsError):
        load_classifier(spec)
    from rsseg.models.unetformer.model import make_net

    with pytest.raises(WeightsError):  # the real entry: its file is not installed in this weights dir
        make_net({**UNETFORMER, "pretrained": "resnet18-imagenet"}, 3, 2)


# --- bundles ---------------------------------------------------------------------------------------------

CLASSES = ["water", "tree", "building"]


def write_test_bundle(folder: Path, net, builder: str, bands: int = 3, mean: float = 0.4, std: float = 0.25):
    info = BundleInfo(name="test bundle", builder=builder, config=net.config, classes=CLASSES,
                      colours=[[0, 0, 255], [0, 160, 0], [200, 0, 0]], bands=list(range(1, bands + 1)),
                      mean=[mean] * bands, std=[std] * bands, chip=64)
    return write_bundle(folder, info, trained_state(net))


@pytest.fixture(params=["unetformer", "sam_head"])
def bundle(request, tmp_path, monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setenv("RSSEG_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    if request.param == "unetformer":
        net = unetformer(3, len(CLASSES))
        net.config["pretrained"] = "resnet18-imagenet"  # as trained from ImageNet: not needed (nor here) to run
        folder = write_test_bundle(tmp_path / "bundle", net, "unetformer")
    else:
        net = sam_head("sam-head-litemedsam-tiny", 3, len(CLASSES))
        folder = write_test_bundle(tmp_path / "bundle", net, "sam_head", mean=0.0, std=1.0)
    return folder, net.eval()


def test_bundle_rebuilds_the_network_and_runs_a_job(bundle, tmp_path):
    from rsseg.protocol.contracts import NODATA, RegionSpec, SegmentRequest
    from rsseg.service.segment import run_segment

    folder, net = bundle
    model = build_model(str(folder), ["building", "water"], None, "cpu")  # a subset, in another order
    assert model.class_names == ("building", "water")
    tiles = np.random.default_rng(1).random((2, 3, 64, 64), dtype=np.float32)
    info_mean, info_std = (0.4, 0.25) if net.config.get("encoder") == "resnet18" else (0.0, 1.0)
    with torch.inference_mode():
        log_p = net((torch.from_numpy(tiles) - info_mean) / info_std).log_softmax(dim=1)
    left_out = [i for i in range(len(CLASSES)) if i not in (2, 0)]
    expected = (log_p[:, [2, 0]] - log_p[:, left_out].amax(dim=1, keepdim=True)).numpy()
    assert model.activation == "sigmoid"  # some of its classes: each where it beats the classes left out
    np.testing.assert_allclose(model(tiles), expected, atol=1e-5)

    # through the engine, on a 6.4 m square of a real orthophoto (64 x 64 pixels at 0.1 m)
    import rasterio

    with rasterio.open(NEON) as src:
        left, top = src.bounds.left + 10, src.bounds.top - 10
    result = run_segment(SegmentRequest(raster=str(NEON), out_dir=str(tmp_path / "out"), model=str(folder),
                                        classes=list(CLASSES), region=RegionSpec(bbox=(left, top - 6.4, left + 6.4,
                                                                                       top)),
                                        tile=64, overlap=16, device="cpu"))
    assert [c.name for c in result.classes] == CLASSES
    assert Path(result.mask).is_file() and Path(result.polygons).is_file()
    assert (result.width, result.height) == (64, 64) and result.bands == [1, 2, 3]
    with rasterio.open(result.mask) as mask:
        values = set(np.unique(mask.read(1)).tolist())
    assert values <= {c.id for c in result.classes} | {NODATA}  # the file's nodata value marks a few pixels


def test_a_tampered_bundle_is_refused(bundle):
    folder, _ = bundle
    weights = folder / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="does not match its manifest"):
        build_model(str(folder), ["water"], None, "cpu")


def test_a_class_the_bundle_lacks_is_refused_naming_its_classes(bundle):
    folder, _ = bundle
    with pytest.raises(ModelError, match="trained on water, tree, building; it cannot segment lava"):
        build_model(str(folder), ["water", "lava"], None, "cpu")


def test_registry_entries_are_trainable_not_runnable():
    for model_id in ["unetformer-r18", "sam-head-litemedsam", "sam-head-sam-vit-b"]:
        spec, tiny = MODELS[model_id], MODELS[f"{model_id}-tiny"]
        assert (spec.task, spec.real, tiny.task, tiny.real) == ("trainable", True, "trainable", False)
        assert spec.weights and not tiny.weights
        with pytest.raises(ModelError, match="not a segmenter you can run"):
            build_model(model_id, ["water"], None, "cpu")
    assert MODELS["unetformer-r18"].weights == MODELS["resnet18-imagenet"].weights
    assert MODELS["sam-head-litemedsam"].weights == MODELS["litemedsam"].weights
    assert MODELS["sam-head-sam-vit-b"].weights == MODELS["sam-vit-b"].weights
