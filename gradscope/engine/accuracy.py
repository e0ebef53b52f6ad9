"""Accuracy of a classification readout: the share of scored positions whose largest logit is the target's.

    y_tb = W_yh h_tb + b_y,   accuracy = #{(t, b): mask[t,b] != 0 and argmax_k y_tbk = target_tb} / #{mask != 0}

For ce tasks only, at recorded iterations: the pass (driver.bptt) keeps the logits of no step (its readout
turns them into dY in place), so this takes the top layer's states the pass leaves in its buffers and redoes
the readout's GEMM, once, in blocks of rows (memory: a block of logits, not T B k of them).  Ties go to the
first largest logit (NumPy's and PyTorch's argmax).  A scored position whose logits hold a NaN makes the
accuracy NaN (NaN is data: a model that produces one has no accuracy), as does a batch with nothing scored.

    correct, scored, nan = counts(H_top, W_yh, b_y, target, mask)   # H_top (T, B, r), target (T, B) int
    share([counts(...), counts(...)])                                # shards of a batch added up
    accuracy(H_top, W_yh, b_y, target, mask)                         # both at once

NumPy twin: reference.accuracy (from the twin's own logits).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

ROWS_PER_BLOCK = 8192  # rows (t, b) of logits formed at once


def counts(
    H_top: np.ndarray, W_yh: np.ndarray, b_y: np.ndarray, target: np.ndarray, mask: np.ndarray
) -> tuple[int, int, bool]:
    """(correct, scored, whether a scored position's logits hold a NaN) for H_top (T, B, r) (any strides),
    W_yh (k, r), b_y (k,), target (T, B) ints, mask (T, B).  The logits are formed in the model's dtype, as
    the readout forms them."""
    T, B, r = H_top.shape
    scored = np.asarray(mask) != 0  # (T, B)
    correct = total = 0
    nan = False
    steps = max(1, ROWS_PER_BLOCK // max(B, 1))  # steps per block
    for t0 in range(0, T, steps):
        t1 = min(T, t0 + steps)
        keep = scored[t0:t1].reshape(-1)  # (rows,)
        if not keep.any():
            continue
        H = np.ascontiguousarray(H_top[t0:t1]).reshape(-1, r)[keep]  # (rows', r)
        Y = H @ W_yh.T + b_y  # (rows', k), one GEMM
        nan = nan or bool(np.isnan(Y).any())
        predicted = np.argmax(Y, axis=1)  # (rows',) the first largest
        correct += int(np.count_nonzero(predicted == np.asarray(target[t0:t1]).reshape(-1)[keep]))
        total += int(keep.sum())
    return correct, total, nan


def share(parts: Iterable[tuple[int, int, bool]]) -> float:
    """The accuracy of counts added up (e.g. over the shards of a batch): NaN when one saw a NaN or nothing
    was scored."""
    correct = total = 0
    nan = False
    for c, n, bad in parts:
        correct, total, nan = correct + c, total + n, nan or bad
    return float("nan") if nan or total == 0 else correct / total


def accuracy(H_top: np.ndarray, W_yh: np.ndarray, b_y: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """The accuracy of the readout on H_top (T, B, r) against target (T, B) where mask (T, B) != 0."""
    return share([counts(H_top, W_yh, b_y, target, mask)])


__all__ = ["counts", "share", "accuracy", "ROWS_PER_BLOCK"]
