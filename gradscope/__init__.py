"""GradScope: instrumented backpropagation through time for RNNs and LSTMs, and a live viewer.

    import gradscope
    results = gradscope.run("models/relu_init_scale.toml")     # Results: to_xarray(), to_pandas(), figure()
    results = gradscope.open("runs/relu")                     # an exported, recording or killed run's folder

docs/python.md walks through it.  The names are loaded on first use, so ``import gradscope`` stays cheap (the
command line imports this package too).
"""

import os

# NumPy and SciPy each bring their own OpenBLAS, each with a pool of busy-waiting threads.  Alternating between
# them (the Numba kernels call SciPy's BLAS, the spectral statistics NumPy's LAPACK) made a training step of
# (B 32, T 200, d 128) 34x slower (715 ms instead of 21 ms), and several runs in threads 30x slower, on the
# project's 2-core machines.  One OpenBLAS thread each, set before NumPy loads; a value the user set is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

_PUBLIC = {"run": "api", "open": "api", "Results": "results", "Experiment": "config", "ConfigError": "config"}


def __getattr__(name: str):
    if name in _PUBLIC:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module 'gradscope' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_PUBLIC))


__all__ = ["run", "open", "Results", "Experiment", "ConfigError"]
