"""Readers for referring-segmentation datasets; each yields `RefSample`s one at a time.

Generators, so a split of 3,481 800x800 masks is never held in memory at once. Every bad input
raises ReferringDataError with one line that names the file (and the jsonl line). Layouts and
field names, with their sources, are in docs/referring-data.md.
"""

from __future__ import annotations

import csv
import json
import pickle  # nosec B403
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np

from .rle import decode_rle
from .sample import IMAGE_SUFFIXES, ReferringDataError, RefSample, read_mask

PathLike = Union[str, Path]

# RRSIS-D jsonl as RSRefSeg's tools_RSRefSeg/convert_data_to_jsonl.py writes it: split, image_id,
# sent, file_name, category_id, category_name, ann_id, bbox, segmentation ([RLE] or RLE), area.
# The other names are the refer-style variants (refs(unc).p: sentences=[{sent, raw, ...}], sent_ids).
IMAGE_FIELDS = ("file_name", "image", "img_name", "image_path")
SENTENCE_FIELDS = ("sent", "sentence", "sentences", "raw", "text")
SAMPLE_ID_FIELDS = ("ref_id", "ann_id", "sent_id", "id")


def _first(item: dict[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        if item.get(name) not in (None, "", []):
            return item[name]
    return None


def _sentences(value: Any) -> list[str]:
    """A sentence field -> its sentences: a string, a list of strings, or refer's [{sent, raw}]."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        out = []
        for entry in value:
            if isinstance(entry, dict):
                entry = entry.get("sent") or entry.get("raw")
            if not isinstance(entry, str):
                raise ValueError(f"a sentence list entry is {type(entry).__name__}, not a string or {{sent}}")
            out.append(entry)
        return out
    raise ValueError(f"the sentence field is {type(value).__name__}, not a string or a list")


def _segmentation(value: Any) -> np.ndarray:
    """`segmentation`: one RLE dict, or a list of them (their union; RSRefSeg takes the only one)."""
    parts = value if isinstance(value, list) else [value]
    if not parts:
        raise ValueError("empty segmentation")
    if any(not isinstance(p, dict) for p in parts):
        raise ValueError("segmentation is a polygon list; only COCO RLE ({counts, size}) is supported")
    masks = [decode_rle(p) for p in parts]
    if any(m.shape != masks[0].shape for m in masks):
        raise ValueError("the RLE parts of one segmentation have different sizes")
    return np.logical_or.reduce(masks)


def _json_lines(path: Path) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(line number, "path:line", object) of each non-blank line of a JSONL file; anything but a JSON
    object on a line is a ReferringDataError naming the line."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ReferringDataError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(item, dict):
                raise ReferringDataError(f"{where}: expected a JSON object per line")
            yield number, where, item


def rrsisd_samples(ann_file: PathLike, image_dir: PathLike, check_images: bool = True,
                   limit: Optional[int] = None) -> Iterator[RefSample]:
    """Samples of one RRSIS-D jsonl split (e.g. datainfo/rrsisd_test.jsonl); images under image_dir
    (RRSIS-D/images/rrsisd/JPEGImages in the release). A record with several sentences gives one
    sample per sentence."""
    ann_file, image_dir = Path(ann_file), Path(image_dir)
    if not ann_file.is_file():
        raise ReferringDataError(f"annotation file not found: {ann_file}")
    if not image_dir.is_dir():
        raise ReferringDataError(f"image folder not found: {image_dir}")
    count = 0
    for number, where, item in _json_lines(ann_file):
        file_name = _first(item, IMAGE_FIELDS)
        if not isinstance(file_name, str):
            raise ReferringDataError(f"{where}: no image name (one of {', '.join(IMAGE_FIELDS)})")
        sentence_value = _first(item, SENTENCE_FIELDS)
        if sentence_value is None:
            raise ReferringDataError(f"{where}: no sentence (one of {', '.join(SENTENCE_FIELDS)})")
        if "segmentation" not in item:
            raise ReferringDataError(f"{where}: no 'segmentation' (COCO RLE with counts and size)")
        try:
            sentences = _sentences(sentence_value)
            mask = _segmentation(item["segmentation"])
        except ValueError as exc:
            raise ReferringDataError(f"{where}: {exc}") from None
        image = image_dir / file_name
        if check_images and not image.is_file():
            raise ReferringDataError(f"{where}: image {image} not found")
        image_id = str(item.get("image_id", Path(file_name).stem))
        base = _first(item, SAMPLE_ID_FIELDS)
        base = str(base) if base is not None else f"line{number}"
        sent_ids = item.get("sent_ids") if isinstance(item.get("sent_ids"), list) else None
        meta = {k: item[k] for k in ("split", "category_id", "category_name", "bbox", "area") if k in item}
        meta["source"] = where
        for k, sentence in enumerate(sentences):
            if len(sentences) == 1:
                sample_id = base
            elif sent_ids is not None and len(sent_ids) == len(sentences):
                sample_id = f"{base}-{sent_ids[k]}"
            else:
                sample_id = f"{base}-{k}"
            yield RefSample(image, sentence.strip(), mask, image_id, sample_id, dict(meta))
            count += 1
            if limit is not None and count >= limit:
                return


def _by_stem(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> dict[str, Path]:
    """stem -> file of a folder (the first suffix in `suffixes` order wins on a clash)."""
    found: dict[str, Path] = {}
    rank = {s: i for i, s in enumerate(suffixes)}
    for path in sorted(folder.iterdir()):
        suffix = path.suffix.lower()
        if suffix in rank and path.is_file() and not path.name.startswith("."):
            if path.stem not in found or rank[suffix] < rank[found[path.stem].suffix.lower()]:
                found[path.stem] = path
    return found


def _folder(root: Path, name: str) -> Path:
    folder = root / name
    if not folder.is_dir():
        raise ReferringDataError(f"folder not found: {folder} (expected {name}/ under {root})")
    return folder


def refsegrs_samples(root: PathLike, split: str = "test", limit: Optional[int] = None) -> Iterator[RefSample]:
    """Samples of RefSegRS: root/output_phrase_{split}.txt lines are "<image id> <sentence...>";
    the image is root/images/<id>.tif and its mask root/masks/<id>.tif (0/255)."""
    root = Path(root)
    phrases = root / f"output_phrase_{split}.txt"
    if not phrases.is_file():
        raise ReferringDataError(f"sentence file not found: {phrases} (RefSegRS ships "
                                 "output_phrase_train/val/test.txt beside images/ and masks/)")
    images, masks = _by_stem(_folder(root, "images")), _by_stem(_folder(root, "masks"))
    seen: dict[str, int] = {}
    count = 0
    for number, line in enumerate(phrases.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        image_id, _, sentence = line.strip().partition(" ")
        where = f"{phrases}:{number}"
        if not sentence.strip():
            raise ReferringDataError(f"{where}: expected '<image id> <sentence>'")
        if image_id not in images:
            raise ReferringDataError(f"{where}: no image {image_id}.tif in {root / 'images'}")
        if image_id not in masks:
            raise ReferringDataError(f"{where}: no mask {image_id}.tif in {root / 'masks'}")
        k = seen.get(image_id, 0)
        seen[image_id] = k + 1
        sample_id = image_id if k == 0 else f"{image_id}-{k}"
        yield RefSample(images[image_id], sentence.strip(), read_mask(masks[image_id]), image_id, sample_id,
                        {"split": split, "source": where})
        count += 1
        if limit is not None and count >= limit:
            return


SENTENCE_FILES = ("sentences.jsonl", "sentences.csv")


def _sentence_rows(path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """(location, row) of a sentences file: JSONL objects or a CSV with a header row."""
    if path.suffix.lower() == ".jsonl":
        for _, where, row in _json_lines(path):
            yield where, {k: str(v) for k, v in row.items() if v is not None}
    elif path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"image", "sentence"} <= set(reader.fieldnames):
                raise ReferringDataError(f"{path}: the CSV needs a header row with 'image' and 'sentence' "
                                         f"columns (optional 'mask', 'id'), got {reader.fieldnames}")
            for number, row in enumerate(reader, 2):
                yield f"{path}:{number}", {k: v for k, v in row.items() if k and v not in (None, "")}
    else:
        raise ReferringDataError(f"{path}: sentences file must be .jsonl or .csv")


def folder_samples(root: PathLike, sentences: Optional[PathLike] = None, split: Optional[str] = None,
                   limit: Optional[int] = None) -> Iterator[RefSample]:
    """Samples of the plain layout: root[/split]/images/, masks/ and sentences.jsonl (or .csv).

    Each sentences row has `image` (a stem or file name under images/) and `sentence`; `mask`
    names the mask under masks/ (default: the image's stem, for one referent per image) and `id`
    the sample (default: the mask's stem, numbered when it repeats).
    """
    base = Path(root) / split if split else Path(root)
    if not base.is_dir():
        raise ReferringDataError(f"dataset folder not found: {base}")
    if sentences is None:
        candidates = [base / name for name in SENTENCE_FILES if (base / name).is_file()]
        if not candidates:
            raise ReferringDataError(f"no sentences file in {base} (expected {' or '.join(SENTENCE_FILES)})")
        sentences = candidates[0]
    sentences = Path(sentences)
    if not sentences.is_file():
        raise ReferringDataError(f"sentences file not found: {sentences}")
    images, masks = _by_stem(_folder(base, "images")), _by_stem(_folder(base, "masks"), (".png", ".tif", ".tiff"))
    seen: dict[str, int] = {}
    count = 0
    for where, row in _sentence_rows(sentences):
        if "image" not in row or not row.get("sentence", "").strip():
            raise ReferringDataError(f"{where}: each row needs 'image' and a non-empty 'sentence'")
        image_stem = Path(row["image"]).stem
        mask_stem = Path(row.get("mask", image_stem)).stem
        if image_stem not in images:
            raise ReferringDataError(f"{where}: no image {row['image']!r} in {base / 'images'}")
        if mask_stem not in masks:
            raise ReferringDataError(f"{where}: no mask {mask_stem!r} (.png/.tif) in {base / 'masks'}")
        sample_id = row.get("id")
        if sample_id is None:
            k = seen.get(mask_stem, 0)
            seen[mask_stem] = k + 1
            sample_id = mask_stem if k == 0 else f"{mask_stem}-{k}"
        yield RefSample(images[image_stem], row["sentence"].strip(), read_mask(masks[mask_stem]), image_stem,
                        sample_id, {"source": where})
        count += 1
        if limit is not None and count >= limit:
            return


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles plain containers only (dict, list, str, int...): any class or function reference
    is refused, so a crafted refs file cannot run code (Python docs, "Restricting Globals")."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain data is expected")


def _load_refs(path: Path) -> list[dict[str, Any]]:
    try:
        with path.open("rb") as handle:
            # Safe: _PlainUnpickler.find_class refuses every global, so only plain data loads.
            refs = _PlainUnpickler(handle, encoding="utf-8").load()  # nosec B301
    except (pickle.UnpicklingError, EOFError, ValueError, UnicodeDecodeError) as exc:
        raise ReferringDataError(f"{path}: not a refer refs pickle ({exc})") from None
    if not isinstance(refs, list) or any(not isinstance(r, dict) for r in refs):
        raise ReferringDataError(f"{path}: expected a list of ref dicts")
    return refs


def rrsisd_refer_samples(root: PathLike, split: str = "test", refs_name: str = "refs(unc).p",
                         limit: Optional[int] = None) -> Iterator[RefSample]:
    """Samples of the RRSIS-D release as RMSIN ships it (refer format), without a jsonl step:
    root/rrsisd/instances.json (COCO annotations, RLE `segmentation`), root/rrsisd/refs(unc).p
    (refs: image_id, split, sentences, ann_id, ref_id, sent_ids) and images under
    root/images/rrsisd/JPEGImages. One sample per sentence of each ref of `split`."""
    root = Path(root)
    instances, refs_path = root / "rrsisd" / "instances.json", root / "rrsisd" / refs_name
    image_dir = root / "images" / "rrsisd" / "JPEGImages"
    for path in (instances, refs_path):
        if not path.is_file():
            raise ReferringDataError(f"file not found: {path} (the RRSIS-D release has "
                                     "rrsisd/instances.json and rrsisd/refs(unc).p)")
    if not image_dir.is_dir():
        raise ReferringDataError(f"image folder not found: {image_dir}")
    try:
        coco = json.loads(instances.read_text(encoding="utf-8"))
        annotations = {a["id"]: a for a in coco["annotations"]}
        file_names = {i["id"]: i["file_name"] for i in coco.get("images", [])}
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ReferringDataError(f"{instances}: not COCO instances JSON ({exc})") from None
    count = 0
    for ref in _load_refs(refs_path):
        if ref.get("split") != split:
            continue
        where = f"{refs_path} ref {ref.get('ref_id')}"
        annotation = annotations.get(ref.get("ann_id"))
        if annotation is None:
            raise ReferringDataError(f"{where}: annotation {ref.get('ann_id')} not in {instances}")
        try:
            mask = _segmentation(annotation.get("segmentation"))
            sentences = _sentences(ref.get("sentences", []))
        except ValueError as exc:
            raise ReferringDataError(f"{where}: {exc}") from None
        file_name = file_names.get(ref.get("image_id"), ref.get("file_name"))
        if not isinstance(file_name, str):
            raise ReferringDataError(f"{where}: no file name for image {ref.get('image_id')}")
        sent_ids = ref.get("sent_ids") if isinstance(ref.get("sent_ids"), list) else None
        meta = {"split": split, "category_id": ref.get("category_id"), "bbox": annotation.get("bbox"),
                "source": where}
        for k, sentence in enumerate(sentences):
            numbered = sent_ids[k] if sent_ids and len(sent_ids) == len(sentences) else k
            suffix = "" if len(sentences) == 1 else f"-{numbered}"
            yield RefSample(image_dir / file_name, sentence.strip(), mask, str(ref.get("image_id")),
                            f"{ref.get('ref_id')}{suffix}", dict(meta))
            count += 1
            if limit is not None and count >= limit:
                return
