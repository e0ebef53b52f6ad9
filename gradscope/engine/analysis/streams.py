"""A model's streams with their trajectories, for the analysis (float64).

A stream is one recurrent chain: its parameters (W_hx, W_hh, b_h, (b_hh)), its input sequence in its own
step order and the states it runs through.  The analysis works on streams only, so an architecture plugs in
by listing its streams: ``stack_streams`` does it for a plain or bidirectional stack (engine.streams), and
``stack_direct_gradients`` gives each stream's direct gradient (the loss, or the layer above, at each step),
which is what the lag decomposition of dL/dW_hh starts from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..params import LayerParams, ModelSpec, Params
from ..reference import readout_backward, readout_loss
from .maps import StepMap, stack_caches, step_map


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


def stack_streams(spec: ModelSpec, params: Params, x: np.ndarray, s_init: np.ndarray | None = None) -> list[Stream]:
    """The streams of a plain or bidirectional stack run over x (T, N, n) in float64, in ModelSpec.streams
    order.  s_init (S, N, D): each stream's s_{-1} (None: zero, the trajectory a training pass takes)."""
    p64 = as_float64(params)
    fmap = step_map(spec.cell)
    D = fmap.state_size(spec.hidden_size)
    names = spec.streams
    X = np.asarray(x, dtype=np.float64)  # (T, N, n_l)
    N = X.shape[1]
    streams: list[Stream] = []
    for l in range(spec.layers):
        outs = []
        for r in range(spec.directions):
            s = l * spec.directions + r
            init = np.zeros((N, D)) if s_init is None else np.asarray(s_init[s], dtype=np.float64)
            stream = Stream(names[s], p64.layers[s], fmap, spec.activation, X[::-1] if r else X, init, reverse=r == 1)
            streams.append(stream)
            outs.append(stream.H[::-1] if r else stream.H)  # (T, N, d) by input position
        X = np.concatenate(outs, axis=2) if spec.directions == 2 else outs[0]
    return streams


def stack_direct_gradients(
    spec: ModelSpec, params: Params, streams: list[Stream], target, mask, loss_kind: str
) -> list[np.ndarray]:
    """Per stream, G (T, N, d): the direct gradient into its h_t, in its own step order: from the readout at t
    for the top layer, from the layer above at t below it (the layer above's total dL/dx_t)."""
    p64 = as_float64(params)
    Dn, d = spec.directions, spec.hidden_size
    top = streams[-Dn:]
    H_top = np.concatenate([s.H[::-1] if s.reverse else s.H for s in top], axis=2)  # (T, N, Dn d) by position
    with np.errstate(all="ignore"):
        _, _, dY = readout_loss(H_top, p64.W_yh, p64.b_y, target, mask, loss_kind)
        G = readout_backward(H_top, dY, p64.W_yh)[2]  # (T, N, Dn d)
        out: list[np.ndarray] = [np.empty(0)] * len(streams)
        for l in range(spec.layers - 1, -1, -1):
            dX = 0.0
            for r in range(Dn):
                k = l * Dn + r
                st = streams[k]
                G_s = G[:, :, r * d : (r + 1) * d]
                G_s = G_s[::-1] if st.reverse else G_s  # its own step order
                out[k] = np.ascontiguousarray(G_s)
                dA = total_backward(st, out[k])[1]  # (T, N, G d) at W_hx's pre-activations
                dx = dA @ st.p.W_hx  # (T, N, n_l)
                dX = dX + (dx[::-1] if st.reverse else dx)
            G = dX
    return out


def total_backward(stream: Stream, G: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backpropagation through the stream from its direct gradients G (T, N, d).

    Returns dU, dA (T, N, G d) (the pre-activation gradients W_hh and W_hx see) and Lam (T, N, D), the
    total dL/ds_t (lam_t = (G_t, 0) + lam_{t+1} J_{t+1})."""
    T, N, _ = G.shape
    D, d = stream.D, stream.d
    lam_next = np.zeros((N, 1, D))  # the cotangent handed back from step t+1
    dU: list[np.ndarray] = [np.empty(0)] * T
    dA: list[np.ndarray] = [np.empty(0)] * T
    Lam = np.zeros((T, N, D))
    for t in range(T - 1, -1, -1):
        lam = lam_next.copy()
        lam[:, 0, :d] += G[t]
        Lam[t] = lam[:, 0]
        cache = {k: v[t * N : (t + 1) * N] for k, v in stream.caches.items()}
        lam_next, du, da = stream.map.vjp(stream.p, cache, lam)
        dU[t], dA[t] = du[:, 0], da[:, 0]
    return np.stack(dU), np.stack(dA), Lam
