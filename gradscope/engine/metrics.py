"""What one forward/backward pass returns, and where its first non-finite value appeared.

Per-timestep metrics have shape (L, T): layer l, timestep t.  Their definitions (docs/trace_format.md and
docs/metrics.md) are shared by the Numba kernels and their NumPy twins:

    h_norm, c_norm             mean over the batch of ||h_t||, ||c_t||
    grad_h_norm, grad_c_norm   mean over the batch of ||dL/dh_t||, ||dL/dc_t||, the TOTAL derivatives
    gate_{i,f,g,o}_mean        LSTM gate activations averaged over batch and units
    gate_{i,f,o}_sat           share of (example, unit) pairs with the sigmoid gate < 0.05 or > 0.95
    gate_g_sat                 share with |g| > 0.95 (g is a tanh)
    relu_dead                  ReLU RNN: share of (example, unit) pairs with h = 0 (pre-activation <= 0)
    tanh_sat                   tanh RNN: share with |h| > 0.95
    sigmoid_sat                sigmoid RNN: share with h < 0.05 or h > 0.95
    loss_t                     (T,) the loss contributed by step t; the step's loss is their sum

Per-parameter metrics (``parameter_metrics``), (L,) arrays unless noted:

    grad_norm_W_hx, grad_norm_W_hh, grad_norm_b_h      ||dL/dW|| (Frobenius) of each layer's arrays
    grad_norm_W_yh, grad_norm_b_y                      floats, the readout's
    spectral_radius, sigma_max                         max |eigenvalue| and largest singular value of W_hh
                                                       (LSTM, GRU: the largest over its d x d gate blocks)
    grad_norm_b_hh                                     GRU: ||dL/db_hh|| of each layer
"""

from __future__ import annotations

import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .cells import cell
from .params import ModelSpec, Params, combine_norms, spectral_stats

SAT_LOW, SAT_HIGH = 0.05, 0.95


def step_metric_names(spec: ModelSpec) -> tuple[str, ...]:
    """Names of the (L, T) metrics a pass over this model produces (the cell's description says)."""
    return cell(spec.cell).step_metrics(spec.activation)


@dataclass
class NonFinite:
    """Where the first NaN or Inf appeared, in the order the pass computes things."""

    quantity: str  # "h", "c", "loss", "grad_h", "grad_c" or "grad <param name>"
    layer: int | None
    timestep: int | None
    iteration: int | None = None  # filled in by the trainer

    def as_dict(self) -> dict:
        return {"iteration": self.iteration, "layer": self.layer, "timestep": self.timestep, "quantity": self.quantity}

    def location(self) -> str:
        """Where it appeared, for people: ``iteration 3, layer 0, t = 41`` (the parts that are known; "" if none).
        The one text of a location: every message about a non-finite value says it through this (or __str__)."""
        where = [f"iteration {self.iteration}"] if self.iteration is not None else []
        if self.layer is not None:
            where.append(f"layer {self.layer}")
        if self.timestep is not None:
            where.append(f"t = {self.timestep}")
        return ", ".join(where)

    def __str__(self) -> str:
        """``non-finite grad_h at iteration 3, layer 0, t = 41``."""
        where = self.location()
        return f"non-finite {self.quantity} at {where}" if where else f"non-finite {self.quantity}"


@dataclass
class StepResult:
    """One forward + backward pass: the loss, every parameter gradient and the per-timestep metrics."""

    loss: float
    grads: Params
    metrics: dict[str, np.ndarray]  # name -> (L, T) float64, plus "loss_t" (T,)
    nonfinite: NonFinite | None = None
    extras: dict = field(default_factory=dict)

    @property
    def finite(self) -> bool:
        return self.nonfinite is None

    @property
    def grad_norm(self) -> float:
        """Global L2 norm of every parameter gradient (before any clipping)."""
        norms = self.extras.get("grad_norms")
        return combine_norms(norms) if norms is not None else self.grads.global_norm()


def first_nonfinite(metrics: dict[str, np.ndarray], grads: Params, grad_norms=None) -> NonFinite | None:
    """Locate the first non-finite value of a pass from its metrics, in computation order.

    Forward: layer by layer, and in each layer t = 0..T-1 (c_t before h_t); then the loss, step by step;
    backward: t = T-1..0, and at each step from the top layer down (dL/dh_t before dL/dc_t); last the
    parameter gradients, in ``Params.named()`` order.  A norm is non-finite exactly when its vector holds a
    NaN or an Inf (norms are accumulated in float64 and rescaled when the plain sum of squares overflows).
    ``grad_norms``, the norm of every gradient array in that order, spares scanning the arrays.
    """
    h, c = metrics["h_norm"], metrics.get("c_norm")
    L, T = h.shape
    forward_ok = np.isfinite(h) if c is None else np.isfinite(h) & np.isfinite(c)  # (L, T)
    if not forward_ok.all():
        l = int(np.flatnonzero(~forward_ok.all(axis=1))[0])  # the first layer with one
        t = int(np.flatnonzero(~forward_ok[l])[0])
        return NonFinite("c" if c is not None and not np.isfinite(c[l, t]) else "h", l, t)
    bad = np.flatnonzero(~np.isfinite(metrics["loss_t"]))
    if bad.size:
        return NonFinite("loss", None, int(bad[0]))
    gh, gc = metrics["grad_h_norm"], metrics.get("grad_c_norm")
    backward_ok = np.isfinite(gh) if gc is None else np.isfinite(gh) & np.isfinite(gc)  # (L, T)
    if not backward_ok.all():
        t = int(np.flatnonzero(~backward_ok.all(axis=0))[-1])  # the LAST step with one
        l = int(np.flatnonzero(~backward_ok[:, t])[-1])  # its top layer with one
        return NonFinite("grad_h" if not np.isfinite(gh[l, t]) else "grad_c", l, t)
    if grad_norms is not None and grad_norms.size and np.isfinite(grad_norms).all():
        return None  # the common case: one test of the norms instead of one per array (~10 us a pass)
    streams = grads.stream_names()  # the rows of the metrics above, so that ``layer`` indexes them alike
    for index, (name, g) in enumerate(grads.named()):
        if not (np.isfinite(grad_norms[index]) if grad_norms is not None else np.all(np.isfinite(g))):
            stream = name.rpartition(".")[0]  # layer1_reverse.W_hh -> layer1_reverse; readout.W_yh -> readout
            return NonFinite(f"grad {name}", streams.index(stream) if stream in streams else None, None)
    return None


def without_padding(metrics: dict[str, np.ndarray], n_enc: int, T_src: int, T_tgt: int) -> dict[str, np.ndarray]:
    """A seq2seq pass's metrics with each stream's padding (its steps past its own length, NaN) set to 0:
    what ``first_nonfinite`` reads, since padding is not data.  Streams 0 .. n_enc-1 are the encoder's."""
    out = dict(metrics)
    for name, M in metrics.items():
        if name != "loss_t" and np.ndim(M) == 2:
            M = M.copy()
            M[:n_enc, T_src:] = 0.0
            M[n_enc:, T_tgt:] = 0.0
            out[name] = M
    return out


class _SpectralCache:
    """Spectral stats of recently seen W_hh, so an unchanged matrix costs a checksum, not an eigensolve.

    An eigensolve of a 512 x 512 matrix takes a few hundred ms (docs/metrics.md); W_hh is unchanged at
    iteration 0, with lr = 0, in frozen layers and when the same parameters are measured twice.  Keyed by
    shape, dtype and a CRC32 of the bytes, confirmed against a stored copy.  Thread-safe; bounded.
    """

    def __init__(self, max_entries: int = 16):
        self.max_entries = max_entries
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __call__(self, W_hh: np.ndarray, gates: int) -> tuple[float, float]:
        W = np.ascontiguousarray(W_hh)
        key = (W.shape, W.dtype.str, gates, zlib.crc32(W.data))  # W.data: its bytes (C order)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and np.array_equal(hit[0], W, equal_nan=True):
                self._entries.move_to_end(key)
                self.hits += 1
                return hit[1]
        stats = spectral_stats(W, gates)
        with self._lock:
            self.misses += 1
            self._entries[key] = (W.copy(), stats)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return stats


spectral_cache = _SpectralCache()


def parameter_metrics(
    spec: ModelSpec,
    params: Params,
    grads: Params,
    spectral: bool = True,
    spectra=None,
    exact: bool = False,
    grad_norms=None,
    seed: bool = True,
) -> dict:
    """Per-parameter metrics of one iteration (module docstring): gradient norms and W_hh's spectrum.

    Returns {"grad_norm_W_hx", "grad_norm_W_hh", "grad_norm_b_h" (and "grad_norm_b_hh" for the GRU),
    "spectral_radius", "sigma_max": (L,) float64 arrays, "grad_norm_W_yh", "grad_norm_b_y": floats}.  Norms
    accumulate in float64.  Measured from scratch, the spectral pair costs an O(d^3) eigensolve per changed W_hh
    (docs/metrics.md: ~0.3 s at d = 512); ``spectra``, one engine.spectra.SpectralTracker per stream (what the
    trainer passes), tracks it from the previous iteration instead, exactly when ``exact`` (``seed=False``: and
    nothing is kept to track the next one from: the run's last iteration).
    ``spectral=False`` leaves both keys out, for callers that measure it less often.  ``grad_norms``: the norm of
    every gradient array in Params.named() order, as the pass computed them (StepResult.extras["grad_norms"]),
    which spares reading the gradients again.
    """
    names_in_order = [name for name, _ in grads.named()]
    if grad_norms is not None and len(grad_norms) == len(names_in_order):
        norms = dict(zip(names_in_order, np.asarray(grad_norms, dtype=np.float64).tolist()))
    else:
        norms = grads.norms()
    layer_arrays = cell(spec.cell).parameters  # W_hx, W_hh, b_h (and the GRU's b_hh)
    names = tuple(f"grad_norm_{a}" for a in layer_arrays) + (("spectral_radius", "sigma_max") if spectral else ())
    streams = spec.streams  # one value per stream (layer, or direction of a layer)
    per_stream = {name: np.empty(len(streams)) for name in names}  # (S,) each
    for s, stream in enumerate(streams):
        for a in layer_arrays:
            per_stream[f"grad_norm_{a}"][s] = norms[f"{stream}.{a}"]
        if spectral:
            W_hh = params.layers[s].W_hh
            radius, sigma_max = spectral_cache(W_hh, spec.gates) if spectra is None else spectra[s](W_hh, exact, seed)
            per_stream["spectral_radius"][s], per_stream["sigma_max"][s] = radius, sigma_max
    readout = {"grad_norm_W_yh": norms["readout.W_yh"], "grad_norm_b_y": norms["readout.b_y"]}
    return {**per_stream, **readout}


PARAMETER_METRICS = (
    "grad_norm_W_hx",
    "grad_norm_W_hh",
    "grad_norm_b_h",
    "grad_norm_b_hh",
    "grad_norm_W_yh",
    "grad_norm_b_y",
    "spectral_radius",
    "sigma_max",
)
