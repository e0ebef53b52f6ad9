"""Tasks: shapes, masks, what is scored, and baselines measured against the strategy each one states."""

import math

import numpy as np
import pytest

from gradscope.config import TaskConfig
from gradscope.engine import lookahead, reference
from gradscope.engine.tasks import TAGS, VOCABULARY, TaskError, make_task, tagging_stream


def task(**kw):
    return make_task(TaskConfig.model_validate(kw), "float64")


def loss_of_predictions(t, Y, target, mask):
    """L = (1/B) sum mask * ell through the engine's own readout (identity readout: y = h)."""
    k = Y.shape[-1]
    loss, _, _ = reference.readout_loss(Y, np.eye(k), np.zeros(k), target, mask, t.loss_kind)
    return loss


@pytest.mark.parametrize(
    "name,n,k,kind",
    [
        ("adding", 2, 1, "mse"),
        ("copy", 10, 8, "ce"),
        ("tagging", len(VOCABULARY), len(TAGS), "ce"),
        ("lookahead", len(lookahead.WORDS), len(TAGS), "ce"),
    ],
)
def test_fixed_sizes_and_loss_kinds(name, n, k, kind):
    t = task(name=name, seq_len=30, batch_size=5)
    x, target, mask = t.batch(np.random.default_rng(0))
    assert (t.input_size, t.output_size, t.loss_kind) == (n, k, kind)
    assert x.shape == (30, 5, n) and x.dtype == np.float64 and mask.shape == (30, 5)
    assert target.shape == ((30, 5, k) if kind == "mse" else (30, 5))
    if kind == "ce":
        assert np.issubdtype(target.dtype, np.integer) and 0 <= target.min() and target.max() < k
    assert t.description


def test_probe_scores_the_last_step_only_and_its_baseline_is_predicting_zero():
    t = task(name="probe", seq_len=12, batch_size=4000, input_size=3, output_size=6)
    x, target, mask = t.batch(np.random.default_rng(1))
    assert x.shape == (12, 4000, 3) and target.shape == (12, 4000, 6)
    assert np.all(mask[:-1] == 0) and np.all(mask[-1] == 1)
    assert abs(x.mean()) < 0.02 and abs(x.std() - 1) < 0.02
    measured = loss_of_predictions(t, np.zeros_like(target), target, mask)
    assert measured == pytest.approx(t.baseline_loss, rel=0.03)  # k / 2 = 3 ; sd of the estimate ~0.5 %


def test_adding_problem_markers_target_and_baseline():
    t = task(name="adding", seq_len=40, batch_size=20000)
    x, target, mask = t.batch(np.random.default_rng(2))
    markers = x[:, :, 1]
    assert np.all(markers.sum(axis=0) == 2)
    assert np.all(markers[:20].sum(axis=0) == 1) and np.all(markers[20:].sum(axis=0) == 1)
    assert np.allclose(target[-1, :, 0], (x[:, :, 0] * markers).sum(axis=0))
    assert np.all(mask[-1] == 1) and mask.sum() == 20000
    # The stated strategy: always predict 1.  0.5 E[(s - 1)^2] = 1/12 (E[(s-1)^2] = 1/6 ~ 0.167).
    measured = loss_of_predictions(t, np.ones_like(target), target, mask)
    assert t.baseline_loss == pytest.approx(1 / 12)
    assert measured == pytest.approx(1 / 12, rel=0.03)


def test_copy_task_layout_and_memoryless_baseline():
    t = task(name="copy", seq_len=25, batch_size=3000, symbols=6, copy_length=4)
    x, target, mask = t.batch(np.random.default_rng(3))
    codes = x.argmax(axis=-1)  # (T, B)
    assert np.all(x.sum(axis=-1) == 1)
    assert np.all(codes[4 : 25 - 5] == t.blank) and np.all(codes[25 - 5] == t.go)
    assert np.all(codes[25 - 4 :] == t.blank)
    assert np.array_equal(target[-4:], codes[:4])  # reproduce the first symbols
    assert np.all(mask[-4:] == 1) and mask[:-4].sum() == 0
    # Memoryless strategy: uniform over the 6 symbols at every scored step -> 4 ln 6.
    uniform = np.zeros((25, 3000, 6))
    assert loss_of_predictions(t, uniform, target, mask) == pytest.approx(4 * math.log(6), rel=1e-12)
    assert t.baseline_loss == pytest.approx(4 * math.log(6))


def test_charlm_next_character_and_unigram_baseline(tmp_path):
    text = "the quick brown fox jumps over the lazy dog. " * 40
    (tmp_path / "t.txt").write_text(text)
    t = task(name="charlm", seq_len=16, batch_size=2000, text=str(tmp_path / "t.txt"))
    assert t.vocabulary == "".join(sorted(set(text)))
    x, target, mask = t.batch(np.random.default_rng(4))
    chars = np.array(list(t.vocabulary))
    inputs = chars[x.argmax(axis=-1)]  # (T, B)
    for b in range(3):
        window = "".join(inputs[:, b]) + t.vocabulary[target[-1, b]]
        assert window in text and "".join(chars[target[:, b]]) == window[1:]
    assert np.all(mask == 1)
    # Memoryless strategy: log of the text's character frequencies, the same at every step.
    freq = np.array([text.count(c) for c in t.vocabulary]) / len(text)
    logits = np.broadcast_to(np.log(freq), (16, 2000, len(freq)))
    measured = loss_of_predictions(t, np.array(logits), target, mask)
    assert measured == pytest.approx(t.baseline_loss, rel=0.02)


def test_shipped_corpus_is_the_default():
    t = task(name="charlm", seq_len=50, batch_size=2)
    assert len(t.codes) > 3000 and 20 < t.input_size < 80 and t.baseline_loss > 50 * 2.0


def test_tagging_needs_context_and_its_baseline_is_the_word_only_tagger():
    t = task(name="tagging", seq_len=60, batch_size=400)
    x, target, mask = t.batch(np.random.default_rng(5))
    words = x.argmax(axis=-1)
    assert np.all(mask == 1)
    # Ambiguous words exist: the same word gets different tags, decided by the tag before it.
    saw = VOCABULARY.index("saw")
    tags_of_saw = set(target[words == saw].tolist())
    assert tags_of_saw == {TAGS.index("NOUN"), TAGS.index("VERB")}
    prev_tag = np.concatenate([np.full((1, 400), -1), target[:-1]])
    at_saw = words == saw
    after_det_adj = np.isin(prev_tag, [TAGS.index("DET"), TAGS.index("ADJ")]) & at_saw
    assert np.all(target[after_det_adj] == TAGS.index("NOUN"))
    assert np.all(target[at_saw & ~after_det_adj] == TAGS.index("VERB"))
    # Baseline: the word-only tagger's loss, measured on fresh data (counts from one stream, scored on another).
    w_fit, t_fit = tagging_stream(np.random.default_rng(6), 100_000)
    counts = np.full((len(VOCABULARY), len(TAGS)), 1e-9)
    np.add.at(counts, (w_fit, t_fit), 1)
    log_p = np.log(counts / counts.sum(axis=1, keepdims=True))
    measured = loss_of_predictions(t, log_p[words], target, mask)
    assert measured == pytest.approx(t.baseline_loss, rel=0.05)
    assert 0 < t.baseline_loss < 60 * math.log(len(TAGS))


def test_batches_depend_only_on_the_generator():
    t = task(name="tagging", seq_len=10, batch_size=3)
    a, b = t.batch(np.random.default_rng(9)), t.batch(np.random.default_rng(9))
    assert all(np.array_equal(u, v) for u, v in zip(a, b))


@pytest.mark.parametrize(
    "kw,key",
    [
        ({"name": "copy", "seq_len": 10, "copy_length": 5}, "task.seq_len"),
        ({"name": "charlm", "text": "/nonexistent/x.txt"}, "task.text"),
        ({"name": "adding", "output_size": 3}, "task.output_size"),
        ({"name": "adding", "seq_len": 1}, "task.seq_len"),
    ],
)
def test_impossible_tasks_name_the_key(kw, key):
    with pytest.raises(TaskError) as caught:
        task(**kw)
    assert caught.value.key == key


# ------------------------------------------------------------------------------ lookahead: the ceiling, checked
def bayes_unidirectional_by_brute_force(T: int) -> tuple[float, float]:
    """(best expected accuracy, best expected loss per sequence) of a predictor that sees words <= t, computed
    over EVERY sequence of T words with its probability under the generator's tables (lookahead.word_probabilities)
    and its tags from lookahead.tags_of: at each t, the posterior over the tag given the prefix w_0..w_t."""
    p_word, p_last = lookahead.word_probabilities(), lookahead.word_probabilities(last=True)
    V = len(lookahead.WORDS)
    support = [np.flatnonzero(p_word) for _ in range(T - 1)] + [np.flatnonzero(p_last)]
    grids = np.meshgrid(*support, indexing="ij")
    codes = np.stack([g.reshape(-1) for g in grids])  # (T, N): every sequence of non-zero probability
    prob = np.prod([p_word[codes[t]] for t in range(T - 1)], axis=0) * p_last[codes[T - 1]]  # (N,)
    assert prob.sum() == pytest.approx(1.0, abs=1e-12)
    tags = lookahead.tags_of(codes)  # (T, N)
    K = len(lookahead.TAGS)
    correct = loss = 0.0
    for t in range(T):
        prefix = np.ravel_multi_index(codes[: t + 1], (V,) * (t + 1))  # (N,) which prefix each sequence has
        joint = np.zeros((V ** (t + 1), K))
        np.add.at(joint, (prefix, tags[t]), prob)  # P(prefix, tag_t)
        joint = joint[joint.sum(axis=1) > 0]
        correct += joint.max(axis=1).sum()  # predict the most likely tag given the prefix
        posterior = joint / joint.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            loss -= np.nansum(np.where(joint > 0, joint * np.log(posterior), 0.0))  # E[-log P(tag | prefix)]
    return correct / T, loss


@pytest.mark.parametrize("T", [2, 3, 4])
def test_lookahead_ceiling_is_the_bayes_optimal_unidirectional_predictor(T):
    accuracy, loss = bayes_unidirectional_by_brute_force(T)
    t = task(name="lookahead", seq_len=T, batch_size=1)
    assert t.accuracy_ceiling == pytest.approx(accuracy, abs=1e-12)
    assert t.baseline_loss == pytest.approx(loss, abs=1e-12)
    # and the closed form's own numbers: 1 - 0.4 (T-1)/T 0.3, 0.4 (T-1) H(0.3)
    h = -(0.3 * math.log(0.3) + 0.7 * math.log(0.7))
    assert accuracy == pytest.approx(1 - 0.4 * (T - 1) / T * 0.3, abs=1e-12)
    assert loss == pytest.approx(0.4 * (T - 1) * h, abs=1e-12)


def test_lookahead_batches_follow_the_stated_distribution_and_reach_the_ceiling_by_monte_carlo():
    T, B = 20, 20_000
    t = task(name="lookahead", seq_len=T, batch_size=B)
    assert t.accuracy_ceiling == pytest.approx(0.886) and t.baseline_loss == pytest.approx(4.642568695617191)
    x, target, mask = t.batch(np.random.default_rng(8))
    words = x.argmax(axis=-1)  # (T, B)
    assert np.all(x.sum(axis=-1) == 1) and np.all(mask == 1)
    assert (t.input_size, t.output_size) == (len(lookahead.WORDS), len(TAGS))
    ambiguous = np.isin(words, [lookahead.WORDS.index(w) for w in lookahead.AMBIGUOUS])
    cue = np.isin(words, [lookahead.WORDS.index(w) for w in lookahead.CUE_VERBS])
    assert not ambiguous[-1].any()  # the last word is never ambiguous
    # shares: ambiguous 0.4 and cue 0.3 at positions 0..T-2; cue 0.3 at the last (sd of each ~0.001)
    assert ambiguous[:-1].mean() == pytest.approx(0.4, abs=0.005) and cue.mean() == pytest.approx(0.3, abs=0.005)
    assert cue[-1].mean() == pytest.approx(0.3, abs=0.015)
    # the next word is a verb with probability 0.3 after every ambiguous word, whatever came before it
    after = cue[1:][ambiguous[:-1]]
    assert after.mean() == pytest.approx(0.3, abs=0.005)
    prev_ambiguous = np.zeros_like(ambiguous)
    prev_ambiguous[1:] = ambiguous[:-1]
    assert cue[1:][ambiguous[:-1] & prev_ambiguous[:-1]].mean() == pytest.approx(0.3, abs=0.01)
    # the tag is a function of (word, next word): what a bidirectional model can reach, accuracy 1
    pairs = words[:-1] * 100 + words[1:]
    for pair in np.unique(pairs):
        assert len(np.unique(target[:-1][pairs == pair])) == 1
    # the word-only tagger fitted on one batch, scored on another: the ceiling and the baseline, to sampling error
    counts = np.full((len(lookahead.WORDS), len(TAGS)), 1e-12)
    np.add.at(counts, (words, target), 1)
    x2, target2, mask2 = t.batch(np.random.default_rng(9))
    words2 = x2.argmax(axis=-1)
    measured = np.mean(counts.argmax(axis=1)[words2] == target2)
    se = math.sqrt(0.4 * 0.95 * 0.3 * 0.7 / (T * B))  # the errors are at ambiguous words only
    assert measured == pytest.approx(t.accuracy_ceiling, abs=4 * se)
    log_p = np.log(counts / counts.sum(axis=1, keepdims=True))
    assert loss_of_predictions(t, log_p[words2], target2, mask2) == pytest.approx(t.baseline_loss, rel=0.01)


def test_lookahead_well_is_a_noun_before_a_verb_and_an_adverb_otherwise():
    code = {w: i for i, w in enumerate(lookahead.WORDS)}
    sentence = ["the", "well", "runs", "she", "sees", "well", ".", "light", "light", "keeps"]
    tags = lookahead.tags_of(np.array([code[w] for w in sentence]))
    assert [TAGS[i] for i in tags] == ["DET", "NOUN", "VERB", "PRON", "VERB", "ADV", "PUNCT", "ADJ", "NOUN", "VERB"]
    with pytest.raises(TaskError) as error:
        task(name="lookahead", seq_len=1)
    assert error.value.key == "task.seq_len"
