"""Model description, parameter containers and initialisation schemes.

Layouts follow the lecture and PyTorch, so weights copy across unchanged:

    RNN   layer l:  W_hx (d, n_l)   W_hh (d, d)    b_h (d,)
    LSTM  layer l:  W_hx (4d, n_l)  W_hh (4d, d)   b_h (4d,)   row blocks i, f, g, o
    GRU   layer l:  W_hx (3d, n_l)  W_hh (3d, d)   b_h (3d,)   b_hh (3d,)   row blocks r, z, n
    readout:        W_yh (k, d)     b_y (k,)

with n_0 the task's input size and n_l = d above it.  A batch of inputs is applied as
``x_t @ W_hx.T`` (rows are examples), which is W_hx x_t for each example.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, get_args

import numpy as np

from .cells import ACTIVATIONS, CELL_NAMES, cell

CELLS = CELL_NAMES
Dtype = Literal["float32", "float64"]
DTYPES: tuple[Dtype, ...] = get_args(Dtype)
DEFAULT_SHARDS = 2  # parts of the batch a big pass runs on (engine.shards): a fixed number, it decides the bits
ARCHITECTURES = ("stack", "seq2seq")  # a stack of layers with a readout; an encoder into a decoder (seq2seq.py)
InitScheme = Literal["gaussian", "uniform", "xavier", "kaiming", "orthogonal", "identity", "pytorch"]
INIT_SCHEMES: tuple[InitScheme, ...] = get_args(InitScheme)


@dataclass(frozen=True)
class ModelSpec:
    """The shape of a model: everything a kernel needs besides the arrays."""

    cell: str = "rnn"  # "rnn" | "lstm" | "gru" (engine.cells)
    activation: str = "relu"  # rnn only: "relu" | "tanh" | "sigmoid" | "linear"
    input_size: int = 32  # n_0
    hidden_size: int = 128  # d
    layers: int = 1  # L
    output_size: int = 32  # k
    dtype: str = "float32"  # "float32" | "float64"
    bidirectional: bool = False  # each layer runs forward and in reverse; the layer above reads both
    architecture: str = "stack"  # "stack" | "seq2seq": an encoder of `layers` layers into a decoder of as many
    decoder_input_size: int = 0  # seq2seq: n_dec, the decoder's input per step (0: the same as input_size)

    def __post_init__(self):
        cell(self.cell)  # a ValueError naming the cells for an unknown one
        if cell(self.cell).uses_activation and self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        for name in ("input_size", "hidden_size", "layers", "output_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
            object.__setattr__(self, name, int(value))  # numpy integers become plain ints (hashing, JSON)
        if not isinstance(self.bidirectional, (bool, np.bool_)):
            raise ValueError(f"bidirectional must be true or false, got {self.bidirectional!r}")
        object.__setattr__(self, "bidirectional", bool(self.bidirectional))
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        n_dec = self.decoder_input_size
        if isinstance(n_dec, bool) or not isinstance(n_dec, (int, np.integer)) or n_dec < 0:
            raise ValueError(f"decoder_input_size must be a whole number >= 0, got {n_dec!r}")
        object.__setattr__(self, "decoder_input_size", int(n_dec) or (self.input_size if self.seq2seq else 0))

    @property
    def gates(self) -> int:
        """Row blocks in W_hh: 1 for an RNN, 4 (i, f, g, o) for an LSTM (the cell's description)."""
        return cell(self.cell).blocks

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @property
    def directions(self) -> int:
        """1, or 2 for a bidirectional model (forward, then reverse, in every layer)."""
        return 2 if self.bidirectional else 1

    @property
    def seq2seq(self) -> bool:
        return self.architecture == "seq2seq"

    @cached_property
    def streams(self) -> tuple[str, ...]:
        """The recurrent chains, in the engine's order (docs/trace_format.md, streams): layer0, layer0_reverse
        (bidirectional), layer1, ...; for seq2seq the encoder's (encoder.layer0, ...), then the decoder's
        (decoder.layer0, ...).  Per-timestep metrics are (S, T) in this order."""
        suffixes = ("", "_reverse")[: self.directions]
        stack = tuple(f"layer{l}{suffix}" for l in range(self.layers) for suffix in suffixes)
        if not self.seq2seq:
            return stack
        return tuple(f"encoder.{s}" for s in stack) + tuple(f"decoder.layer{l}" for l in range(self.layers))

    def layer_input_size(self, l: int) -> int:
        """n_l: the task's input for layer 0; above, the layer below's h (both directions' when bidirectional).
        For seq2seq, the encoder's."""
        return self.input_size if l == 0 else self.hidden_size * self.directions

    def stream_input_size(self, stream: str) -> int:
        """The input size of a stream's W_hx: its layer's n_l; a seq2seq decoder's layer 0 reads decoder_x."""
        part, l, _ = parse_stream(stream)
        if part == "decoder":
            return self.decoder_input_size if l == 0 else self.hidden_size
        return self.layer_input_size(l)

    @property
    def readout_size(self) -> int:
        """The readout's input: the top layer's h_t, [h_fwd_t ; h_rev_t] when bidirectional (a seq2seq
        decoder is unidirectional: d)."""
        return self.hidden_size * (1 if self.seq2seq else self.directions)

    @property
    def label(self) -> str:
        return cell(self.cell).label(self.activation)


def parse_stream(name: str) -> tuple[str, int, bool]:
    """A stream's name as (part, layer, reverse): ``layer1_reverse`` -> ("", 1, True),
    ``decoder.layer0`` -> ("decoder", 0, False) (docs/trace_format.md, streams)."""
    part, _, chain = name.rpartition(".")
    if not chain.startswith("layer"):
        raise ValueError(f"not a stream name: {name!r} (expected e.g. layer0, layer0_reverse, decoder.layer1)")
    layer, _, suffix = chain[5:].partition("_")
    return part, int(layer), suffix == "reverse"


@dataclass
class LayerParams:
    W_hx: np.ndarray  # (G d, n_l)
    W_hh: np.ndarray  # (G d, d)
    b_h: np.ndarray  # (G d,)
    b_hh: np.ndarray | None = None  # (G d,): the GRU's bias inside the recurrent product; None for others

    def named(self) -> Iterator[tuple[str, np.ndarray]]:
        """The layer's arrays by their file names, in the order of the cell's description."""
        yield "W_hx", self.W_hx
        yield "W_hh", self.W_hh
        yield "b_h", self.b_h
        if self.b_hh is not None:
            yield "b_hh", self.b_hh

    def map(self, f) -> LayerParams:
        """A layer of f(array) for each of its arrays."""
        return LayerParams(f(self.W_hx), f(self.W_hh), f(self.b_h), None if self.b_hh is None else f(self.b_hh))


@dataclass
class Params:
    """All trainable arrays of a recurrent model with a linear readout: one LayerParams per stream (a layer,
    or one direction of a bidirectional layer, in ModelSpec.streams order) and the readout."""

    layers: list[LayerParams]
    W_yh: np.ndarray  # (k, d) or (k, 2d) bidirectional
    b_y: np.ndarray  # (k,)
    streams: tuple[str, ...] | None = None  # the streams' names; None: layer0, layer1, ...

    def stream_names(self) -> tuple[str, ...]:
        return self.streams if self.streams is not None else tuple(f"layer{l}" for l in range(len(self.layers)))

    # Names used in files (docs/trace_format.md: init_params.npz) and in per-parameter metrics.
    def named(self) -> Iterator[tuple[str, np.ndarray]]:
        for stream, p in zip(self.stream_names(), self.layers):
            for name, a in p.named():
                yield f"{stream}.{name}", a
        yield "readout.W_yh", self.W_yh
        yield "readout.b_y", self.b_y

    def arrays(self) -> dict[str, np.ndarray]:
        return dict(self.named())

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Params:
        """Params from the arrays of an init_params.npz (or ``arrays()``): streams in file order."""
        streams = list(dict.fromkeys(name.rsplit(".", 1)[0] for name in arrays if name.endswith(".W_hh")))
        if not streams:
            raise KeyError("no '<stream>.W_hh' array (e.g. layer0.W_hh): not a GradScope parameter file")

        def get(name):
            return np.asarray(arrays[name]) if name in arrays else None

        layers = [LayerParams(get(f"{s}.W_hx"), get(f"{s}.W_hh"), get(f"{s}.b_h"), get(f"{s}.b_hh")) for s in streams]
        plain = streams == [f"layer{l}" for l in range(len(streams))]
        return cls(
            layers,
            np.asarray(arrays["readout.W_yh"]),
            np.asarray(arrays["readout.b_y"]),
            None if plain else tuple(streams),
        )

    def map(self, f) -> Params:
        """Params of f(array) for each array."""
        return Params([p.map(f) for p in self.layers], f(self.W_yh), f(self.b_y), self.streams)

    def copy(self) -> Params:
        return self.map(np.copy)

    def zeros_like(self) -> Params:
        return self.map(np.zeros_like)

    def astype(self, dtype) -> Params:
        return self.map(lambda a: a.astype(dtype))

    def global_norm(self) -> float:
        """sqrt(sum of squares of every entry), accumulated in float64."""
        return combine_norms(list(self.norms().values()))

    def norms(self) -> dict[str, float]:
        """L2 (Frobenius) norm of every array, by file name, accumulated in float64 (scaled when the plain
        sum of squares would overflow, so a norm is infinite only when its array holds an Inf)."""
        out = {}
        for name, a in self.named():
            a = np.asarray(a, dtype=np.float64).reshape(-1)
            with np.errstate(over="ignore", invalid="ignore"):
                norm = float(np.sqrt(np.dot(a, a)))
                if norm == np.inf:
                    scaled = a * 2.0**-600
                    norm = float(np.sqrt(np.dot(scaled, scaled))) * 2.0**600
            out[name] = norm
        return out


def combine_norms(norms) -> float:
    """The L2 norm of a concatenation, from the L2 norms of its parts (no overflow: scaled by the largest)."""
    v = np.asarray(norms, dtype=np.float64)
    if v.size == 0:
        return 0.0
    top = float(np.max(v))
    if not np.isfinite(top) or np.any(np.isnan(v)):
        return float(np.sum(v))  # NaN if any is NaN, else +inf
    if top == 0.0:
        return 0.0
    return top * float(np.sqrt(np.sum(np.square(v / top))))


@dataclass(frozen=True)
class InitSpec:
    """How to draw the initial parameters. Scales are per scheme (see ``init_matrix``)."""

    recurrent: str = "gaussian"
    recurrent_scale: float = 1.0
    input: str = "gaussian"
    input_scale: float = 1.0
    readout_scale: float = 1.0  # W_yh ~ N(0, readout_scale / d), b_y = 0
    forget_bias: float = 0.0  # lstm: added to the f block of b_h
    chrono: bool = False  # lstm: chrono initialisation of the i and f biases
    chrono_tmax: int = 0  # T_max for chrono; 0 means the task's sequence length

    def __post_init__(self):
        for key in ("recurrent", "input"):
            if getattr(self, key) not in INIT_SCHEMES:
                raise ValueError(f"init.{key} must be one of {INIT_SCHEMES}, got {getattr(self, key)!r}")
        for key in ("recurrent_scale", "input_scale", "readout_scale"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float, np.number)) and np.isfinite(value) and value >= 0):
                raise ValueError(f"init.{key} must be a finite number >= 0, got {value!r}")
        if not (isinstance(self.forget_bias, (int, float, np.number)) and np.isfinite(self.forget_bias)):
            raise ValueError(f"init.forget_bias must be a finite number, got {self.forget_bias!r}")
        if (
            isinstance(self.chrono_tmax, bool)
            or not isinstance(self.chrono_tmax, (int, np.integer))
            or self.chrono_tmax < 0
        ):
            raise ValueError(f"init.chrono_tmax must be a whole number >= 0, got {self.chrono_tmax!r}")


def init_matrix(scheme: str, scale: float, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """One (rows, cols) matrix acting on a cols-dimensional input (fan_in = cols, fan_out = rows), float64.

    gaussian    N(0, scale / fan_in)                          (the lecture: scale 3 explodes, 1.5 vanishes for ReLU)
    uniform     U(-a, a) with the same variance scale / fan_in, a = sqrt(3 scale / fan_in)
    xavier      U(-a, a), a = scale * sqrt(6 / (fan_in + fan_out))          (Glorot & Bengio 2010; scale = gain)
    kaiming     N(0, scale^2 * 2 / fan_in)                                   (He et al. 2015; scale = gain)
    orthogonal  scale * Q, Q with orthonormal rows or columns (QR of a Gaussian, sign-corrected)
    identity    scale * I (the IRNN of Le, Jaitly & Hinton 2015; rows == cols is required)
    pytorch     U(-k, k), k = scale / sqrt(hidden size)                      (torch.nn.RNN's default, scale = 1)
    """
    if scheme == "gaussian":
        return rng.normal(0.0, np.sqrt(scale / cols), size=(rows, cols))
    if scheme == "uniform":
        a = np.sqrt(3.0 * scale / cols)
        return rng.uniform(-a, a, size=(rows, cols))
    if scheme == "xavier":
        a = scale * np.sqrt(6.0 / (cols + rows))
        return rng.uniform(-a, a, size=(rows, cols))
    if scheme == "kaiming":
        return rng.normal(0.0, scale * np.sqrt(2.0 / cols), size=(rows, cols))
    if scheme == "orthogonal":
        a = rng.normal(size=(max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q *= np.sign(np.diag(r))  # makes Q Haar-distributed
        return scale * (q if rows >= cols else q.T)
    if scheme == "identity":
        if rows != cols:
            raise ValueError(f"identity initialisation needs a square matrix, got {rows}x{cols}")
        return scale * np.eye(rows)
    if scheme == "pytorch":
        raise ValueError("the pytorch scheme needs the hidden size; use init_params")
    raise ValueError(f"unknown initialisation scheme {scheme!r}; expected one of {INIT_SCHEMES}")


def _init_block(scheme: str, scale: float, rows: int, cols: int, d: int, rng) -> np.ndarray:
    if scheme == "pytorch":
        k = scale / np.sqrt(d)
        return rng.uniform(-k, k, size=(rows, cols))
    return init_matrix(scheme, scale, rows, cols, rng)


def init_params(spec: ModelSpec, init: InitSpec, rng: np.random.Generator, seq_len: int = 0) -> Params:
    """Draw initial parameters from ``rng`` in a fixed order (stream by stream: layer 0 W_hx, W_hh, b_h, (its
    reverse direction,) layer 1 ..., then the readout).

    For an LSTM or a GRU every gate block of W_hx and W_hh is drawn as its own matrix, so "orthogonal" and "identity"
    make each gate's recurrent matrix orthogonal / the identity.  The biases are zero except: the pytorch scheme
    draws b_h like PyTorch (sum of its two biases); an LSTM adds ``forget_bias`` to the f block; chrono
    initialisation (Tallec & Ollivier 2018) sets b_f = log(u), u ~ U[1, T_max - 1], and b_i = -b_f.
    """
    d, G = spec.hidden_size, spec.gates
    layers = []
    for stream in spec.streams:  # layer0, (layer0_reverse,) layer1, ...: each its own draws
        n = spec.stream_input_size(stream)
        try:
            W_hx = np.concatenate([_init_block(init.input, init.input_scale, d, n, d, rng) for _ in range(G)])
        except ValueError as err:
            part, l, reverse = parse_stream(stream)
            where = (f"the {part}'s " if part else "") + f"layer {l}" + (" (reverse)" if reverse else "")
            raise ValueError(f"init.input = {init.input!r} for {where}'s W_hx ({d} x {n}): {err}") from None
        W_hh = np.concatenate([_init_block(init.recurrent, init.recurrent_scale, d, d, d, rng) for _ in range(G)])
        b_h = np.zeros(G * d)
        b_hh = np.zeros(G * d) if cell(spec.cell).has_b_hh else None
        if init.recurrent == "pytorch":
            k = 1.0 / np.sqrt(d)
            b_h = rng.uniform(-k, k, size=G * d)
            if b_hh is None:
                b_h += rng.uniform(-k, k, size=G * d)  # bias_ih + bias_hh, PyTorch's two biases in one
            else:
                b_hh = rng.uniform(-k, k, size=G * d)  # the GRU keeps them apart: n uses r * (.. + b_hh)
        if cell(spec.cell).applies("init.forget_bias"):
            b_h[d : 2 * d] += init.forget_bias
            if init.chrono:
                t_max = init.chrono_tmax or seq_len
                if t_max < 3:
                    raise ValueError(
                        f"chrono initialisation needs T_max >= 3 (init.chrono_tmax, or the task's "
                        f"seq_len when it is 0), got {t_max}"
                    )
                b_f = np.log(rng.uniform(1.0, t_max - 1.0, size=d))
                b_h[d : 2 * d] = b_f
                b_h[0:d] = -b_f
        layers.append(LayerParams(W_hx, W_hh, b_h, b_hh))
    r = spec.readout_size  # d, or 2d: [h_fwd ; h_rev]
    W_yh = rng.normal(0.0, np.sqrt(init.readout_scale / r), size=(spec.output_size, r))
    b_y = np.zeros(spec.output_size)
    streams = None if spec.streams == tuple(f"layer{l}" for l in range(spec.layers)) else spec.streams
    return Params(layers, W_yh, b_y, streams).astype(spec.np_dtype)


def spectral_stats(W_hh: np.ndarray, gates: int = 1) -> tuple[float, float]:
    """(spectral radius, largest singular value) of a recurrent matrix, in float64.

    rho = max |eigenvalue| (LAPACK geev, eigenvalues only); sigma_max = sqrt(largest eigenvalue of
    W^T W) (symmetric, several times cheaper than an SVD and accurate to a few ulp for the TOP singular
    value).  For an LSTM (gates = 4) the (4d, d) matrix has no spectral radius; both figures are the
    largest over the four square d x d gate blocks.  A matrix holding NaN or Inf gives (nan, nan).
    """
    d = W_hh.shape[1]
    rho = sigma = 0.0
    for g in range(gates):
        block = np.asarray(W_hh[g * d : (g + 1) * d], dtype=np.float64)  # (d, d)
        if not np.all(np.isfinite(block)):
            return float("nan"), float("nan")
        scale = float(np.max(np.abs(block))) if block.size else 0.0
        if scale == 0.0:
            continue
        unit = block / scale  # W^T W cannot overflow
        rho = max(rho, scale * float(np.max(np.abs(np.linalg.eigvals(unit)))))
        top = float(np.linalg.eigvalsh(unit.T @ unit)[-1])
        sigma = max(sigma, scale * float(np.sqrt(max(top, 0.0))))
    return rho, sigma


__all__ = [
    "ModelSpec",
    "ARCHITECTURES",
    "parse_stream",
    "InitSpec",
    "Params",
    "LayerParams",
    "init_params",
    "init_matrix",
    "spectral_stats",
    "CELLS",
    "ACTIVATIONS",
    "DTYPES",
    "Dtype",
    "INIT_SCHEMES",
    "InitScheme",
]
