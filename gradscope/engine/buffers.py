"""A pass's buffers: states, chunk buffers and stacked weights, made once and kept in the caller's workspace.

What a cell needs besides H comes from its description (cells/__init__.py, ``buffers``); what it does not use
is passed empty, with the dimensions the step kernel indexes.  A bidirectional stack has a direction axis after
the layer axis (streams.py).
"""

from __future__ import annotations

import numpy as np

from .cells import cell
from .gemm import panels
from .params import LayerParams, ModelSpec, Params

# what the step kernel gets for a buffer the cell does not use: empty, with the dimensions it indexes
ABSENT = {
    "S": lambda L: (L, 0, 0, 0),
    "A": lambda L: (L, 0, 0, 0),
    "zero": lambda L: (0, 0),
    "U": lambda L: (0, 0),
    "dZ": lambda L: (0, 0, 0),
}


# ------------------------------------------------------------------------------------- buffers
def work_buffers(spec: ModelSpec, T: int, B: int, chunk: int, n: int) -> dict:
    """What a step needs besides its inputs, weights and outputs: states (what BPTT must keep), chunk
    buffers, and the cell's own buffers (its description's ``buffers``); one set per shard."""
    if spec.bidirectional:
        return bidirectional_buffers(spec, T, B, chunk, n)
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
    for name, absent in ABSENT.items():
        shape = desc.buffers.get(name)
        buf[name] = np.zeros(tuple(sizes[s] for s in shape) if shape else absent(L), dt)
    carry = desc.buffers.get("carry", ("L", "B", "d"))  # what crosses a chunk boundary
    buf["carry"] = np.zeros(tuple(sizes[s] for s in carry), dt)
    return buf


def bidirectional_buffers(spec: ModelSpec, T: int, B: int, chunk: int, n: int) -> dict:
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

    Tl = T if L > 1 else 0

    buf = {
        "H": np.empty((L, 2, T, B, d), dt),
        "S": np.zeros(shape_of("S", (L, 2, 0, 0, 0)), dt),
        "A": np.zeros(shape_of("A", (L, 2, 0, 0, 0)), dt),
        "zero": np.zeros(shape_of("zero", (0, 0)), dt),
        "U": np.zeros(shape_of("U", (0, 0)), dt),
        "dZ": np.zeros(shape_of("dZ", (0, 0, 0)), dt),
        "carry": np.zeros(tuple(sizes[s] for s in desc.buffers.get("carry", ("L", "B", "d"))[1:]), dt),
        "X_rev": np.empty((T, B, n), dt),  # layer 0's input, reversed
        "Y": np.empty((T, B, k), dt),  # the readout, then dY, by input position
        "Y_r": np.empty((T, B, k), dt),  # the same in the reverse stream's step order
        "G": np.empty((chunk, B, d), dt),  # a top-layer stream's direct gradient of a chunk
        "W_s": np.empty((2, k, d), dt),  # W_yh's block per stream
        "dW_s": np.empty((2, k, d), dt),
        # a stack of L > 1 layers only: a layer's input joined from below, the lower layers' direct gradients
        "X_cat": np.empty((Tl, B, 2 * d), dt),  # [h_fwd_t ; h_rev_t] of a layer
        "X_cat_rev": np.empty((Tl, B, 2 * d), dt),
        "G_s": np.empty((2, Tl, B, d), dt),  # a layer's streams' direct grads
        "G_below": np.empty((Tl, B, 2 * d), dt),
        "DX": np.empty((chunk if L > 1 else 0, B, max(n, 2 * d)), dt),  # dZ W_hx of a chunk
        "db64": np.empty((L, 2, Gd), np.float64),
        "dbhh64": np.empty((L, 2, Gd if desc.has_b_hh else 0), np.float64),
        "dby64": np.empty(k, np.float64),
    }
    return buf


def stack_buffers(spec: ModelSpec) -> dict:
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


def metric_block(spec: ModelSpec, T: int) -> np.ndarray:
    """(L, rows, T) NaN: the block the step kernel fills, rows as the cell's metric_rows()."""
    return np.full((len(spec.streams), cell(spec.cell).metric_row_count, T), np.nan)


def shard_buffers(spec: ModelSpec, T: int, B: int, n: int, chunk: int, first: bool) -> dict:
    """A shard's work buffers and a chunk of its rows of x (``stage``; the shard reads x, the targets and
    the mask in place); the shards after the first also get their own gradients and metrics (summed into
    the first's, which are the pass's outputs)."""
    buf = work_buffers(spec, T, B, chunk, n)
    buf["stage"] = np.empty((chunk, B, n), spec.np_dtype)  # (Tc, B_s, n)
    if not first:
        buf.update(grads=new_grads(spec, n), M=metric_block(spec, T), loss_t=np.empty(T))
    return buf


def new_grads(spec: ModelSpec, n: int) -> tuple:
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


def stack(params: Params, buf: dict, L: int):
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


def result_grads(spec: ModelSpec, grads: tuple) -> Params:
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


def weights(spec: ModelSpec, params: Params, buf: dict) -> tuple:
    """The weights in the step kernel's order: W_hx0, W_hxR, W_hh, b_h, b_hh, W_yh, b_y (stacked by layer,
    and by direction after the layer for a bidirectional stack: ``_stack_buffers``)."""
    readout = (np.ascontiguousarray(params.W_yh), np.ascontiguousarray(params.b_y))
    if not spec.bidirectional:
        return (np.ascontiguousarray(params.layers[0].W_hx),) + stack(params, buf, spec.layers) + readout
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


def top_states(spec: ModelSpec, buf: dict, rows: list) -> list[tuple[int, int, np.ndarray]]:
    """What the readout read in the pass that just filled ``buf``: (b0, b1, H_top (T, b1 - b0, r)) per shard
    of the batch's rows (views, or a joined copy for a bidirectional stack: [h_fwd_t ; h_rev_t] by input
    position, its reverse stream's buffer being in step order).  The backward pass only reads H."""
    L = spec.layers
    shards = buf["shards"] if "shards" in buf else [buf]
    out = []
    for (b0, b1), shard in zip(rows, shards):
        H = shard["H"]
        if spec.bidirectional:
            top = np.concatenate([H[L - 1, 0], H[L - 1, 1, ::-1]], axis=2)  # (T, B_s, 2d)
        else:
            top = H[L - 1]  # (T, B_s, d)
        out.append((b0, b1, top))
    return out
