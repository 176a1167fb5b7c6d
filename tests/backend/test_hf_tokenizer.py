"""Hugging Face tokenizers (SigLIP's) come from the weights dir, never from the network.

The tokenizer files here are a real `tokenizers` WordLevel model written by the test; open_clip's
HFTokenizer and transformers load them exactly as they load SigLIP's downloaded files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from rsseg.errors import WeightsError
from rsseg.models import MODELS
from rsseg.models.clip.builder import build_tokenizer
from rsseg.models.rsrefseg import configs
from rsseg.models.rsrefseg.model import build_rsrefseg

VOCAB = {"<pad>": 0, "</s>": 1, "<unk>": 2, "the": 3, "red": 4, "roof": 5, "left": 6, "of": 7, "a": 8}


@pytest.fixture
def tokenizer_dir(tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("RSSEG_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a network lookup would fail loudly instead of hanging
    folder = tmp_path / "tok"
    folder.mkdir()
    tok = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "eos_token": "</s>",
        "unk_token": "<unk>", "model_max_length": 64}))
    return "tok"


def test_a_named_models_text_settings_apply_to_its_local_tokenizer(tokenizer_dir):
    tokenizer = build_tokenizer({"open_clip_model": "ViT-SO400M-14-SigLIP-384", "tokenizer_dir": tokenizer_dir})
    ids = tokenizer(["The RED roof!", "the red roof", "a zebra"])
    assert ids.shape == (3, 64) and ids.dtype == torch.long  # SigLIP's context length, not CLIP's 77
    assert torch.equal(ids[0], ids[1])  # SigLIP's "canonicalize" cleaning: case and punctuation go
    assert ids[0, :5].tolist() == [3, 4, 5, 1, 0] and ids[2, :3].tolist() == [8, 2, 1]


def test_rsrefseg_reads_sentences_with_a_local_hugging_face_tokenizer(tokenizer_dir):
    clip = {**configs.TINY["clip"], "tokenizer_dir": tokenizer_dir}
    clip.pop("tokenizer")
    model = build_rsrefseg({**configs.TINY, "clip": clip}).eval()
    text = model.tokenize(["the red roof left of a roof"])
    context = configs.TINY_ARCHITECTURE["text_cfg"]["context_length"]
    assert text.shape == (1, context) and text[0, :8].tolist() == [3, 4, 5, 6, 7, 8, 5, 1]
    assert model.pad_token_id == 0  # padding is left out of the local text semantics
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 256, 256), text)
    assert logits.shape == (1, 1, 256, 256) and torch.isfinite(logits).all()


def test_a_sentence_longer_than_the_context_is_noted_with_a_hugging_face_tokenizer(tokenizer_dir):
    """SigLIP reads 64 tokens, its end token included (which pads here too): 63 words of this vocabulary."""
    from rsseg.models.clip.tokens import sentence_notes, words_read

    tokenizer = build_tokenizer({"open_clip_model": "ViT-SO400M-14-SigLIP-384", "tokenizer_dir": tokenizer_dir})
    sentence = " ".join(["the red roof left of a roof"] * 10)  # 70 words
    assert words_read(tokenizer, " ".join(sentence.split()[:63])) is None
    assert words_read(tokenizer, sentence) == 63
    assert sentence_notes(tokenizer, sentence) == [
        "the sentence was shortened to the first 63 words the text encoder reads (of 70)"]


def test_a_missing_tokenizer_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("RSSEG_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match=r"tokenizer is not installed in .*absent") as info:
        build_tokenizer({"open_clip_model": "ViT-SO400M-14-SigLIP-384", "tokenizer_dir": "absent"})
    assert info.value.fixes == ("download",) and "rsseg models download" in info.value.text("cli")
    folder = configs.REFERENCE["clip"]["tokenizer_dir"]  # SigLIP's own folder: the fix names the entry bringing it
    with pytest.raises(WeightsError) as info:
        build_tokenizer({"open_clip_model": "ViT-SO400M-14-SigLIP-384", "tokenizer_dir": folder})
    assert info.value.text("cli").endswith("run `rsseg models download siglip-so400m-14-384`")


def test_the_reference_entry_keeps_siglips_files_together_with_sam_b():
    siglip, sam = MODELS["siglip-so400m-14-384"], MODELS["sam-vit-b"]
    folder = configs.REFERENCE["clip"]["tokenizer_dir"]
    assert {Path(w.name).parent.name for w in siglip.weights} == {folder}
    assert {Path(w.name).name for w in siglip.weights} >= {"tokenizer.json", "tokenizer_config.json"}
    assert siglip.weights[0].name.endswith(".safetensors") and siglip.weights[0].sha256  # loaded with safetensors
    assert MODELS["rsrefseg-siglip-so400m-sam-b"].weights == siglip.weights + sam.weights
