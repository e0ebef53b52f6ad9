"""A process loads only the kernels its models call (engine.plan.model_plan), and those are all it needs: for
every cell, dtype and architecture a user can pick, a pass after ``compile_kernels(spec)`` loads (or compiles)
no further signature, and every one it loaded is in ``kernel_plan(dtype)``, which ``gradscope compile``
compiles at install (tests/test_cli.py checks that it leaves no cache miss).  So no first use compiles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from gradscope.engine import ModelSpec, plan, spectra_kernels
from gradscope.engine.params import CELLS, DTYPES

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURES = (("stack", False), ("stack", True), ("seq2seq", False))  # (architecture, bidirectional)

# One fresh process: for every model, a pass (mse and ce, one shard and several) must add no signature to any
# kernel after compile_kernels(spec); and on a warm cache (no miss) the first model loads exactly its model_plan
# (a cold compile of a kernel compiles its callees too, which gives them signatures).
CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    from gradscope.engine import InitSpec, ModelSpec, bptt, compile_kernels, init_params, plan, spectra_kernels

    def signatures():
        kernels = [(n, d) for dtype in plan.KERNEL_DTYPES for n, d, _ in plan.kernel_plan(dtype)]
        kernels += [(name, getattr(spectra_kernels, name)) for name in spectra_kernels.KERNELS]
        return {f"{n}/{i}": len(d.signatures) for i, (n, d) in enumerate(kernels)}

    report = {"first": None, "extra": {}, "misses": 0}
    for cell, dtype, architecture, bidirectional in json.loads(sys.argv[1]):
        spec = ModelSpec(cell=cell, dtype=dtype, architecture=architecture, bidirectional=bidirectional,
                         layers=2, input_size=3, hidden_size=64, output_size=2)
        before = signatures()
        compile_kernels(spec)
        loaded = signatures()
        if report["first"] is None:
            report["first"] = sorted({k.split("/")[0] for k in loaded if loaded[k] > before[k]})
        rng = np.random.default_rng(0)
        params = init_params(spec, InitSpec(), rng)
        for B, shards in ((3, 1), (256, None)):
            T = 5
            x = rng.normal(size=(T, B, 3)).astype(spec.np_dtype)
            dec = rng.normal(size=(T, B, spec.decoder_input_size)).astype(spec.np_dtype) if spec.seq2seq else None
            for loss in ("mse", "ce"):
                target = (rng.normal(size=(T, B, 2)).astype(spec.np_dtype) if loss == "mse"
                          else rng.integers(0, 2, size=(T, B)))
                bptt(spec, params, x, target, np.ones((T, B), spec.np_dtype), loss, decoder_x=dec, shards=shards,
                     accuracy=loss == "ce")
        after = signatures()
        extra = sorted(k.split("/")[0] for k in after if after[k] > loaded[k])
        if extra:
            report["extra"][f"{cell} {dtype} {architecture} bidirectional={bidirectional}"] = extra
    report["misses"] = sum(sum(d.stats.cache_misses.values()) for dtype in plan.KERNEL_DTYPES
                           for _, d, _ in plan.kernel_plan(dtype))
    print(json.dumps(report))
""")


def models():
    return [(c, dt, a, b) for dt in DTYPES for c in CELLS for a, b in ARCHITECTURES]


def test_model_plan_is_part_of_what_gradscope_compile_compiles():
    for cell, dtype, architecture, bidirectional in models():
        spec = ModelSpec(cell=cell, dtype=dtype, architecture=architecture, bidirectional=bidirectional)
        full = {(name, id(d), sig) for name, d, sig in plan.kernel_plan(dtype)}
        mine = [(name, id(d), sig) for name, d, sig in plan.model_plan(spec)]
        assert mine and set(mine) <= full
        names = {name for name, _, _ in mine}
        assert ("bidirectional_step" in names) == (bidirectional and architecture == "stack")
        assert ("step" in names) == (architecture == "stack" and not bidirectional)


def child(env: dict) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(models())],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_a_pass_loads_nothing_beyond_its_model_plan():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    report = child(env)
    assert report["extra"] == {}, f"passes loaded kernels their model_plan does not list: {report['extra']}"
    if report["misses"]:  # the cache was cold (it is warm now): look again at what a warm start loads
        report = child(env)
        assert report["misses"] == 0 and report["extra"] == {}, report
    first = ModelSpec(cell=models()[0][0], dtype=models()[0][1])
    # the first model loaded its plan and the trainer's spectral kernels, nothing more: no other cell's or
    # architecture's entry points
    spectra = set(spectra_kernels.LOADED)  # the rarely called refine_candidates: at first use
    assert report["first"] == sorted({name for name, _, _ in plan.model_plan(first)} | spectra)
