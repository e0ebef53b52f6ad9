"""The peers GradScope's engine is measured against, each doing one training step (forward + backward, no update)
of a one-layer model with a linear readout and an mse loss at every step, on the same data:

- ``TorchFused``: nn.RNN / nn.LSTM + nn.Linear, just ``loss.backward()``: fast, but no per-timestep gradients.
- ``TorchInstrumented``: an unrolled nn.RNNCell / nn.LSTMCell loop with ``retain_grad`` on every h_t (and c_t)
  and the per-timestep norms computed: what a PyTorch user writes to get GradScope's traces.
- ``GemmFloor``: only the matrix products any BPTT engine must do, in NumPy with preallocated outputs (the input
  projection as one GEMM over all T*B rows, the T sequential recurrent GEMMs forward and backward, the readout and
  its gradient, and each weight gradient as one GEMM). Its FLOP count gives achieved GFLOP/s.
- ``RemoteFloor``: the GemmFloor in a process of its own, with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset there
  (only there: the machine may set them for everything else), so that the floor is the fastest NumPy gives on
  this machine, its BLAS choosing its own kernels; ``remote_peak_gflops`` measures the large-GEMM peak the same way.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Case:
    cell: str  # "rnn-relu" | "rnn-tanh" | "lstm" | "gru"
    B: int
    T: int
    n: int
    d: int
    dtype: str = "float32"

    @property
    def k(self) -> int:  # readout size: the probe task's default output size = input size
        return self.n

    @property
    def gates(self) -> int:
        return {"lstm": 4, "gru": 3}.get(self.cell, 1)

    @property
    def activation(self) -> str:
        return self.cell.split("-")[1] if self.cell.startswith("rnn") else "tanh"

    def label(self) -> str:
        return f"{self.cell} (B={self.B}, T={self.T}, n={self.n}, d={self.d}) {self.dtype}"

    def flops(self) -> int:
        """Multiply-adds x 2 of the unavoidable matrix products (GemmFloor's work)."""
        T, B, n, d, k, G = self.T, self.B, self.n, self.d, self.k, self.gates
        forward = T * B * n * G * d + T * B * d * G * d + T * B * d * k
        backward = (
            T * B * k * d  # dH = dY W_yh
            + T * B * k * d  # dW_yh = dY^T H
            + T * B * G * d * d  # recurrent: dz_{t+1} W_hh
            + T * B * G * d * d  # dW_hh = dZ^T H_prev
            + T * B * G * d * n
        )  # dW_hx = dZ^T X
        return 2 * (forward + backward)

    def state_bytes(self) -> int:
        """What BPTT must keep: the states and gate activations of every timestep (H; LSTM: H, C, i, f, g, o)."""
        per_step = self.B * self.d * {"lstm": 6, "gru": 5}.get(self.cell, 1)  # GRU: H, r, z, n, u_n
        return self.T * per_step * np.dtype(self.dtype).itemsize


def make_data(case: Case, seed: int = 0):
    """Weights in PyTorch's layout (float64 master copy) and one batch, shared by every peer."""
    rng = np.random.default_rng(seed)
    G, d, n, k = case.gates, case.d, case.n, case.k
    w = {
        "W_hx": rng.normal(0, np.sqrt(1 / n), (G * d, n)),
        "W_hh": rng.normal(0, np.sqrt(1 / d), (G * d, d)),
        "b_h": np.zeros(G * d),
        "W_yh": rng.normal(0, np.sqrt(1 / d), (k, d)),
        "b_y": np.zeros(k),
    }
    x = rng.normal(size=(case.T, case.B, n))
    target = rng.normal(size=(case.T, case.B, k))
    dt = np.dtype(case.dtype)
    return {key: v.astype(dt) for key, v in w.items()}, x.astype(dt), target.astype(dt)


# ---------------------------------------------------------------------------------------------- PyTorch
class TorchFused:
    name = "torch fused"

    def __init__(self, case: Case, weights, x, target):
        import torch

        self.torch = torch
        dtype = getattr(torch, case.dtype)
        if case.cell == "lstm":
            self.rnn = torch.nn.LSTM(case.n, case.d, dtype=dtype)
        elif case.cell == "gru":
            self.rnn = torch.nn.GRU(case.n, case.d, dtype=dtype)
        else:
            self.rnn = torch.nn.RNN(case.n, case.d, nonlinearity=case.activation, dtype=dtype)
        self.readout = torch.nn.Linear(case.d, case.k, dtype=dtype)
        with torch.no_grad():
            self.rnn.weight_ih_l0.copy_(torch.from_numpy(weights["W_hx"]))
            self.rnn.weight_hh_l0.copy_(torch.from_numpy(weights["W_hh"]))
            self.rnn.bias_ih_l0.copy_(torch.from_numpy(weights["b_h"]))
            self.rnn.bias_hh_l0.zero_()
            self.readout.weight.copy_(torch.from_numpy(weights["W_yh"]))
            self.readout.bias.copy_(torch.from_numpy(weights["b_y"]))
        self.x, self.target, self.B = torch.from_numpy(x), torch.from_numpy(target), case.B

    def step(self):
        for p in list(self.rnn.parameters()) + list(self.readout.parameters()):
            p.grad = None
        out, _ = self.rnn(self.x)  # (T, B, d)
        y = self.readout(out)  # (T, B, k)
        loss = 0.5 * ((y - self.target) ** 2).sum() / self.B
        loss.backward()
        return loss.item()


class TorchInstrumented:
    name = "torch instrumented"

    def __init__(self, case: Case, weights, x, target):
        import torch

        self.torch = torch
        self.case = case
        dtype = getattr(torch, case.dtype)
        if case.cell == "lstm":
            self.cell = torch.nn.LSTMCell(case.n, case.d, dtype=dtype)
        elif case.cell == "gru":
            self.cell = torch.nn.GRUCell(case.n, case.d, dtype=dtype)
        else:
            self.cell = torch.nn.RNNCell(case.n, case.d, nonlinearity=case.activation, dtype=dtype)
        self.readout = torch.nn.Linear(case.d, case.k, dtype=dtype)
        with torch.no_grad():
            self.cell.weight_ih.copy_(torch.from_numpy(weights["W_hx"]))
            self.cell.weight_hh.copy_(torch.from_numpy(weights["W_hh"]))
            self.cell.bias_ih.copy_(torch.from_numpy(weights["b_h"]))
            self.cell.bias_hh.zero_()
            self.readout.weight.copy_(torch.from_numpy(weights["W_yh"]))
            self.readout.bias.copy_(torch.from_numpy(weights["b_y"]))
        self.x, self.target = torch.from_numpy(x), torch.from_numpy(target)

    def step(self):
        """Forward through an unrolled loop keeping every h_t (and c_t), backward, then the per-step norms."""
        torch, case = self.torch, self.case
        for p in list(self.cell.parameters()) + list(self.readout.parameters()):
            p.grad = None
        h = torch.zeros(case.B, case.d, dtype=self.x.dtype)
        c = torch.zeros_like(h)
        hs, cs = [], []
        for t in range(case.T):
            if case.cell == "lstm":
                h, c = self.cell(self.x[t], (h, c))
                c.retain_grad()
                cs.append(c)
            else:
                h = self.cell(self.x[t], h)
            h.retain_grad()
            hs.append(h)
        H = torch.stack(hs)  # (T, B, d)
        y = self.readout(H)
        loss = 0.5 * ((y - self.target) ** 2).sum() / case.B
        loss.backward()
        with torch.no_grad():
            metrics = {
                "h_norm": H.norm(dim=2).mean(dim=1),
                "grad_h_norm": torch.stack([v.grad for v in hs]).norm(dim=2).mean(dim=1),
            }
            if cs:
                C = torch.stack(cs)
                metrics["c_norm"] = C.norm(dim=2).mean(dim=1)
                metrics["grad_c_norm"] = torch.stack([v.grad for v in cs]).norm(dim=2).mean(dim=1)
        return loss.item(), {k: v.numpy() for k, v in metrics.items()}


# ------------------------------------------------------------------------------------------- GEMM floor
class GemmFloor:
    """Only the GEMMs of one BPTT step, with preallocated outputs.  No nonlinearity, no metrics."""

    name = "numpy GEMM floor"

    def __init__(self, case: Case, weights, x, target):
        T, B, n, d, k, G = case.T, case.B, case.n, case.d, case.k, case.gates
        dt = np.dtype(case.dtype)
        self.case = case
        self.W_hx, self.W_hh, self.W_yh = weights["W_hx"], weights["W_hh"], weights["W_yh"]
        self.X = x.reshape(T * B, n)
        self.Z = np.empty((T, B, G * d), dt)  # gate pre-activations (and dZ in backward)
        self.H = np.zeros((T + 1, B, d), dt)  # H[0] = h_{-1} = 0
        self.Y = np.empty((T * B, k), dt)
        self.dH = np.empty((T * B, d), dt)
        self.rec = np.empty((B, d), dt)
        self.dW_hh = np.empty((G * d, d), dt)
        self.dW_hx = np.empty((G * d, n), dt)
        self.dW_yh = np.empty((k, d), dt)
        self.target = target.reshape(T * B, k)

    def step(self):
        c = self.case
        T, B, d = c.T, c.B, c.d
        Z2 = self.Z.reshape(T * B, -1)
        np.matmul(self.X, self.W_hx.T, out=Z2)  # input projection, one GEMM
        for t in range(T):  # the sequential part
            np.matmul(self.H[t], self.W_hh.T, out=self.Z[t])
            self.H[t + 1] = self.Z[t, :, :d]  # stands in for the cell's output
        H2 = self.H[1:].reshape(T * B, d)
        np.matmul(H2, self.W_yh.T, out=self.Y)  # readout
        np.subtract(self.Y, self.target, out=self.Y)  # dY (mse)
        np.matmul(self.Y, self.W_yh, out=self.dH)  # dH = dY W_yh
        np.matmul(self.Y.T, H2, out=self.dW_yh)  # dW_yh
        for t in range(T - 1, -1, -1):  # the sequential part, backward
            np.matmul(self.Z[t], self.W_hh, out=self.rec)
        np.matmul(Z2.T, self.H[:-1].reshape(T * B, d), out=self.dW_hh)  # dW_hh = dZ^T H_prev
        np.matmul(Z2.T, self.X, out=self.dW_hx)  # dW_hx = dZ^T X
        return 0.0


def peak_gflops(dtype=np.float32, size: int = 2048, repeats: int = 5) -> float:
    """Best-of GFLOP/s of one large square GEMM (sgemm or dgemm by dtype): the machine's practical BLAS peak
    in this process, at NumPy's BLAS thread setting when called."""
    import time

    a = np.random.default_rng(0).normal(size=(size, size)).astype(dtype)
    b = a.T.copy()
    out = np.empty_like(a)
    np.matmul(a, b, out=out)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


# ------------------------------------------------------------------------------------- the floor's own process
UNSET_IN_PEER = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # the machine's BLAS overrides, unset in the peer only

_CHILD = """
import pickle, sys, time
sys.path.insert(0, {here!r})
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits
from peers import GemmFloor, peak_gflops
read, write = sys.stdin.buffer, sys.stdout.buffer
def send(obj):
    pickle.dump(obj, write)
    write.flush()
case, data, threads = pickle.load(read)
with threadpool_limits(threads, user_api="blas"):
    floor = None if case is None else GemmFloor(case, *data)
    if floor is not None:
        floor.step()  # its buffers touched, its BLAS threads started
    info = [{{k: lib.get(k) for k in ("filepath", "internal_api", "version", "architecture", "num_threads")}}
            for lib in threadpool_info() if lib.get("user_api") == "blas"]
    send(info)
    while True:
        command, arg = pickle.load(read)
        if command == "block":  # arg steps, each timed here: no pipe round trip inside the figures
            times = []
            for _ in range(arg):
                t0 = time.perf_counter()
                floor.step()
                times.append(time.perf_counter() - t0)
            send(times)
        elif command == "peak":
            send(peak_gflops(np.dtype(arg)))
        else:
            break
"""


def peer_environment(threads: int) -> dict:
    """The environment of a peer's own process: the machine's BLAS overrides unset, ``threads`` BLAS threads."""
    env = {k: v for k, v in os.environ.items() if k not in UNSET_IN_PEER}
    env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = str(threads)
    return env


class RemoteFloor:
    """GemmFloor in a process of its own (module docstring); ``block(repeats)`` returns each step's seconds as
    the child timed them, ``blas`` the child's BLAS libraries as threadpoolctl reads them (kernels, threads)."""

    name = "numpy GEMM floor (own process)"

    def __init__(self, case: Case | None, weights=None, x=None, target=None, threads: int = 1):
        here = str(Path(__file__).resolve().parent)
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CHILD.format(here=here)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=peer_environment(threads),
        )
        self._send((case, (weights, x, target), threads))
        self.blas = self._receive()

    def _send(self, obj) -> None:
        pickle.dump(obj, self.process.stdin)
        self.process.stdin.flush()

    def _receive(self):
        try:
            return pickle.load(self.process.stdout)
        except EOFError:
            raise RuntimeError(f"the floor's process ended (exit code {self.process.wait()})") from None

    def block(self, repeats: int) -> list[float]:
        self._send(("block", int(repeats)))
        return self._receive()

    def step(self) -> float:
        return self.block(1)[0]

    def peak(self, dtype) -> float:
        self._send(("peak", np.dtype(dtype).name))
        return self._receive()

    def close(self) -> None:
        if self.process.poll() is None:
            self._send(("stop", None))
            self.process.stdin.close()
            self.process.wait(timeout=60)


def remote_peak_gflops(dtypes, threads: int) -> tuple[dict[str, float], list[dict]]:
    """The large-GEMM peak of each dtype in a peer's own process (RemoteFloor's), and that process's BLAS."""
    child = RemoteFloor(None, threads=threads)
    try:
        return {np.dtype(dt).name: child.peak(dt) for dt in dtypes}, child.blas
    finally:
        child.close()
