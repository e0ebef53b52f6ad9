"""The PyTorch script that does what ``gradscope run benchmarks/cli_lstm.toml --out DIR --no-plots`` does: the
peer of benchmarks/bench_cli.py, written as a PyTorch user would write it.

    python benchmarks/torch_equivalent.py --out traces.npz [--threads 2] [--init-from DIR/01-lstm]

(--threads 0 leaves PyTorch's default.)

The same job: an LSTM (n = 32 inputs, d = 128 units) with a linear readout, on GradScope's probe task (B = 32
sequences of T = 100 steps, x_t ~ N(0, 1), one mse target ~ N(0, 1) scored at the last step, a new batch every
iteration), trained for 100 plain SGD iterations (lr 0.01).  Every iteration records, before the update:

    h_norm, c_norm           (T,) mean over the batch of ||h_t||, ||c_t||
    grad_h_norm, grad_c_norm (T,) mean over the batch of ||dL/dh_t||, ||dL/dc_t||: the TOTAL derivatives, read
                             from ``retain_grad`` on every h_t and c_t of an unrolled nn.LSTMCell loop
    gate_{i,f,g,o}_mean      (T,) mean of each gate's activation over batch and units
    loss, grad_norm          the loss, and the global L2 norm of every parameter gradient

and saves them, stacked over iterations ((100, T) or (100,)), to one .npz.  GradScope records more than this
(saturation shares, per-step losses, per-parameter gradient norms, the spectral radius and largest singular
value of W_hh, the initial parameters and first batch, a CSV); this script is the minimum a user would write.

Initialisation as GradScope's defaults: W_hh ~ N(0, 1/d), W_hx ~ N(0, 1/n), b_h = 0, W_yh ~ N(0, 1/d), b_y = 0.
``--init-from RUN_DIR`` loads a GradScope run's init_params.npz and first_batch.npz instead, so that iteration 0
is the very pass GradScope made (bench_cli.py compares them).
"""

from __future__ import annotations

import argparse
import time

START = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402

B, T, n, d, k = 32, 100, 32, 128, 32
ITERATIONS, LR = 100, 0.01


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help=".npz file to write")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads; 0 leaves PyTorch's default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init-from", help="a GradScope run folder (init_params.npz, first_batch.npz)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(args.seed)

    cell = torch.nn.LSTMCell(n, d)  # weight_ih (4d, n), weight_hh (4d, d): gates i, f, g, o
    readout = torch.nn.Linear(d, k)
    first_batch = None
    with torch.no_grad():
        if args.init_from:
            with np.load(f"{args.init_from}/init_params.npz") as p:
                cell.weight_ih.copy_(torch.from_numpy(p["layer0.W_hx"]))
                cell.weight_hh.copy_(torch.from_numpy(p["layer0.W_hh"]))
                cell.bias_ih.copy_(torch.from_numpy(p["layer0.b_h"]))
                readout.weight.copy_(torch.from_numpy(p["readout.W_yh"]))
                readout.bias.copy_(torch.from_numpy(p["readout.b_y"]))
            with np.load(f"{args.init_from}/first_batch.npz") as b:
                first_batch = torch.from_numpy(b["x"]), torch.from_numpy(b["target"][-1])
        else:
            cell.weight_ih.normal_(0, (1 / n) ** 0.5, generator=generator)
            cell.weight_hh.normal_(0, (1 / d) ** 0.5, generator=generator)
            cell.bias_ih.zero_()
            readout.weight.normal_(0, (1 / d) ** 0.5, generator=generator)
            readout.bias.zero_()
        cell.bias_hh.zero_()
    # GradScope has one bias b_h (PyTorch's two sum to it): bias_hh stays 0, or its gradient (equal to
    # bias_ih's) would count twice in the gradient's norm and the update.
    cell.bias_hh.requires_grad_(False)
    parameters = [cell.weight_ih, cell.weight_hh, cell.bias_ih, readout.weight, readout.bias]
    optimizer = torch.optim.SGD(parameters, lr=LR)

    names = (
        "h_norm",
        "c_norm",
        "grad_h_norm",
        "grad_c_norm",
        "gate_i_mean",
        "gate_f_mean",
        "gate_g_mean",
        "gate_o_mean",
    )
    records = {name: [] for name in names + ("loss", "grad_norm")}
    for iteration in range(ITERATIONS):
        if iteration == 0 and first_batch is not None:
            x, target = first_batch
        else:
            x = torch.randn(T, B, n, generator=generator)  # (T, B, n)
            target = torch.randn(B, k, generator=generator)  # (B, k), scored at t = T-1
        optimizer.zero_grad(set_to_none=True)
        h = torch.zeros(B, d)
        c = torch.zeros(B, d)
        hs, cs = [], []
        for t in range(T):
            h, c = cell(x[t], (h, c))
            h.retain_grad()
            c.retain_grad()
            hs.append(h)
            cs.append(c)
        y = readout(h)  # (B, k), the last step's output
        loss = 0.5 * ((y - target) ** 2).sum() / B
        loss.backward()
        with torch.no_grad():
            H, C = torch.stack(hs), torch.stack(cs)  # (T, B, d)
            # The gates are inside nn.LSTMCell: recompute them from h_{t-1} and x_t (one batched GEMM).
            H_prev = torch.cat([torch.zeros(1, B, d), H[:-1]])  # (T, B, d)
            z = x @ cell.weight_ih.T + H_prev @ cell.weight_hh.T + cell.bias_ih + cell.bias_hh  # (T, B, 4d)
            i, f, g, o = z.split(d, dim=2)
            values = {
                "h_norm": H.norm(dim=2).mean(dim=1),
                "c_norm": C.norm(dim=2).mean(dim=1),
                "grad_h_norm": torch.stack([v.grad for v in hs]).norm(dim=2).mean(dim=1),
                "grad_c_norm": torch.stack([v.grad for v in cs]).norm(dim=2).mean(dim=1),
                "gate_i_mean": torch.sigmoid(i).mean(dim=(1, 2)),
                "gate_f_mean": torch.sigmoid(f).mean(dim=(1, 2)),
                "gate_g_mean": torch.tanh(g).mean(dim=(1, 2)),
                "gate_o_mean": torch.sigmoid(o).mean(dim=(1, 2)),
            }
            grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters]))
        for name, value in values.items():
            records[name].append(value.numpy())
        records["loss"].append(loss.item())
        records["grad_norm"].append(grad_norm.item())
        optimizer.step()
    np.savez(
        args.out,
        **{name: np.asarray(values) for name, values in records.items()},
        iteration=np.arange(ITERATIONS),
        wall_seconds=time.perf_counter() - START,
    )


if __name__ == "__main__":
    main()
