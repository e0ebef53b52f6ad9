"""The tagging task's grammar: sentences whose ambiguous words take their tag from the words BEFORE them.

tasks.TaggingTask draws its batches from here; the lookahead task (lookahead.py) shares the tag set.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from . import lookahead

# Sentences of the tagging grammar.  Each word has a fixed set of possible tags; the ambiguous ones take their
# tag from context: after a determiner or adjective a noun, after a noun phrase or pronoun a verb.
TAGS = lookahead.TAGS  # ("DET", "ADJ", "NOUN", "VERB", "PRON", "ADV", "PUNCT"), shared with the lookahead task
_WORDS = {
    "DET": ["the", "a", "every", "this"],
    "ADJ": ["old", "quick", "red", "quiet"],
    "NOUN": ["miller", "river", "wheel", "cat", "saw", "run", "watch", "light"],
    "VERB": ["turns", "sees", "finds", "saw", "run", "watch", "light", "keeps"],
    "PRON": ["she", "he", "they"],
    "ADV": ["slowly", "often", "again"],
    "PUNCT": ["."],
}
VOCABULARY = tuple(sorted({w for words in _WORDS.values() for w in words}))


def _noun_phrase(rng) -> list[tuple[str, str]]:
    words = [(str(rng.choice(_WORDS["DET"])), "DET")]
    while rng.random() < 0.4:
        words.append((str(rng.choice(_WORDS["ADJ"])), "ADJ"))
    words.append((str(rng.choice(_WORDS["NOUN"])), "NOUN"))
    return words


def tagging_sentence(rng) -> list[tuple[str, str]]:
    """One sentence: (noun phrase | pronoun) verb [noun phrase] [adverb] ."""
    words = _noun_phrase(rng) if rng.random() < 0.6 else [(str(rng.choice(_WORDS["PRON"])), "PRON")]
    words.append((str(rng.choice(_WORDS["VERB"])), "VERB"))
    if rng.random() < 0.7:
        words += _noun_phrase(rng)
    if rng.random() < 0.3:
        words.append((str(rng.choice(_WORDS["ADV"])), "ADV"))
    words.append((".", "PUNCT"))
    return words


def tagging_stream(rng, length: int) -> tuple[np.ndarray, np.ndarray]:
    """``length`` words of consecutive sentences as (word codes, tag codes)."""
    word_index = {w: i for i, w in enumerate(VOCABULARY)}
    tag_index = {t: i for i, t in enumerate(TAGS)}
    words: list[tuple[str, str]] = []
    while len(words) < length:
        words += tagging_sentence(rng)
    words = words[:length]
    return (
        np.array([word_index[w] for w, _ in words], dtype=np.int64),
        np.array([tag_index[t] for _, t in words], dtype=np.int64),
    )


@lru_cache(maxsize=1)
def tagging_conditional_entropy(samples: int = 200_000, seed: int = 12345) -> float:
    """H(tag | word) in nats, estimated from ``samples`` generated words (the memoryless tagger's loss per step)."""
    words, tags = tagging_stream(np.random.default_rng(seed), samples)
    counts = np.zeros((len(VOCABULARY), len(TAGS)))
    np.add.at(counts, (words, tags), 1)
    p_word = counts.sum(axis=1) / samples  # (V,)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_tag = counts / counts.sum(axis=1, keepdims=True)  # (V, tags)
        h = -np.nansum(np.where(p_tag > 0, p_tag * np.log(p_tag), 0.0), axis=1)  # (V,)
    return float(np.sum(p_word * h))
