"""The referring-sentence parser of the zero-shot model (models/zs_ref/parse.py): a table of hand-written
remote-sensing sentences (RRSIS-D / RefSegRS style) with the expected target and cues, and odd input."""

from __future__ import annotations

import random

import pytest

from rsseg.models.zs_ref.parse import CUE_KINDS, ParsedSentence, SpatialCue, parse_sentence, singular


def pos(kind: str, superlative: bool = False) -> SpatialCue:
    return SpatialCue(kind, superlative=superlative)


def nth(ordinal: int, origin: str) -> SpatialCue:
    return SpatialCue("ordinal", ordinal=ordinal, origin=origin)


def near(landmark: str) -> SpatialCue:
    return SpatialCue("next_to", landmark=landmark)


# sentence, head, noun phrase, colours, sizes, cues, count
TABLE: list[tuple[str, str, str, tuple[str, ...], tuple[str, ...], tuple[SpatialCue, ...], int]] = [
    # the brief's own examples
    ("the large white building next to the parking lot", "building", "large white building", ("white",),
     ("large",), (near("parking lot"),), 0),
    ("the leftmost of three buildings", "building", "building", (), (), (pos("left", True),), 3),
    ("the second pool from the right", "pool", "pool", (), (), (nth(2, "right"),), 0),
    ("the road at the top", "road", "road", (), (), (pos("top"),), 0),
    ("the left one of the two tanks", "tank", "tank", (), (), (pos("left", True),), 2),
    # superlative positions, spelled every way
    ("the rightmost of three buildings", "building", "building", (), (), (pos("right", True),), 3),
    ("The TOP-MOST ship!!!", "ship", "ship", (), (), (pos("top", True),), 0),
    ("the right-most dam", "dam", "dam", (), (), (pos("right", True),), 0),
    ("the ship on the far left", "ship", "ship", (), (), (pos("left", True),), 0),
    ("The vehicle furthest to the right.", "vehicle", "vehicle", (), (), (pos("right", True),), 0),
    ("the chimney farthest right", "chimney", "chimney", (), (), (pos("right", True),), 0),
    ("the northernmost harbour", "harbour", "harbour", (), (), (pos("top", True),), 0),
    ("the leftmost white building", "building", "white building", ("white",), (), (pos("left", True),), 0),
    ("the leftmost building of the three", "building", "building", (), (), (pos("left", True),), 3),
    # size superlatives
    ("the largest building", "building", "building", (), (), (pos("largest", True),), 0),
    ("the biggest storage tank", "storage tank", "storage tank", (), (), (pos("largest", True),), 0),
    ("the smallest of the white ships", "ship", "white ship", ("white",), (), (pos("smallest", True),), 0),
    ("the bigger one of the two ships", "ship", "ship", (), (), (pos("largest", True),), 2),
    # graded positions, two at once, British / American spellings
    ("the building in the middle", "building", "building", (), (), (pos("middle"),), 0),
    ("the building at the top", "building", "building", (), (), (pos("top"),), 0),
    ("the bridge in the center of the image", "bridge", "bridge", (), (), (pos("middle"),), 0),
    ("the grey baseball diamond in the centre", "baseball diamond", "grey baseball diamond", ("grey",), (),
     (pos("middle"),), 0),
    ("THE GRAY PLANE AT THE BOTTOM.", "plane", "gray plane", ("gray",), (), (pos("bottom"),), 0),
    ("the building on the top left", "building", "building", (), (), (pos("top"), pos("left")), 0),
    ("the storage tanks in the upper-left corner of the image", "storage tank", "storage tanks", (), (),
     (pos("top"), pos("left")), 0),
    ("the ship located in the bottom-left corner", "ship", "ship", (), (), (pos("bottom"), pos("left")), 0),
    ("the airplane at the far top right of the picture", "airplane", "airplane", (), (),
     (pos("top", True), pos("right", True)), 0),
    ("the golf field in the north", "golf field", "golf field", (), (), (pos("top"),), 0),
    ("the central overpass", "overpass", "overpass", (), (), (pos("middle"),), 0),
    ("the tank above", "tank", "tank", (), (), (pos("top"),), 0),
    ("on the left is a white building", "building", "white building", ("white",), (), (pos("left"),), 0),
    ("expressway toll station on the right", "expressway toll station", "expressway toll station", (), (),
     (pos("right"),), 0),
    # ordinals with an origin
    ("the second building from the left", "building", "building", (), (), (nth(2, "left"),), 0),
    ("the third tank counting from the bottom", "tank", "tank", (), (), (nth(3, "bottom"),), 0),
    ("the 2nd ship from the bottom", "ship", "ship", (), (), (nth(2, "bottom"),), 0),
    ("the last ship on the right", "ship", "ship", (), (), (nth(1, "right"),), 0),
    ("the second to last car from the left", "car", "car", (), (), (nth(-2, "left"),), 0),
    ("the second largest building", "building", "building", (), (), (nth(2, "largest"),), 0),
    ("the second from the left of three buildings", "building", "building", (), (), (nth(2, "left"),), 3),
    # next to a landmark, relations to a landmark
    ("there is a swimming pool near the house", "swimming pool", "swimming pool", (), (), (near("house"),), 0),
    ("a dark green tree right next to the road", "tree", "dark green tree", ("dark", "green"), (),
     (near("road"),), 0),
    ("a small boat beside the pier", "boat", "small boat", (), ("small",), (near("pier"),), 0),
    ("the car in front of the gray house", "car", "car", (), (), (near("gray house"),), 0),
    ("the vehicle in the middle of the road", "vehicle", "vehicle", (), (), (near("road"),), 0),
    ("the green field surrounded by trees", "field", "green field", ("green",), (), (near("tree"),), 0),
    ("the windmill closest to the two large storage tanks", "windmill", "windmill", (), (),
     (near("large storage tank"),), 0),
    ("in the parking lot, the white car on the left", "car", "white car", ("white",), (),
     (near("parking lot"), pos("left")), 0),
    # "one" heads, plurals, no spatial word at all, colours after the head
    ("The one in the middle", "one", "one", (), (), (pos("middle"),), 0),
    ("the one on the left of the two tanks", "tank", "tank", (), (), (pos("left", True),), 2),
    ("the black vehicles", "vehicle", "black vehicles", ("black",), (), (), 0),
    ("soccer ball fields", "soccer ball field", "soccer ball fields", (), (), (), 0),
    ("the red and white building", "building", "red and white building", ("red", "white"), (), (), 0),
    ("Find the large, white ship.", "ship", "large white ship", ("white",), ("large",), (), 0),
    ("a ground track field", "ground track field", "ground track field", (), (), (), 0),
    ("the building with a red roof on the left", "building", "building", ("red",), (), (pos("left"),), 0),
    ("the vehicle that is white and large on the far right", "vehicle", "vehicle", ("white",), ("large",),
     (pos("right", True),), 0),
    ("the ship docked at the harbor", "ship", "ship", (), (), (near("harbor"),), 0),
    ("the road running north to south", "road", "road", (), (), (), 0),
    ("a blorf plorf on the left", "plorf", "blorf plorf", (), (), (pos("left"),), 0),
]


def test_the_table_is_large_enough():
    assert len(TABLE) >= 40
    assert len({row[0] for row in TABLE}) == len(TABLE)  # no sentence twice


@pytest.mark.parametrize("sentence, head, noun_phrase, colours, sizes, cues, count", TABLE,
                         ids=[row[0][:48] for row in TABLE])
def test_sentence_table(sentence, head, noun_phrase, colours, sizes, cues, count):
    parsed = parse_sentence(sentence)
    assert parsed.head == head
    assert parsed.noun_phrase == noun_phrase
    assert parsed.colours == colours
    assert parsed.sizes == sizes
    assert parsed.cues == cues
    assert parsed.count == count
    assert parsed.sentence == " ".join(sentence.split())


def test_sentence_keeps_the_input_with_whitespace_collapsed():
    assert parse_sentence("  the  Red\tcar \n on the left ").sentence == "the Red car on the left"


def test_cue_kinds_are_from_the_contract():
    for row in TABLE:
        for cue in parse_sentence(row[0]).cues:
            assert cue.kind in CUE_KINDS
            if cue.kind == "ordinal":
                assert cue.ordinal != 0 and cue.origin
            if cue.kind == "next_to":
                assert cue.landmark


@pytest.mark.parametrize("plural, single", [
    ("buildings", "building"), ("factories", "factory"), ("churches", "church"), ("boxes", "box"),
    ("buses", "bus"), ("overpasses", "overpass"), ("houses", "house"), ("tennis courts", "tennis court"),
    ("grass", "grass"), ("tennis", "tennis"), ("chimneys", "chimney"), ("ferries", "ferry"), ("bus", "bus"),
])
def test_singular(plural, single):
    assert singular(plural) == single


def test_a_sentence_without_a_known_noun_still_has_a_noun_phrase():
    parsed = parse_sentence("the zorbly thing-a-ma-jig near the quux")
    assert parsed.noun_phrase and parsed.head
    assert parsed.cues == (near("quux"),)


@pytest.mark.parametrize("text", [
    "", " ", "!!!", ".,;:?!()", "the", "the the the", "of of of", "left", "1st", "-most", "'s", "\u00e9\u00e9",
    "\u6f22\u5b57\u306e\u5efa\u7269", "\U0001F600 the car \U0001F697", "the 10000000000th building",
    "from from the the left left of of", "second last last last", "next to next to next to",
    "a" * 1000, ("the leftmost of three buildings " * 40)[:1000], "\x00\x01\x02 building \u200b",
])
def test_never_raises_on_odd_input(text):
    parsed = parse_sentence(text)
    assert isinstance(parsed, ParsedSentence)
    assert all(cue.kind in CUE_KINDS for cue in parsed.cues)
    assert parsed.sentence == " ".join(text.split())


def test_empty_input_has_nothing():
    parsed = parse_sentence("")
    assert (parsed.noun_phrase, parsed.head, parsed.colours, parsed.sizes, parsed.cues, parsed.count) == (
        "", "", (), (), (), 0)


def test_never_raises_on_random_word_salad():
    """Random mixes of the parser's own trigger words are where rule interactions go wrong."""
    vocabulary = ("the of from to next near left right top upper bottom middle centre leftmost second last one "
                  "largest far most furthest building buildings parking lot three two , . and is which with red "
                  "large above below image side of").split()
    rng = random.Random(0)
    for _ in range(2000):
        text = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(0, 14)))
        parsed = parse_sentence(text)
        assert all(cue.kind in CUE_KINDS for cue in parsed.cues), text
        assert len(parsed.cues) == len(set(parsed.cues)), text


def test_non_string_input_does_not_raise():
    assert parse_sentence(None).noun_phrase == ""  # type: ignore[arg-type]
    assert parse_sentence(12).cues == ()  # type: ignore[arg-type]
