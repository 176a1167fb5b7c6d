"""Long prompts: the text encoders read a fixed number of tokens (CLIP 77) and open_clip's tokenizers cut
the rest off silently, so the result's notes say when a sentence or a class name was read in part. (The
request's caps on their length are request rules: test_request_rules.py, test_bad_input.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rsseg.models import build_model
from rsseg.models.clip.builder import build_tokenizer
from rsseg.models.clip.text import IMAGENET_TEMPLATES
from rsseg.models.clip.tokens import class_name_notes, sentence_notes, token_counts, words_read
from rsseg.protocol.contracts import MAX_CLASS_CHARS, MAX_SENTENCE_CHARS, SegmentRequest
from rsseg.service import run_segment

NEON = Path(__file__).parents[1] / "data" / "neon_osbs_rgb.tif"
LONG = " ".join(["the red roof"] * 40)  # 120 words, one CLIP token each: 122 tokens with the start and end
ROADS = " ".join(["道路"] * 33)  # 98 characters, within the class cap, but 167 CLIP tokens


@pytest.fixture(scope="module")
def clip_tokenizer():
    return build_tokenizer({"tokenizer": "ViT-B-16"})  # CLIP's BPE, bundled with open_clip: 77 tokens


def test_a_sentence_is_read_up_to_the_context(clip_tokenizer):
    assert token_counts(clip_tokenizer, [LONG], full=True) == [122] and token_counts(clip_tokenizer, [LONG]) == [77]
    assert words_read(clip_tokenizer, "the red roof") is None and sentence_notes(clip_tokenizer, "the red roof") == []
    assert words_read(clip_tokenizer, LONG) == 75  # 75 words + start + end = 77
    assert sentence_notes(clip_tokenizer, LONG) == [
        "the sentence was shortened to the first 75 words the text encoder reads (of 120)"]
    assert len(LONG) < MAX_SENTENCE_CHARS  # accepted by the request rules, and the note tells the user


def test_a_class_name_is_measured_in_its_longest_prompt_template(clip_tokenizer):
    assert len(ROADS) <= MAX_CLASS_CHARS
    assert class_name_notes(clip_tokenizer, ["road", "building"], IMAGENET_TEMPLATES) == []
    [note] = class_name_notes(clip_tokenizer, ["road", ROADS, ROADS], IMAGENET_TEMPLATES)  # one note a name
    assert note.startswith(f"the class name '{ROADS[:40]}...' was shortened to the first ") and note.endswith(
        "words the text encoder reads (of 33)")
    longest = max(IMAGENET_TEMPLATES, key=lambda t: token_counts(clip_tokenizer, [t(ROADS)], full=True)[0])
    words = words_read(clip_tokenizer, ROADS, longest)
    assert f"first {words} words" in note and 0 < words < 33
    fits = " ".join(ROADS.split()[:words])
    assert token_counts(clip_tokenizer, [longest(fits)], full=True)[0] <= 77
    assert token_counts(clip_tokenizer, [longest(f"{fits} 道路")], full=True)[0] > 77
    assert class_name_notes(clip_tokenizer, ["é" * 100], IMAGENET_TEMPLATES)[0].endswith(
        "is longer than the text encoder reads: it read only the start of its first word")


def test_the_open_vocabulary_model_notes_a_shortened_class_name():
    model = build_model("clip-vit-b-16-tiny", ["road", f"building, {ROADS[:80]}"], None)
    assert len(model.notes) == 1 and "the class name '道路" in model.notes[0]
    assert build_model("clip-vit-b-16-tiny", ["road", "building"], None).notes == []


def test_a_shortened_sentence_is_in_the_result_notes(tmp_path):
    result = run_segment(SegmentRequest(raster=str(NEON), out_dir=str(tmp_path / "long"), model="rsrefseg-test",
                                        sentence=LONG, vectorise=False, device="cpu"))
    note = "the sentence was shortened to the first 75 words the text encoder reads (of 120)"
    assert note in result.notes
    assert note in json.loads((tmp_path / "long" / "result.json").read_text())["notes"]  # the file says so too
    short = run_segment(SegmentRequest(raster=str(NEON), out_dir=str(tmp_path / "short"), model="rsrefseg-test",
                                       sentence="the tall tree", vectorise=False, device="cpu"))
    assert not any("shortened" in n for n in short.notes)
