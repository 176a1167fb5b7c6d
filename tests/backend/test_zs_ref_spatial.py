"""Spatial re-ranking of the zero-shot referring model (models/zs_ref/spatial.py) on synthetic layouts:
sentences are parsed, then the proposals' text probabilities are re-ranked by the sentence's cues."""

from __future__ import annotations

import numpy as np
import pytest

from rsseg.models.zs_ref.parse import SpatialCue, parse_sentence
from rsseg.models.zs_ref.spatial import rerank, spatial_preferences

SIZE = (300, 600)  # height, width


def layout(*boxes: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return b, (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


# Three equal buildings in a row across the middle of the image.
ROW = layout((40, 130, 100, 170), (270, 130, 330, 170), (500, 130, 560, 170))
EQUAL = np.full(3, 1 / 3)


def pick(sentence: str, boxes: np.ndarray, areas: np.ndarray, probs: np.ndarray,
         landmark_scores: np.ndarray | None = None) -> int:
    out = rerank(probs, parse_sentence(sentence).cues, boxes, areas, SIZE, landmark_scores=landmark_scores)
    assert out.shape == probs.shape and np.isfinite(out).all()
    assert out.sum() == pytest.approx(1.0)
    return int(np.argmax(out))


@pytest.mark.parametrize("sentence, expected", [
    ("the leftmost of three buildings", 0),
    ("the rightmost of three buildings", 2),
    ("the second building from the left", 1),
    ("the second building from the right", 1),
    ("the third building from the right", 0),
    ("the last building on the right", 2),
    ("the building on the far left", 0),
    ("the building in the middle", 1),
    ("the left one of the three buildings", 0),
    ("the middle one of the three buildings", 1),
])
def test_row_of_three(sentence, expected):
    assert pick(sentence, *ROW, EQUAL) == expected


def test_largest_and_smallest():
    boxes, areas = layout((40, 130, 100, 170), (270, 100, 390, 200), (500, 140, 520, 160))
    assert pick("the largest building", boxes, areas, EQUAL) == 1
    assert pick("the smallest building", boxes, areas, EQUAL) == 2
    assert pick("the second largest building", boxes, areas, EQUAL) == 0


def test_top_and_bottom():
    boxes, areas = layout((270, 10, 330, 50), (270, 130, 330, 170), (270, 250, 330, 290))
    assert pick("the building at the top", boxes, areas, EQUAL) == 0
    assert pick("the building at the bottom", boxes, areas, EQUAL) == 2
    assert pick("the building in the middle", boxes, areas, EQUAL) == 1


def test_two_cues_multiply():
    """A 2 x 2 grid: only the top-left one is both top and left."""
    boxes, areas = layout((50, 30, 110, 80), (490, 30, 550, 80), (50, 220, 110, 270), (490, 220, 550, 270))
    probs = np.full(4, 0.25)
    assert pick("the building in the top left corner", boxes, areas, probs) == 0
    assert pick("the building at the bottom right", boxes, areas, probs) == 3
    assert pick("the upper right building", boxes, areas, probs) == 1


def test_a_non_candidate_is_never_picked_by_a_superlative():
    """The far-left proposal is not building-like (low text probability): "leftmost" is the leftmost building."""
    boxes, areas = layout((5, 130, 35, 170), *ROW[0][[1, 2]])
    probs = np.array([0.02, 0.49, 0.49])
    assert pick("the leftmost of three buildings", boxes, areas, probs) == 1
    assert pick("the first building from the left", boxes, areas, probs) == 1
    pref = spatial_preferences(parse_sentence("the leftmost building").cues, boxes, areas, SIZE,
                               candidates=probs >= 0.5 * probs.max())
    assert pref[1] == 1.0 and pref[0] < 0.2


def test_a_graded_cue_prefers_but_does_not_override_the_text():
    """"on the left" is a preference: a much better text match on the right still wins."""
    probs = np.array([0.1, 0.1, 0.8])
    assert pick("the building on the left", *ROW, probs) == 2
    pref = spatial_preferences([SpatialCue("left")], *ROW, SIZE)
    assert pref[0] > pref[1] > pref[2]


def test_duplicate_proposals_count_as_one_object():
    """SAM often returns two masks of one building: the duplicate is not "the second from the left"."""
    boxes, areas = layout((40, 130, 100, 170), (42, 128, 102, 172), *ROW[0][[1, 2]])
    probs = np.full(4, 0.25)
    out = rerank(probs, parse_sentence("the second building from the left").cues, boxes, areas, SIZE)
    assert int(np.argmax(out)) == 2


def test_no_cues_leave_the_probabilities_unchanged():
    probs = np.array([0.2, 0.5, 0.3])
    cues = parse_sentence("the white building").cues
    assert cues == ()
    out = rerank(probs, cues, *ROW, SIZE)
    np.testing.assert_array_equal(out, probs)
    assert out is not probs


def test_next_to_picks_the_proposal_beside_the_landmark():
    # 0: a parking lot, 1: a building touching it, 2 and 3: buildings far away.
    boxes, areas = layout((200, 100, 320, 200), (322, 120, 372, 180), (20, 20, 70, 70), (520, 230, 580, 290))
    probs = np.array([0.1, 0.3, 0.3, 0.3])
    landmark = np.array([0.9, 0.05, 0.03, 0.02])  # how much each proposal looks like "the parking lot"
    sentence = "the building next to the parking lot"
    assert parse_sentence(sentence).cues == (SpatialCue("next_to", landmark="parking lot"),)
    assert pick(sentence, boxes, areas, probs, landmark_scores=landmark) == 1
    # The landmark itself is not the target, even with the best text probability.
    assert pick(sentence, boxes, areas, np.array([0.4, 0.2, 0.2, 0.2]), landmark_scores=landmark) == 1
    # Without landmark scores next_to is ignored.
    out = rerank(probs, parse_sentence(sentence).cues, boxes, areas, SIZE)
    np.testing.assert_allclose(out, probs / probs.sum())


def test_preferences_are_in_unit_range():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 500, size=(30, 2))
    wh = rng.uniform(5, 100, size=(30, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    areas = wh.prod(axis=1)
    cues = [SpatialCue(k, superlative=s) for k in ("left", "right", "top", "bottom", "middle", "largest", "smallest")
            for s in (False, True)]
    cues += [SpatialCue("ordinal", ordinal=o, origin=g) for o in (1, 2, 5, 99, -1, -3)
             for g in ("left", "right", "top", "bottom", "largest", "smallest", "")]
    cues += [SpatialCue("next_to", landmark="road")]
    for cue in cues:
        pref = spatial_preferences([cue], boxes, areas, SIZE, candidates=rng.random(30) < 0.5,
                                   landmark_scores=rng.random(30))
        assert pref.shape == (30,) and np.isfinite(pref).all()
        assert pref.min() >= 0.0 and pref.max() <= 1.0, cue
        if cue.superlative or cue.kind == "ordinal":
            assert pref.max() == 1.0, cue  # somebody is picked


@pytest.mark.parametrize("sentence", ["the leftmost building", "the second building from the right",
                                      "the building in the middle", "the largest building",
                                      "the building next to the road"])
def test_one_and_zero_proposals(sentence):
    cues = parse_sentence(sentence).cues
    one = rerank(np.array([1.0]), cues, np.array([[10, 10, 50, 50]]), np.array([1600.0]), SIZE,
                 landmark_scores=np.array([0.7]))
    assert one.shape == (1,) and np.isfinite(one).all() and one.sum() == pytest.approx(1.0)
    none = rerank(np.zeros(0), cues, np.zeros((0, 4)), np.zeros(0), SIZE, landmark_scores=np.zeros(0))
    assert none.shape == (0,)
    assert spatial_preferences(cues, np.zeros((0, 4)), np.zeros(0), SIZE).shape == (0,)


def test_degenerate_inputs_stay_finite():
    """Zero-area boxes, all-zero probabilities, boxes outside the image."""
    boxes = np.array([[10, 10, 10, 10], [-50, -50, 5000, 5000], [30, 40, 20, 35]], dtype=float)
    areas = np.array([0.0, 1e7, 50.0])
    for sentence in ("the leftmost building", "the smallest building", "the second largest building",
                     "the building in the middle"):
        out = rerank(np.zeros(3), parse_sentence(sentence).cues, boxes, areas, SIZE)
        assert np.isfinite(out).all() and out.sum() == pytest.approx(1.0)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError):
        spatial_preferences([SpatialCue("left")], np.zeros((3, 4)), np.zeros(2), SIZE)
    with pytest.raises(ValueError):
        spatial_preferences([SpatialCue("left")], np.zeros((3, 3)), np.zeros(3), SIZE)
