"""Recompute iteration 0 of an exported GradScope run in PyTorch, from the exported folder alone.

    python examples/recompute_in_pytorch.py DIR/01-my-run [DIR/02-other ...]

prints, for each run folder, the largest relative difference between what GradScope recorded at iteration 0
and what PyTorch's autograd computes from init_params.npz, first_batch.npz and the run's settings in
summary.json, metric by metric.  Expect ~1e-15 for a float64 run and ~1e-7 for a float32 one (PyTorch
recomputes in float64 here).  Written from docs/trace_format.md alone, as a user's script would be: it
imports nothing of GradScope, so it checks the contract, not the code.

Covered: rnn (tanh, relu, sigmoid, linear), lstm and gru cells; plain stacks, bidirectional stacks and
seq2seq encoder-decoders (a bidirectional encoder included); mse and ce losses; the metrics h_norm,
grad_h_norm, c_norm, grad_c_norm (LSTM), grad_bridge_norm, grad_bridge_c_norm (seq2seq), grad_norm_W_hh and
the loss.  The model (docs/trace_format.md, "Cells and architectures"):

    rnn    h_t = f(W_hx x_t + b_h + W_hh h_{t-1})
    lstm   [i, f, g, o] = W_hx x_t + b_h + W_hh h_{t-1};  c_t = s(f) c_{t-1} + s(i) tanh(g);  h_t = s(o) tanh(c_t)
    gru    a = W_hx x_t + b_h, u = W_hh h_{t-1} + b_hh (blocks r, z, n);  r = s(a_r + u_r), z = s(a_z + u_z),
           n = tanh(a_n + r u_n);  h_t = (1 - z) n + z h_{t-1}
    y_t = W_yh h_t^top + b_y;   L = (1/B) sum_{t,b} mask[t,b] ell(y_tb, target_tb)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "linear": lambda v: v}


def step(cell: str, activation: str, p: dict, x_t, h, c):
    """One step of one stream: (h_t, c_t) from x_t (B, n) and (h_{t-1}, c_{t-1}) (B, d); c is None but for LSTM."""
    a = x_t @ p["W_hx"].T + p["b_h"]  # (B, gates * d)
    if cell == "gru":
        u = h @ p["W_hh"].T + p["b_hh"]  # (B, 3d)
        a_r, a_z, a_n = a.chunk(3, dim=-1)
        u_r, u_z, u_n = u.chunk(3, dim=-1)
        r, z = torch.sigmoid(a_r + u_r), torch.sigmoid(a_z + u_z)
        n = torch.tanh(a_n + r * u_n)
        return (1 - z) * n + z * h, None
    a = a + h @ p["W_hh"].T
    if cell == "lstm":
        i, f, g, o = a.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    return ACTIVATIONS[activation](a), None


def stream(cell, activation, p, xs, h0, c0, reverse):
    """The states of one stream over its inputs xs (a list over positions t), each kept for its gradient;
    indexed by position t (a reverse stream's t = 0 is processed last)."""
    hs, cs = [None] * len(xs), [None] * len(xs)
    h, c = h0, c0
    for t in reversed(range(len(xs))) if reverse else range(len(xs)):
        h, c = step(cell, activation, p, xs[t], h, c)
        h.retain_grad()
        hs[t] = h
        if c is not None:
            c.retain_grad()
            cs[t] = c
    return hs, cs


def recompute(run_dir: Path) -> dict[str, float]:
    """{metric: largest relative difference} between the run's iteration 0 and PyTorch's."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir.parent / "summary.json").read_text())
    config = next(r for r in summary["runs"] if r["dir"] == run_dir.name)["config"]
    cell, activation, L = config["cell"], config["activation"], config["layers"]
    bidirectional, seq2seq = config["bidirectional"], config["architecture"] == "seq2seq"
    with np.load(run_dir / "init_params.npz") as npz:
        P = {k: torch.tensor(npz[k], dtype=torch.float64, requires_grad=True) for k in npz.files}
    with np.load(run_dir / "first_batch.npz") as npz:
        batch = {k: npz[k] for k in npz.files}
    with np.load(run_dir / "trace.npz") as npz:
        trace = {k: npz[k] for k in npz.files}
    x = torch.tensor(batch["x"], dtype=torch.float64)  # (T, B, n)
    B, d = x.shape[1], config["hidden_size"]
    lstm = cell == "lstm"

    def zeros():
        return torch.zeros(B, d, dtype=torch.float64)

    def params(name):
        return {k[len(name) + 1 :]: v for k, v in P.items() if k.rsplit(".", 1)[0] == name}

    states: dict[str, tuple] = {}

    def stack(prefix, xs, h0=None, c0=None, both=bidirectional):
        """Layers 0..L-1 of a stack (h0, c0: each layer's initial state); returns the top layer's outputs."""
        for l in range(L):
            name = f"{prefix}layer{l}"
            hs, cs = stream(cell, activation, params(name), xs, zeros() if h0 is None else h0[l],
                            (zeros() if lstm else None) if c0 is None else c0[l], reverse=False)  # fmt: skip
            states[name] = (hs, cs)
            if both:  # layer l + 1 (and the readout) read [h_fwd_t ; h_rev_t]
                hr, cr = stream(
                    cell, activation, params(name + "_reverse"), xs, zeros(), zeros() if lstm else None, True
                )
                states[name + "_reverse"] = (hr, cr)
                hs = [torch.cat([hf, hb], dim=-1) for hf, hb in zip(hs, hr)]
            xs = hs
        return xs

    bridge_h, bridge_c = [], []
    if seq2seq:
        stack("encoder.", list(x))
        for l in range(L):  # decoder layer l starts from encoder layer l's final state (both directions summed)
            hs, cs = states[f"encoder.layer{l}"]
            h, c = hs[-1].clone(), (cs[-1].clone() if lstm else None)  # tensors of their own: the bridge's gradient
            if bidirectional:
                hr, cr = states[f"encoder.layer{l}_reverse"]
                h, c = h + hr[0], (c + cr[0] if lstm else None)
            h.retain_grad()
            bridge_h.append(h)
            if lstm:
                c.retain_grad()
                bridge_c.append(c)
        decoder_x = torch.tensor(batch["decoder_x"], dtype=torch.float64)  # (T_tgt, B, n_dec)
        top = stack("decoder.", list(decoder_x), bridge_h, bridge_c if lstm else None, both=False)
    else:
        top = stack("", list(x))
    y = torch.stack([h @ P["readout.W_yh"].T + P["readout.b_y"] for h in top])  # (T, B, k)
    target, mask = batch["target"], torch.tensor(batch["mask"], dtype=torch.float64)
    if target.dtype.kind in "iu":  # ce: target (T, B) class indices
        ell = torch.nn.functional.cross_entropy(
            y.reshape(-1, y.shape[-1]), torch.tensor(target).reshape(-1), reduction="none"
        ).reshape(target.shape)
    else:  # mse: 0.5 ||y - target||^2
        ell = 0.5 * ((y - torch.tensor(target, dtype=torch.float64)) ** 2).sum(-1)
    loss = (mask * ell).sum() / B
    loss.backward()

    worst: dict[str, float] = {}

    def compare(metric, recorded, recomputed):
        recorded, recomputed = np.asarray(recorded, np.float64), np.asarray(recomputed, np.float64)
        error = float(np.max(np.abs(recorded - recomputed) / np.maximum(np.abs(recomputed), 1e-300)))
        worst[metric] = max(worst.get(metric, 0.0), error)

    def batch_mean_norm(tensors, grad=False):
        return [(v.grad if grad else v).norm(dim=-1).mean().item() for v in tensors]

    compare("loss", trace["loss"][0], loss.item())
    names = [str(n) for n in trace["streams"]] if "streams" in trace else [f"layer{l}" for l in range(L)]  # format 1
    for s, name in enumerate(names):
        hs, cs = states[name]
        T = len(hs)  # the stream's own length; longer streams' steps past it are NaN padding
        compare("h_norm", trace["h_norm"][0, s, :T], batch_mean_norm(hs))
        compare("grad_h_norm", trace["grad_h_norm"][0, s, :T], batch_mean_norm(hs, grad=True))
        if lstm:
            compare("c_norm", trace["c_norm"][0, s, :T], batch_mean_norm(cs))
            compare("grad_c_norm", trace["grad_c_norm"][0, s, :T], batch_mean_norm(cs, grad=True))
        compare("grad_norm_W_hh", trace["grad_norm_W_hh"][0, s], P[f"{name}.W_hh"].grad.norm().item())
    if seq2seq:
        compare("grad_bridge_norm", trace["grad_bridge_norm"][0], batch_mean_norm(bridge_h, grad=True))
        if lstm:
            compare("grad_bridge_c_norm", trace["grad_bridge_c_norm"][0], batch_mean_norm(bridge_c, grad=True))
    return worst


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for folder in sys.argv[1:]:
        print(Path(folder).name + ": " + ", ".join(f"{k} {v:.1e}" for k, v in recompute(Path(folder)).items()))
