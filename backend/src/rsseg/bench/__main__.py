"""`python -m rsseg.bench RASTER OUT MODEL TILE OVERLAP [DEVICE [smooth|speckle]]`: one benchmark run in a fresh
process, so peak RSS belongs to that run alone; prints one JSON line.

Sentence models (RSRefSeg's real architecture with random weights, or a registry "sentence" model
such as rsrefseg-test) segment SENTENCE, then SECOND_SENTENCE on the same raster with the same
feature cache."""

from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import replace
from typing import Optional

from ..devices import resolve_device
from ..execution.feature_cache import FeatureCache
from ..execution.tile_runner import TileRunner
from ..models import MODELS, build_model, get_spec
from ..models.factory import get_builder
from ..protocol.contracts import DEFAULT_MODELS, SegmentRequest
from ..raster.engine import segment
from . import CLIP_RANDOM, RFM_RANDOM, RSREFSEG_RANDOM, SGSEG_RANDOM, ZS_REF_RANDOM
from .synthetic import SPECKLE_CLASSES
from .vit_model import RandomViTTileModel

CLASSES = ["water", "tree", "grass", "building"]


SECOND_PROMPT = ["road", "bare soil", "shadow"]
RFM_SECOND = ["water, a lake, a river", "tree", "grass", "building, a roof"]  # the same classes, other VL-map prompts
SENTENCE = "the large building in the middle"
SECOND_SENTENCE = "the road on the left of the field"


def is_sentence_model(model_id: str) -> bool:
    return model_id in (RSREFSEG_RANDOM, ZS_REF_RANDOM) or (model_id in MODELS and MODELS[model_id].task == "sentence")


def _rsrefseg_random(sentence: str, device: str):
    """rsrefseg-clip-b16-sam-b's architecture with its seeded random init, through the registry's
    builder (which keeps it warm for the second sentence): no base files, no checkpoint."""
    spec = get_spec("rsrefseg-clip-b16-sam-b")
    config = {k: v for k, v in spec.config.items() if k not in ("clip_weights", "sam_weights")}
    spec = replace(spec, id=RSREFSEG_RANDOM, config=config, weights=(), real=False, needs_checkpoint=False)
    return get_builder(spec.builder)(spec, [sentence], "sigmoid", device, {})


_ZS_REF_PARTS: dict[str, tuple] = {}  # device -> (clip, tokenizer, sam): one random init for both sentences


def _zs_ref_random(sentence: str, device: str):
    """The default sentence model's architecture (CLIP ViT-B/16 + SAM ViT-B at 1024) with seeded random weights;
    SAM's quality filters are off so that every point's mask competes for the real proposal budget."""
    import torch

    from ..models.clip.builder import build_clip
    from ..models.sam.builder import build_sam
    from ..models.zs_ref.family import proposals_for
    from ..models.zs_ref.global_local import ScoringConfig
    from ..models.zs_ref.tile_model import ZeroShotReferringTileModel

    spec = get_spec(DEFAULT_MODELS["sentence"])
    clip_spec = get_spec(spec.config["clip"])
    if device not in _ZS_REF_PARTS:
        torch.manual_seed(0)
        clip, tokenizer = build_clip(clip_spec.config)
        sam = build_sam(get_spec(spec.config["sam"]).config)
        _ZS_REF_PARTS[device] = (clip.eval().to(device), tokenizer, sam.eval().to(device))
    clip, tokenizer, sam = _ZS_REF_PARTS[device]
    unfiltered = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    return ZeroShotReferringTileModel(clip, tokenizer, sam, sentence, device, ZS_REF_RANDOM, clip_spec.preprocess.mean,
                                      clip_spec.preprocess.std,
                                      proposals_for(spec.config, device, **unfiltered)[0],
                                      ScoringConfig.from_dict(spec.config["scoring"]))


_RFM_NETS: dict[str, object] = {}  # device -> the one random RFM-Seg both class lists run on


def _rfm_random(classes: list[str], device: str):
    """rfm-seg-r18-rn50 on a ResNet-18 UNetFormer host, seeded random weights; `classes` may give VL-map prompts
    as synonyms (the second run), which reuses the cached encoder features."""
    import torch

    from ..models.clip.builder import build_clip
    from ..models.rfm_seg.family import RFMSegTileModel, split_prompts
    from ..models.rfm_seg.model import RFMSeg
    from ..models.rfm_seg.prompts import class_prompts
    from ..models.unetformer.model import UNetFormer

    names, given = split_prompts(classes)
    norm = ([0.5] * 3, [0.25] * 3)
    if device not in _RFM_NETS:
        torch.manual_seed(0)
        spec = get_spec("rfm-seg-r18-rn50")
        clip_spec = get_spec(spec.config["clip"])
        clip, tokenizer = build_clip(clip_spec.config)
        host = UNetFormer(get_spec(spec.config["host_entry"]).config, 3, len(names))
        config = {**spec.config, "input_mean": norm[0], "input_std": norm[1], "classes": names}
        _RFM_NETS[device] = RFMSeg(config, 3, len(names), host, clip.to(device), tokenizer, clip_spec.preprocess.mean,
                                   clip_spec.preprocess.std).to(device)
    net = _RFM_NETS[device]
    net.set_prompts(class_prompts(names, given))
    return RFMSegTileModel(net, names, *norm, device, list(range(len(names))), RFM_RANDOM)


_SGSEG_NETS: dict[str, object] = {}  # device -> the one random SGSeg both class lists run on


def _sgseg_random(classes: list[str], device: str):
    """sgseg-vit-b-16's architecture (OpenAI CLIP ViT-B/16, 17 memory slots with stored prototypes) with seeded
    random weights; the second class list reuses the cached image features."""
    import torch

    from ..models.clip.builder import build_clip
    from ..models.sgseg.family import SGSegTileModel
    from ..models.sgseg.model import SGSeg

    if device not in _SGSEG_NETS:
        torch.manual_seed(0)
        spec = get_spec("sgseg-vit-b-16")
        clip_spec = get_spec(spec.config["clip"])
        clip, tokenizer = build_clip(clip_spec.config)
        net = SGSeg(spec.config, 17, clip.to(device), tokenizer, clip_spec.preprocess.mean, clip_spec.preprocess.std)
        with torch.no_grad():  # a memory as training leaves it: every slot holds a prototype
            net.memory.prototypes.copy_(torch.nn.functional.normalize(torch.randn_like(net.memory.prototypes), dim=1))
            net.memory.filled.fill_(True)
        _SGSEG_NETS[device] = net.to(device)
    return SGSegTileModel(_SGSEG_NETS[device], classes, device, SGSEG_RANDOM)


def _model(model_id: str, prompt, device: str):
    """Benchmark models: registry ids, a timm ViT-B/16, or clip-vit-b-16's / RSRefSeg's real architecture with
    random weights; `prompt` is a class list, or a sentence (str) for sentence models."""
    if isinstance(prompt, str):
        if model_id == RSREFSEG_RANDOM:
            return _rsrefseg_random(prompt, device)
        if model_id == ZS_REF_RANDOM:
            return _zs_ref_random(prompt, device)
        return build_model(model_id, None, prompt, device)
    classes = prompt
    if model_id == RFM_RANDOM:
        return _rfm_random(classes, device)
    if model_id == SGSEG_RANDOM:
        return _sgseg_random(classes, device)
    if model_id == "vit-b-random":
        return RandomViTTileModel(classes, device)
    if model_id == CLIP_RANDOM:
        spec = replace(get_spec(DEFAULT_MODELS["classes"]), id=CLIP_RANDOM, weights=())
        return get_builder(spec.builder)(spec, classes, "softmax", device, {})
    return build_model(model_id, classes, None, device)


def _run(raster: str, out: str, model_id: str, prompt, tile: int, overlap: int,
         cache: Optional[FeatureCache], device: str) -> dict:
    """One segment job; `prompt` is a class list, or a sentence (str)."""
    model = _model(model_id, prompt, device)
    request = SegmentRequest.from_prompt("sentence" if isinstance(prompt, str) else "classes", prompt, raster=raster,
                                         out_dir=out, model=model_id, tile=tile, overlap=overlap, batch_size=4,
                                         device=device)
    raster_pass_peak = {}

    def on_progress(event) -> None:  # the first vectorise event ends the raster pass
        if event.stage == "vectorise" and not raster_pass_peak:
            raster_pass_peak["mb"] = _peak_rss_mb()

    t0 = time.perf_counter()
    result = segment(request, model, progress=on_progress, runner=TileRunner(model, device, 4, cache))
    wall = time.perf_counter() - t0
    return {"device": device, "pixels": result.width * result.height, "tiles": result.tiles, "wall_s": wall,
            "timings": result.timings, "peak_rss_mb": _peak_rss_mb(),
            "raster_pass_rss_mb": raster_pass_peak.get("mb"), "polygons": sum(c.polygons for c in result.classes)}


def main(argv: list[str]) -> None:
    """One JSON line: the run, plus for encoder-split models a second prompt on the same raster ("second")."""
    raster, out, model_id, tile, overlap = argv[0], argv[1], argv[2], int(argv[3]), int(argv[4])
    wanted = argv[5] if len(argv) > 5 else "cpu"
    numpy_only = model_id in MODELS and MODELS[model_id].numpy_only and wanted in ("auto", "cpu")
    device = "cpu" if numpy_only else resolve_device(wanted)  # a numpy-only model never imports torch
    classes = SPECKLE_CLASSES if len(argv) > 6 and argv[6] == "speckle" else CLASSES
    # a feature cache only where a second prompt reuses it; a single job runs as `rsseg segment` does, without
    # one (a cache holds up to 1 GB of features, which would read as the job's memory)
    second_prompt = is_sentence_model(model_id) or model_id in (CLIP_RANDOM, RFM_RANDOM, SGSEG_RANDOM)
    cache = FeatureCache() if second_prompt else None
    if is_sentence_model(model_id):
        record = _run(raster, out, model_id, SENTENCE, tile, overlap, cache, device)
        record["second"] = _run(raster, out, model_id, SECOND_SENTENCE, tile, overlap, cache, device)
        record["sentence"] = True
    else:
        record = _run(raster, out, model_id, classes, tile, overlap, cache, device)
        if model_id in (CLIP_RANDOM, RFM_RANDOM, SGSEG_RANDOM):
            second = RFM_SECOND if model_id == RFM_RANDOM else SECOND_PROMPT
            record["second"] = _run(raster, out, model_id, second, tile, overlap, cache, device)
    print(json.dumps(record))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main(sys.argv[1:])
