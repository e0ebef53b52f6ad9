"""The lookahead tagging task's generator: words whose tag is decided by the word AFTER them.

The lecture's "well": an adverb in "she sings well ." and a noun in "the well runs dry".  Here every position
holds a word drawn independently of all the others, so what a model has seen up to t says nothing about the
word at t + 1, and the tag of an ambiguous word at t is decided by that next word alone:

    ambiguous words  "well" (ADV), "saw" (VERB), "watch" (VERB), "light" (ADJ): NOUN when the NEXT word is a
                     verb (the cue class, unambiguous verbs "runs", "turns", "sees", "keeps"), else the tag in
                     brackets; probability A = 0.4 in all (0.1 each)
    cue verbs        probability P = 0.3 in all (0.075 each), tag VERB
    other words      "the" "a" (DET), "old" "red" (ADJ), "river" "miller" (NOUN), "she" "they" (PRON),
                     "slowly" (ADV), "." (PUNCT): probability 1 - A - P = 0.3 in all (0.03 each)

Positions 0 .. T-2 are drawn from that distribution; the last one, T-1, from the unambiguous words only, with
the same share P of verbs (0.075 each) and 1 - P for the others (0.07 each), so every ambiguous word has a next
word and that next word is a verb with probability P wherever it stands (a final "." instead would make the
word before it predictable from its position alone, which an RNN could only use by counting to T).

Every position is scored (ce).  What the best possible model of each kind achieves, exactly (expectations over
the generator, with q = A (T-1) / T the share of positions holding an ambiguous word, all of which have a
next word; H(P) = -P ln P - (1-P) ln(1-P) in nats):

    unidirectional (sees words <= t)  P(tag_t | w_0..w_t) = P(tag_t | w_t), since w_{t+1} is independent of
        w_0..w_t: an unambiguous word's tag is known, an ambiguous one is NOUN with probability P.  Best
        accuracy 1 - q min(P, 1 - P); best loss A (T-1) H(P) (per sequence, in the units of the loss L).
        Both are also what the memoryless tagger scores: looking back does not help at all.
    bidirectional (sees every word)   the tag is a function of (w_t, w_{t+1}): accuracy 1, loss 0.

At T = 20: accuracy ceiling 1 - 0.38 x 0.3 = 0.886, loss floor 7.6 H(0.3) = 4.643 nats.  tests/test_tasks.py
checks both against a Monte-Carlo estimate from ``LookaheadTask.batch`` and against the Bayes-optimal
unidirectional predictor computed by brute force over every sequence of this distribution (``sequence_codes``
and ``tags_of`` below, not the closed form).
"""

from __future__ import annotations

import math

import numpy as np

TAGS = ("DET", "ADJ", "NOUN", "VERB", "PRON", "ADV", "PUNCT")  # the tag set of both tagging tasks (tasks.TAGS)
AMBIGUOUS = {"well": "ADV", "saw": "VERB", "watch": "VERB", "light": "ADJ"}  # word -> its tag before a non-verb
CUE_VERBS = ("runs", "turns", "sees", "keeps")  # an ambiguous word before one of these is a NOUN
OTHERS = {
    "the": "DET",
    "a": "DET",
    "old": "ADJ",
    "red": "ADJ",
    "river": "NOUN",
    "miller": "NOUN",
    "she": "PRON",
    "they": "PRON",
    "slowly": "ADV",
    ".": "PUNCT",
}
SHARE_AMBIGUOUS = 0.4  # A: probability that a word (positions 0 .. T-2) is ambiguous
SHARE_CUE = 0.3  # P: probability that a word (any position) is a cue verb
WORDS = tuple(AMBIGUOUS) + CUE_VERBS + tuple(OTHERS)  # the input vocabulary, in its one-hot order

_CODE = {w: i for i, w in enumerate(WORDS)}
_AMBIGUOUS_CODES = np.array([_CODE[w] for w in AMBIGUOUS])  # (4,)
_CUE_CODES = np.array([_CODE[w] for w in CUE_VERBS])  # (4,)
# tag of each word when it is not a NOUN-before-a-verb (the only tag of an unambiguous word)
_OWN_TAG = np.array([TAGS.index(AMBIGUOUS.get(w) or OTHERS.get(w) or "VERB") for w in WORDS], dtype=np.int64)  # (V,)
_NOUN = TAGS.index("NOUN")


def word_probabilities(last: bool = False) -> np.ndarray:
    """(V,) the distribution a word is drawn from: positions 0 .. T-2, or the last one (no ambiguous word)."""
    p = np.zeros(len(WORDS))
    if last:
        p[_CUE_CODES] = SHARE_CUE / len(CUE_VERBS)
        p[[_CODE[w] for w in OTHERS]] = (1 - SHARE_CUE) / len(OTHERS)
    else:
        p[_AMBIGUOUS_CODES] = SHARE_AMBIGUOUS / len(AMBIGUOUS)
        p[_CUE_CODES] = SHARE_CUE / len(CUE_VERBS)
        p[[_CODE[w] for w in OTHERS]] = (1 - SHARE_AMBIGUOUS - SHARE_CUE) / len(OTHERS)
    return p


def sequence_codes(rng: np.random.Generator, T: int, B: int) -> np.ndarray:
    """(T, B) word codes: positions 0 .. T-2 from ``word_probabilities()``, T-1 from ``word_probabilities(True)``."""
    V = len(WORDS)
    codes = np.empty((T, B), dtype=np.int64)
    codes[: T - 1] = rng.choice(V, size=(T - 1, B), p=word_probabilities())
    codes[T - 1] = rng.choice(V, size=B, p=word_probabilities(last=True))
    return codes


def tags_of(codes: np.ndarray) -> np.ndarray:
    """(T, ...) tag codes of (T, ...) word codes: an ambiguous word is a NOUN when the next word is a cue verb,
    else its own other tag (and so is one at the last position, which the generator never puts there)."""
    tags = _OWN_TAG[codes]  # (T, ...)
    before_cue = np.zeros(codes.shape, dtype=bool)
    before_cue[:-1] = np.isin(codes[1:], _CUE_CODES)
    tags[np.isin(codes, _AMBIGUOUS_CODES) & before_cue] = _NOUN
    return tags


def binary_entropy(p: float) -> float:
    """H(p) in nats."""
    return -sum(v * math.log(v) for v in (p, 1 - p) if v > 0)


def unidirectional_accuracy(T: int, a: float = SHARE_AMBIGUOUS, p: float = SHARE_CUE) -> float:
    """The best expected accuracy of a model that sees words <= t: 1 - q min(p, 1-p), q = a (T-1) / T."""
    return 1 - a * (T - 1) / T * min(p, 1 - p)


def unidirectional_loss(T: int, a: float = SHARE_AMBIGUOUS, p: float = SHARE_CUE) -> float:
    """The best expected loss (per sequence) of a model that sees words <= t: a (T-1) H(p) nats."""
    return a * (T - 1) * binary_entropy(p)


__all__ = [
    "TAGS",
    "WORDS",
    "AMBIGUOUS",
    "CUE_VERBS",
    "OTHERS",
    "SHARE_AMBIGUOUS",
    "SHARE_CUE",
    "word_probabilities",
    "sequence_codes",
    "tags_of",
    "binary_entropy",
    "unidirectional_accuracy",
    "unidirectional_loss",
]
