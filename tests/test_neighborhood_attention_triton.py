"""The Triton neighborhood-attention kernels, forward and backward, against the brute-force reference.

On the CPU they run under ``TRITON_INTERPRET=1`` in a subprocess (the variable must be set before triton
builds the kernels, and this process may already have imported triton in compiled mode). On a CUDA
machine they also run natively in fp32 / fp16 / bf16 (skipped without a GPU).
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("VZOO_NA_TUNE", "0")  # one tile config in tests: no autotuning per shape and dtype

# (shape, kernel, stride, dilation, causal, rpb, head_dim, value_dim): odd / non-square sizes, every feature
CASES = [
    ((6, 7), (3, 3), (1, 1), (1, 1), (False, False), False, 16, 16),
    ((7, 9), (3, 5), (2, 1), (2, 1), (False, True), True, 12, 20),
    ((9, 10), (7, 5), (7, 1), (1, 1), (False, True), True, 8, 8),
    ((10, 8), (5, 3), (2, 3), (1, 2), (True, False), True, 16, 8),
    ((9, 9), (3, 3), (3, 3), (3, 3), (False, False), True, 8, 8),
    ((11,), (5,), (2,), (2,), (False,), True, 16, 16),
    ((8,), (3,), (1,), (1,), (True,), False, 8, 8),
    ((8, 9), (4, 2), (4, 1), (1, 2), (False, False), True, 8, 8),  # even kernels (windows of 4)
]

_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    t0 = time.time()
    assert os.environ.get("TRITON_INTERPRET") == "1"
    import torch
    from vzoo.kernels.na import na_triton
    from vzoo.layers._na_torch import dense_reference
    torch.manual_seed(0)
    out = []
    for shape, ks, ss, ds, cs, use_rpb, c, cv in json.loads(sys.argv[1]):
        ks, ss, ds, cs = map(tuple, (ks, ss, ds, cs))
        q = torch.randn(1, *shape, 1, c, requires_grad=True)
        k = torch.randn(1, *shape, 1, c, requires_grad=True)
        v = torch.randn(1, *shape, 1, cv, requires_grad=True)
        r = torch.randn(1, *[2 * x - 1 for x in ks], requires_grad=True) if use_rpb else None
        ins = [t for t in (q, k, v, r) if t is not None]
        o = na_triton(q, k, v, ks, ss, ds, cs, 0.3, r)
        ref = dense_reference(q, k, v, ks, ss, ds, cs, 0.3, r)
        g = torch.randn_like(o)
        ga = torch.autograd.grad(o, ins, g)
        gb = torch.autograd.grad(ref, ins, g)
        errs = [(o - ref).abs().max().item()] + [(a - b).abs().max().item() for a, b in zip(ga, gb)]
        out.append(errs)
    t1 = time.time()
    # float16 (the interpreter's bf16 matmul is broken in triton 3.8, so bf16 is checked on a GPU only)
    q, k, v = (torch.randn(1, 7, 9, 1, 16) for _ in range(3))
    r = torch.randn(1, 5, 5)
    ins = [t.half().requires_grad_() for t in (q, k, v, r)]
    o = na_triton(*ins[:3], (3, 3), (1, 2), (2, 1), (False, True), 0.25, ins[3])
    ref_in = [t.requires_grad_() for t in (q, k, v, r)]
    ref = dense_reference(*ref_in[:3], (3, 3), (1, 2), (2, 1), (False, True), 0.25, ref_in[3])
    g = torch.randn_like(ref)
    fp16 = [(o.float() - ref).abs().max().item()] + [
        (a.float() - b).abs().max().item() for a, b in zip(torch.autograd.grad(o, ins, g.half()),
                                                         torch.autograd.grad(ref, ref_in, g))]
    # gradcheck of the kernels themselves (float32 under the interpreter: loose eps / tolerances)
    q = torch.randn(1, 4, 5, 1, 8, dtype=torch.float32, requires_grad=True)
    k = torch.randn_like(q, requires_grad=True)
    v = torch.randn_like(q, requires_grad=True)
    r = torch.randn(1, 5, 5, requires_grad=True)
    ok = torch.autograd.gradcheck(lambda a, b, c, d: na_triton(a, b, c, (3, 3), (1, 2), (1, 1), (False, False), 0.5, d),
                                  (q, k, v, r), eps=1e-2, atol=5e-3, rtol=5e-3, fast_mode=True)
    print("RESULT" + json.dumps(dict(errs=out, fp16=fp16, gradcheck=bool(ok), t=(t1 - t0, time.time() - t1))))
""")


def test_triton_kernels_under_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(CASES)], env=env, cwd=str(ROOT),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")][-1]
    res = json.loads(line[len("RESULT"):])
    for case, errs in zip(CASES, res["errs"]):
        assert max(errs) < 2e-5, (case, errs)  # forward, dq, dk, dv (, drpb): float32 vs float32 reference
    assert max(res["fp16"]) < 3e-2, res["fp16"]  # fp16 inputs, fp32 reference
    assert res["gradcheck"]


def test_triton_backend_refuses_cpu_tensors_without_interpreter():
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("interpreter on")
    from vzoo.layers import na2d
    q = torch.randn(1, 5, 5, 1, 8)
    with pytest.raises(ValueError, match="CUDA"):
        na2d(q, q, q, 3, backend="triton")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-4), (torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_triton_cuda_matches_reference(dtype, tol, case):
    from vzoo.layers import na1d, na2d
    from vzoo.layers._na_torch import dense_reference
    shape, ks, ss, ds, cs, use_rpb, c, cv = CASES[case]
    dev = "cuda"
    q = torch.randn(2, *shape, 2, c, device=dev)
    k = torch.randn(2, *shape, 2, c, device=dev)
    v = torch.randn(2, *shape, 2, cv, device=dev)
    r = torch.randn(2, *[2 * x - 1 for x in ks], device=dev) if use_rpb else None
    ref_in = [t.clone().requires_grad_() for t in (q, k, v)] + ([r.clone().requires_grad_()] if use_rpb else [])
    low_in = [t.to(dtype).requires_grad_() for t in (q, k, v)] + ([r.clone().requires_grad_()] if use_rpb else [])
    op = na1d if len(shape) == 1 else na2d
    ref = dense_reference(*ref_in[:3], ks, ss, ds, cs, 0.3, ref_in[3] if use_rpb else None)
    out = op(*low_in[:3], ks, ss, ds, cs, scale=0.3, rpb=low_in[3] if use_rpb else None, backend="triton")
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, atol=tol, rtol=tol)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, low_in, g.to(dtype)), torch.autograd.grad(ref, ref_in, g)):
        torch.testing.assert_close(a.float(), b, atol=tol * 5, rtol=tol * 5)


@cuda
def test_triton_cuda_nat_shape_and_auto_backend():
    from vzoo.layers import na2d
    q, k, v = (torch.randn(2, 56, 56, 2, 32, device="cuda") for _ in range(3))
    out = na2d(q, k, v, 7)  # auto: triton on CUDA
    torch.testing.assert_close(out, na2d(q, k, v, 7, backend="torch"), atol=2e-4, rtol=2e-4)
