"""A model's streams with their trajectories, for the analysis (float64).

A stream is one recurrent chain: its parameters (W_hx, W_hh, b_h, (b_hh)), its input sequence in its own
step order and the states it runs through.  The analysis works on streams only, so an architecture plugs in
by listing its streams: ``stack_streams`` does it for a plain or bidirectional stack (engine.streams) and for
seq2seq (engine.seq2seq: an encoder stack, the bridge, a decoder stack), and ``stack_direct_gradients`` gives
each stream's direct cotangents (the loss, the layer above, or the bridge, at each step), which is what the lag
decomposition of dL/dW_hh starts from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..params import LayerParams, ModelSpec, Params
from ..reference import readout_backward, readout_loss
from .maps import StepMap, mm, stack_caches, step_map


@dataclass
class Stream:
    """One chain and its trajectory: s_{-1} = ``s_init``, s_t = F(s_{t-1}, X[t]) for its T steps."""

    name: str
    p: LayerParams  # float64
    map: StepMap
    activation: str
    X: np.ndarray  # (T, N, n) its inputs, in its own step order
    s_init: np.ndarray  # (N, D) s_{-1}
    S: np.ndarray = field(init=False)  # (T, N, D) s_0 .. s_{T-1}
    caches: dict = field(init=False)  # stacked step caches, (T N, .) step-major
    reverse: bool = False  # its step t is input position T-1-t

    def __post_init__(self):
        T, N = self.X.shape[:2]
        s, states, caches = self.s_init, [], []
        with np.errstate(all="ignore"):  # NaN and Inf are data
            for t in range(T):
                s, cache = self.map.forward(self.p, self.X[t], s, self.activation)
                states.append(s)
                caches.append(cache)
        self.S = np.stack(states)  # (T, N, D)
        self.caches = stack_caches(caches)

    @property
    def d(self) -> int:
        return self.p.W_hh.shape[1]

    @property
    def D(self) -> int:
        return self.S.shape[2]

    @property
    def H(self) -> np.ndarray:
        """(T, N, d) h_t, in the stream's step order."""
        return self.S[..., : self.d]

    def H_prev(self) -> np.ndarray:
        """(T, N, d) h_{t-1} (h_{-1} from s_init)."""
        return np.concatenate([self.s_init[None, :, : self.d], self.H[:-1]])


def as_float64(params: Params) -> Params:
    return params.astype(np.float64)


def _run_stack(spec: ModelSpec, layers, names, directions: int, x, s_init) -> list[Stream]:
    """Streams of a stack of ``len(layers) // directions`` layers over x (T, N, n); s_init[k]: stream k's s_{-1}."""
    fmap = step_map(spec.cell)
    X = np.asarray(x, dtype=np.float64)  # (T, N, n_l)
    streams: list[Stream] = []
    for l in range(len(layers) // directions):
        outs = []
        for r in range(directions):
            k = l * directions + r
            stream = Stream(names[k], layers[k], fmap, spec.activation, X[::-1] if r else X, s_init[k], reverse=r == 1)
            streams.append(stream)
            outs.append(stream.H[::-1] if r else stream.H)  # (T, N, d) by input position
        X = np.concatenate(outs, axis=2) if directions == 2 else outs[0]
    return streams


def stack_streams(
    spec: ModelSpec, params: Params, x: np.ndarray, s_init: np.ndarray | None = None, decoder_x=None
) -> list[Stream]:
    """The model's streams in float64, in ModelSpec.streams order: a plain or bidirectional stack run over
    x (T, N, n); for seq2seq the encoder over x, then the decoder over decoder_x (T_tgt, N, n_dec), each decoder
    layer from the bridge (the sum of its encoder layer's final states, h and c).  s_init (S, N, D): each
    stream's s_{-1} instead (None: zero, and the bridge; the trajectory a training pass takes)."""
    p64 = as_float64(params)
    D = step_map(spec.cell).state_size(spec.hidden_size)
    N = np.shape(x)[1]
    names, Dn = spec.streams, spec.directions
    inits = [np.zeros((N, D)) if s_init is None else np.asarray(s_init[k], dtype=np.float64) for k in range(len(names))]
    if not spec.seq2seq:
        return _run_stack(spec, p64.layers, names, Dn, x, inits)
    E = spec.layers * Dn  # encoder streams, then spec.layers decoder streams
    encoder = _run_stack(spec, p64.layers[:E], names[:E], Dn, x, inits[:E])
    if s_init is None:  # the bridge: the sum over directions of encoder layer l's final state
        inits[E:] = [sum(encoder[l * Dn + r].S[-1] for r in range(Dn)) for l in range(spec.layers)]
    return encoder + _run_stack(spec, p64.layers[E:], names[E:], 1, decoder_x, inits[E:])


def stack_direct_gradients(
    spec: ModelSpec, params: Params, streams: list[Stream], target, mask, loss_kind: str
) -> list[np.ndarray]:
    """Per stream, G (T, N, D): the direct cotangent of its state s_t, in its own step order: from the readout at
    t for the top layer, from the layer above at t below it (the layer above's total dL/dx_t), on h; and for a
    seq2seq encoder, the bridge's dL/ds_{-1} of decoder layer l at the last step of each of layer l's streams."""
    p64 = as_float64(params)
    d, L = spec.hidden_size, spec.layers
    Dn = spec.directions
    out: list[np.ndarray] = [np.empty(0)] * len(streams)
    E = L * Dn if spec.seq2seq else 0  # the streams before the ones the readout reads
    with np.errstate(all="ignore"):
        head = streams[E:] if spec.seq2seq else streams
        top = head[-1:] if spec.seq2seq else head[-Dn:]
        H_top = np.concatenate([s.H[::-1] if s.reverse else s.H for s in top], axis=2)  # (T, N, . d) by position
        _, _, dY = readout_loss(H_top, p64.W_yh, p64.b_y, target, mask, loss_kind)
        G = readout_backward(H_top, dY, p64.W_yh)[2]
        bridge = _backward_stack(head, G, 1 if spec.seq2seq else Dn, d, out, E)
        if spec.seq2seq:
            T_src, N = streams[0].S.shape[:2]
            G = np.zeros((T_src, N, Dn * d))
            _backward_stack(streams[:E], G, Dn, d, out, 0, bridge)
    return out


def _backward_stack(streams, G, directions, d, out, offset, bridge=None) -> list[np.ndarray]:
    """Back through a stack from the top layer's direct gradient G (T, N, directions d) by input position:
    fills out[offset + k] with stream k's direct cotangents (T, N, D); bridge[l] (N, D), when given, is added at
    the last step of every stream of layer l.  Returns each layer's dL/ds_{-1} (of its first stream)."""
    layers = len(streams) // directions
    initial: list[np.ndarray] = [np.empty(0)] * layers
    for l in range(layers - 1, -1, -1):
        first = streams[l * directions]
        dX = np.zeros(first.X.shape)  # (T, N, n_l) the gradient into the layer below, by input position
        for r in range(directions):
            k = l * directions + r
            st = streams[k]
            G_s = G[:, :, r * d : (r + 1) * d]
            C = np.zeros(st.S.shape)  # (T, N, D)
            C[..., :d] = G_s[::-1] if st.reverse else G_s  # its own step order
            if bridge is not None:
                C[-1] += bridge[l]
            out[offset + k] = C
            dU, dA, Lam, lam_init = total_backward(st, C)
            if r == 0:
                initial[l] = lam_init  # (a decoder layer's: the bridge's cotangent)
            dx = mm(dA, st.p.W_hx)  # (T, N, n_l)
            dX += dx[::-1] if st.reverse else dx
        G = dX
    return initial


def total_backward(stream: Stream, G: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Backpropagation through the stream from its direct cotangents G (T, N, D) (or (T, N, d): on h only).

    Returns dU, dA (T, N, G d) (the pre-activation gradients W_hh and W_hx see), Lam (T, N, D), the total
    dL/ds_t (lam_t = G_t + lam_{t+1} J_{t+1}), and dL/ds_{-1} (N, D)."""
    T, N, w = G.shape
    D = stream.D
    lam_next = np.zeros((N, 1, D))  # the cotangent handed back from step t+1
    dU: list[np.ndarray] = [np.empty(0)] * T
    dA: list[np.ndarray] = [np.empty(0)] * T
    Lam = np.zeros((T, N, D))
    for t in range(T - 1, -1, -1):
        lam = lam_next.copy()
        lam[:, 0, :w] += G[t]
        Lam[t] = lam[:, 0]
        cache = {k: v[t * N : (t + 1) * N] for k, v in stream.caches.items()}
        lam_next, du, da = stream.map.vjp(stream.p, cache, lam)
        dU[t], dA[t] = du[:, 0], da[:, 0]
    return np.stack(dU), np.stack(dA), Lam, lam_next[:, 0]
