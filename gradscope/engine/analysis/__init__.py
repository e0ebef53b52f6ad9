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


def _continued(chunks: list[np.ndarray], E: int, N: int) -> np.ndarray:
    """(N, E, n): successive batches' sequences (T, B, n) joined in time, E examples each."""
    X = np.concatenate(chunks, axis=1).astype(np.float64)  # (T, batches B, n)
    T, _, n = X.shape
    count = -(-N // T)
    X = X[:, : count * E].reshape(T, count, E, n).transpose(1, 0, 2, 3).reshape(count * T, E, n)[:N]
    return np.ascontiguousarray(X)


def exponent_inputs(spec: ModelSpec, settings: AnalysisSpec, task, rng: np.random.Generator):
    """The exponents' own trajectories: (drive, h0 (S, E, D)); drive (warmup + steps, E, n), and for seq2seq
    the pair (encoder drive, decoder drive) (the decoder's from decoder_x).

    The drive is the task's input process continued: successive batches' inputs, their length at a time,
    E examples each (an autonomous network is a task whose inputs W_hx = 0 ignores).  h0 is zero, or
    N(0, 1) per unit from ``rng`` (drawn first, so the drive does not move it)."""
    E, N = settings.examples, settings.warmup + settings.steps
    S, D = len(spec.streams), state_size(spec)
    h0 = rng.standard_normal((S, E, D)) if settings.h0 == "random" else np.zeros((S, E, D))
    parts: list[list[np.ndarray]] = []

    def enough(chunks):  # E examples for each of the ceil(N / T) batch lengths the drive is made of
        return sum(c.shape[1] for c in chunks) >= E * -(-N // chunks[0].shape[0])

    while not parts or not all(enough(chunks) for chunks in parts):
        drawn = task.seq2seq_batch(rng)[:2] if spec.seq2seq else task.batch(rng)[:1]  # (x, decoder_x) or (x,)
        parts = parts or [[] for _ in drawn]
        for chunks, a in zip(parts, drawn):
            chunks.append(a)
    drives = [_continued(chunks, E, N) for chunks in parts]
    return (drives[0], drives[1]) if spec.seq2seq else drives[0], h0


def _as_batch(batch) -> dict:
    if isinstance(batch, dict):
        return batch
    x, target, mask, *rest = batch
    return {"x": x, "target": target, "mask": mask, "decoder_x": rest[0] if rest else None}


def _padded(rows: list[np.ndarray], T: int) -> np.ndarray:
    """Streams' rows of their own lengths as one (S, T, ...) array, NaN past each stream's length."""
    out = np.full((len(rows), T) + rows[0].shape[1:], np.nan)
    for s, row in enumerate(rows):
        out[s, : len(row)] = row
    return out


def analyse(
    spec: ModelSpec,
    params: Params,
    batch,
    loss_kind: str,
    settings: AnalysisSpec,
    drive=None,
    h0: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """One analysed iteration: the row of analysis.npz (module docstring) at these parameters.

    ``batch``: the iteration's own batch (the trajectory its metrics describe, from s_{-1} = 0), a dict of x,
    target, mask (and decoder_x for seq2seq), or the tuple (x, target, mask[, decoder_x]).  drive, h0: from
    ``exponent_inputs`` (needed when settings.lyapunov > 0).  Rows are (S, T) with T the longest stream's
    length and NaN past a shorter one's.  NaN and Inf in the parameters or along a trajectory give NaN entries,
    never an error."""
    b = _as_batch(batch)
    row: dict[str, np.ndarray] = {}
    if settings.jacobian:
        streams = stack_streams(spec, params, b["x"], decoder_x=b.get("decoder_x"))
        T = max(st.S.shape[0] for st in streams)
        G = stack_direct_gradients(spec, params, streams, b["target"], b["mask"], loss_kind)
        sigma, fro, by_lag = [], [], []
        for stream, G_s in zip(streams, G):
            s, f = jacobian_norms(stream)
            if stream.reverse:  # t indexes input positions (docs/trace_format.md, streams): its last step is t = 0
                s, f = s[::-1], f[::-1]
            sigma.append(s)
            fro.append(f)
            by_lag.append(grad_W_hh_by_lag(stream, G_s))
        row |= {"jac_sigma_max": _padded(sigma, T), "jac_fro": _padded(fro, T), "grad_W_hh_by_lag": _padded(by_lag, T)}
        row |= {k: _padded(list(v), T) for k, v in unit_traces(streams, G).items()}
    if settings.lyapunov > 0:
        if drive is None or h0 is None:
            raise ValueError("the Lyapunov exponents need their drive and h0 (exponent_inputs)")
        m = settings.lyapunov
        if m > state_size(spec):
            raise ValueError(f"analysis.lyapunov = {m} exceeds the state size {state_size(spec)}")
        x, decoder_x = drive if spec.seq2seq else (drive, None)
        streams = stack_streams(spec, params, x, h0, decoder_x=decoder_x)
        row["lyapunov"] = np.stack([qr_exponents(st, m, settings.warmup) for st in streams])  # (S, m)
    return row


def unit_traces(streams: list[Stream], G: list[np.ndarray], example: int = 0) -> dict[str, list[np.ndarray]]:
    """units.npz's row, per stream: example ``example``'s h_t and total dL/dh_t per unit, (T_s, d), and for a
    gated cell its gate activations (T_s, G d) (blocks i, f, g, o or r, z, n), by input position."""
    from .streams import total_backward

    out: dict[str, list[np.ndarray]] = {"unit_h": [], "unit_grad_h": []}
    for stream, G_s in zip(streams, G):
        Lam = total_backward(stream, G_s)[2]  # (T, N, D) total dL/ds_t
        order = slice(None, None, -1) if stream.reverse else slice(None)
        out["unit_h"].append(stream.H[order, example])
        out["unit_grad_h"].append(Lam[order, example, : stream.d])
        names = [k for k in ("i", "f", "g", "o", "r", "z", "n") if k in stream.caches]
        if names:
            T, N = stream.S.shape[:2]
            blocks = [stream.caches[k].reshape(T, N, -1)[order, example] for k in names]
            out.setdefault("unit_gates", []).append(np.concatenate(blocks, axis=1))  # (T, G d)
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
