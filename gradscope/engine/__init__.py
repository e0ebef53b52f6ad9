"""GradScope's engine: instrumented backpropagation through time for stacked RNNs, LSTMs and GRUs (Qt-free).

    from gradscope.engine import ModelSpec, InitSpec, init_params, bptt, compile_kernels, parameter_metrics
    spec = ModelSpec(cell="rnn", activation="relu", input_size=32, hidden_size=128, output_size=32)
    params = init_params(spec, InitSpec(recurrent_scale=3.0), np.random.default_rng(0))
    compile_kernels(spec, progress=print)                     # optional: compile or load, with progress
    workspace = {}                                            # keep it across iterations: no reallocation
    result = bptt(spec, params, x, target, mask, "mse", workspace=workspace)
    #   x (T, B, n), target (T, B, k) (mse) or (T, B) ints (ce), mask (T, B)
    result.metrics["grad_h_norm"]                             # (L, T): mean_b ||dL/dh_t||, total derivative
    result.loss, result.grads, result.grad_norm, result.nonfinite
    parameter_metrics(spec, params, result.grads)             # gradient norms, spectral radius, sigma_max

Every metric is defined in docs/metrics.md.  Nothing here imports Qt.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .cells import Cell, cell
from .metrics import PARAMETER_METRICS, NonFinite, StepResult, first_nonfinite, parameter_metrics, step_metric_names
from .params import (
    ACTIVATIONS,
    CELLS,
    DTYPES,
    INIT_SCHEMES,
    InitSpec,
    LayerParams,
    ModelSpec,
    Params,
    init_params,
    spectral_stats,
)

LOSS_KINDS = ("mse", "ce")


@lru_cache(maxsize=64)
def expected_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Every parameter array of the model, by file name (Params.named() order), with its shape."""
    return dict(_expected_shapes(spec))


@lru_cache(maxsize=64)
def _expected_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """``expected_shapes``, worked out once per model (check_batch reads it on every pass; never modified)."""
    expected: dict[str, tuple[int, ...]] = {}
    G, d = spec.gates, spec.hidden_size
    for stream in spec.streams:
        nl = spec.stream_input_size(stream)
        shapes = {"W_hx": (G * d, nl), "W_hh": (G * d, d), "b_h": (G * d,), "b_hh": (G * d,)}
        expected |= {f"{stream}.{name}": shapes[name] for name in cell(spec.cell).parameters}
    return expected | {"readout.W_yh": (spec.output_size, spec.readout_size), "readout.b_y": (spec.output_size,)}


def _check_inputs(spec: ModelSpec, name: str, x, size: int, size_key: str) -> tuple[int, int]:
    """x (or decoder_x): a time-major (T, B, size) array of the model's dtype; returns (T, B)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(x).__name__}")
    if x.ndim != 3:
        raise ValueError(f"{name} must be time-major (T, B, n), got an array of shape {x.shape}")
    T, B, n = x.shape
    if T < 1 or B < 1:
        raise ValueError(f"{name} must hold at least one step and one example, got shape (T, B, n) = {x.shape}")
    if n != size:
        raise ValueError(f"{name} has {n} input features per step, the model expects {size_key} = {size}")
    if x.dtype != spec.np_dtype:
        raise ValueError(f"{name} has dtype {x.dtype}, the model is {spec.dtype}")
    return T, B


def check_batch(spec: ModelSpec, params: Params, x, target, mask, loss_kind: str, decoder_x=None) -> None:
    """Refuse arrays that do not fit the model, naming the array, what was found and what was expected.

    NaN and Inf in x or in an mse target are data (the pass reports where they lead); a mask must be
    finite, because it weighs the loss rather than feeding the model.  A seq2seq model also takes
    decoder_x (T_tgt, B, n_dec); its target and mask then have the decoder's T_tgt steps.
    """
    if loss_kind not in LOSS_KINDS:
        raise ValueError(f"loss_kind must be one of {LOSS_KINDS}, got {loss_kind!r}")
    for name, a in (("target", target), ("mask", mask)):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name} must be a NumPy array, got {type(a).__name__}")
    T, B = _check_inputs(spec, "x", x, spec.input_size, "input_size")
    if spec.seq2seq:
        if decoder_x is None:
            raise ValueError("a seq2seq model needs decoder_x (T_tgt, B, n_dec), the decoder's inputs")
        T, B_dec = _check_inputs(spec, "decoder_x", decoder_x, spec.decoder_input_size, "decoder_input_size")
        if B_dec != B:
            raise ValueError(f"decoder_x has {B_dec} examples, x has {B}")
    elif decoder_x is not None:
        raise ValueError("decoder_x is for a seq2seq model (architecture = 'seq2seq'); this one is a stack")
    if mask.shape != (T, B):
        raise ValueError(f"mask must have shape (T, B) = {(T, B)}, got {mask.shape}")
    if not (mask.dtype == np.bool_ or np.issubdtype(mask.dtype, np.number)) or np.iscomplexobj(mask):
        raise ValueError(f"mask must hold booleans or real weights, got dtype {mask.dtype}")
    if not np.all(np.isfinite(mask)):
        bad = np.argwhere(~np.isfinite(mask))[0]
        raise ValueError(f"mask must be finite; mask[t={bad[0]}, b={bad[1]}] = {mask[tuple(bad)]}")
    if loss_kind == "mse":
        if target.shape != (T, B, spec.output_size):
            raise ValueError(
                f"an mse target must have shape (T, B, k) = {(T, B, spec.output_size)}, got {target.shape}"
            )
        if not np.issubdtype(target.dtype, np.floating):
            raise ValueError(f"an mse target must hold floats, got dtype {target.dtype}")
    if loss_kind == "ce":
        if target.shape != (T, B) or not np.issubdtype(target.dtype, np.integer):
            raise ValueError(
                f"a ce target must be integer class indices of shape (T, B) = {(T, B)}, "
                f"got {target.dtype} {target.shape}"
            )
        if target.min() < 0 or target.max() >= spec.output_size:
            bad = np.argwhere((target < 0) | (target >= spec.output_size))[0]
            raise ValueError(
                f"ce target classes must lie in [0, {spec.output_size}) (output_size); "
                f"target[t={bad[0]}, b={bad[1]}] = {target[tuple(bad)]}"
            )
    expected = _expected_shapes(spec)
    got = params.arrays()
    if got.keys() != expected.keys():
        raise ValueError(
            f"parameters {sorted(got)} do not match a {spec.layers}-layer {spec.label} model {sorted(expected)}"
        )
    for name, shape in expected.items():
        if not isinstance(got[name], np.ndarray):
            raise TypeError(f"parameter {name} must be a NumPy array, got {type(got[name]).__name__}")
        if got[name].shape != shape:
            raise ValueError(f"parameter {name} has shape {got[name].shape}, expected {shape}")
        if got[name].dtype != spec.np_dtype:
            raise ValueError(f"parameter {name} has dtype {got[name].dtype}, the model is {spec.dtype}")


def bptt(
    spec: ModelSpec,
    params: Params,
    x: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray,
    loss_kind: str,
    *,
    backend: str = "numba",
    workspace=None,
    check: bool = True,
    threads: int | None = None,
    shards: int | None = None,
    decoder_x: np.ndarray | None = None,
    accuracy: bool = False,
) -> StepResult:
    """One forward and backward pass through time with every metric (see ``metrics`` for definitions).

    A seq2seq model (``spec.architecture == "seq2seq"``) also takes ``decoder_x`` (T_tgt, B, n_dec); its
    target and mask score the decoder's T_tgt steps (seq2seq.py).

    backend "numba" runs the compiled kernels (``driver``); "numpy" runs their plain twins (``reference``).
    ``shards`` (numba only): the parts of the batch a big enough pass runs on separately and adds up
    (``shard_rows``; default: DEFAULT_SHARDS, a fixed number), which fix the result's bits;
    ``threads``: how many shards run at once (default: NUMBA_NUM_THREADS), which changes only the speed.
    ``accuracy`` (ce only; the trainer asks at recorded iterations): also ``metrics["accuracy"]``, the share
    of scored positions whose largest logit is the target's (engine/accuracy.py), a 0-d array.
    Never raises on NaN or Inf: ``result.nonfinite`` says where the first one appeared.
    """
    if check:
        check_batch(spec, params, x, target, mask, loss_kind, decoder_x)
    if spec.seq2seq:
        if backend not in ("numba", "numpy"):
            raise ValueError(f"backend must be 'numba' or 'numpy', got {backend!r}")
        if decoder_x is None:
            raise ValueError("a seq2seq model needs decoder_x (T_tgt, B, n_dec), the decoder's inputs")
        if backend == "numpy":
            from .reference import seq2seq as twin

            return twin.bptt(spec, params, x, decoder_x, target, mask, loss_kind, accuracy)
        from . import seq2seq

        return seq2seq.bptt(spec, params, x, decoder_x, target, mask, loss_kind, accuracy)
    if backend == "numpy":
        from . import reference

        return reference.bptt(spec, params, x, target, mask, loss_kind, accuracy=accuracy)
    if backend == "numba":
        from . import driver

        return driver.bptt(
            spec,
            params,
            x,
            target,
            mask,
            loss_kind,
            workspace=workspace,
            threads=threads,
            shards=shards,
            accuracy=accuracy,
        )
    raise ValueError(f"backend must be 'numba' or 'numpy', got {backend!r}")


def compile_kernels(spec: ModelSpec, progress=None) -> None:
    """Compile (or load from the cache) the kernels this model needs (``plan.model_plan``: its cell, dtype and
    architecture only), calling ``progress(done, total, name)`` after each: seconds when cold (callers show
    "compiling kernels"), a fraction of a second from the cache."""
    from . import plan

    plan.compile_kernels(spec.dtype, progress, plan.model_plan(spec))


def compile_all(jobs: int | None = None) -> None:
    """Compile every kernel of every cell and dtype into the cache (``gradscope compile``)."""
    from . import plan

    plan.compile_all(jobs)


def shutdown_threads() -> None:
    """End the engine's idle batch-shard threads, if any were started (the app, at exit)."""
    import sys

    shards = sys.modules.get(f"{__name__}.shards")
    if shards is not None:
        shards.shutdown_threads()


# Facts of the compiled engine, loaded on first use (importing them imports Numba).
_LAZY = {
    "shard_rows": "shards",
    "pass_flops": "shards",
    "DEFAULT_SHARDS": "shards",
    "KERNEL_DTYPES": "plan",
    "kernel_plan": "plan",
    "model_plan": "plan",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ModelSpec",
    "InitSpec",
    "Params",
    "LayerParams",
    "init_params",
    "spectral_stats",
    "bptt",
    "check_batch",
    "StepResult",
    "NonFinite",
    "first_nonfinite",
    "step_metric_names",
    "parameter_metrics",
    "PARAMETER_METRICS",
    "compile_kernels",
    "compile_all",
    "shutdown_threads",
    "shard_rows",
    "pass_flops",
    "DEFAULT_SHARDS",
    "KERNEL_DTYPES",
    "kernel_plan",
    "model_plan",
    "Cell",
    "cell",
    "CELLS",
    "ACTIVATIONS",
    "DTYPES",
    "INIT_SCHEMES",
    "LOSS_KINDS",
]
