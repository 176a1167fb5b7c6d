"""A small rule-based parser of remote-sensing referring sentences (RRSIS-D / RefSegRS style).

Pure Python on purpose: those sentences are short templates ("the <adjectives> <noun> <position
phrase>"), a few word lists cover them, and a dependency parser (spaCy, NLTK) would be a heavy new
dependency for the plugin. The parser finds the target's noun phrase (what CLIP's local text
scores) and the spatial cues (what `spatial.rerank` scores); it never raises, and a sentence it
does not understand still yields its first noun-like words.

The sentence is cut into *spans*: runs of words between prepositions, relative words, verbs and
punctuation ("the large white building | next to | the parking lot"). The target is the first span
with a noun, except that a span introduced by a relation word is a landmark ("next to the parking
lot") and "the leftmost | of | three buildings" takes its noun from the partitive span.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

CUE_KINDS = ("left", "right", "top", "bottom", "middle", "largest", "smallest", "next_to", "ordinal")
ORIGINS = ("left", "right", "top", "bottom", "largest", "smallest")


@dataclass(frozen=True)
class SpatialCue:
    """One spatial constraint on the target; `spatial.spatial_preferences` turns it into scores."""

    kind: str  # one of CUE_KINDS
    superlative: bool = False  # True: pick the extreme one ("leftmost"); False: a graded preference ("on the left")
    ordinal: int = 0  # kind "ordinal": 1 = first ... counted from `origin`; -1 = last, -2 = second to last
    origin: str = ""  # kind "ordinal": one of ORIGINS ("largest": "the second largest"); "" = not stated (left)
    landmark: str = ""  # kind "next_to": the other object's noun phrase ("parking lot")


@dataclass(frozen=True)
class ParsedSentence:
    """What the zero-shot model needs from a referring sentence."""

    sentence: str  # whitespace-collapsed input
    noun_phrase: str  # the target's noun phrase with its adjectives ("large white building"), lower case
    head: str  # the head noun, singular ("building"); "" when the sentence names no object
    colours: tuple[str, ...]  # colour words on the target, including "with a red roof" / "which is white"
    sizes: tuple[str, ...]  # size words on the target ("large", "small"); superlatives are cues instead
    cues: tuple[SpatialCue, ...]
    count: int = 0  # "the leftmost of three buildings" -> 3 (0 when not stated)


# --- word lists --------------------------------------------------------------------------------

_DETERMINERS = frozenset(
    "the a an this that these those its their his her some any all each every another".split())
_POSITION = {
    "left": "left", "west": "left", "western": "left",
    "right": "right", "east": "right", "eastern": "right",
    "top": "top", "upper": "top", "north": "top", "northern": "top",
    "bottom": "bottom", "lower": "bottom", "south": "bottom", "southern": "bottom",
    "middle": "middle", "center": "middle", "centre": "middle", "central": "middle", "centered": "middle",
    "centred": "middle", "centrally": "middle", "midst": "middle",
}
_SUP_POSITION = {
    "leftmost": "left", "westernmost": "left", "westmost": "left",
    "rightmost": "right", "easternmost": "right", "eastmost": "right",
    "topmost": "top", "uppermost": "top", "northernmost": "top", "northmost": "top",
    "bottommost": "bottom", "lowermost": "bottom", "southernmost": "bottom", "southmost": "bottom",
    "middlemost": "middle", "centermost": "middle", "centremost": "middle",
}
_BOUNDARY_POSITION = {"above": "top", "below": "bottom"}  # prepositions too: "above the road" is a relation
_SUP_SIZE = {
    "largest": "largest", "biggest": "largest", "longest": "largest", "widest": "largest", "hugest": "largest",
    "broadest": "largest", "greatest": "largest", "larger": "largest", "bigger": "largest", "longer": "largest",
    "wider": "largest",
    "smallest": "smallest", "tiniest": "smallest", "shortest": "smallest", "narrowest": "smallest",
    "littlest": "smallest", "smaller": "smallest", "tinier": "smallest", "shorter": "smallest",
    "narrower": "smallest",
}
_ORDINAL_WORDS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
    "ninth": 9, "tenth": 10, "last": -1,
}
_NUMBERS = {
    "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "both": 2,
}
_FAR = frozenset({"far", "furthest", "farthest", "further", "farther", "extreme", "very", "most"})
_INTENSIFIERS = frozenset(
    "quite really rather relatively slightly somewhat fairly extremely more pretty so too".split())
_COLOURS = frozenset(
    "white black red green blue yellow orange brown grey gray dark light bright pale purple violet pink "
    "silver golden gold beige tan cyan turquoise teal maroon khaki cream navy azure crimson emerald olive "
    "colourful colorful multicoloured multicolored whitish greyish grayish reddish bluish blueish greenish "
    "yellowish brownish blackish darker lighter brighter".split())
_SIZES = frozenset(
    "large big small tiny long wide narrow huge little short tall thin broad giant massive enormous medium "
    "vast".split())
_GENERIC = frozenset("one ones object objects thing things item items target targets instance instances".split())
_FRAME = frozenset(
    "image images picture pictures pic photo photos photograph scene map view figure frame screen imagery "
    "graph shot snapshot img".split())
_PLACE = frozenset(
    "side sides edge edges corner corners part parts half halves portion region section border borders end "
    "ends area zone quadrant position location place margin periphery boundary direction".split())
_PREPOSITIONS = frozenset(
    "of on in at to from near nearby by beside besides next adjacent close along alongside around across "
    "between behind above below beneath under underneath over among amongst within inside outside toward "
    "towards into onto against for with without like than through throughout via beyond past opposite "
    "facing surrounding surrounded bordering touching connected attached parallel adjoining neighbouring "
    "neighboring nearest closest up down off out upon amid amidst after before except about front back "
    "counting starting".split())
_LEAD = frozenset(
    "there here please find segment locate show select identify highlight mark detect outline extract get "
    "give me i we you it they can could would should will want need see look refer refers referring is are "
    "was were be being been what where which".split())
_OTHER_STOPS = frozenset(
    "who whose whom when while and or but as so if then has have had having located situated lying lies lie "
    "sitting sits sit standing stands stand placed positioned parked docked moored anchored seen shown "
    "visible appearing appears appear found running runs run extending extends extend crossing crosses "
    "cross passing passes pass leading leads lead covered covering containing contains including includes "
    "connecting connects connect looks looking seems seem go goes going flowing flows flow painted".split())
_STOPS = _PREPOSITIONS | _LEAD | _OTHER_STOPS
_PUNCT = frozenset(",.;:!?()")
_ADJECTIVE_KINDS = frozenset({"colour", "size"})
_CONTENT_KINDS = frozenset({"word", "colour", "size", "generic", "frame", "place"})
_NOUN_KINDS = frozenset({"word", "generic", "frame", "place"})

# (word, ...) sequences merged into one token so that "parking lot" is a noun and not "parking" + "lot".
_COMPOUNDS = tuple(tuple(c.split()) for c in (
    "parking lot", "parking area", "parking space", "parking garage", "car park", "tennis court",
    "basketball court", "volleyball court", "badminton court", "baseball field", "baseball diamond",
    "soccer ball field", "soccer field", "football field", "football pitch", "ground track field", "track field",
    "running track", "athletic track", "storage tank", "oil tank", "water tank", "swimming pool",
    "train station", "railway station", "railroad station", "bus station", "gas station", "petrol station",
    "power station", "power plant", "expressway service area", "expressway toll station", "toll station",
    "toll gate", "service area", "golf field", "golf course", "traffic circle", "wind turbine", "water tower",
    "cooling tower", "solar panel", "container crane", "shipping container", "residential area",
    "industrial area", "commercial area", "bare land", "bare soil", "low vegetation", "impervious surface",
    "zebra crossing", "pedestrian crossing", "level crossing", "sports field", "sport field", "playing field",
    "water body", "body of water", "dirt road", "bus stop", "roof top",
))
_COMPOUNDS_BY_FIRST: dict[str, list[tuple[str, ...]]] = {}
for _c in sorted(_COMPOUNDS, key=len, reverse=True):
    _COMPOUNDS_BY_FIRST.setdefault(_c[0], []).append(_c)

_KNOWN_NOUNS = frozenset(
    "building house home residence roof structure factory warehouse church school hospital tower road street "
    "highway freeway motorway expressway lane path track trail railway railroad rail bridge overpass viaduct "
    "tunnel intersection junction roundabout car vehicle truck lorry bus van trailer ship boat vessel yacht "
    "ferry airplane aeroplane plane aircraft jet helicopter airport runway taxiway apron harbor harbour port "
    "dock pier wharf marina dam chimney windmill turbine stadium court field pitch pool tank river lake pond "
    "reservoir sea ocean beach coast shore water canal stream creek tree forest wood grass grassland lawn "
    "meadow farmland crop garden park playground vegetation bush shrub soil sand land ground hill mountain "
    "rock lot container crane panel station terminal platform train wagon tent shed barn greenhouse silo "
    "fence wall gate square plaza mall market hotel office apartment villa cottage hut pavilion temple "
    "mosque castle palace monument statue fountain island cemetery parking ring".split())
_RIGHT_ADVERB_NEXT = frozenset(
    "next beside by near above below under at in on behind across along there here where between outside "
    "inside over through".split())

# Relation phrases before a landmark noun phrase, longest first: the target is near that landmark.
_RELATIONS = tuple(sorted((tuple(r.split()) for r in (
    "next to", "next", "beside", "besides", "near", "near to", "nearby", "adjacent to", "by", "close to",
    "along", "alongside", "around", "between", "behind", "opposite", "opposite to", "across from", "above",
    "below", "beneath", "under", "underneath", "over", "bordering", "touching", "adjoining", "neighbouring",
    "neighboring", "connected to", "attached to", "parallel to", "facing", "surrounding", "nearest to",
    "closest to", "in", "on", "inside", "within", "at", "front of", "back of", "into", "onto", "among",
    "amongst", "amid", "beyond", "past", "through", "across", "upon", "against", "toward", "towards",
)), key=len, reverse=True))
_PARTITIVES = frozenset({("of",), ("among",), ("amongst",), ("out", "of"), ("from", "among")})
_PREDICATE_LINKS = frozenset(
    "that which whose is are was were has have having with and in painted , coloured colored".split())

_TRANSLATE = str.maketrans({"\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-",
                            "\u2212": "-", "\u2019": "'", "\u2018": "'", "`": "'"})
_MOST_RE = re.compile(r"\b(left|right|top|bottom|upper|lower|north|south|east|west|center|centre|middle)"
                      r"\s*-\s*most\b")
_DIRECTIONS = "north|south|east|west|left|right|top|bottom"
_WORD_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)?|[,.;:!?()]")
_ORDINAL_RE = re.compile(r"(\d{1,2})(?:st|nd|rd|th)")
_IRREGULAR = {
    "people": "person", "men": "man", "women": "woman", "children": "child", "feet": "foot", "mice": "mouse",
    "geese": "goose", "leaves": "leaf", "shelves": "shelf", "wolves": "wolf", "halves": "half",
    "wharves": "wharf", "buses": "bus", "gases": "gas", "lenses": "lens", "series": "series",
    "species": "species", "aircraft": "aircraft", "sheep": "sheep", "fish": "fish", "data": "data",
}


def singular(word: str) -> str:
    """Simple English singular of a (possibly compound) noun: only the last word changes."""
    head, _, last = word.rpartition(" ")
    if last in _IRREGULAR:
        last = _IRREGULAR[last]
    elif len(last) <= 3 or last.endswith(("ss", "us", "is", "ous", "ics")) or not last.endswith("s"):
        pass
    elif last.endswith("ies") and len(last) > 4:
        last = last[:-3] + "y"
    elif last.endswith(("ches", "shes", "xes", "zzes", "sses")):
        last = last[:-2]
    else:
        last = last[:-1]
    return f"{head} {last}" if head else last


def _ordinal(token: str) -> int | None:
    if token in _ORDINAL_WORDS:
        return _ORDINAL_WORDS[token]
    m = _ORDINAL_RE.fullmatch(token)
    return int(m.group(1)) if m and int(m.group(1)) > 0 else None


def _number(token: str) -> int | None:
    if token in _NUMBERS:
        return _NUMBERS[token]
    return int(token) if token.isdigit() and len(token) <= 4 else None


def _tokens(sentence: str) -> list[str]:
    """Lower-case words and punctuation; "left-most" -> "leftmost", compounds merged into one token."""
    s = sentence.lower().translate(_TRANSLATE)
    s = _MOST_RE.sub(r"\1most", s)
    s = re.sub(r"\b(penultimate|next to last|last but one)\b", "second last", s)
    s = re.sub(r"\b(\w+) to (?:the )?last\b", r"\1 last", s)
    # "running north to south" is an orientation, not a place; "from left to right" counts from the left.
    s = re.sub(rf"\b(from )?({_DIRECTIONS}) to ({_DIRECTIONS})\b", lambda m: f"from {m[2]}" if m[1] else "", s)
    words = []
    for w in _WORD_RE.findall(s):
        w = w[:-2] if w.endswith("'s") else w.replace("'", "")
        if w:
            words.append(w)
    merged: list[str] = []
    i = 0
    while i < len(words):
        for comp in _COMPOUNDS_BY_FIRST.get(words[i], ()):
            n = len(comp)
            if tuple(words[i:i + n - 1]) == comp[:-1] and i + n <= len(words) and singular(words[i + n - 1]) == \
                    comp[-1]:
                merged.append(" ".join(words[i:i + n]))
                i += n
                break
        else:
            merged.append(words[i])
            i += 1
    return merged


def _kind(token: str) -> str:
    if token in _PUNCT:
        return "punct"
    if token in _DETERMINERS:
        return "det"
    if token in _POSITION:
        return "pos"
    if token in _SUP_POSITION:
        return "suppos"
    if token in _SUP_SIZE:
        return "supsize"
    if _ordinal(token) is not None:
        return "ord"
    if _number(token) is not None:
        return "num"
    if token in _FAR:
        return "far"
    if token in _INTENSIFIERS:
        return "int"
    if token in _STOPS:
        return "stop"
    if token in _COLOURS:
        return "colour"
    if token in _SIZES:
        return "size"
    if token in _GENERIC:
        return "generic"
    if token in _FRAME:
        return "frame"
    if token in _PLACE:
        return "place"
    return "word"


@dataclass
class _Span:
    """A run of words between stops: tokens[start:end], `before` = the stops just before it."""

    start: int
    end: int
    before: tuple[str, ...]
    content: tuple[int, ...] = ()  # token indices of the noun phrase words (adjectives, nouns), up to the head
    head: int = -1  # token index of the head noun, -1 when none
    status: str = "none"  # "real" noun, "generic" ("one"), "frame" ("image"), "place" ("left side"), "none"
    kinds: frozenset[str] = frozenset()  # token kinds present

    def first(self, kinds: list[str]) -> int:
        """Index of the first non-determiner token (or `end`)."""
        return next((i for i in range(self.start, self.end) if kinds[i] != "det"), self.end)


def _spans(tokens: list[str], kinds: list[str]) -> list[_Span]:
    spans: list[_Span] = []
    before: list[str] = []
    start = -1
    for i, (t, k) in enumerate(zip(tokens, kinds)):
        joins = (t in ("and", "or", ",") and start >= 0 and i + 1 < len(tokens)
                 and kinds[i - 1] in _ADJECTIVE_KINDS and kinds[i + 1] in _ADJECTIVE_KINDS)
        if k in ("stop", "punct") and not joins:
            if start >= 0:
                spans.append(_Span(start, i, tuple(before)))
                before, start = [], -1
            before.append(t)
        elif start < 0:
            start = i
    if start >= 0:
        spans.append(_Span(start, len(tokens), tuple(before)))
    for sp in spans:
        _analyse(sp, tokens, kinds)
    return spans


def _analyse(sp: _Span, tokens: list[str], kinds: list[str]) -> None:
    """Find the span's head noun: its last noun, minus trailing participles ("the ship docked")."""
    idx = range(sp.start, sp.end)
    sp.kinds = frozenset(kinds[i] for i in idx)
    # "and"/"or" inside a span join two adjectives ("red and white building"): keep them in the phrase.
    content = [i for i in idx if kinds[i] in _CONTENT_KINDS or tokens[i] in ("and", "or")]
    while True:
        nouns = [i for i in content if kinds[i] in _NOUN_KINDS]
        last = nouns[-1] if nouns else -1
        if (len(nouns) >= 2 and kinds[last] == "word" and tokens[last].endswith(("ed", "ing"))
                and tokens[last] not in _KNOWN_NOUNS):
            content = content[:content.index(last)]
            continue
        break
    if last < 0:
        sp.content, sp.head, sp.status = tuple(content), -1, "none"
        return
    sp.content = tuple(i for i in content if i <= last)
    sp.head = last
    k = kinds[last]
    if k == "place" and sp.kinds & {"pos", "suppos"}:
        sp.status = "place"
    else:
        sp.status = {"word": "real", "place": "real", "generic": "generic", "frame": "frame"}[k]


def _noun_phrase(sp: _Span, tokens: list[str], kinds: list[str], make_singular: bool = False,
                 adjectives_only: bool = False) -> list[str]:
    words = [tokens[i] for i in sp.content if not adjectives_only or kinds[i] in _ADJECTIVE_KINDS | {"word"}]
    if make_singular and words and not adjectives_only:
        words[-1] = singular(words[-1])
    return words


def _suffix_match(before: tuple[str, ...], phrases: tuple[tuple[str, ...], ...]) -> tuple[str, ...] | None:
    for p in phrases:
        if len(p) <= len(before) and before[len(before) - len(p):] == p:
            return p
    return None


@dataclass
class _Found:
    index: int  # token index, for sentence order
    cue: SpatialCue
    span: int  # span number, -1 for a stop word
    attributive: bool = False  # a prenominal position word ("the left tank"), not "on the left"


def parse_sentence(text: str) -> ParsedSentence:
    """Parse one referring sentence; never raises (odd input gives an empty noun phrase and no cues)."""
    sentence = "" if text is None else " ".join(str(text).split())
    return _parse(sentence)


def _parse(sentence: str) -> ParsedSentence:
    tokens = _tokens(sentence)
    kinds = [_kind(t) for t in tokens]
    spans = _spans(tokens, kinds)
    n = len(spans)

    # Landmarks: a noun span introduced by a relation word ("next to | the parking lot").
    landmark_trigger: dict[int, tuple[str, ...]] = {}
    for k, sp in enumerate(spans):
        trig = _suffix_match(sp.before, _RELATIONS)
        if trig and sp.status == "real":
            landmark_trigger[k] = trig

    # Partitive: "the leftmost | of | three buildings", "the left one | of | the two tanks".
    first_real = next((k for k, sp in enumerate(spans) if sp.status == "real" and k not in landmark_trigger), -1)
    partitive = -1
    if first_real > 0:
        p, s = spans[first_real - 1], spans[first_real]
        starts_num = kinds[s.first(kinds)] == "num"
        at_start = first_real - 1 == 0 and set(p.before) <= _LEAD
        if (s.before in _PARTITIVES and p.status in ("none", "generic")
                and (starts_num or p.kinds & {"ord", "suppos", "supsize", "generic"}
                     or (at_start and "place" not in p.kinds))):
            partitive = first_real

    # Relational positions: "on the left side | of | the road", "in the middle | of | the lake".
    relational: dict[int, list[int]] = {}  # span k -> its trailing position tokens; span k + 1 is the landmark
    for k in range(n - 1):
        sp, obj = spans[k], spans[k + 1]
        if obj.before != ("of",) or obj.status != "real" or k + 1 == partitive or kinds[obj.first(kinds)] == "num":
            continue
        after = sp.head if sp.status in ("real", "generic") else sp.start - 1
        run = [i for i in range(after + 1, sp.end)]
        if run and all(kinds[i] in ("pos", "place", "det", "far") for i in run) and any(
                kinds[i] in ("pos", "place") for i in run):
            relational[k] = run
    relational_objects = {k + 1 for k in relational}

    # The target span.
    if partitive >= 0:
        target = partitive
    else:
        usable = [k for k, sp in enumerate(spans) if k not in landmark_trigger and k not in relational_objects]
        target = next((k for k in usable if spans[k].status == "real"
                       and (k == 0 or not set(spans[k].before) & _PREPOSITIONS)), -1)
        if target < 0:
            target = next((k for k in usable if spans[k].status == "real"), -1)
        if target < 0:
            target = next((k for k in usable if spans[k].status == "generic"), -1)

    # Cues, in sentence order.
    found: list[_Found] = []
    origins: list[tuple[int, str]] = []
    trigger_tokens: set[int] = set()
    far_pending = False
    for k, sp in enumerate(spans):
        if k in landmark_trigger:
            trig = landmark_trigger[k]
            trigger_tokens.update(range(sp.start - len(trig), sp.start))
            if k not in relational_objects:
                landmark = " ".join(_noun_phrase(sp, tokens, kinds, make_singular=True))
                found.append(_Found(sp.start - 1, SpatialCue("next_to", landmark=landmark), k))
            far_pending = False
            continue
        if k in relational_objects:
            far_pending = False
            continue
        if sp.before and sp.before[-1] == "from" and sp.status in ("none", "place") and "pos" in sp.kinds:
            first_pos = next(i for i in range(sp.start, sp.end) if kinds[i] == "pos")
            origins.append((first_pos, _POSITION[tokens[first_pos]]))
            far_pending = False
            continue
        if not (set(sp.before) <= {"to", "on", "at", "toward", "towards"}):
            far_pending = False
        skip: set[int] = set(relational.get(k, ()))
        if k in relational:
            landmark = " ".join(_noun_phrase(spans[k + 1], tokens, kinds, make_singular=True))
            found.append(_Found(relational[k][0], SpatialCue("next_to", landmark=landmark), k))
        attributive = not (set(sp.before) & _PREPOSITIONS)
        i = sp.start
        while i < sp.end:
            t, kd = tokens[i], kinds[i]
            if i in skip:
                i += 1
                continue
            if kd == "far":
                far_pending = True
                i += 1
                continue
            if kd in ("pos", "suppos"):
                j = i
                while j < sp.end and kinds[j] in ("pos", "suppos") and j not in skip:
                    j += 1
                sup = far_pending or any(kinds[m] == "suppos" for m in range(i, j))
                for m in range(i, j):
                    if tokens[m] == "right" and _right_is_adverb(tokens, kinds, m):
                        continue
                    kind = _POSITION.get(tokens[m]) or _SUP_POSITION[tokens[m]]
                    found.append(_Found(m, SpatialCue(kind, superlative=sup), k, attributive))
                far_pending = False
                i = j
                continue
            if kd == "supsize":
                found.append(_Found(i, SpatialCue(_SUP_SIZE[t], superlative=True), k))
            elif kd == "ord":
                value, origin, j = _ordinal(t) or 1, "", i + 1
                if j < sp.end and tokens[j] == "last" and value > 0:
                    value, j = -value, j + 1
                if j < sp.end and kinds[j] == "supsize":
                    origin, j = _SUP_SIZE[tokens[j]], j + 1
                elif j < sp.end and kinds[j] == "suppos" and _SUP_POSITION[tokens[j]] != "middle":
                    origin, j = _SUP_POSITION[tokens[j]], j + 1
                found.append(_Found(i, SpatialCue("ordinal", ordinal=value, origin=origin), k))
                i = j
                continue
            if kd != "det":
                far_pending = False
            i += 1
        # "furthest | to the | right" carries over to the next span; anything else ends it.
        far_pending = far_pending and kinds[sp.end - 1] == "far"
    for i, t in enumerate(tokens):  # "the building above" (no landmark after it)
        if t in _BOUNDARY_POSITION and i not in trigger_tokens:
            found.append(_Found(i, SpatialCue(_BOUNDARY_POSITION[t]), -1))
    found.sort(key=lambda f: f.index)

    # Ordinals: counting origin from "from the left", else from a position word ("the second one on the left").
    directional = ("left", "right", "top", "bottom")
    consumed: set[int] = set()
    for n_f, f in enumerate(found):
        if f.cue.kind != "ordinal" or f.cue.origin:
            continue
        value = f.cue.ordinal
        if origins:
            origin = origins.pop(0)[1]
        else:
            m = next((m for m, g in enumerate(found) if g.cue.kind in directional and m not in consumed), None)
            if m is not None:  # "the last one on the right" = the first from the right
                consumed.add(m)
                origin, value = found[m].cue.kind, abs(value)
            else:
                origin = "left"
        found[n_f] = _Found(f.index, SpatialCue("ordinal", ordinal=value, origin=origin), f.span)
    found = [f for m, f in enumerate(found) if m not in consumed]
    for index, kind in origins:  # "from the left" without an ordinal: a plain position
        found.append(_Found(index, SpatialCue(kind), -1))
    found.sort(key=lambda f: f.index)

    # Noun phrase, head, colours, sizes.
    words: list[str] = []
    head = ""
    if target >= 0:
        tsp = spans[target]
        if partitive >= 0:
            words = _noun_phrase(spans[target - 1], tokens, kinds, adjectives_only=True)
            words += _noun_phrase(tsp, tokens, kinds, make_singular=True)
        else:
            words = _noun_phrase(tsp, tokens, kinds)
        head = singular(tokens[tsp.head])
    colours = [w for w in words if w in _COLOURS]
    sizes = [w for w in words if w in _SIZES]
    if target >= 0:
        for k in range(target + 1, n):
            sp = spans[k]
            if not sp.before or not set(sp.before) <= _PREDICATE_LINKS or k in landmark_trigger:
                break
            colours += [tokens[i] for i in range(sp.start, sp.end) if kinds[i] == "colour"]
            sizes += [tokens[i] for i in range(sp.start, sp.end) if kinds[i] == "size"]

    # Count: "of three buildings", "the leftmost building of the three".
    count, count_span = 0, -1
    for k, sp in enumerate(spans):
        if not sp.before or sp.before[-1] not in ("of", "among", "amongst"):
            continue
        first = sp.first(kinds)
        if first < sp.end and kinds[first] == "num":
            same = k == target or sp.head < 0 or (head and singular(tokens[sp.head]) == head)
            if same:
                count, count_span = _number(tokens[first]) or 0, k
                break

    # "the left one of the two tanks", "the one on the left of the two": a position among a stated set picks
    # the extreme one; so does a prenominal position on "one" ("the upper one").
    pick = {partitive - 1} if partitive >= 0 else set()
    if count_span > 0:
        pick.add(count_span - 1)
    many = partitive >= 0 or count > 1 or (target >= 0 and spans[target].status == "generic")
    found = [_Found(f.index, SpatialCue(f.cue.kind, superlative=True), f.span, f.attributive)
             if f.cue.kind in directional + ("middle",) and (f.span in pick or (many and f.attributive)) else f
             for f in found]

    return ParsedSentence(sentence=sentence, noun_phrase=" ".join(words), head=head,
                          colours=tuple(dict.fromkeys(colours)), sizes=tuple(dict.fromkeys(sizes)),
                          cues=_unique(f.cue for f in found), count=count)


def _right_is_adverb(tokens: list[str], kinds: list[str], i: int) -> bool:
    """"right next to the road": "right" means "directly", not the right-hand side."""
    nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
    prev_kind = kinds[i - 1] if i > 0 else "stop"
    prev = tokens[i - 1] if i > 0 else ""
    return nxt in _RIGHT_ADVERB_NEXT and prev_kind not in ("det", "far", "pos", "suppos") and prev not in (
        "to", "on", "at", "in", "from")


def _unique(cues: Iterable[SpatialCue]) -> tuple[SpatialCue, ...]:
    """Drop repeats; a superlative replaces the graded cue of the same kind ("on the left, the leftmost")."""
    out: list[SpatialCue] = []
    for c in cues:
        if c in out:
            continue
        if c.kind in CUE_KINDS[:7]:
            twin = next((o for o in out if o.kind == c.kind), None)
            if twin is not None:
                if c.superlative and not twin.superlative:
                    out[out.index(twin)] = c
                continue
        out.append(c)
    return tuple(out)
