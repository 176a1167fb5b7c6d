"""How much of a text a CLIP-style tokenizer keeps.

A text encoder reads a fixed number of tokens (CLIP 77, SigLIP 64) and open_clip's tokenizers cut
the rest off without a word, so a long sentence or class name would be segmented from its first
words only while the user believes all of it counted. These helpers measure the cut, with the
tokenizer itself (open_clip's BPE or a Hugging Face one), so the result's notes can say so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional


def pad_id(tokenizer: Any) -> int:
    """The id the tokenizer pads with (CLIP's BPE: 0; Hugging Face ones say); padding is left out of the local
    semantics and of the token counts here."""
    value = getattr(getattr(tokenizer, "tokenizer", None), "pad_token_id", None)
    return int(value) if value is not None else 0


def token_counts(tokenizer: Any, texts: Sequence[str], full: bool = False) -> list[int]:
    """Non-padding tokens of each text as the encoder reads them (`full=False`: cut to the tokenizer's
    context) or as they would be without the cut (`full=True`); special tokens count alike in both."""
    texts = list(texts)
    if not texts:
        return []
    length = None
    if full:  # a context no text fills: never more tokens than UTF-8 bytes (4 a character at most) + specials
        length = max(int(getattr(tokenizer, "context_length", 0) or 0), 4 * max(map(len, texts)) + 16)
    ids = tokenizer(texts, context_length=length) if length else tokenizer(texts)
    return [int(n) for n in (ids != pad_id(tokenizer)).sum(dim=1).tolist()]


def words_read(tokenizer: Any, text: str, wrap: Callable[[str], str] = str) -> Optional[int]:
    """None when the encoder reads all of `wrap(text)` (`wrap`: e.g. a prompt template around a class
    name); else how many of `text`'s leading words it reads: the longest prefix that fits."""
    read, whole = token_counts(tokenizer, [wrap(text)])[0], token_counts(tokenizer, [wrap(text)], full=True)[0]
    if whole <= read:
        return None
    words = text.split()
    low, high = 0, len(words) - 1  # the whole text does not fit; the empty prefix always does
    while low < high:
        middle = (low + high + 1) // 2
        if token_counts(tokenizer, [wrap(" ".join(words[:middle]))], full=True)[0] <= read:
            low = middle
        else:
            high = middle - 1
    return low


def shortened_note(what: str, words: int, total: int) -> str:
    """The result note for a text the encoder read in part ("the sentence", "the class name 'x'")."""
    if words == 0:
        return f"{what} is longer than the text encoder reads: it read only the start of its first word"
    return f"{what} was shortened to the first {words} words the text encoder reads (of {total})"


def sentence_notes(tokenizer: Any, sentence: str) -> list[str]:
    """[the note] when the encoder reads only part of `sentence`, else []."""
    words = words_read(tokenizer, sentence)
    return [] if words is None else [shortened_note("the sentence", words, len(sentence.split()))]


def class_name_notes(tokenizer: Any, names: Sequence[str], templates: Sequence[Callable[[str], str]]) -> list[str]:
    """A note per class name the encoder reads in part inside its longest prompt template (the shortest
    templates may keep more of it)."""
    notes = []
    for name in dict.fromkeys(names):
        texts = [template(name) for template in templates]
        cut = [whole - read for whole, read in zip(token_counts(tokenizer, texts, full=True),
                                                   token_counts(tokenizer, texts))]
        worst = max(range(len(texts)), key=cut.__getitem__, default=None)
        if worst is None or cut[worst] <= 0:
            continue
        words = words_read(tokenizer, name, templates[worst])
        if words is not None:
            shown = name if len(name) <= 40 else f"{name[:40]}..."
            notes.append(shortened_note(f"the class name {shown!r}", words, len(name.split())))
    return notes
