"""The fused Triton routing-attention kernels, forward and backward, against the reference backend.

On the CPU they run under ``TRITON_INTERPRET=1`` in a subprocess (the variable must be set before triton
builds the kernels, and this process may already have imported triton in compiled mode): random shapes
with odd region sizes, non-power-of-two head widths, a padded input through the module (auto_pad), and
fp16 / bf16. On a CUDA machine they also run natively (skipped without a GPU).
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

# (B, H, W, n_win, topk, heads, head_dim, value_head_dim)
CASES = [(1, 6, 9, 3, 2, 2, 8, 8), (2, 8, 8, 2, 3, 1, 16, 12), (1, 10, 5, 5, 4, 2, 4, 6)]

_SCRIPT = textwrap.dedent("""
    import json, os, sys
    assert os.environ.get("TRITON_INTERPRET") == "1"
    import torch
    from vzoo.layers.routing_attention import (BiLevelRoutingAttention, routed_attention, region_routing,
                                               _region_mean)
    torch.manual_seed(0)
    res = dict(cases=[], module=None, lowp={})

    def errs(a_out, b_out, ins, g):
        ga = torch.autograd.grad(a_out, ins, g)
        gb = torch.autograd.grad(b_out, ins, g)
        return [(a_out.float() - b_out.float()).abs().max().item()] + \\
               [(x.float() - y.float()).abs().max().item() for x, y in zip(ga, gb)]

    for B, H, W, n, topk, heads, D, DV in json.loads(sys.argv[1]):
        q = torch.randn(B, H, W, heads * D, requires_grad=True)
        k = torch.randn(B, H, W, heads * D, requires_grad=True)
        v = torch.randn(B, H, W, heads * DV, requires_grad=True)
        _, idx = region_routing(_region_mean(q, n), _region_mean(k, n), topk, 0.3)
        o = routed_attention(q, k, v, idx, n, heads, 0.3, backend="triton")
        r = routed_attention(q, k, v, idx, n, heads, 0.3, backend="reference")
        res["cases"].append(errs(o, r, (q, k, v), torch.randn_like(o)))

    # the module on a padded input (7 x 10 with n_win 3 -> 9 x 12), q/k/v read in place from the qkv output
    m = BiLevelRoutingAttention(16, num_heads=2, n_win=3, topk=3, side_dwconv=5, auto_pad=True)
    x = torch.randn(2, 7, 10, 16, requires_grad=True)
    a, b = m(x, backend="triton"), m(x, backend="reference")
    g = torch.randn_like(a)
    ins = (x, m.qkv.weight, m.qkv.bias)
    res["module"] = errs(a, b, ins, g)

    for name, dt in (("float16", torch.float16), ("bfloat16", torch.bfloat16)):
        B, H, W, n, topk, heads, D, DV = 1, 8, 8, 2, 2, 2, 16, 16
        q32, k32, v32 = (torch.randn(B, H, W, heads * D) for _ in range(3))
        q, k, v = (t.to(dt).requires_grad_() for t in (q32, k32, v32))
        _, idx = region_routing(_region_mean(q32, n), _region_mean(k32, n), topk, 0.25)
        o = routed_attention(q, k, v, idx, n, heads, 0.25, backend="triton")
        qf, kf, vf = (t.detach().float().requires_grad_() for t in (q, k, v))
        r = routed_attention(qf, kf, vf, idx, n, heads, 0.25, backend="reference")
        g = torch.randn_like(r)
        ga = torch.autograd.grad(o, (q, k, v), g.to(dt))
        gb = torch.autograd.grad(r, (qf, kf, vf), g)
        res["lowp"][name] = [(o.float() - r).abs().max().item()] + \\
            [(x.float() - y).abs().max().item() for x, y in zip(ga, gb)]
        assert o.dtype == dt and all(t.dtype == dt for t in ga)
    print("RESULT" + json.dumps(res))
""")


@pytest.fixture(scope="module")
def interpreted():
    env = dict(os.environ, TRITON_INTERPRET="1", VZOO_BRA_TUNE="0", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(CASES)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


@pytest.mark.parametrize("i", range(len(CASES)), ids=[str(c) for c in CASES])
def test_interpreted_kernels_match_reference_fp32(interpreted, i):
    out_err, dq, dk, dv = interpreted["cases"][i]
    assert out_err < 1e-5 and dq < 1e-4 and dk < 1e-4 and dv < 1e-4, interpreted["cases"][i]


def test_interpreted_module_with_auto_pad(interpreted):
    out_err, dx, dw, db = interpreted["module"]
    assert out_err < 1e-5 and dx < 1e-4 and dw < 1e-4 and db < 1e-4, interpreted["module"]


@pytest.mark.parametrize("dtype,tol", [("float16", 1e-2), ("bfloat16", 6e-2)])
def test_interpreted_low_precision(interpreted, dtype, tol):
    errs = interpreted["lowp"][dtype]
    assert all(e < tol * 4 for e in errs[1:]) and errs[0] < tol, errs


def test_triton_backend_refuses_what_it_does_not_do():
    from vzoo.layers import routed_attention
    q = torch.randn(1, 4, 4, 8, dtype=torch.float64)
    idx = torch.zeros(1, 4, 1, dtype=torch.long)
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        with pytest.raises(ValueError, match="CUDA"):
            routed_attention(q.float(), q.float(), q.float(), idx, 2, 2, backend="triton")
    with pytest.raises(ValueError, match="soft routing"):
        routed_attention(q, q, q, idx, 2, 2, r_weight=torch.ones(1, 4, 1, dtype=torch.float64), backend="triton")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.float16, 2e-2), (torch.bfloat16, 1e-1)])
@pytest.mark.parametrize("shape", [(2, 56, 56, 7, 1, 2, 32, 32), (2, 28, 28, 7, 4, 4, 32, 32),
                                   (1, 14, 21, 7, 16, 8, 32, 32), (1, 32, 40, 8, 4, 3, 24, 40)])
def test_cuda_kernels_match_reference(dtype, tol, shape):
    B, H, W, n, topk, heads, D, DV = shape
    dev = "cuda"
    q32, k32, v32 = (torch.randn(B, H, W, heads * c, device=dev) for c in (D, D, DV))
    _, idx = region_routing_(q32, k32, n, topk, D * heads)
    q, k, v = (t.to(dtype).requires_grad_() for t in (q32, k32, v32))
    o = routed_attention_(q, k, v, idx, n, heads, "triton")
    qf, kf, vf = (t.detach().float().requires_grad_() for t in (q, k, v))
    r = routed_attention_(qf, kf, vf, idx, n, heads, "reference")
    torch.testing.assert_close(o.float(), r, rtol=tol, atol=tol)
    g = torch.randn_like(r)
    for a, b in zip(torch.autograd.grad(o, (q, k, v), g.to(dtype)), torch.autograd.grad(r, (qf, kf, vf), g)):
        torch.testing.assert_close(a.float(), b, rtol=4 * tol, atol=4 * tol)


def region_routing_(q, k, n, topk, c):
    from vzoo.layers.routing_attention import _region_mean, region_routing
    return region_routing(_region_mean(q, n), _region_mean(k, n), topk, c ** -0.5)


def routed_attention_(q, k, v, idx, n, heads, backend):
    from vzoo.layers import routed_attention
    return routed_attention(q, k, v, idx, n, heads, backend=backend)


@cuda
def test_cuda_model_forward_backward_triton_vs_torch():
    import timm
    m = timm.create_model("biformer_tiny", depths=(1, 1, 2, 1)).cuda()
    x = torch.randn(2, 3, 224, 192, device="cuda")
    outs = []
    for be in ("triton", "torch"):
        for mod in m.modules():
            if hasattr(mod, "n_win") and hasattr(mod, "backend"):
                mod.backend = be
        m.zero_grad()
        y = m(x)
        y.square().mean().backward()
        outs.append((y.detach(), m.stem[0].weight.grad.clone()))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-3, atol=1e-3)
