"""The engine's Python side: a pass's buffers, its shards on threads, and ``bptt``, the compiled pass.

``bptt`` packs the weights as the step kernel takes them (layers 1.. stacked, W_hh packed for the recurrent
products), keeps the state and chunk buffers in the caller's workspace across iterations, runs the step kernel
(step.py, nogil) on the whole batch or on each shard (shards.py), and adds the shards' results up.  The buffers
a cell needs come from its description (cells/__init__.py); a buffer a cell does not use is passed empty.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from . import buffers
from .accuracy import counts as accuracy_counts, share as accuracy_share
from .cells import cell
from .cells.rnn import ACTIVATION_CODES
from .metrics import StepResult, first_nonfinite, step_metric_names
from .params import ModelSpec, Params
from .readout import LOSS_CODES
from .shards import chunk_steps, default_threads, executor, kernel_blas_threads, shard_rows
from .step import CELL_CODES, grad_norms, pack_layers, step
from .streams import bidirectional_step, stream_grad_norms

_EMPTY_I2 = np.zeros((0, 0), dtype=np.int64)
_EMPTY_F3: dict[str, np.ndarray] = {
    "float32": np.zeros((0, 0, 0), np.float32),
    "float64": np.zeros((0, 0, 0), np.float64),
}
_NO_NORMS = np.zeros(0)


@lru_cache(maxsize=64)
def _facts(spec: ModelSpec) -> tuple:
    """What every pass of this model asks of its description, worked out once: (cell code, activation code,
    [(metric, row)], arrays per pass's gradient norms)."""
    desc = cell(spec.cell)
    act = ACTIVATION_CODES[spec.activation] if desc.uses_activation else 0
    rows_of = desc.metric_rows()
    return (
        CELL_CODES[spec.cell],
        act,
        tuple((name, rows_of[name]) for name in step_metric_names(spec)),
        len(desc.parameters) * len(spec.streams) + 2,
    )


def _run_step(
    spec: ModelSpec,
    weights: tuple,
    packed: tuple,
    x,
    target_f,
    target_i,
    mask,
    b0: int,
    loss_kind: str,
    inv_B: float,
    chunk: int,
    buf: dict,
    grads: tuple,
    M,
    loss_t,
    norms,
) -> None:
    """One call of the step kernel (nogil) on a batch, or on its rows b0 .. (a shard), with its buffers;
    packed: (P_f, P_b), ``pack_layers`` of the weights' W_hh."""
    P_f, P_b = packed
    stage = buf.get("stage", _EMPTY_F3[spec.dtype])
    code, act = _facts(spec)[:2]
    # the arguments both step kernels take, in their order (step.step, streams.bidirectional_step)
    head = (code, act, x, *weights, target_f, target_i, mask, b0, LOSS_CODES[loss_kind], inv_B, chunk, stage, P_f, P_b)
    states = (buf["H"], buf["S"], buf["A"], buf["zero"], buf["U"])
    tail = (buf["dZ"], buf["carry"], *grads, buf["db64"], buf["dbhh64"], buf["dby64"], M, loss_t)
    if spec.bidirectional:
        streams = tuple(buf[k] for k in ("X_rev", "X_cat", "X_cat_rev", "Y", "Y_r", "G", "W_s", "dW_s"))
        bidirectional_step(*head, *states, *streams, buf["G_s"], buf["G_below"], buf["DX"], *tail, norms)
    else:
        step(*head, *states, buf["Y"], buf["G"], *tail, norms)


def _run_shards(
    spec: ModelSpec,
    weights: tuple,
    packed: tuple,
    x,
    target_f,
    target_i,
    mask,
    loss_kind: str,
    Tc: int,
    rows: list,
    shards: list,
    grads: tuple,
    M,
    loss_t,
    threads: int,
) -> None:
    """Run every shard on its rows of the batch (read in place), ``threads`` at a time (thread w runs shards
    w, w + threads, ...; thread 0 is this one, the others come from the pool), then add their results up in
    shard order, into the first shard's, which are the outputs:

        dW = sum_s dW_s,   loss_t = sum_s loss_t_s,   M = sum_s (B_s / B) M_s   (M_s: means over shard s)

    The bias gradients are added from the shards' float64 sums and rounded once."""
    B = x.shape[1]
    inv_B = 1.0 / B
    outputs = [(grads, M, loss_t)] + [(buf["grads"], buf["M"], buf["loss_t"]) for buf in shards[1:]]
    work = list(zip(rows, shards, outputs))

    def run_every(group):
        for (b0, _), buf, (g, m, lt) in group:
            _run_step(
                spec, weights, packed, x, target_f, target_i, mask, b0, loss_kind, inv_B, Tc, buf, g, m, lt, _NO_NORMS
            )

    threads = max(1, min(threads, len(shards)))
    pending = [executor().submit(run_every, work[w::threads]) for w in range(1, threads)]
    try:
        run_every(work[::threads])
    finally:
        for future in pending:  # every shard ends before its buffers can be touched again
            future.result()
    first, rest = shards[0], shards[1:]
    M *= (rows[0][1] - rows[0][0]) * inv_B
    db64, dbhh64, dby64 = first["db64"].copy(), first["dbhh64"].copy(), first["dby64"].copy()
    for (b0, b1), buf in zip(rows[1:], rest):
        for total, part in zip(grads, buf["grads"]):
            total += part
        M += (b1 - b0) * inv_B * buf["M"]
        loss_t += buf["loss_t"]
        db64 += buf["db64"]
        dbhh64 += buf["dbhh64"]
        dby64 += buf["dby64"]
    grads[3][...] = db64  # db_h (L, Gd)
    grads[4][...] = dbhh64  # db_hh (L, Gd) or (L, 0)
    grads[6][...] = dby64  # db_y (k,)


def bptt(
    spec: ModelSpec,
    params: Params,
    x: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray,
    loss_kind: str,
    *,
    workspace: dict | None = None,
    chunk: int | None = None,
    threads: int | None = None,
    shards: int | None = None,
    accuracy: bool = False,
) -> StepResult:
    """One forward and backward pass with every metric, in compiled kernels that release the GIL.

    Arrays are assumed checked (``engine.check_batch``).  ``workspace``: a dict the caller keeps and passes
    back each iteration; the state and chunk buffers live in it and are reused while the shapes stay the
    same, so a steady run allocates only its outputs.  ``chunk``: steps per backward chunk (default:
    ``chunk_steps``).  ``shards``: how many parts of the batch the pass runs on (``shard_rows``; default
    ``shards.DEFAULT_SHARDS``); they decide the bits of the result.  ``threads``: how many of them run at once
    (default ``default_threads()``, divided by the threads of the kernels' BLAS if a user gave it more than
    one); they decide only the speed.  ``accuracy`` (ce only): also metrics["accuracy"] (engine/accuracy.py).
    The returned arrays are new; nothing returned aliases the workspace.
    """
    T, B, n = x.shape
    dt = spec.np_dtype
    if threads is None:
        threads = default_threads()
    rows = shard_rows(spec, T, B, shards)
    if threads > 1 and len(rows) > 1:
        threads = max(1, threads // kernel_blas_threads())
    # steps per backward chunk: the batch's (each shard's chunk buffers hold its share of the chunk's rows)
    Tc = chunk_steps(T, B) if chunk is None else max(1, min(T, int(chunk)))
    key = (spec, T, B, n, Tc, tuple(rows))
    if workspace is not None and workspace.get("key") == key:
        buf = workspace["buffers"]
    else:
        if len(rows) == 1:
            buf = buffers.work_buffers(spec, T, B, Tc, n)
        else:
            buf = {
                "shards": [
                    buffers.shard_buffers(spec, T, b1 - b0, n, Tc, first=s == 0) for s, (b0, b1) in enumerate(rows)
                ]
            }
        buf.update(buffers.stack_buffers(spec))
        if workspace is not None:
            workspace.clear()
            workspace.update(key=key, buffers=buf)
    weights = buffers.weights(spec, params, buf)
    grads = buffers.new_grads(spec, n)
    M = buffers.metric_block(spec, T)  # (L, metric, T)
    loss_t = np.empty(T)
    norms = np.empty(_facts(spec)[3])  # Params.named() order
    x = np.ascontiguousarray(x, dtype=dt)  # the caller's, when they fit
    if loss_kind == "mse":
        target_f, target_i = np.ascontiguousarray(target, dtype=dt), _EMPTY_I2
    else:
        target_f, target_i = _EMPTY_F3[spec.dtype], np.ascontiguousarray(target, dtype=np.int64)
    mask = np.ascontiguousarray(mask, dtype=np.float64)
    packed = (buf["P_f"], buf["P_b"])
    if spec.bidirectional:  # one packed W_hh per stream: (L, 2, ..) as (2L, ..)
        S = len(spec.streams)
        pack_layers(
            weights[2].reshape((S,) + weights[2].shape[-2:]),
            buf["P_f"].reshape((S,) + buf["P_f"].shape[-3:]),
            buf["P_b"].reshape((S,) + buf["P_b"].shape[-3:]),
        )
    else:
        pack_layers(weights[2], *packed)
    if len(rows) == 1:
        _run_step(
            spec, weights, packed, x, target_f, target_i, mask, 0, loss_kind, 1.0 / B, Tc, buf, grads, M, loss_t, norms
        )
    else:
        _run_shards(
            spec,
            weights,
            packed,
            x,
            target_f,
            target_i,
            mask,
            loss_kind,
            Tc,
            rows,
            buf["shards"],
            grads,
            M,
            loss_t,
            threads,
        )
        (stream_grad_norms if spec.bidirectional else grad_norms)(*grads, norms)
    metrics = {name: M[:, row] for name, row in _facts(spec)[2]}
    metrics["loss_t"] = loss_t
    result_grads = buffers.result_grads(spec, grads)
    if accuracy and loss_kind == "ce":  # the readout once more, on the top states the pass left in its buffers
        metrics["accuracy"] = np.asarray(
            accuracy_share(
                accuracy_counts(H, weights[5], weights[6], target_i[:, b0:b1], mask[:, b0:b1])
                for b0, b1, H in buffers.top_states(spec, buf, rows)
            )
        )
    return StepResult(
        loss=float(loss_t.sum()),
        grads=result_grads,
        metrics=metrics,
        nonfinite=first_nonfinite(metrics, result_grads, norms),
        extras={"grad_norms": norms, "shards": len(rows)},
    )
