"""Spatial re-ranking of mask proposals: position and size words of the sentence ("the leftmost of
three buildings", "the second pool from the right", "the road at the top") become [N] preferences
that multiply CLIP's text probabilities.

CLIP scores one crop at a time and cannot see where the crop sits or how it compares with the
others, so every cue that needs the *set* of proposals is resolved here. Superlatives and ordinals
count only the plausible targets (`candidates`): "the leftmost building" is the leftmost of the
building-like proposals, not the leftmost proposal. Near-duplicate proposals (SAM returns nested,
overlapping masks of one object) are grouped first, so a duplicate does not count as the "second"
building. numpy only, vectorised over proposals.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .parse import SpatialCue

OTHERS = 0.1  # preference of the proposals a superlative or ordinal does not pick
NEAR_SCALE = 0.1  # next_to: box gap (fraction of the image diagonal) at which the preference falls to 1/e
SAME_OBJECT_IOU = 0.5  # proposals with a larger box IoU count as one object (duplicates, nested masks)


def spatial_preferences(cues: Sequence[SpatialCue], boxes: np.ndarray, areas: np.ndarray, size: tuple[int, int],
                        candidates: np.ndarray | None = None,
                        landmark_scores: np.ndarray | None = None) -> np.ndarray:
    """[N] preferences in [0, 1] for N proposals (boxes [N, 4] as x0, y0, x1, y1 in pixels of an image of
    `size` = (height, width); areas [N] in pixels). `candidates` [N] bool: the proposals whose text score makes
    them plausible targets; superlatives and ordinals are counted among them only. `landmark_scores` [N]: how
    well each proposal matches a next_to cue's landmark (None: next_to is ignored). Cues multiply."""
    b = _boxes(boxes)
    n = len(b)
    a = np.asarray(areas, dtype=np.float64).reshape(-1)
    if len(a) != n:
        raise ValueError(f"{n} boxes but {len(a)} areas")
    if n == 0:
        return np.zeros(0)
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0).clip(min=0.0)
    cand = np.ones(n, dtype=bool) if candidates is None else np.asarray(candidates, dtype=bool).reshape(-1)
    if len(cand) != n:
        raise ValueError(f"{n} boxes but {len(cand)} candidate flags")
    if not cand.any():
        cand = np.ones(n, dtype=bool)
    h, w = max(float(size[0]), 1.0), max(float(size[1]), 1.0)
    layout = _Layout(b, a, cand, h, w)
    pref = np.ones(n)
    for cue in cues:
        pref = pref * _cue_preference(cue, layout, landmark_scores)
    return np.nan_to_num(pref, nan=0.0).clip(0.0, 1.0)


def rerank(text_probs: np.ndarray, cues: Sequence[SpatialCue], boxes: np.ndarray, areas: np.ndarray,
           size: tuple[int, int], landmark_scores: np.ndarray | None = None, candidate_ratio: float = 0.5,
           floor: float = 0.05) -> np.ndarray:
    """Final probabilities [N] (sum 1): text_probs times (floor + preference), renormalised. The floor keeps a
    strong text match alive when the cue is misread; with no cues text_probs come back unchanged.
    Candidates: text_probs >= candidate_ratio * max(text_probs)."""
    raw = np.asarray(text_probs, dtype=np.float64).reshape(-1)
    if not cues or raw.size == 0:
        return raw.copy()
    p = np.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0).clip(min=0.0)
    candidates = p >= candidate_ratio * p.max() if p.max() > 0 else np.ones(p.size, dtype=bool)
    pref = spatial_preferences(cues, boxes, areas, size, candidates=candidates, landmark_scores=landmark_scores)
    out = p * (floor + pref)
    total = out.sum()
    if total > 0 and np.isfinite(total):
        return out / total
    return p / p.sum() if p.sum() > 0 else np.full(p.size, 1.0 / p.size)


class _Layout:
    """Normalised centres, areas and the duplicate groups of the candidates, computed once for all cues."""

    def __init__(self, boxes: np.ndarray, areas: np.ndarray, cand: np.ndarray, h: float, w: float) -> None:
        self.boxes, self.areas, self.cand, self.h, self.w = boxes, areas, cand, h, w
        self.cx = ((boxes[:, 0] + boxes[:, 2]) / 2 / w).clip(0.0, 1.0)
        self.cy = ((boxes[:, 1] + boxes[:, 3]) / 2 / h).clip(0.0, 1.0)
        self.groups = _groups(boxes, cand)  # [N] group id for candidates, -1 for the others
        self.n_groups = int(self.groups.max()) + 1

    def group_mean(self, values: np.ndarray) -> np.ndarray:
        member = self.groups >= 0
        total = np.bincount(self.groups[member], weights=values[member], minlength=self.n_groups)
        return total / np.bincount(self.groups[member], minlength=self.n_groups)

    def group_max(self, values: np.ndarray) -> np.ndarray:
        out = np.full(self.n_groups, -np.inf)
        member = self.groups >= 0
        np.maximum.at(out, self.groups[member], values[member])
        return out

    def pick(self, group: int, graded: np.ndarray) -> np.ndarray:
        """1 for the members of `group`; the others keep a small share of their graded preference."""
        return np.where(self.groups == group, 1.0, OTHERS * graded.clip(0.0, 1.0))


def _cue_preference(cue: SpatialCue, lay: _Layout, landmark_scores: np.ndarray | None) -> np.ndarray:
    n = len(lay.cx)
    graded = {"left": 1.0 - lay.cx, "right": lay.cx, "top": 1.0 - lay.cy, "bottom": lay.cy}
    if cue.kind in graded:
        g = graded[cue.kind]
        return lay.pick(int(np.argmax(lay.group_mean(g))), g) if cue.superlative else g
    if cue.kind == "middle":
        g = 1.0 - np.hypot(lay.cx - 0.5, lay.cy - 0.5) / np.sqrt(0.5)
        if not cue.superlative:
            return g
        # "the middle one of three": the group nearest the candidates' centroid (the image centre breaks ties).
        gx, gy = lay.group_mean(lay.cx), lay.group_mean(lay.cy)
        d = np.hypot(gx - gx.mean(), gy - gy.mean()) + 1e-3 * np.hypot(gx - 0.5, gy - 0.5)
        return lay.pick(int(np.argmin(d)), g)
    if cue.kind in ("largest", "smallest"):
        big = lay.areas[lay.cand].max()
        g = lay.areas / big if big > 0 else np.ones(n)
        if cue.kind == "smallest":
            small = lay.areas[lay.cand].min()
            g = np.where(lay.areas > 0, small / np.maximum(lay.areas, 1e-9), 1.0)
        if not cue.superlative:
            return g.clip(0.0, 1.0)
        sizes = lay.group_max(lay.areas)
        return lay.pick(int(np.argmax(sizes) if cue.kind == "largest" else np.argmin(sizes)), g)
    if cue.kind == "ordinal":
        return _ordinal(cue, lay)
    if cue.kind == "next_to":
        return np.ones(n) if landmark_scores is None else _next_to(lay, landmark_scores)
    return np.ones(n)


def _ordinal(cue: SpatialCue, lay: _Layout) -> np.ndarray:
    """The N-th group counted from `origin` (clamped to the groups there are); -1 is the last one."""
    keys = {"left": lay.cx, "right": -lay.cx, "top": lay.cy, "bottom": -lay.cy,
            "largest": -lay.areas, "smallest": lay.areas}
    key = keys.get(cue.origin or "left", lay.cx)
    order = np.argsort(lay.group_mean(key), kind="stable")  # group ids, from the origin on
    m = len(order)
    k = cue.ordinal - 1 if cue.ordinal > 0 else m + cue.ordinal
    k = int(np.clip(k, 0, m - 1))
    rank = np.empty(m, dtype=np.int64)
    rank[order] = np.arange(m)
    # The others: more the nearer their rank, so a near miss still beats the far end of the row.
    closeness = np.where(lay.groups >= 0, 1.0 - np.abs(rank[lay.groups.clip(min=0)] - k) / max(m, 1), 0.0)
    return lay.pick(int(order[k]), closeness)


def _next_to(lay: _Layout, landmark_scores: np.ndarray) -> np.ndarray:
    """Near the proposal that best matches the landmark: box gap over the image diagonal; the landmark itself
    and its duplicates are not the target."""
    s = np.nan_to_num(np.asarray(landmark_scores, dtype=np.float64).reshape(-1), nan=-np.inf)
    if len(s) != len(lay.cx):
        raise ValueError(f"{len(lay.cx)} boxes but {len(s)} landmark scores")
    ref = lay.boxes[int(np.argmax(s))]
    b = lay.boxes
    gap_x = np.maximum(0.0, np.maximum(b[:, 0], ref[0]) - np.minimum(b[:, 2], ref[2]))
    gap_y = np.maximum(0.0, np.maximum(b[:, 1], ref[1]) - np.minimum(b[:, 3], ref[3]))
    gap = np.hypot(gap_x, gap_y) / np.hypot(lay.h, lay.w)
    pref = np.exp(-gap / NEAR_SCALE)
    same = _iou(b, ref[None])[:, 0] >= SAME_OBJECT_IOU  # includes the landmark proposal itself
    same[int(np.argmax(s))] = True
    return np.where(same, OTHERS * pref, pref)


def _boxes(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        return np.zeros((0, 4))
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be [N, 4] (x0, y0, x1, y1), got shape {b.shape}")
    b = np.nan_to_num(b, nan=0.0, posinf=0.0, neginf=0.0)
    return np.stack([np.minimum(b[:, 0], b[:, 2]), np.minimum(b[:, 1], b[:, 3]),
                     np.maximum(b[:, 0], b[:, 2]), np.maximum(b[:, 1], b[:, 3])], axis=1)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[Na, Nb] box IoU."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = (x1 - x0).clip(min=0) * (y1 - y0).clip(min=0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _groups(boxes: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Connected components of the candidates under box IoU >= SAME_OBJECT_IOU, numbered 0.. in proposal order;
    -1 for non-candidates. Label propagation: each round takes the smallest label among neighbours."""
    idx = np.flatnonzero(cand)
    adj = _iou(boxes[idx], boxes[idx]) >= SAME_OBJECT_IOU
    np.fill_diagonal(adj, True)
    label = np.arange(len(idx))
    for _ in range(len(idx)):
        new = np.where(adj, label[None, :], len(idx)).min(axis=1)
        if np.array_equal(new, label):
            break
        label = new
    out = np.full(len(boxes), -1, dtype=np.int64)
    out[idx] = np.unique(label, return_inverse=True)[1].reshape(-1)
    return out
