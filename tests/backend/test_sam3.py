"""SAM 3 (models/sam3): the tiny twin through the engine's contract, the real entry's files and loading path.

No download: the real entry's loading path runs on the tiny twin's weights saved the way the hub's file
is laid out, with its tokenizer files rebuilt from the BPE vocabulary open_clip bundles (the registry's
sha256 of those files must match the rebuilt ones).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from rsseg.errors import ModelError, WeightsError
from rsseg.execution.tile_model import SIGMOID, Instance, InstanceTileModel, instance_score_logit
from rsseg.models import MODELS
from rsseg.models.factory import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = ["building, house", "tree"]
SENTENCE = "the red roof next to the pool"


def _tiles(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Noise with a bright block: something for the detector to look at."""
    tiles = np.random.default_rng(seed).random((count, 3, height, width), dtype=np.float32) * 0.5
    tiles[:, :, height // 4:height // 2, width // 3:2 * width // 3] = 0.95
    return tiles


def _logits_from(instances: list[Instance], shape: tuple[int, ...]) -> np.ndarray:
    """What the contract says the logits are: per pixel and channel the best covering instance's score logit."""
    from rsseg.execution.tile_model import NO_OBJECT_LOGIT

    logits = np.full(shape, NO_OBJECT_LOGIT, np.float32)
    for found in instances:
        height, width = found.mask.shape
        inside = logits[found.channel, found.y0:found.y0 + height, found.x0:found.x0 + width]
        inside[found.mask] = np.maximum(inside[found.mask], instance_score_logit(found.score))
    return logits


def _check_instances(instances: list[Instance], logits: np.ndarray, floor: float) -> None:
    """Each instance inside the tile, non-empty, over the floor, ranked by score per channel; the logits are
    exactly the best instance's logit where instances lie (so every instance pixel has at least its own)."""
    channels, height, width = logits.shape
    ranks: dict[int, list[float]] = {}
    for found in instances:
        assert 0 <= found.channel < channels and found.mask.dtype == bool and found.mask.any()
        assert 0 <= found.x0 and found.x0 + found.mask.shape[1] <= width
        assert 0 <= found.y0 and found.y0 + found.mask.shape[0] <= height
        assert floor <= found.score <= 1
        inside = logits[found.channel, found.y0:found.y0 + found.mask.shape[0], found.x0:found.x0 + found.mask.shape[1]]
        assert (inside[found.mask] >= np.float32(instance_score_logit(found.score))).all()
        ranks.setdefault(found.channel, []).append(found.score)
        assert found.rank == len(ranks[found.channel])
    assert all(scores == sorted(scores, reverse=True) for scores in ranks.values())
    assert np.array_equal(logits, _logits_from(instances, logits.shape))


def test_a_class_list_with_synonyms_finds_objects_per_class():
    model = build_model("sam3-tiny", CLASSES, None)
    assert isinstance(model, InstanceTileModel)
    assert model.class_names == ("building", "tree") and model.activation == SIGMOID and model.n_inputs == 3
    assert model.phrases == ((0, "building"), (0, "house"), (1, "tree"))  # each synonym prompts on its own
    assert model.whole_region is False and model.threshold == 0.5 and model.notes == []
    tiles = _tiles(2, 96, 128)  # a tile of a region smaller than the tile size: padded to a square
    features = model.encode(tiles)
    assert isinstance(features, tuple) and all(f.shape[0] == 2 and f.device.type == "cpu" for f in features)
    logits, instances = model.decode_instances(features)
    assert logits.shape == (2, 2, 96, 128) and logits.dtype == np.float32
    assert np.array_equal(model(tiles), logits) and np.array_equal(model.decode(features), logits)
    assert len(instances) == 2 and all(instances)
    for tile_logits, found in zip(logits, instances):
        _check_instances(found, tile_logits, model.settings.instance_floor)
        assert {f.channel for f in found} == {0, 1}


def test_objects_are_what_transformers_pre_and_post_processing_make_of_them():
    """Sam3ImageProcessor's input (on 8-bit pixels, so to rounding) and post_process_instance_segmentation's
    objects (score = detection x presence probability, masks resized as probabilities) are this model's."""
    model = build_model("sam3-tiny", None, "tree")  # imports transformers' SAM 3 once torchvision can be
    from transformers import Sam3ImageProcessor

    tile = np.round(_tiles(1, 64, 64, seed=4) * 255) / 255
    processor = Sam3ImageProcessor(size={"height": 252, "width": 252})
    theirs = processor(images=torch.from_numpy((tile[0] * 255).round().astype(np.uint8)), return_tensors="pt")
    pixels = model.preprocess(tile.astype(np.float32))
    assert torch.allclose(pixels, theirs.pixel_values, atol=4 / 255)
    ids, mask = model.tokenizer.encode(["tree"])
    with torch.no_grad():
        outputs = model.model(pixel_values=pixels, input_ids=ids, attention_mask=mask)
    (post,) = processor.post_process_instance_segmentation(outputs, threshold=model.settings.instance_floor,
                                                           mask_threshold=0.5, target_sizes=[(64, 64)])
    expected = sorted(((float(score), masks.numpy().astype(bool)) for score, masks in zip(post["scores"],
                       post["masks"]) if masks.any()), key=lambda item: -item[0])
    _, (found,) = model.decode_instances(model.encode(tile.astype(np.float32)))
    assert len(found) == len(expected) > 0
    for obj, (score, full_mask) in zip(found, expected):
        assert obj.score == pytest.approx(score, abs=1e-6)
        placed = np.zeros((64, 64), bool)
        placed[obj.y0:obj.y0 + obj.mask.shape[0], obj.x0:obj.x0 + obj.mask.shape[1]] = obj.mask
        assert (placed != full_mask).sum() <= 4  # float rounding of a pixel at exactly the mask threshold
        assert placed.sum() > 100


def test_synonyms_finding_the_same_object_keep_it_once():
    model = build_model("sam3-tiny", ["road, street", "tree"], None)
    mask = np.zeros((4, 6), bool)
    mask[1:3, 1:5] = True
    road = Instance(0, 0.8, 2, 3, mask)
    same_by_street = Instance(0, 0.7, 2, 3, mask.copy())
    beside = Instance(0, 0.6, 10, 3, mask.copy())
    tree_there_too = Instance(1, 0.9, 2, 3, mask.copy())
    second_road_query = Instance(0, 0.5, 2, 3, mask.copy())  # SAM 3's own second query for "road": kept
    logits = np.full((2, 20, 20), -20.0, np.float32)
    kept = model._place([(0, road), (1, same_by_street), (1, beside), (2, tree_there_too), (0, second_road_query)],
                        logits)
    assert [(f.channel, f.score, f.x0, f.rank) for f in kept] == [(1, 0.9, 2, 1), (0, 0.8, 2, 1), (0, 0.6, 10, 2),
                                                                  (0, 0.5, 2, 3)]
    _check_instances(kept, logits, 0.0)


def test_a_sentence_is_answered_on_the_whole_region_with_its_best_objects():
    model = build_model("sam3-tiny", None, SENTENCE)
    assert model.class_names == (SENTENCE,) and model.whole_region is True and model.top_k is None
    view = _tiles(1, 90, 150, seed=1)  # the region as one tile, not square
    logits, (every,) = model.decode_instances(model.encode(view))
    assert logits.shape == (1, 1, 90, 150) and len(every) > 3
    _check_instances(every, logits[0], model.settings.instance_floor)
    capped = build_model("sam3-tiny", None, SENTENCE, options={"top_k": 3})
    assert capped.top_k == 3
    capped_logits, (best,) = capped.decode_instances(capped.encode(view))
    assert [(f.score, f.rank, f.x0, f.y0) for f in best] == [(f.score, f.rank, f.x0, f.y0) for f in every[:3]]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(best, every))
    _check_instances(best, capped_logits[0], capped.settings.instance_floor)
    assert np.array_equal(capped(view), capped_logits)


def test_a_second_prompt_reuses_the_cached_image_features():
    from rsseg.execution.feature_cache import FeatureCache
    from rsseg.execution.tile_runner import TileRunner

    tiles, keys = _tiles(2, 64, 64, seed=2), ["tile a", "tile b"]
    cache = FeatureCache()
    first = build_model("sam3-tiny", CLASSES, None)
    first_runner = TileRunner(first, "cpu", 4, cache)
    first_runner(tiles, keys)
    assert (first_runner.encoded, first_runner.reused) == (2, 0)
    second = build_model("sam3-tiny", ["water, lake"], None)
    assert second.encoder_id == first.encoder_id  # the features do not depend on the prompt
    runner = TileRunner(second, "cpu", 4, cache)
    logits = runner(tiles, keys)
    assert (runner.encoded, runner.reused) == (0, 2)
    fresh_logits, fresh = build_model("sam3-tiny", ["water, lake"], None).decode_instances(second.encode(tiles))
    assert np.array_equal(logits, fresh_logits) and np.array_equal(logits, second(tiles))
    cached = runner.take_instances()
    assert [[(f.channel, f.score, f.x0, f.y0, f.rank) for f in tile] for tile in cached] == \
        [[(f.channel, f.score, f.x0, f.y0, f.rank) for f in tile] for tile in fresh]


def test_options_other_than_top_k_are_refused():
    with pytest.raises(ModelError, match="takes no upsample option.*only top-k"):
        build_model("sam3-tiny", CLASSES, None, options={"upsample": "bilinear"})
    with pytest.raises(ModelError, match="top-k applies to a referring sentence"):
        build_model("sam3-tiny", CLASSES, None, options={"top_k": 2})
    with pytest.raises(ModelError, match="at least 1"):
        build_model("sam3-tiny", None, SENTENCE, options={"top_k": 0})


def test_a_sentence_longer_than_the_text_encoder_reads_says_so():
    long = " ".join(["the large white building with a flat roof"] * 5)
    model = build_model("sam3-tiny", None, long)
    assert len(model.notes) == 1 and "shortened to the first" in model.notes[0]


# --- the real entry: its files, its tokenizer and its loading path -------------------------------------------

def _rebuild_bpe_files(folder: Path) -> dict[str, Path]:
    """CLIP's vocab.json and merges.txt as the hub holds them, rebuilt from open_clip's bundled BPE list."""
    from rsseg.compat import ensure_torchvision

    ensure_torchvision()
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(dict(zip(vocab, range(len(vocab)))), ensure_ascii=False,
                                                  separators=(",", ":")), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return {"vocab.json": folder / "vocab.json", "merges.txt": folder / "merges.txt"}


def test_the_real_entry_is_the_gated_hub_files_at_one_commit(tmp_path, monkeypatch, capsys):
    import re

    from rsseg.cli.main import main
    from rsseg.models.sam3 import configs

    real, tiny = MODELS["sam3"], MODELS["sam3-tiny"]
    assert (real.task, real.builder, real.real, tiny.task, tiny.builder, tiny.real) == \
        ("both", "sam3", True, "both", "sam3", False)
    assert real.instances and tiny.instances  # one polygon per object; a sentence takes top_k
    assert [w.name for w in real.weights] == ["sam3/model.safetensors", "sam3/vocab.json", "sam3/merges.txt"]
    assert all(w.published for w in real.weights) and real.weights[0].size == 3_439_938_512
    assert re.fullmatch(r"[0-9a-f]{40}", configs.HUB_REVISION)
    for weight in real.weights:
        (url,) = weight.urls
        assert url == f"https://huggingface.co/facebook/sam3/resolve/{configs.HUB_REVISION}/{weight.name.split('/')[1]}"
    assert (real.preprocess.input_size, tiny.preprocess.input_size) == (1008, 252)
    assert real.preprocess.mean == real.preprocess.std == (0.5, 0.5, 0.5)
    for words in ("gated", "licence", "HF_TOKEN", "huggingface-cli login", "import"):
        assert words in real.description
    monkeypatch.setenv("RSSEG_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.delenv("RSSEG_WEIGHTS_MIRROR", raising=False)
    assert main(["models", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert (rows["sam3"]["state"], rows["sam3"]["download_bytes"]) == ("download", sum(w.size for w in real.weights))
    assert rows["sam3-tiny"]["state"] == "ready" and rows["sam3-tiny"]["test_model"]
    assert rows["sam3"]["instances"] and rows["sam3-tiny"]["instances"]
    # the hub's tokenizer files are CLIP's BPE: the registry's sha256 are those of the files rebuilt from it
    rebuilt = _rebuild_bpe_files(tmp_path / "bpe")
    for weight in real.weights[1:]:
        data = rebuilt[weight.name.split("/")[1]].read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (weight.size, weight.sha256)


def test_the_real_architecture_is_transformers_sam3():
    from rsseg.models.sam3.configs import ARCHITECTURE
    from rsseg.models.sam3.model import sam3_module

    modeling = sam3_module()
    assert modeling.Sam3Config(**json.loads(json.dumps(ARCHITECTURE))).to_dict() == modeling.Sam3Config().to_dict()
    with torch.device("meta"):
        model = modeling.Sam3Model(modeling.Sam3Config(**json.loads(json.dumps(ARCHITECTURE))))
    assert sum(p.numel() for p in model.parameters()) == 840_376_374


def test_the_hub_tokenizer_reads_what_the_bundled_one_reads(tmp_path):
    from rsseg.models.sam3.text import bundled_tokenizer, hub_tokenizer

    files = _rebuild_bpe_files(tmp_path)
    hub, bundled = hub_tokenizer(files["vocab.json"], files["merges.txt"], 32), bundled_tokenizer(32)
    texts = ["car", "Parking  lot", "the red building left of the pool!", "naïve café, 12 m", "it's o'clock",
             " ".join(["tall trees"] * 30)]
    ids, mask = hub.encode(texts)
    assert ids.shape == mask.shape == (6, 32)
    expected_ids, expected_mask = bundled.encode(texts)
    assert torch.equal(ids, expected_ids) and torch.equal(mask, expected_mask)
    assert ids[0, :3].tolist() == [49406, 1615, 49407] and mask[0].sum() == 3
    assert ids[-1, -1] == 49407 and mask[-1].all()  # cut to 32 tokens, the end-of-text token kept last
    assert torch.equal(hub(texts, context_length=40), bundled(texts, context_length=40))


def _hub_like_checkpoint(path: Path, drop: str = "") -> Path:
    """The tiny twin's weights laid out as the hub's file: the detector under "detector_model.", and tracker
    tensors next to it (never loaded)."""
    from safetensors.torch import save_file

    from rsseg.models.sam3.configs import TINY_ARCHITECTURE
    from rsseg.models.sam3.model import build_sam3

    weights = build_sam3(TINY_ARCHITECTURE, seed=7).state_dict()
    state = {f"detector_model.{k}": v.contiguous() for k, v in weights.items() if k != drop}
    state["tracker_model.memory_encoder.weight"] = torch.zeros(2, 2)
    state["tracker_neck.conv.weight"] = torch.zeros(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def _local_real_entry(folder: Path, checkpoint: Path):
    """The real entry with the tiny architecture and a local checkpoint (its own size and sha256), and the
    registry's own tokenizer files: the real loading path, end to end."""
    from rsseg.spec import WeightFile

    data = checkpoint.read_bytes()
    weight = WeightFile("sam3/model.safetensors", len(data), hashlib.sha256(data).hexdigest())
    _rebuild_bpe_files(folder / "sam3")
    return replace(MODELS["sam3"], id="sam3-local", weights=(weight, *MODELS["sam3"].weights[1:]),
                   config=MODELS["sam3-tiny"].config)


def test_real_weights_load_after_their_checksums_from_the_hub_layout(tmp_path, monkeypatch):
    from rsseg.models.sam3.configs import SETTINGS, TINY_ARCHITECTURE
    from rsseg.models.sam3.model import build_sam3, load_sam3
    from rsseg.models.sam3.text import bundled_tokenizer
    from rsseg.models.sam3.tile_model import Sam3Settings, Sam3TileModel

    weights = tmp_path / "weights"
    monkeypatch.setenv("RSSEG_WEIGHTS_DIR", str(weights))
    spec = _local_real_entry(weights, _hub_like_checkpoint(weights / "sam3" / "model.safetensors"))
    model, tokenizer = load_sam3(spec)
    reference = build_sam3(TINY_ARCHITECTURE, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    settings = Sam3Settings.from_config({"architecture": TINY_ARCHITECTURE, **SETTINGS})
    tiles = _tiles(1, 64, 64)
    loaded = Sam3TileModel(model, tokenizer, CLASSES, False, "cpu", "a", settings, (0.5,) * 3, (0.5,) * 3)
    seeded = Sam3TileModel(reference, bundled_tokenizer(32), CLASSES, False, "cpu", "b", settings, (0.5,) * 3,
                           (0.5,) * 3)
    assert np.array_equal(loaded(tiles), seeded(tiles))
    # a checkpoint that does not fit the architecture is refused, naming what is missing
    spec = _local_real_entry(weights, _hub_like_checkpoint(weights / "sam3" / "model.safetensors",
                                                           drop="text_projection.weight"))
    with pytest.raises(WeightsError, match="does not fit this architecture; missing keys: text_projection.weight"):
        load_sam3(spec)
    # a file that is not the registered one is never read
    (weights / "sam3" / "vocab.json").write_text("{}")
    with pytest.raises(WeightsError, match="vocab.json"):
        load_sam3(spec)


# --- gated downloads: the user's Hugging Face token, to the hub only ---------------------------------------------

def test_hub_downloads_carry_the_users_token_and_nothing_else_does(tmp_path, monkeypatch):
    from rsseg.weights.download import build_request, hub_token

    url = MODELS["sam3"].weights[0].urls[0]
    for name in ("HF_TOKEN", "HF_TOKEN_PATH", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "nothing"))
    assert hub_token() is None and not build_request(url).has_header("Authorization")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "token").write_text("hf_from_login\n")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # where huggingface-cli login writes it
    assert build_request(url).unredirected_hdrs == {"Authorization": "Bearer hf_from_login"}
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    request = build_request(url, 100)
    assert request.unredirected_hdrs == {"Authorization": "Bearer hf_from_env"}
    assert request.headers["Range"] == "bytes=100-" and "Authorization" not in request.headers
    assert not build_request("https://mirror.example.org/weights/sam3/model.safetensors").has_header("Authorization")


class _EchoAuthorization(BaseHTTPRequestHandler):
    """/same redirects on this host, /cross to another host name; /echo answers the Authorization it got."""

    def do_GET(self):
        port = self.server.server_address[1]
        target = {"/same": "/echo", "/cross": f"http://localhost:{port}/echo"}.get(self.path)
        if target:
            self.send_response(302)
            self.send_header("Location", target)
            self.end_headers()
            return
        body = (self.headers.get("Authorization") or "none").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_token_follows_redirects_on_the_same_host_only():
    from rsseg.weights.download import build_request, opener

    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoAuthorization)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        with opener().open(build_request(f"{base}/same", token="secret"), timeout=10) as reply:
            assert reply.read() == b"Bearer secret"  # the hub's own redirects still need it
        with opener().open(build_request(f"{base}/cross", token="secret"), timeout=10) as reply:
            assert reply.read() == b"none"  # the CDN it redirects to never sees it
    finally:
        server.shutdown()
        server.server_close()


# --- the engine ------------------------------------------------------------------------------------------------

def test_the_engine_writes_one_polygon_per_object(tmp_path):
    """A sentence: the region as one tile, its best three objects as polygons. (The tiny twin's random masks are
    speckled, which makes many objects slow to vectorise: three keep this test fast.)"""
    import fiona
    import rasterio
    from rasterio.transform import from_origin

    from rsseg.protocol.contracts import SegmentRequest
    from rsseg.raster.engine import segment

    raster = tmp_path / "scene.tif"
    pixels = (_tiles(1, 96, 120, seed=3)[0] * 255).astype(np.uint8)
    with rasterio.open(raster, "w", driver="GTiff", width=120, height=96, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500000, 5200000, 0.5, 0.5)) as dst:
        dst.write(pixels)
    model = build_model("sam3-tiny", None, SENTENCE, options={"top_k": 3})
    request = SegmentRequest(raster=str(raster), out_dir=str(tmp_path / "out"), model="sam3-tiny", sentence=SENTENCE,
                             top_k=3, device="cpu", threshold=0.1)
    result = segment(request, model)
    assert Path(result.mask).is_file() and Path(result.polygons).is_file()
    assert (tmp_path / "out" / "result.json").is_file() and result.tiles == 1
    with rasterio.open(result.mask) as mask:
        assert mask.read(1).shape == (96, 120)
    with fiona.open(result.polygons) as layer:
        assert 1 <= len(layer) <= 3
    assert any("object(s) found" in note for note in result.notes)
