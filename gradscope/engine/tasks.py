"""The tasks that make training data.  Each says which loss it uses, which steps it scores (the mask) and what
a trivial strategy scores, in the same units as the loss L (docs/trace_format.md):

    L = (1/B) sum_{t,b} mask[t,b] ell(y_tb, target_tb),
    ell = 0.5 ||y - target||^2 (mse)  or  -log softmax(y)[target] (ce)

so a loss summed over the scored steps and averaged over the batch.

    task = make_task(run.task, "float32")
    x, target, mask = task.batch(rng)     # x (T, B, n); target (T, B, k) float (mse) or (T, B) int (ce); mask (T, B)

probe    x ~ N(0, 1), an mse target ~ N(0, 1) at the last step only.  Baseline: predict 0, L = k / 2.
adding   Hochreiter & Schmidhuber (1997): channel 0 holds values ~ U[0, 1], channel 1 marks two of them (one in
         each half of the sequence); the target at the last step is the sum of the marked values (mse).
         Baseline: always predict 1.  The sum s has mean 1 and variance 2/12, so E[(s - 1)^2] = 1/6 ~ 0.167 (the
         figure usually quoted) and in our units L = 0.5 E[(s - 1)^2] = 1/12 ~ 0.0833.
copy     Reproduce copy_length symbols (out of `symbols`) after a delay: the symbols come first, then blanks, then
         a "go" marker at step T - copy_length - 1; the last copy_length steps are scored (ce).  Inputs are one-hot
         over symbols + blank + go.  Baseline (memoryless): predict the uniform distribution over the symbols,
         L = copy_length * ln(symbols).
charlm   Next-character prediction on a text (the experiment's task.text, or the corpus shipped in
         gradscope/engine/data/corpus.txt), every step scored (ce).  Inputs one-hot over the text's characters.
         Baseline (memoryless): predict the text's character frequencies, L = T * H(unigram) in nats.
translate  (seq2seq only) A small synthetic translation: the source is seq_len symbols (one-hot), the target
         the first target_len of them translated word by word through a fixed dictionary (a permutation of the
         symbols), in the source's order; the decoder reads the previous target word (teacher forcing; a start
         code first); every decoder step scored (ce).  Baseline (no memory of the source): the uniform
         distribution over the symbols, L = target_len * ln(symbols).  Target word t needs source word t, the
         path from it to the decoder is T_src - t encoder steps plus t decoder steps; task.reverse_source feeds
         the source backwards (Sutskever et al. 2014), which makes the first words' path the shortest.
tagging  Sequence labelling in the spirit of part-of-speech tagging on sentences from a small synthetic grammar
         (below); the label of an ambiguous word ("saw", "run", "watch", ...) depends on the words before it;
         every step scored (ce).  Baseline (memoryless): predict each word's tag distribution given the word
         alone, L = T * H(tag | word), estimated once from 200 000 generated words with a fixed seed.
lookahead  Tagging in which an ambiguous word's tag is decided by the word AFTER it (the lecture's "well": adverb
         or noun), words drawn independently (engine/lookahead.py); every step scored (ce).  A model that reads
         forward only can do no better than the word alone: its best expected accuracy is known in closed form,
         1 - q min(P, 1 - P) (q = A (T-1) / T), the task's ``accuracy_ceiling``; its best loss, A (T-1) H(P), is
         the baseline.  A bidirectional model can reach accuracy 1 and loss 0.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from . import lookahead
from .tagging import TAGS, VOCABULARY, tagging_conditional_entropy, tagging_stream  # the tagging grammar

DEFAULT_CORPUS = Path(__file__).parent / "data" / "corpus.txt"


class TaskError(ValueError):
    """A task setting that cannot work; ``key`` is the dotted experiment-file key at fault."""

    def __init__(self, message: str, key: str):
        super().__init__(message)
        self.key = key


class Task:
    """Base: subclasses set the attributes and implement ``batch``."""

    name = ""
    loss_kind = "mse"  # "mse" | "ce"
    input_size = 0  # n
    output_size = 0  # k
    baseline_loss: float | None = None
    baseline_strategy = ""  # the trivial strategy the baseline scores
    accuracy_ceiling: float | None = None  # the best expected accuracy a unidirectional model can reach, if known
    description = ""
    architectures: tuple[str, ...] = ("stack",)  # the architectures it makes data for (engine.params)
    # seq2seq (set by make_task): the decoder's steps and input size, and whether the source is fed backwards
    target_len, decoder_input_size, reverse_source = 0, 0, False

    def __init__(self, seq_len: int, batch_size: int, dtype: str):
        self.seq_len, self.batch_size, self.dtype = int(seq_len), int(batch_size), np.dtype(dtype)

    def batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def seq2seq_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x (T_src, B, n), decoder_x (T_tgt, B, n_dec), target, mask (T_tgt, B)) for an encoder-decoder;
        x is fed backwards (t = 0 holds the last source word) when reverse_source."""
        x, decoder_x, target, mask = self._seq2seq_batch(rng)
        if self.reverse_source:
            x = np.ascontiguousarray(x[::-1])
        return x, decoder_x, target, mask

    def _seq2seq_batch(self, rng):
        raise NotImplementedError

    def _one_hot(self, symbols: np.ndarray, size: int) -> np.ndarray:
        x = np.zeros(symbols.shape + (size,), dtype=self.dtype)  # (T, B, size)
        np.put_along_axis(x, symbols[..., None], 1, axis=-1)
        return x


class ProbeTask(Task):
    name = "probe"
    loss_kind = "mse"
    baseline_strategy = "predict 0"
    architectures = ("stack", "seq2seq")

    def __init__(self, seq_len, batch_size, dtype, input_size: int, output_size: int):
        super().__init__(seq_len, batch_size, dtype)
        self.input_size, self.output_size = int(input_size), int(output_size)
        self.baseline_loss = self.output_size / 2  # E[0.5 ||t||^2], t ~ N(0, I_k)
        self.description = (
            f"probe: x ~ N(0, 1) in {self.input_size} dimensions, an mse target ~ N(0, 1) in "
            f"{self.output_size} dimensions scored at the last step only"
        )

    def batch(self, rng):
        T, B = self.seq_len, self.batch_size
        x = rng.standard_normal((T, B, self.input_size)).astype(self.dtype)  # (T, B, n)
        target = np.zeros((T, B, self.output_size), dtype=self.dtype)  # (T, B, k)
        target[-1] = rng.standard_normal((B, self.output_size))
        mask = np.zeros((T, B), dtype=self.dtype)  # (T, B)
        mask[-1] = 1
        return x, target, mask

    def _seq2seq_batch(self, rng):
        """The encoder reads x ~ N(0, 1); the decoder reads N(0, 1) noise; scored at its last step."""
        x = rng.standard_normal((self.seq_len, self.batch_size, self.input_size)).astype(self.dtype)
        decoder_x, target, mask = self.batch_of_length(rng, self.target_len)
        return x, decoder_x, target, mask

    def batch_of_length(self, rng, T):
        saved, self.seq_len = self.seq_len, T
        try:
            return self.batch(rng)
        finally:
            self.seq_len = saved


class TranslateTask(Task):
    name = "translate"
    loss_kind = "ce"
    baseline_strategy = "predict the uniform distribution over the symbols (no memory of the source)"
    architectures = ("seq2seq",)

    def __init__(self, seq_len, batch_size, dtype, symbols: int, target_len: int):
        super().__init__(seq_len, batch_size, dtype)
        if target_len > seq_len:
            raise TaskError(
                f"translate scores target word t against source word t, so task.target_len must be at most "
                f"task.seq_len = {seq_len}, got {target_len}",
                "task.target_len",
            )
        self.symbols = int(symbols)
        self.input_size = self.output_size = self.symbols
        self.start = self.symbols  # the decoder's first input: a start code after the words
        # the dictionary: a fixed permutation of the words, the same for every run with this vocabulary
        self.dictionary = np.random.default_rng(self.symbols).permutation(self.symbols)
        self.baseline_loss = target_len * math.log(self.symbols)
        self.description = (
            f"translate: {seq_len} source words out of {symbols}, the first {target_len} translated word by "
            f"word (teacher forcing); ce at every decoder step"
        )

    def _seq2seq_batch(self, rng):
        T, T_tgt, B = self.seq_len, self.target_len, self.batch_size
        source = rng.integers(0, self.symbols, size=(T, B))  # (T, B)
        target = self.dictionary[source[:T_tgt]]  # (T_tgt, B) int
        previous = np.concatenate([np.full((1, B), self.start), target[:-1]])  # (T_tgt, B) teacher forcing
        x = self._one_hot(source, self.symbols)  # (T, B, symbols)
        decoder_x = self._one_hot(previous, self.symbols + 1)  # (T_tgt, B, symbols + 1)
        mask = np.ones((T_tgt, B), dtype=self.dtype)
        return x, decoder_x, target.astype(np.int64), mask


class AddingTask(Task):
    name = "adding"
    loss_kind = "mse"
    input_size, output_size = 2, 1
    baseline_loss = 1 / 12
    baseline_strategy = "always predict 1 (the mean of the sum)"

    def __init__(self, seq_len, batch_size, dtype):
        super().__init__(seq_len, batch_size, dtype)
        if seq_len < 2:
            raise TaskError(
                f"the adding problem needs seq_len >= 2 (one marker in each half), got {seq_len}", "task.seq_len"
            )
        self.description = (
            f"adding problem: sum the two marked values out of {seq_len} (one marker in each "
            f"half), mse at the last step"
        )

    def batch(self, rng):
        T, B = self.seq_len, self.batch_size
        values = rng.uniform(0.0, 1.0, size=(T, B))  # (T, B)
        first = rng.integers(0, T // 2, size=B)  # (B,) in the first half
        second = rng.integers(T // 2, T, size=B)  # (B,) in the second half
        markers = np.zeros((T, B))
        markers[first, np.arange(B)] = 1
        markers[second, np.arange(B)] = 1
        x = np.stack([values, markers], axis=-1).astype(self.dtype)  # (T, B, 2)
        target = np.zeros((T, B, 1), dtype=self.dtype)  # (T, B, 1)
        target[-1, :, 0] = values[first, np.arange(B)] + values[second, np.arange(B)]
        mask = np.zeros((T, B), dtype=self.dtype)
        mask[-1] = 1
        return x, target, mask


class CopyTask(Task):
    name = "copy"
    loss_kind = "ce"
    baseline_strategy = "predict the uniform distribution over the symbols (no memory)"

    def __init__(self, seq_len, batch_size, dtype, symbols: int, copy_length: int):
        super().__init__(seq_len, batch_size, dtype)
        if seq_len < 2 * copy_length + 1:
            raise TaskError(
                f"the copy task needs seq_len >= 2 * copy_length + 1 = {2 * copy_length + 1} "
                f"(symbols, go marker, answer), got seq_len = {seq_len}",
                "task.seq_len",
            )
        self.symbols, self.copy_length = int(symbols), int(copy_length)
        self.blank, self.go = self.symbols, self.symbols + 1  # input codes after the symbols
        self.input_size, self.output_size = self.symbols + 2, self.symbols
        self.baseline_loss = self.copy_length * math.log(self.symbols)
        delay = seq_len - 2 * copy_length
        self.description = (
            f"copy: remember {copy_length} symbols out of {symbols} over a delay of {delay} "
            f"steps, reproduce them after the go marker; ce on the last {copy_length} steps"
        )

    def batch(self, rng):
        T, B, m = self.seq_len, self.batch_size, self.copy_length
        data = rng.integers(0, self.symbols, size=(m, B))  # (m, B)
        codes = np.full((T, B), self.blank, dtype=np.int64)  # (T, B)
        codes[:m] = data
        codes[T - m - 1] = self.go
        x = self._one_hot(codes, self.input_size)  # (T, B, symbols + 2)
        target = np.zeros((T, B), dtype=np.int64)  # unscored steps: class 0
        target[T - m :] = data
        mask = np.zeros((T, B), dtype=self.dtype)
        mask[T - m :] = 1
        return x, target, mask


@lru_cache(maxsize=8)
def _read_corpus(path: str, mtime: float) -> str:
    return Path(path).read_text(encoding="utf-8")


def load_corpus(text: str) -> tuple[str, Path]:
    """The text named by task.text ("" = the shipped corpus) and its path."""
    if "\x00" in text:  # the operating system refuses such a path (ValueError), as it would a missing file
        raise TaskError(f"got {text!r}; expected a file name without a NUL character", "task.text")
    path = Path(text) if text else DEFAULT_CORPUS
    try:
        return _read_corpus(str(path), path.stat().st_mtime), path
    except FileNotFoundError:
        raise TaskError(f"text file {str(path)!r} does not exist", "task.text") from None
    except (OSError, UnicodeDecodeError) as error:
        raise TaskError(f"cannot read text file {str(path)!r} as UTF-8: {error}", "task.text") from None


class CharLMTask(Task):
    name = "charlm"
    loss_kind = "ce"
    baseline_strategy = "predict the text's character frequencies (no memory)"

    def __init__(self, seq_len, batch_size, dtype, text: str = ""):
        super().__init__(seq_len, batch_size, dtype)
        corpus, path = load_corpus(text)
        if len(corpus) < seq_len + 1:
            raise TaskError(
                f"the text {str(path)!r} has {len(corpus)} characters; next-character prediction over "
                f"seq_len = {seq_len} steps needs at least {seq_len + 1}",
                "task.seq_len",
            )
        self.vocabulary = "".join(sorted(set(corpus)))
        index = {ch: i for i, ch in enumerate(self.vocabulary)}
        self.codes = np.array([index[ch] for ch in corpus], dtype=np.int64)  # (N,)
        self.input_size = self.output_size = len(self.vocabulary)
        freq = np.bincount(self.codes, minlength=len(self.vocabulary)) / len(self.codes)
        self.unigram_entropy = float(-np.sum(freq[freq > 0] * np.log(freq[freq > 0])))
        self.baseline_loss = seq_len * self.unigram_entropy
        self.description = (
            f"character-level language model on {path.name} ({len(corpus)} characters, "
            f"{len(self.vocabulary)} distinct): predict the next character, ce at every step"
        )

    def batch(self, rng):
        T, B = self.seq_len, self.batch_size
        starts = rng.integers(0, len(self.codes) - T, size=B)  # (B,)
        window = self.codes[starts[None, :] + np.arange(T + 1)[:, None]]  # (T + 1, B)
        x = self._one_hot(window[:-1], self.input_size)  # (T, B, V)
        target = window[1:].copy()  # (T, B)
        mask = np.ones((T, B), dtype=self.dtype)
        return x, target, mask


class TaggingTask(Task):
    name = "tagging"
    loss_kind = "ce"
    input_size, output_size = len(VOCABULARY), len(TAGS)
    baseline_strategy = "predict each word's tag distribution from the word alone (no context)"

    def __init__(self, seq_len, batch_size, dtype):
        super().__init__(seq_len, batch_size, dtype)
        self.baseline_loss = seq_len * tagging_conditional_entropy()
        self.description = (
            f"tagging: label each of {seq_len} words of a synthetic grammar with one of "
            f"{len(TAGS)} tags; ambiguous words need the words before them; ce at every step"
        )

    def batch(self, rng):
        T, B = self.seq_len, self.batch_size
        codes = np.zeros((T, B), dtype=np.int64)
        target = np.zeros((T, B), dtype=np.int64)
        for b in range(B):
            codes[:, b], target[:, b] = tagging_stream(rng, T)
        x = self._one_hot(codes, self.input_size)  # (T, B, V)
        mask = np.ones((T, B), dtype=self.dtype)
        return x, target, mask


class LookaheadTask(Task):
    name = "lookahead"
    loss_kind = "ce"
    input_size, output_size = len(lookahead.WORDS), len(lookahead.TAGS)
    baseline_strategy = "tag each word from the word alone: the best any unidirectional model can do"

    def __init__(self, seq_len, batch_size, dtype):
        super().__init__(seq_len, batch_size, dtype)
        if seq_len < 2:
            raise TaskError(
                f"the lookahead task needs seq_len >= 2 (an ambiguous word needs a word after it), got {seq_len}",
                "task.seq_len",
            )
        self.baseline_loss = lookahead.unidirectional_loss(seq_len)
        self.accuracy_ceiling = lookahead.unidirectional_accuracy(seq_len)
        self.description = (
            f"lookahead tagging: label each of {seq_len} independent words with one of {len(lookahead.TAGS)} tags; "
            f"an ambiguous word's tag is decided by the word after it; ce at every step; a unidirectional "
            f"model's best accuracy is {self.accuracy_ceiling:.4f}"
        )

    def batch(self, rng):
        codes = lookahead.sequence_codes(rng, self.seq_len, self.batch_size)  # (T, B)
        x = self._one_hot(codes, self.input_size)  # (T, B, V)
        mask = np.ones((self.seq_len, self.batch_size), dtype=self.dtype)
        return x, lookahead.tags_of(codes), mask


def make_task(task_config, dtype: str = "float32", architecture: str = "stack") -> Task:
    """The task described by a config.TaskConfig (or anything with the same attributes), making data for
    ``architecture`` ("stack", or "seq2seq": then ``seq2seq_batch``)."""
    c = task_config
    target_len = getattr(c, "target_len", None) or c.seq_len
    task: Task
    if c.name == "translate":
        task = TranslateTask(c.seq_len, c.batch_size, dtype, c.symbols, target_len)
    elif c.name == "probe":
        task = ProbeTask(c.seq_len, c.batch_size, dtype, c.input_size or 32, c.output_size or 32)
    elif c.name == "adding":
        task = AddingTask(c.seq_len, c.batch_size, dtype)
    elif c.name == "copy":
        task = CopyTask(c.seq_len, c.batch_size, dtype, c.symbols, c.copy_length)
    elif c.name == "charlm":
        task = CharLMTask(c.seq_len, c.batch_size, dtype, c.text)
    elif c.name == "tagging":
        task = TaggingTask(c.seq_len, c.batch_size, dtype)
    elif c.name == "lookahead":
        task = LookaheadTask(c.seq_len, c.batch_size, dtype)
    else:
        raise TaskError(f"unknown task {c.name!r}; expected one of {TASK_NAMES}", "task.name")
    if c.name != "probe":
        for key, value, size in (
            ("input_size", c.input_size, task.input_size),
            ("output_size", c.output_size, task.output_size),
        ):
            if value is not None and value != size:
                raise TaskError(f"the {c.name} task fixes {key} = {size}, got {value}; leave it out", f"task.{key}")
    if architecture not in task.architectures:
        takers = [name for name, kind in TASK_CLASSES.items() if architecture in kind.architectures]
        raise TaskError(
            f"the {c.name} task makes data for architecture = {' or '.join(map(repr, task.architectures))}; "
            f"with architecture = {architecture!r} use task.name = {' or '.join(map(repr, takers))}",
            "task.name",
        )
    if architecture == "seq2seq":
        task.target_len = target_len
        task.reverse_source = bool(getattr(c, "reverse_source", False))
        task.decoder_input_size = task.symbols + 1 if isinstance(task, TranslateTask) else task.input_size
        if isinstance(task, ProbeTask):
            task.description += f"; seq2seq: the decoder reads {target_len} steps of N(0, 1) noise"
        if task.reverse_source:
            task.description += "; the source fed backwards"
    return task


# The task registry: every task GradScope knows, by the name an experiment file gives (config.TaskConfig.name
# accepts exactly these).
TaskName = Literal["probe", "adding", "copy", "charlm", "tagging", "translate", "lookahead"]  # TASK_CLASSES' keys
TASK_CLASSES: dict[str, type[Task]] = {
    "probe": ProbeTask,
    "adding": AddingTask,
    "copy": CopyTask,
    "charlm": CharLMTask,
    "tagging": TaggingTask,
    "translate": TranslateTask,
    "lookahead": LookaheadTask,
}
TASK_NAMES: tuple[TaskName, ...] = get_args(TaskName)


def loss_kind_of(task_config) -> str:
    """ "mse" or "ce": the loss a task uses, known without building it (e.g. for a run that never started)."""
    return TASK_CLASSES[task_config.name].loss_kind


def task_sizes(task_config, architecture: str = "stack") -> tuple[int, int]:
    """(input size n, output size k) of a task without drawing any data."""
    task = make_task(task_config, architecture=architecture)
    return task.input_size, task.output_size


__all__ = [
    "Task",
    "TaskError",
    "ProbeTask",
    "AddingTask",
    "CopyTask",
    "CharLMTask",
    "TaggingTask",
    "TranslateTask",
    "LookaheadTask",
    "make_task",
    "task_sizes",
    "loss_kind_of",
    "TASK_CLASSES",
    "TASK_NAMES",
    "TaskName",
    "TAGS",
    "VOCABULARY",
    "DEFAULT_CORPUS",
    "load_corpus",
    "tagging_conditional_entropy",
]
