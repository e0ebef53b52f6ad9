"""The engine's Python side: a pass's buffers, its shards on threads, and ``bptt``, the compiled pass.

``bptt`` packs the weights as the step kernel takes them (layers 1.. stacked, W_hh packed for the recurrent
products), keeps the state and chunk buffers in the caller's workspace across iterations, runs the step kernel
(step.py, nogil) on the whole batch or on each shard (shards.py), and adds the shards' results up.  The buffers
a cell needs come from its description (cells/__init__.py); a buffer a cell does not use is passed empty.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .cells import cell
from .cells.rnn import ACTIVATION_CODES
from .gemm import panels
from .metrics import StepResult, first_nonfinite, step_metric_names
from .params import LayerParams, ModelSpec, Params
from .primitives import vector_norm
from .readout import LOSS_CODES
from .shards import chunk_steps, default_threads, executor, kernel_blas_threads, shard_rows
from .step import CELL_CODES, grad_norms, pack_layers, step
from .streams import bidirectional_step

_EMPTY_I2 = np.zeros((0, 0), dtype=np.int64)
_EMPTY_F3 = {"float32": np.zeros((0, 0, 0), np.float32), "float64": np.zeros((0, 0, 0), np.float64)}
_NO_NORMS = np.zeros(0)
# what the step kernel gets for a buffer the cell does not use: empty, with the dimensions it indexes
_ABSENT = {
    "S": lambda L: (L, 0, 0, 0),
    "A": lambda L: (L, 0, 0, 0),
    "zero": lambda L: (0, 0),
    "U": lambda L: (0, 0),
    "dZ": lambda L: (0, 0, 0),
}


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


# ------------------------------------------------------------------------------------- buffers
def _work_buffers(spec: ModelSpec, T: int, B: int, chunk: int, n: int) -> dict:
    """What a step needs besides its inputs, weights and outputs: states (what BPTT must keep), chunk
    buffers, and the cell's own buffers (its description's ``buffers``); one set per shard."""
    if spec.bidirectional:
        return _bidirectional_buffers(spec, T, B, chunk, n)
    L, d, k = spec.layers, spec.hidden_size, spec.output_size
    desc = cell(spec.cell)
    dt = spec.np_dtype
    buf = {
        "H": np.empty((L, T, B, d), dt),  # states h_t, every layer
        "Y": np.empty((chunk, B, k), dt),  # readout of a chunk, then dY
        "G": np.empty((chunk, B, d), dt),  # direct, then total dL/dh
        "db64": np.empty((L, desc.blocks * d), np.float64),
        "dbhh64": np.empty((L, desc.blocks * d if desc.has_b_hh else 0), np.float64),
        "dby64": np.empty(k, np.float64),
    }
    sizes = {"L": L, "T": T, "B": B, "d": d, "Gd": desc.blocks * d, "chunk": chunk}
    for name, absent in _ABSENT.items():
        shape = desc.buffers.get(name)
        buf[name] = np.zeros(tuple(sizes[s] for s in shape) if shape else absent(L), dt)
    carry = desc.buffers.get("carry", ("L", "B", "d"))  # what crosses a chunk boundary
    buf["carry"] = np.zeros(tuple(sizes[s] for s in carry), dt)
    return buf


def _bidirectional_buffers(spec: ModelSpec, T: int, B: int, chunk: int, n: int) -> dict:
    """A bidirectional stack's buffers (streams.bidirectional_step): the cell's buffers with a direction
    axis after the layer axis, the inputs reversed and joined, and the direct gradients of a layer."""
    L, d, k = spec.layers, spec.hidden_size, spec.output_size
    desc = cell(spec.cell)
    dt = spec.np_dtype
    Gd = desc.blocks * d
    sizes = {"L": L, "T": T, "B": B, "d": d, "Gd": Gd, "chunk": chunk}

    def shape_of(name, absent):
        shape = desc.buffers.get(name)
        if shape is None:
            return absent
        dims = tuple(sizes[s] for s in shape)
        return dims[:1] + (2,) + dims[1:] if shape[0] == "L" else dims  # (L, 2, ...): per stream

    buf = {
        "H": np.empty((L, 2, T, B, d), dt),
        "S": np.zeros(shape_of("S", (L, 2, 0, 0, 0)), dt),
        "A": np.zeros(shape_of("A", (L, 2, 0, 0, 0)), dt),
        "zero": np.zeros(shape_of("zero", (0, 0)), dt),
        "U": np.zeros(shape_of("U", (0, 0)), dt),
        "dZ": np.zeros(shape_of("dZ", (0, 0, 0)), dt),
        "carry": np.zeros(tuple(sizes[s] for s in desc.buffers.get("carry", ("L", "B", "d"))[1:]), dt),
        "X_rev": np.empty((T, B, n), dt),  # layer 0's input, reversed
        "X_cat": np.empty((T, B, 2 * d), dt),  # [h_fwd_t ; h_rev_t] of a layer
        "X_cat_rev": np.empty((T, B, 2 * d), dt),
        "Y": np.empty((chunk, B, k), dt),
        "G_top": np.empty((chunk, B, 2 * d), dt),  # dY W_yh of a chunk
        "G_s": np.empty((2, T, B, d), dt),  # a layer's streams' direct grads
        "G_below": np.empty((T, B, 2 * d), dt),
        "DX": np.empty((chunk, B, max(n, 2 * d)), dt),  # dZ W_hx of a chunk
        "db64": np.empty((L, 2, Gd), np.float64),
        "dbhh64": np.empty((L, 2, Gd if desc.has_b_hh else 0), np.float64),
        "dby64": np.empty(k, np.float64),
    }
    return buf


def _stack_buffers(spec: ModelSpec) -> dict:
    """Room for the weights as the step kernel takes them: layers 1.. stacked, and packed W_hh (one set,
    shared by the shards)."""
    L, d, G = spec.layers, spec.hidden_size, cell(spec.cell).blocks
    dt = spec.np_dtype
    if spec.bidirectional:
        Gd = G * d
        return {
            "W_hx0": np.empty((2, Gd, spec.input_size), dt),
            "W_hxR": np.empty((L - 1, 2, Gd, 2 * d), dt),
            "W_hh": np.empty((L, 2, Gd, d), dt),
            "b_h": np.empty((L, 2, Gd), dt),
            "b_hh": np.empty((L, 2, Gd if cell(spec.cell).has_b_hh else 0), dt),
            "P_f": np.stack([np.stack([panels(d, Gd, dt)] * 2)] * L),  # (L, 2, ...) per stream
            "P_b": np.stack([np.stack([panels(Gd, d, dt)] * 2)] * L),
        }
    return {
        "W_hxR": np.empty((L - 1, G * d, d), dt),  # layers 1.. (none when L = 1)
        "W_hh": np.empty((L, G * d, d), dt),
        "b_h": np.empty((L, G * d), dt),
        "b_hh": np.empty((L, G * d if cell(spec.cell).has_b_hh else 0), dt),
        "P_f": np.stack([panels(d, G * d, dt)] * L),  # W_hh^T (d, Gd) packed, per layer
        "P_b": np.stack([panels(G * d, d, dt)] * L),
    }  # W_hh (Gd, d) packed


def _metric_block(spec: ModelSpec, T: int) -> np.ndarray:
    """(L, rows, T) NaN: the block the step kernel fills, rows as the cell's metric_rows()."""
    return np.full((len(spec.streams), cell(spec.cell).metric_row_count, T), np.nan)


def _shard_buffers(spec: ModelSpec, T: int, B: int, n: int, chunk: int, first: bool) -> dict:
    """A shard's work buffers and a chunk of its rows of x (``stage``; the shard reads x, the targets and
    the mask in place); the shards after the first also get their own gradients and metrics (summed into
    the first's, which are the pass's outputs)."""
    buf = _work_buffers(spec, T, B, chunk, n)
    buf["stage"] = np.empty((chunk, B, n), spec.np_dtype)  # (Tc, B_s, n)
    if not first:
        buf.update(grads=_new_grads(spec, n), M=_metric_block(spec, T), loss_t=np.empty(T))
    return buf


def _new_grads(spec: ModelSpec, n: int) -> tuple:
    """dW_hx0 (Gd, n), dW_hxR (L-1, Gd, d), dW_hh (L, Gd, d), db_h (L, Gd), db_hh (L, Gd) or (L, 0) for a
    cell without b_hh, dW_yh (k, d), db_y (k,): the step kernel's order."""
    L, d, k, G = spec.layers, spec.hidden_size, spec.output_size, cell(spec.cell).blocks
    dt = spec.np_dtype
    Gd, Gb = G * d, G * d if cell(spec.cell).has_b_hh else 0
    if spec.bidirectional:  # a direction axis after the layer axis
        return (
            np.empty((2, Gd, n), dt),
            np.empty((L - 1, 2, Gd, 2 * d), dt),
            np.empty((L, 2, Gd, d), dt),
            np.empty((L, 2, Gd), dt),
            np.empty((L, 2, Gb), dt),
            np.empty((k, 2 * d), dt),
            np.empty(k, dt),
        )
    return (
        np.empty((Gd, n), dt),
        np.empty((L - 1, Gd, d), dt),
        np.empty((L, Gd, d), dt),
        np.empty((L, Gd), dt),
        np.empty((L, Gb), dt),
        np.empty((k, d), dt),
        np.empty(k, dt),
    )


def _stack(params: Params, buf: dict, L: int):
    """W_hxR (L-1, Gd, d), W_hh (L, Gd, d), b_h (L, Gd), b_hh (L, Gd) or (L, 0): views when L = 1 (W_hxR
    empty), else copied into buf (``_stack_buffers``)."""
    layers = params.layers
    b_hh = buf["b_hh"]
    if L == 1:
        p = layers[0]
        if b_hh.shape[1]:
            b_hh = np.ascontiguousarray(p.b_hh)[None]
        return buf["W_hxR"], np.ascontiguousarray(p.W_hh)[None], np.ascontiguousarray(p.b_h)[None], b_hh
    W_hxR, W_hh, b_h = buf["W_hxR"], buf["W_hh"], buf["b_h"]
    for l, p in enumerate(layers):
        if l > 0:
            W_hxR[l - 1] = p.W_hx
        W_hh[l] = p.W_hh
        b_h[l] = p.b_h
        if b_hh.shape[1]:
            b_hh[l] = p.b_hh
    return W_hxR, W_hh, b_h, b_hh


def _result_grads(spec: ModelSpec, grads: tuple) -> Params:
    """The kernel's gradient arrays as Params, stream by stream (views, no copies)."""
    dW_hx0, dW_hxR, dW_hh, db_h, db_hh, dW_yh, db_y = grads
    if not spec.bidirectional:
        return Params(
            [
                LayerParams(
                    dW_hx0 if l == 0 else dW_hxR[l - 1], dW_hh[l], db_h[l], db_hh[l] if db_hh.shape[1] else None
                )
                for l in range(spec.layers)
            ],
            dW_yh,
            db_y,
        )
    layers = []
    for stream in range(len(spec.streams)):
        l, r = divmod(stream, spec.directions)
        at = (l, r) if spec.bidirectional else (l,)
        W_hx = (dW_hx0[r] if spec.bidirectional else dW_hx0) if l == 0 else dW_hxR[(l - 1,) + at[1:]]
        layers.append(LayerParams(W_hx, dW_hh[at], db_h[at], db_hh[at] if db_hh.shape[-1] else None))
    return Params(layers, dW_yh, db_y, spec.streams if spec.bidirectional else None)


def _weights(spec: ModelSpec, params: Params, buf: dict) -> tuple:
    """The weights in the step kernel's order: W_hx0, W_hxR, W_hh, b_h, b_hh, W_yh, b_y (stacked by layer,
    and by direction after the layer for a bidirectional stack: ``_stack_buffers``)."""
    readout = (np.ascontiguousarray(params.W_yh), np.ascontiguousarray(params.b_y))
    if not spec.bidirectional:
        return (np.ascontiguousarray(params.layers[0].W_hx),) + _stack(params, buf, spec.layers) + readout
    W_hx0, W_hxR, W_hh, b_h, b_hh = (buf[k] for k in ("W_hx0", "W_hxR", "W_hh", "b_h", "b_hh"))
    for s, p in enumerate(params.layers):  # stream s = 2 l + r
        l, r = divmod(s, 2)
        if l == 0:
            W_hx0[r] = p.W_hx
        else:
            W_hxR[l - 1, r] = p.W_hx
        W_hh[l, r] = p.W_hh
        b_h[l, r] = p.b_h
        if b_hh.shape[2]:
            b_hh[l, r] = p.b_hh
    return (W_hx0, W_hxR, W_hh, b_h, b_hh) + readout


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
    if spec.bidirectional:
        bidirectional_step(
            code,
            act,
            x,
            *weights,
            target_f,
            target_i,
            mask,
            b0,
            LOSS_CODES[loss_kind],
            inv_B,
            chunk,
            stage,
            P_f,
            P_b,
            buf["H"],
            buf["S"],
            buf["A"],
            buf["zero"],
            buf["U"],
            buf["X_rev"],
            buf["X_cat"],
            buf["X_cat_rev"],
            buf["Y"],
            buf["G_top"],
            buf["G_s"],
            buf["G_below"],
            buf["DX"],
            buf["dZ"],
            buf["carry"],
            *grads,
            buf["db64"],
            buf["dbhh64"],
            buf["dby64"],
            M,
            loss_t,
        )
        return
    step(
        code,
        act,
        x,
        *weights,
        target_f,
        target_i,
        mask,
        b0,
        LOSS_CODES[loss_kind],
        inv_B,
        chunk,
        stage,
        P_f,
        P_b,
        buf["H"],
        buf["S"],
        buf["A"],
        buf["zero"],
        buf["U"],
        buf["Y"],
        buf["G"],
        buf["dZ"],
        buf["carry"],
        *grads,
        buf["db64"],
        buf["dbhh64"],
        buf["dby64"],
        M,
        loss_t,
        norms,
    )


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
) -> StepResult:
    """One forward and backward pass with every metric, in compiled kernels that release the GIL.

    Arrays are assumed checked (``engine.check_batch``).  ``workspace``: a dict the caller keeps and passes
    back each iteration; the state and chunk buffers live in it and are reused while the shapes stay the
    same, so a steady run allocates only its outputs.  ``chunk``: steps per backward chunk (default:
    ``chunk_steps``).  ``shards``: how many parts of the batch the pass runs on (``shard_rows``; default
    ``shards.DEFAULT_SHARDS``); they decide the bits of the result.  ``threads``: how many of them run at once
    (default ``default_threads()``, divided by the threads of the kernels' BLAS if a user gave it more than
    one); they decide only the speed.  The returned arrays are new; nothing returned aliases the workspace.
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
            buf = _work_buffers(spec, T, B, Tc, n)
        else:
            buf = {"shards": [_shard_buffers(spec, T, b1 - b0, n, Tc, first=s == 0) for s, (b0, b1) in enumerate(rows)]}
        buf.update(_stack_buffers(spec))
        if workspace is not None:
            workspace.clear()
            workspace.update(key=key, buffers=buf)
    weights = _weights(spec, params, buf)
    grads = _new_grads(spec, n)
    M = _metric_block(spec, T)  # (L, metric, T)
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
        if not spec.bidirectional:
            grad_norms(*grads, norms)
    if spec.bidirectional:
        M[1::2] = M[1::2, :, ::-1].copy()  # reverse streams: from step order to input position
    metrics = {name: M[:, row] for name, row in _facts(spec)[2]}
    metrics["loss_t"] = loss_t
    result_grads = _result_grads(spec, grads)
    if spec.bidirectional:
        norms = np.array([vector_norm(np.ascontiguousarray(g).ravel()) for _, g in result_grads.named()])
    return StepResult(
        loss=float(loss_t.sum()),
        grads=result_grads,
        metrics=metrics,
        nonfinite=first_nonfinite(metrics, result_grads, norms),
        extras={"grad_norms": norms, "shards": len(rows)},
    )
