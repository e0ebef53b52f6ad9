"""GradScope: instrumented backpropagation through time for RNNs and LSTMs, and a live viewer."""

import os

# NumPy and SciPy each bring their own OpenBLAS, each with a pool of busy-waiting threads.  Alternating between
# them (the Numba kernels call SciPy's BLAS, the spectral statistics NumPy's LAPACK) made a training step of
# (B 32, T 200, d 128) 34x slower (715 ms instead of 21 ms), and several runs in threads 30x slower, on the
# project's 2-core machines.  One OpenBLAS thread each, set before NumPy loads; a value the user set is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
