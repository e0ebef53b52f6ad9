"""Shared test helpers: seeded models and batches, and an independent PyTorch version of a pass."""

from __future__ import annotations

import numpy as np

from gradscope.engine import InitSpec, ModelSpec, init_params
from gradscope.engine.cells import cell as describe
from gradscope.engine.metrics import SAT_HIGH, SAT_LOW, step_metric_names

CELL_KINDS = [
    ("rnn", "relu"),
    ("rnn", "tanh"),
    ("rnn", "sigmoid"),
    ("rnn", "linear"),
    ("lstm", "tanh"),
    ("gru", "tanh"),
]


def label(cell: str, activation: str) -> str:
    return describe(cell).label(activation)


def make_model(cell, activation, layers, dtype, rng, n=4, d=6, k=3, recurrent_scale=1.5, bias_std=0.3):
    """A small model with every parameter random (biases too, so their gradients are non-trivial)."""
    spec = ModelSpec(
        cell=cell, activation=activation, input_size=n, hidden_size=d, layers=layers, output_size=k, dtype=dtype
    )
    params = init_params(spec, InitSpec(recurrent_scale=recurrent_scale), rng)
    for p in params.layers:
        p.b_h[...] = rng.normal(0.0, bias_std, size=p.b_h.shape)
        if p.b_hh is not None:
            p.b_hh[...] = rng.normal(0.0, bias_std, size=p.b_hh.shape)
    params.b_y[...] = rng.normal(0.0, bias_std, size=params.b_y.shape)
    return spec, params


def make_batch(spec, T, B, loss_kind, rng, mask_density=0.7):
    """x ~ N(0, 1), a random target and a random 0/1 mask with at least the last step scored."""
    dt = spec.np_dtype
    x = rng.standard_normal((T, B, spec.input_size)).astype(dt)
    if loss_kind == "mse":
        target = rng.standard_normal((T, B, spec.output_size)).astype(dt)
    else:
        target = rng.integers(0, spec.output_size, size=(T, B))
    mask = (rng.random((T, B)) < mask_density).astype(np.float64)
    mask[-1] = 1.0
    return x, target, mask


def torch_pass(torch, spec, params, x, target, mask, loss_kind):
    """The same pass in PyTorch, unrolled so every h_t and c_t keeps its gradient (retain_grad).

    Cells are PyTorch's own where it has them (nn.LSTMCell with PyTorch's gate order, nn.RNNCell for relu
    and tanh); sigmoid and linear RNNs are written out.  Metrics are computed here from the torch tensors,
    in float64.  Returns (loss, metrics {name: (L, T)}, loss_t (T,), grads {file name: array},
    pre-activations {(l, t): (B, Gd) tensor} and activations {(l, t): (B, Gd) or (B, d)} for threshold
    checks).
    """
    nn = torch.nn
    F = torch.nn.functional
    dt = torch.float64 if spec.dtype == "float64" else torch.float32
    T, B, _ = x.shape
    L, d = spec.layers, spec.hidden_size
    as_t = lambda a: torch.tensor(np.asarray(a), dtype=dt)  # noqa: E731
    cells = []
    for l, p in enumerate(params.layers):
        n_l = spec.layer_input_size(l)
        if spec.cell == "lstm":
            cell = nn.LSTMCell(n_l, d, dtype=dt)
        elif spec.cell == "gru":
            cell = nn.GRUCell(n_l, d, dtype=dt)
        elif spec.activation in ("relu", "tanh"):
            cell = nn.RNNCell(n_l, d, nonlinearity=spec.activation, dtype=dt)
        else:
            cell = nn.RNNCell(n_l, d, dtype=dt)  # holds the weights only
        with torch.no_grad():
            cell.weight_ih.copy_(as_t(p.W_hx))
            cell.weight_hh.copy_(as_t(p.W_hh))
            cell.bias_ih.copy_(as_t(p.b_h))
            if p.b_hh is not None:
                cell.bias_hh.copy_(as_t(p.b_hh))
            else:
                cell.bias_hh.zero_()
        cells.append(cell)
    W_yh = as_t(params.W_yh).requires_grad_(True)
    b_y = as_t(params.b_y).requires_grad_(True)
    inputs = [as_t(x[t]) for t in range(T)]
    hs, cs, pre, act = {}, {}, {}, {}
    for l, cell in enumerate(cells):
        h = torch.zeros(B, d, dtype=dt)
        c = torch.zeros(B, d, dtype=dt)
        outs = []
        for t in range(T):
            z = inputs[t] @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
            pre[l, t] = z.detach()
            if spec.cell == "gru":  # r, z, n as PyTorch defines them
                gi = inputs[t] @ cell.weight_ih.T + cell.bias_ih
                gh = h @ cell.weight_hh.T + cell.bias_hh
                r = torch.sigmoid(gi[:, :d] + gh[:, :d])
                u = torch.sigmoid(gi[:, d : 2 * d] + gh[:, d : 2 * d])
                n = torch.tanh(gi[:, 2 * d :] + r * gh[:, 2 * d :])
                act[l, t] = torch.cat([r, u, n], 1).detach()
                h = cell(inputs[t], h)
            elif spec.cell == "lstm":
                h, c = cell(inputs[t], (h, c))
                c.retain_grad()
                cs[l, t] = c
                act[l, t] = torch.cat(
                    [
                        torch.sigmoid(z[:, :d]),
                        torch.sigmoid(z[:, d : 2 * d]),
                        torch.tanh(z[:, 2 * d : 3 * d]),
                        torch.sigmoid(z[:, 3 * d :]),
                    ],
                    1,
                ).detach()
            elif spec.activation in ("relu", "tanh"):
                h = cell(inputs[t], h)
            elif spec.activation == "sigmoid":
                h = torch.sigmoid(z)
            else:
                h = z
            h.retain_grad()
            hs[l, t] = h
            outs.append(h)
        inputs = outs
    loss = torch.zeros((), dtype=torch.float64)
    loss_t = np.zeros(T)
    for t in range(T):
        y = inputs[t] @ W_yh.T + b_y
        w = torch.tensor(mask[t] / B, dtype=torch.float64)
        if loss_kind == "mse":
            ell = 0.5 * ((y - as_t(target[t])) ** 2).sum(dim=1)
        else:
            ell = F.cross_entropy(y, torch.tensor(target[t], dtype=torch.int64), reduction="none")
        step = (w * ell.to(torch.float64)).sum()
        loss_t[t] = step.item()
        loss = loss + step
    loss.backward()

    def norm_mean(v):
        return v.detach().to(torch.float64).norm(dim=1).mean().item()

    metrics = {name: np.zeros((L, T)) for name in step_metric_names(spec)}
    for l in range(L):
        for t in range(T):
            h = hs[l, t].detach().to(torch.float64)
            metrics["h_norm"][l, t] = norm_mean(hs[l, t])
            metrics["grad_h_norm"][l, t] = norm_mean(hs[l, t].grad)
            if spec.cell == "lstm":
                metrics["c_norm"][l, t] = norm_mean(cs[l, t])
                metrics["grad_c_norm"][l, t] = norm_mean(cs[l, t].grad)
            gates = describe(spec.cell).gates
            if gates:
                a = act[l, t].to(torch.float64)
                for q, gate in enumerate(gates):
                    block = act[l, t][:, q * d : (q + 1) * d]
                    metrics[f"gate_{gate}_mean"][l, t] = a[:, q * d : (q + 1) * d].mean().item()
                    if describe(spec.cell).gate_kinds[gate] == "tanh":
                        sat = block.abs() > SAT_HIGH
                    else:
                        sat = (block < SAT_LOW) | (block > SAT_HIGH)
                    metrics[f"gate_{gate}_sat"][l, t] = sat.to(torch.float64).mean().item()
            elif spec.activation == "relu":
                metrics["relu_dead"][l, t] = (h == 0).to(torch.float64).mean().item()
            elif spec.activation == "tanh":
                metrics["tanh_sat"][l, t] = (hs[l, t].detach().abs() > SAT_HIGH).to(torch.float64).mean().item()
            elif spec.activation == "sigmoid":
                hd = hs[l, t].detach()
                metrics["sigmoid_sat"][l, t] = ((hd < SAT_LOW) | (hd > SAT_HIGH)).to(torch.float64).mean().item()
            if spec.cell == "rnn":
                act[l, t] = hs[l, t].detach()
    grads = {}
    for l, cell in enumerate(cells):
        grads[f"layer{l}.W_hx"] = cell.weight_ih.grad.numpy().copy()
        grads[f"layer{l}.W_hh"] = cell.weight_hh.grad.numpy().copy()
        grads[f"layer{l}.b_h"] = cell.bias_ih.grad.numpy().copy()
        if spec.cell == "gru":
            grads[f"layer{l}.b_hh"] = cell.bias_hh.grad.numpy().copy()
    grads["readout.W_yh"] = W_yh.grad.numpy().copy()
    grads["readout.b_y"] = b_y.grad.numpy().copy()
    return loss.item(), metrics, loss_t, grads, pre, act


def torch_loss(torch, y, target, mask, loss_kind):
    """L = (1/B) sum_{t,b} mask ell in PyTorch, as the engine defines it (mse: 0.5 ||y - target||^2; ce)."""
    F = torch.nn.functional
    B = y.shape[1]
    w = torch.tensor(mask / B, dtype=torch.float64)
    if loss_kind == "mse":
        ell = 0.5 * ((y - torch.tensor(target, dtype=y.dtype)) ** 2).sum(dim=2)
    else:
        ell = F.cross_entropy(y.reshape(-1, y.shape[2]), torch.tensor(target.reshape(-1)), reduction="none")
        ell = ell.reshape(w.shape)
    return (w * ell.to(torch.float64)).sum()
