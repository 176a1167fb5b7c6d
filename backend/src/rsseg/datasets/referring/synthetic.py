"""A synthetic referring dataset: coloured shapes on a textured ground, with sentences that pick
out exactly one of them. numpy only, deterministic for a seed.

It exists so a referring model's training loop can be shown to *use the text*: an object is only
recoverable from the sentence, and `text_blind` gives the same data with one constant sentence for
the baseline that must do worse.

Every sentence comes from a small grammar (`Query`) that `parse` reads back and `resolve`
evaluates on the scene's objects; a sentence is emitted only when `resolve` finds exactly one
object, its target. Object centres differ by at least `min_sep` pixels along both axes, so
"left of", "above" and "leftmost" never hinge on a near tie.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from .sample import RefSample, write_png

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 190, 60), "blue": (40, 80, 230),
    "yellow": (235, 215, 40), "white": (245, 245, 245),
}
SHAPES = ("square", "circle", "triangle")
RELATIONS = ("left of", "right of", "above", "below")
EXTREMES = ("leftmost", "rightmost", "topmost", "bottommost")
RADIUS = (1 / 16, 1 / 9)  # object radii, as fractions of the image side


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    cx: float  # centre, pixels; x to the right, y down
    cy: float
    radius: float  # half the side of a square, the radius of a circle, half a triangle's base


@dataclass(frozen=True)
class Desc:
    """An object description: colour and/or shape (both None: "object")."""

    colour: Optional[str] = None
    shape: Optional[str] = None

    def matches(self, obj: SceneObject) -> bool:
        return (self.colour is None or obj.colour == self.colour) and (self.shape is None or obj.shape == self.shape)

    def text(self, anchor: bool = False) -> str:
        if self.shape is None:
            return f"{self.colour} {'one' if anchor else 'object'}" if self.colour else "object"
        return f"{self.colour} {self.shape}" if self.colour else self.shape


@dataclass(frozen=True)
class Query:
    """"the [extreme] <referent> [<relation> the <anchor>]"."""

    referent: Desc
    extreme: Optional[str] = None
    relation: Optional[str] = None
    anchor: Optional[Desc] = None

    @property
    def kind(self) -> str:
        if self.extreme:
            return "extreme"
        if self.relation:
            return "relation"
        r = self.referent
        return "colour+shape" if r.colour and r.shape else ("colour" if r.colour else "shape")

    def text(self) -> str:
        words = ["the"] + ([self.extreme] if self.extreme else []) + [self.referent.text()]
        if self.relation and self.anchor is not None:
            words += [self.relation, "the", self.anchor.text(anchor=True)]
        return " ".join(words)


_DESC = rf"(?:({'|'.join(COLOURS)}) )?({'|'.join(SHAPES)}|object|one)"
_GRAMMAR = re.compile(rf"^the (?:({'|'.join(EXTREMES)}) )?{_DESC}(?: ({'|'.join(RELATIONS)}) the {_DESC})?$")


def parse(sentence: str) -> Query:
    """The Query a generated sentence says (ValueError for text outside the grammar)."""
    found = _GRAMMAR.match(sentence.strip().lower())
    if not found:
        raise ValueError(f"not a synthetic referring sentence: {sentence!r}")
    extreme, colour, shape, relation, a_colour, a_shape = found.groups()

    def desc(c: Optional[str], s: str) -> Desc:
        return Desc(c, None if s in ("object", "one") else s)

    return Query(desc(colour, shape), extreme, relation, desc(a_colour, a_shape) if relation else None)


def _related(obj: SceneObject, anchor: SceneObject, relation: str) -> bool:
    return {"left of": obj.cx < anchor.cx, "right of": obj.cx > anchor.cx,
            "above": obj.cy < anchor.cy, "below": obj.cy > anchor.cy}[relation]


def resolve(query: Query, objects: Sequence[SceneObject]) -> list[int]:
    """Indices of the objects the query fits; a well-formed sentence gives exactly one."""
    candidates = [i for i, o in enumerate(objects) if query.referent.matches(o)]
    if query.relation:
        anchors = [i for i, o in enumerate(objects) if query.anchor is not None and query.anchor.matches(o)]
        if len(anchors) != 1:
            return []  # an ambiguous (or missing) anchor refers to nothing
        a = anchors[0]
        candidates = [i for i in candidates if i != a and _related(objects[i], objects[a], query.relation)]
    if query.extreme and candidates:
        key = {"leftmost": lambda i: objects[i].cx, "rightmost": lambda i: -objects[i].cx,
               "topmost": lambda i: objects[i].cy, "bottommost": lambda i: -objects[i].cy}[query.extreme]
        best = min(key(i) for i in candidates)
        candidates = [i for i in candidates if key(i) == best]
    return candidates


def object_mask(obj: SceneObject, size: int) -> np.ndarray:
    """Pixels (centres at +0.5) inside the shape."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    dx, dy = x - obj.cx, y - obj.cy
    r = obj.radius
    if obj.shape == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if obj.shape == "circle":
        return dx * dx + dy * dy <= r * r
    # upward triangle: apex at (cx, cy - r), base from cx - r to cx + r at cy + r
    inside_y = (dy >= -r) & (dy <= r)
    half_width = r * (dy + r) / (2 * r)
    return inside_y & (np.abs(dx) <= half_width)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Muted earth tones with low-frequency waves and pixel noise: texture but no object colours."""
    y, x = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(70, 130, 3)
    field = np.zeros((size, size))
    for _ in range(3):
        fx, fy, phase = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 2 * np.pi)
        field += np.sin(2 * np.pi * (fx * x + fy * y) + phase)
    tint = np.array([1.0, 0.9, 0.7])
    image = base + 10 * field[..., None] * tint + rng.normal(0, 6, (size, size, 3))
    return np.clip(image, 0, 255)


@dataclass
class Scene:
    scene_id: str
    image: np.ndarray  # HxWx3 uint8
    objects: list[SceneObject]
    masks: list[np.ndarray]  # one HxW bool per object


def _place(rng: np.random.Generator, count: int, size: int, min_sep: float,
           radius: tuple[float, float] = RADIUS) -> Optional[list[tuple[float, float, float]]]:
    placed: list[tuple[float, float, float]] = []
    r_lo, r_hi = size * radius[0], size * radius[1]
    for _ in range(count):
        for _attempt in range(200):
            r = float(rng.uniform(r_lo, r_hi))
            cx, cy = (float(v) for v in rng.uniform(r + 2, size - r - 2, 2))
            ok = all(abs(cx - px) >= min_sep and abs(cy - py) >= min_sep
                     and np.hypot(cx - px, cy - py) >= 1.42 * (r + pr) + 3 for px, py, pr in placed)
            if ok:
                placed.append((cx, cy, r))
                break
        else:
            return None
    return placed


def make_scene(rng: np.random.Generator, scene_id: str, size: int = 128, objects: tuple[int, int] = (3, 5),
               min_sep: float = 6.0, radius: tuple[float, float] = RADIUS) -> Scene:
    """One scene: 3-5 non-overlapping shapes of radius `radius` (fractions of the image side);
    colours and shapes may repeat (so that some simple descriptions are ambiguous and the harder
    sentence kinds are needed)."""
    while True:
        count = int(rng.integers(objects[0], objects[1] + 1))
        placed = _place(rng, count, size, min_sep, radius)
        if placed is not None:
            break
    image = _background(rng, size)
    colour_names, scene_objects, masks = list(COLOURS), [], []
    for cx, cy, r in placed:
        obj = SceneObject(colour_names[int(rng.integers(len(colour_names)))], SHAPES[int(rng.integers(len(SHAPES)))],
                          cx, cy, r)
        mask = object_mask(obj, size)
        shade = np.asarray(COLOURS[obj.colour], np.float64) + rng.normal(0, 4, 3)
        image[mask] = shade + rng.normal(0, 4, (int(mask.sum()), 3))
        scene_objects.append(obj)
        masks.append(mask)
    return Scene(scene_id, np.clip(image, 0, 255).astype(np.uint8), scene_objects, masks)


def candidate_queries(objects: Sequence[SceneObject]) -> list[Query]:
    """Every query of the grammar that picks out exactly one object of the scene."""
    colours = sorted({o.colour for o in objects})
    shapes = sorted({o.shape for o in objects})
    descs = ([Desc(c, None) for c in colours] + [Desc(None, s) for s in shapes]
             + [Desc(c, s) for c in colours for s in shapes])
    queries = [Query(d) for d in descs]
    for extreme in EXTREMES:
        queries.append(Query(Desc(), extreme))
        queries += [Query(Desc(None, s), extreme) for s in shapes
                    if sum(o.shape == s for o in objects) >= 2]
    for relation in RELATIONS:
        for anchor in descs:
            for referent in [Desc(), *(Desc(None, s) for s in shapes)]:
                queries.append(Query(referent, None, relation, anchor))
    return [q for q in queries if len(resolve(q, objects)) == 1]


def scene_samples(scene: Scene, rng: np.random.Generator, per_scene: int = 4) -> list[RefSample]:
    """Up to `per_scene` unambiguous sentences, spread over sentence kinds and target objects."""
    pool = candidate_queries(scene.objects)
    order = rng.permutation(len(pool))
    chosen: list[Query] = []
    kinds_used: set[str] = set()
    targets_used: set[int] = set()
    for strict in (True, False):  # first new kinds and new targets, then anything left
        for i in order:
            query = pool[int(i)]
            target = resolve(query, scene.objects)[0]
            if len(chosen) >= per_scene or query in chosen:
                continue
            if strict and (query.kind in kinds_used or target in targets_used):
                continue
            chosen.append(query)
            kinds_used.add(query.kind)
            targets_used.add(target)
    samples = []
    for k, query in enumerate(chosen):
        target = resolve(query, scene.objects)[0]
        samples.append(RefSample(scene.image, query.text(), scene.masks[target], scene.scene_id,
                                 f"{scene.scene_id}_r{k}", {"target": target, "kind": query.kind}))
    return samples


@dataclass
class SyntheticDataset:
    scenes: list[Scene]
    samples: list[RefSample]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> RefSample:
        return self.samples[index]

    def scene(self, sample: RefSample) -> Scene:
        return self.scenes[int(sample.image_id.rsplit("_", 1)[1])]


def synthetic_dataset(scenes: int = 64, seed: int = 0, size: int = 128, per_scene: int = 4,
                      objects: tuple[int, int] = (3, 5), radius: tuple[float, float] = RADIUS) -> SyntheticDataset:
    """`scenes` scenes and their samples, identical for the same arguments. Scene i draws from its
    own generator seeded (seed, i), so it is the same whatever the number of scenes."""
    made, samples = [], []
    for i in range(scenes):
        rng = np.random.default_rng([seed, i])
        scene = make_scene(rng, f"scene_{i:05d}", size, objects, radius=radius)
        made.append(scene)
        samples += scene_samples(scene, rng, per_scene)
    return SyntheticDataset(made, samples)


def all_objects_miou(dataset: SyntheticDataset) -> float:
    """The mIoU of predicting every object of the scene for each sentence: what a perfect object
    segmenter scores without the language (a text-blind model's ceiling, guesses aside)."""
    ious = []
    for sample in dataset.samples:
        union = np.logical_or.reduce(dataset.scene(sample).masks)
        ious.append(float(np.asarray(sample.mask, bool).sum()) / float(union.sum()))
    return float(np.mean(ious)) if ious else float("nan")


def text_blind(samples: Sequence[RefSample], sentence: str = "the object") -> list[RefSample]:
    """The same samples with every sentence replaced by one constant (the no-language baseline)."""
    return [replace(s, sentence=sentence, meta={**s.meta, "original_sentence": s.sentence}) for s in samples]


def write_folder(samples: Sequence[RefSample], root: Union[str, Path]) -> Path:
    """Write samples in the plain folder layout (images/<image_id>.png, masks/<sample_id>.png as
    0/255, sentences.jsonl with image, mask, id, sentence) for `folder_samples` and the CLI."""
    root = Path(root)
    written: set[str] = set()
    lines = []
    for sample in samples:
        if sample.image_id not in written:
            write_png(root / "images" / f"{sample.image_id}.png", sample.pixels())
            written.add(sample.image_id)
        write_png(root / "masks" / f"{sample.sample_id}.png", sample.mask.astype(np.uint8) * 255)
        lines.append(json.dumps({"image": sample.image_id, "mask": sample.sample_id, "id": sample.sample_id,
                                 "sentence": sample.sentence}))
    (root / "sentences.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
