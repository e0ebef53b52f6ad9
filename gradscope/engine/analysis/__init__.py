"""The mechanism behind the gradient curves: long-lag Jacobians, the Lyapunov spectrum and dL/dW_hh by lag.

Definitions, settings and file layout: docs/trace_format.md, "Analysis".  Everything is float64 NumPy,
stream by stream (analysis.streams: an architecture lists its streams and their direct gradients):

    settings = AnalysisSpec(every=10, lyapunov=8)
    drive, h0 = exponent_inputs(spec, settings, task, rng)      # once per run
    row = analyse(spec, params, (x, target, mask), "mse", settings, drive, h0)
    row["jac_sigma_max"]      # (S, T)  batch mean sigma_max(ds_{T-1}/ds_t)
    row["jac_fro"]            # (S, T)  batch mean ||ds_{T-1}/ds_t||_F / sqrt(D)
    row["lyapunov"]           # (S, m)  the first m exponents, descending, nats per step
    row["grad_W_hh_by_lag"]   # (S, T)  ||the part of dL/dW_hh at lag k||_F

Modules: maps (each cell's step, jvp, vjp), streams (trajectories, direct gradients), longlag, lyapunov (the
QR method), spectrum (Kaplan-Yorke dimension, entropy rate, gradient timescale), log (rows -> analysis.npz).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..params import ModelSpec, Params
from .log import ANALYSIS_KEYS, AnalysisLog
from .longlag import grad_W_hh_by_lag, jacobian_norms
from .lyapunov import qr_exponents
from .maps import step_map
from .spectrum import entropy_rate, gradient_timescale, kaplan_yorke_dimension, spectrum_summary
from .streams import Stream, stack_direct_gradients, stack_streams

H0_KINDS = ("zero", "random")


@dataclass(frozen=True)
class AnalysisSpec:
    """[defaults.analysis] (docs/trace_format.md).  every = 0: off, and nothing here runs."""

    every: int = 0  # k > 0: at iteration 0 and at every k-th recorded iteration
    jacobian: bool = True  # the long-lag Jacobian norms (and dL/dW_hh by lag)
    lyapunov: int = 0  # how many exponents (0: none; at most the state size)
    warmup: int = 500
    steps: int = 1000
    h0: str = "zero"  # "zero" | "random": s_{-1} ~ N(0, 1) per unit
    examples: int = 1

    def __post_init__(self):
        for key in ("every", "lyapunov", "warmup", "examples", "steps"):
            value = getattr(self, key)
            low = 1 if key in ("examples", "steps") else 0
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"analysis.{key} must be a whole number >= {low}, got {value!r}")
        if self.h0 not in H0_KINDS:
            raise ValueError(f"analysis.h0 must be one of {H0_KINDS}, got {self.h0!r}")

    @property
    def on(self) -> bool:
        return self.every > 0 and (self.jacobian or self.lyapunov > 0)


def state_size(spec: ModelSpec) -> int:
    """D: d, or 2d for the LSTM's (h, c)."""
    return step_map(spec.cell).state_size(spec.hidden_size)


def exponent_inputs(spec: ModelSpec, settings: AnalysisSpec, task, rng: np.random.Generator):
    """The exponents' own trajectories: (drive (warmup + steps, E, n), h0 (S, E, D)).

    The drive is the task's input process continued: successive batches' inputs, seq_len steps at a time,
    E examples each (an autonomous network is a task whose inputs W_hx = 0 ignores).  h0 is zero, or
    N(0, 1) per unit from ``rng`` (drawn first, so the drive does not move it)."""
    E, N = settings.examples, settings.warmup + settings.steps
    S, D = len(spec.streams), state_size(spec)
    h0 = rng.standard_normal((S, E, D)) if settings.h0 == "random" else np.zeros((S, E, D))
    chunks = -(-N // task.seq_len)
    xs, have = [], 0
    while have < chunks * E:
        x = task.batch(rng)[0]  # (T, B, n)
        xs.append(x)
        have += x.shape[1]
    X = np.concatenate(xs, axis=1)[:, : chunks * E].astype(np.float64)  # (T, chunks E, n)
    T, _, n = X.shape
    X = X.reshape(T, chunks, E, n).transpose(1, 0, 2, 3).reshape(chunks * T, E, n)[:N]  # (N, E, n)
    return np.ascontiguousarray(X), h0


def analyse(
    spec: ModelSpec,
    params: Params,
    batch,
    loss_kind: str,
    settings: AnalysisSpec,
    drive: np.ndarray | None = None,
    h0: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """One analysed iteration: the row of analysis.npz (module docstring) at these parameters.

    ``batch`` = (x, target, mask), the iteration's own batch (the trajectory its metrics describe, from
    s_{-1} = 0).  drive, h0: from ``exponent_inputs`` (needed when settings.lyapunov > 0).  NaN and Inf in
    the parameters or along a trajectory give NaN entries, never an error."""
    x, target, mask = batch
    S, T = len(spec.streams), x.shape[0]
    row: dict[str, np.ndarray] = {}
    if settings.jacobian:
        streams = stack_streams(spec, params, x)
        sigma, fro, by_lag = np.full((S, T), np.nan), np.full((S, T), np.nan), np.full((S, T), np.nan)
        G = stack_direct_gradients(spec, params, streams, target, mask, loss_kind)
        for s, stream in enumerate(streams):
            sigma[s], fro[s] = jacobian_norms(stream)
            if stream.reverse:  # t indexes input positions (docs/trace_format.md, streams): its last step is t = 0
                sigma[s], fro[s] = sigma[s, ::-1], fro[s, ::-1]
            by_lag[s] = grad_W_hh_by_lag(stream, G[s])
        row |= {"jac_sigma_max": sigma, "jac_fro": fro, "grad_W_hh_by_lag": by_lag}
        row |= unit_traces(streams, G)
    if settings.lyapunov > 0:
        if drive is None or h0 is None:
            raise ValueError("the Lyapunov exponents need their drive and h0 (exponent_inputs)")
        m = settings.lyapunov
        if m > state_size(spec):
            raise ValueError(f"analysis.lyapunov = {m} exceeds the state size {state_size(spec)}")
        row["lyapunov"] = np.stack(
            [qr_exponents(stream, m, settings.warmup) for stream in stack_streams(spec, params, drive, h0)]
        )  # (S, m)
    return row


def unit_traces(streams: list[Stream], G: list[np.ndarray], example: int = 0) -> dict[str, np.ndarray]:
    """units.npz's row: example ``example``'s h_t and total dL/dh_t per unit, (S, T, d), and for a gated cell its
    gate activations (S, T, G d) (blocks i, f, g, o or r, z, n), by input position."""
    from .streams import total_backward

    h, grad_h, gates = [], [], []
    for stream, G_s in zip(streams, G):
        Lam = total_backward(stream, G_s)[2]  # (T, N, D) total dL/ds_t
        order = slice(None, None, -1) if stream.reverse else slice(None)
        h.append(stream.H[order, example])
        grad_h.append(Lam[order, example, : stream.d])
        names = [k for k in ("i", "f", "g", "o", "r", "z", "n") if k in stream.caches]
        if names:
            T, N = stream.S.shape[:2]
            blocks = [stream.caches[k].reshape(T, N, -1)[order, example] for k in names]
            gates.append(np.concatenate(blocks, axis=1))  # (T, G d)
    out = {"unit_h": np.stack(h), "unit_grad_h": np.stack(grad_h)}
    if gates:
        out["unit_gates"] = np.stack(gates)
    return out


def run_summary(log: AnalysisLog, streams: tuple[str, ...]) -> list[dict]:
    """summary.json's "analysis": per analysed iteration kept there (the first and the last), per stream, the
    spectrum's figures (spectrum.spectrum_summary)."""
    arrays = log.to_arrays()
    if "lyapunov" not in arrays or not len(arrays["iteration"]):
        return []
    rows = sorted({0, len(arrays["iteration"]) - 1})
    out = []
    for k in rows:
        figures = {name: spectrum_summary(arrays["lyapunov"][k, s]) for s, name in enumerate(streams)}
        for entry in figures.values():
            for key, value in entry.items():
                if isinstance(value, float) and not math.isfinite(value):
                    entry[key] = repr(value)  # JSON has no NaN: written as text, like the losses
        out.append({"iteration": int(arrays["iteration"][k]), "streams": figures})
    return out


__all__ = [
    "AnalysisSpec",
    "AnalysisLog",
    "ANALYSIS_KEYS",
    "Stream",
    "analyse",
    "exponent_inputs",
    "stack_streams",
    "stack_direct_gradients",
    "jacobian_norms",
    "grad_W_hh_by_lag",
    "qr_exponents",
    "state_size",
    "run_summary",
    "kaplan_yorke_dimension",
    "entropy_rate",
    "gradient_timescale",
    "spectrum_summary",
    "H0_KINDS",
]
