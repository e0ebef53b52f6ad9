"""The compile plan: every kernel a pass runs, with its exact signature, compiled (or loaded) ahead of use.

Numba compiles a kernel on its first call, seconds for the step kernels; a worker thread must not meet that
inside a nogil pass (the GUI shows "compiling kernels" instead), and ``gradscope compile`` (run at install)
fills the cache so that no first start waits.  Signatures are fixed here so that the cache holds exactly one
version of each kernel per dtype.  The step kernel drives every cell (step.py), so one plan per dtype covers
every cell (``kernel_plan``: what ``gradscope compile`` compiles).

A process loads only what its models call from Python (``model_plan``): Numba links a kernel's callees into its
own library, so loading ``step`` from the cache brings every cell's code with it, and the ~40 entry points of
the whole plan (the bidirectional stack's, the layer kernels seq2seq calls) need not be loaded one by one
(0.46 s against 0.22 s for a stacked LSTM on a warm cache, most of the rest being Numba's first-load set-up).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from numba import types

from . import _jit
from .blas import GEMMS, gemm_nt, project, stage_rows
from .cells.gru import gru_backward, gru_backward_row, gru_forward, gru_forward_row
from .cells.lstm import lstm_backward, lstm_backward_row, lstm_forward, lstm_forward_row
from .cells.rnn import rnn_backward, rnn_backward_row, rnn_forward, rnn_forward_row
from .gemm import gemm_packed_acc, pack, pack_transposed
from .params import DTYPES
from .primitives import add_row, fill_zero, rows, vector_norm
from .readout import loss_rows, readout_loss
from .step import grad_norms, pack_layers, step, zero_accumulators
from .streams import (
    add_at_positions,
    add_reversed,
    bidirectional_readout,
    bidirectional_step,
    flip_steps,
    join_columns,
    join_directions,
    reverse_rows,
    split_columns,
    split_directions,
    stream_grad_norms,
)

KERNEL_DTYPES = DTYPES  # one kernel set per dtype, every cell in each


class Dispatcher(Protocol):
    """A jitted kernel (Numba's dispatcher): compiles, or loads from the cache, one exact signature."""

    def compile(self, sig: Any) -> Any: ...


Plan = list[tuple[str, Dispatcher, tuple[Any, ...]]]  # (kernel name, dispatcher, argument types)


def _array_types(dtype: str):
    f = types.float32 if dtype == "float32" else types.float64
    return tuple(types.Array(f, ndim, "C") for ndim in (1, 2, 3, 4, 5))


def kernel_plan(dtype: str) -> Plan:
    """The kernels a model of this dtype runs (any cell), with their exact signatures, callees before callers."""
    A1, A2, A3, A4, A5 = _array_types(dtype)
    F1, F2, F3 = (types.Array(types.float64, ndim, "C") for ndim in (1, 2, 3))
    I2 = types.Array(types.int64, 2, "C")
    i64, flag, f64 = types.int64, types.boolean, types.float64
    f = A1.dtype
    plan: Plan = [("fill_zero", fill_zero, (A1,)), ("fill_zero", fill_zero, (F1,)), ("rows", rows, (A3,))]
    plan += [("add_row", add_row, (A1, F1))]
    plan += [(g.__name__, g, (A2, A2, A2)) for g in GEMMS.values()]
    plan += [("stage_rows", stage_rows, (A3, i64, i64, i64, i64, A3)), ("project", project, (A3, i64, A2, A3, A3))]
    plan += [
        ("pack_transposed", pack_transposed, (A2, A3)),
        ("pack", pack, (A2, A3)),
        ("gemm_packed_acc", gemm_packed_acc, (A2, A3, A2)),
        ("pack_layers", pack_layers, (A3, A4, A4)),
    ]
    plan += [
        ("vector_norm", vector_norm, (A1,)),
        ("grad_norms", grad_norms, (A2, A3, A3, A2, A2, A2, A1, F1)),
        ("zero_accumulators", zero_accumulators, (A2, A3, A3, A2, F2, F2, F1, F1, A3)),
        ("loss_rows", loss_rows, (A3, A1, A3, I2, F2, i64, i64, f64, F1, F1)),
        ("readout_loss", readout_loss, (A3, A2, A1, A3, I2, F2, i64, i64, f64, A3, F1, A2, F1, A3)),
    ]
    # the cells: a row pass each way, then the layer kernels that call them (cells/<name>.py)
    plan += [
        ("rnn_forward_row", rnn_forward_row, (A1, A1, i64, f, f)),
        ("rnn_backward_row", rnn_backward_row, (A1, A1, A1, i64)),
        ("rnn_forward", rnn_forward, (A3, i64, A2, A3, A1, i64, A3, A3, F1, F1, A2, flag)),
        (
            "rnn_backward",
            rnn_backward,
            (A3, A3, i64, A2, A3, i64, A3, A3, A2, flag, A2, A2, F1, F1, flag, A2, flag, A2),
        ),
    ]
    plan += [
        ("lstm_forward_row", lstm_forward_row, (A1, A1, A1, A1, A1, F1)),
        ("lstm_backward_row", lstm_backward_row, (A1, A1, A1, A1, A1, A1, F1)),
        ("lstm_forward", lstm_forward, (A3, i64, A2, A3, A1, A3, A3, A3, A3, A2, F2, A2, flag)),
        (
            "lstm_backward",
            lstm_backward,
            (A3, A3, A3, A3, i64, i64, A2, A3, A3, A2, A2, A2, A2, F1, F1, F1, flag, A2, flag, A2),
        ),
    ]
    plan += [
        ("gru_forward_row", gru_forward_row, (A1, A1, A1, A1, A1, A1, A1, F1)),
        ("gru_backward_row", gru_backward_row, (A1, A1, A1, A1, A1, A1, A1)),
        ("gru_forward", gru_forward, (A3, i64, A2, A3, A1, A1, A3, A3, A3, A3, A2, A2, F2, A2, flag)),
        (
            "gru_backward",
            gru_backward,
            (A3, A3, A3, A3, i64, i64, A2, A3, A3, A3, A2, flag, A2, A2, A2, F1, F1, F1, flag, A2, flag, A2),
        ),
    ]
    head = (i64, i64, A3, A2, A3, A3, A2, A2, A2, A1, A3, I2, F2, i64, i64, f64)  # cell, act, x, weights, ..
    work = (i64, A3, A4, A4, A4, A4, A4, A2, A2, A3, A3, A3, A3)  # chunk, stage, P_f .. carry
    grads = (A2, A3, A3, A2, A2, A2, A1, F2, F2, F1, F3, F1, F1)  # dW_hx0 .. norms
    plan += [("step", step, head + work + grads)]
    # the bidirectional stack: the same cells, a direction axis after the layer axis (streams.py)
    plan += [
        ("reverse_rows", reverse_rows, (A3, i64, i64, A3)),
        ("join_directions", join_directions, (A3, A3, A3)),
        ("split_directions", split_directions, (A3, A3, A3)),
        ("add_at_positions", add_at_positions, (A3, i64, flag, A3)),
        ("add_reversed", add_reversed, (A3, A3)),
        ("split_columns", split_columns, (A2, A3)),
        ("flip_steps", flip_steps, (F2,)),
        ("join_columns", join_columns, (A3, A2)),
        (
            "bidirectional_readout",
            bidirectional_readout,
            (A3, A3, A3, A1, A3, I2, F2, i64, i64, f64, A3, A3, F1, A3, F1),
        ),
        ("stream_grad_norms", stream_grad_norms, (A3, A4, A4, A3, A3, A2, A1, F1)),
    ]
    head2 = (i64, i64, A3, A3, A4, A4, A3, A3, A2, A1, A3, I2, F2, i64, i64, f64)
    work2 = (i64, A3, A5, A5, A5, A5, A5, A2, A2, A3, A3, A3, A3, A3, A3, A3, A3, A4, A3, A3, A3, A2)
    grads2 = (A3, A4, A4, A3, A3, A2, A1, F3, F3, F1, F3, F1, F1)
    plan += [("bidirectional_step", bidirectional_step, head2 + work2 + grads2)]
    return plan


def model_plan(spec) -> Plan:
    """The entries of ``kernel_plan(spec.dtype)`` that a pass of this model (a ModelSpec) calls from Python: its
    step kernel (one for every cell of a stack, another for a bidirectional one) or, for seq2seq, its cell's
    layer kernels, their packing and readout, and the gradient norms; ``gemm_nt`` for the BLAS check.  Their
    callees come with them (Numba links them in), so a pass loads nothing more (tests/engine/test_kernel_plan.py
    checks every cell, dtype and architecture), and every entry is one ``gradscope compile`` compiled."""
    if spec.seq2seq:
        names = {"pack_layers", f"{spec.cell}_forward", f"{spec.cell}_backward", "readout_loss", "vector_norm"}
    elif spec.bidirectional:
        names = {"pack_layers", "bidirectional_step", "stream_grad_norms"}
    else:
        names = {"pack_layers", "step", "grad_norms"}
    return [entry for entry in kernel_plan(spec.dtype) if entry[0] in names | {"gemm_nt"}]


_compile_lock = threading.Lock()


def compile_kernels(dtype: str, progress=None, plan: Plan | None = None) -> None:
    """Compile, or load from the cache, the kernels ``plan`` lists (default: every kernel ``bptt`` runs for
    models of this dtype, ``kernel_plan``), and the trainer's spectral kernels.

    ``progress(done, total, name)`` is called after each kernel.  A cold compile takes seconds (the GUI
    shows "compiling kernels"); a warm cache loads in a fraction of a second.
    """
    everything = plan is None  # gradscope compile: every kernel of the dtype, the rarely called ones included
    plan = kernel_plan(dtype) if plan is None else plan
    with _compile_lock:
        for done, (name, dispatcher, signature) in enumerate(plan, start=1):
            dispatcher.compile(signature)
            if progress is not None:
                progress(done, len(plan), name)
        from .spectra_kernels import compile_spectra  # the trainer's spectral tracking (float64 whatever the dtype)

        compile_spectra(rare=everything)
    # Numba finds SciPy's BLAS on the first call, taking the GIL to import it: do that here, not inside a
    # nogil kernel running in a worker thread.
    one = np.ones((1, 1), dtype)
    if gemm_nt(one, one, np.empty((1, 1), dtype)) != 0:
        raise RuntimeError("Numba could not call SciPy's BLAS (scipy.linalg.cython_blas); reinstall scipy")


def _compile_dtypes(dtypes: Sequence[str]) -> None:
    """Compile the kernel sets of these dtypes in this process (a worker of ``compile_all``)."""
    for dtype in dtypes:
        compile_kernels(dtype)


def compile_all(jobs: int | None = None) -> None:
    """Compile every kernel of every dtype into the cache, ``jobs`` processes at a time (default: one per CPU,
    at most one per dtype), then load them here.  ``gradscope compile`` (run by scripts/install.sh), so that
    no first run waits for a compile.

    The dtypes share a single signature (fill_zero on float64); should two processes race on its cache
    index, the load here finds what is missing and compiles it (milliseconds), so the cache is whole when
    this returns.
    """
    dtypes = list(KERNEL_DTYPES)
    jobs = max(1, min(len(dtypes), os.cpu_count() or 1) if jobs is None else int(jobs))
    if jobs > 1 and _jit.CACHE:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_compile_dtypes, [[d] for d in dtypes]))
    _compile_dtypes(dtypes)  # from the cache now (or compiled here, with one job)
