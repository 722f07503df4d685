"""The split neighborhood ops ``na2d_qk`` / ``na2d_av`` (what ContMix calls): every backend against a
brute-force reference written pair by pair, the float64 gradient of the torch path, the Triton kernels
under ``TRITON_INTERPRET=1`` (in a subprocess, as in ``test_neighborhood_attention_triton.py``) and natively
on a GPU when there is one, and the errors a wrong call gets."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from vzoo.layers import na2d_av, na2d_qk

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("VZOO_NA_TUNE", "0")


def _neighbours(length, kernel, dilation):
    """(length, kernel) absolute index of each position's neighbours, from natten's definition: the window
    of ``kernel`` group positions centred on the query, shifted inward at the group's borders."""
    out = []
    for x in range(length):
        group, xg = x % dilation, x // dilation
        glen = len(range(group, length, dilation))
        start = min(max(xg - kernel // 2, 0), glen - kernel)
        out.append([(start + a) * dilation + group for a in range(kernel)])
    return torch.tensor(out)


def reference_av(attn, value, kernel, dilation):
    rows, cols = (_neighbours(value.shape[1 + i], kernel[i], dilation[i]) for i in range(2))
    out = torch.zeros(value.shape, dtype=torch.float64)
    for a in range(kernel[0]):
        for b in range(kernel[1]):
            nb = value.double()[:, rows[:, a][:, None], cols[:, b][None, :]]  # (B, H, W, heads, C)
            out += attn.double()[..., a * kernel[1] + b, None] * nb
    return out


def reference_qk(query, key, kernel, dilation):
    rows, cols = (_neighbours(query.shape[1 + i], kernel[i], dilation[i]) for i in range(2))
    return torch.stack([(query.double() * key.double()[:, rows[:, a][:, None], cols[:, b][None, :]]).sum(-1)
                        for a in range(kernel[0]) for b in range(kernel[1])], -1)


# (H, W, kernel, dilation): odd and non-square sizes, kernel sizes 3..13, dilation, maps hardly larger
# than the kernel (the dense path) and larger ones (the offset loop)
CASES = [(5, 7, 3, 1), (9, 11, 3, 2), (13, 9, 5, (1, 1)), (15, 17, 5, 3), (13, 13, 13, 1), (29, 31, 13, 2),
         (11, 15, (7, 9), (1, 1)), (21, 19, 11, 1), (33, 14, (9, 7), (3, 2))]


def _pair(x):
    return (x, x) if isinstance(x, int) else tuple(x)


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_torch_path_matches_brute_force(case):
    H, W, kernel, dilation = case
    kernel, dilation = _pair(kernel), _pair(dilation)
    g = torch.Generator().manual_seed(0)
    value = torch.randn(2, H, W, 3, 5, generator=g)
    query = torch.randn(2, H, W, 3, 5, generator=g)
    attn = torch.randn(2, H, W, 3, kernel[0] * kernel[1], generator=g)
    out = na2d_av(attn, value, kernel, dilation)
    torch.testing.assert_close(out.double(), reference_av(attn, value, kernel, dilation), atol=1e-5, rtol=1e-5)
    scores = na2d_qk(query, value, kernel, dilation)
    torch.testing.assert_close(scores.double(), reference_qk(query, value, kernel, dilation), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", [(4, 5, 3, 1), (7, 8, 3, 2), (8, 5, (5, 3), (1, 1))], ids=str)
def test_torch_path_gradcheck_float64(case):
    """Both torch paths: the offset loop's own backward (maps > 2x the kernel) and the dense one."""
    H, W, kernel, dilation = case
    kernel, dilation = _pair(kernel), _pair(dilation)
    attn = torch.randn(1, H, W, 1, kernel[0] * kernel[1], dtype=torch.float64, requires_grad=True)
    value = torch.randn(1, H, W, 1, 2, dtype=torch.float64, requires_grad=True)
    query = torch.randn(1, H, W, 1, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, v: na2d_av(a, v, kernel, dilation), (attn, value), fast_mode=True)
    assert torch.autograd.gradcheck(lambda q, k: na2d_qk(q, k, kernel, dilation), (query, value), fast_mode=True)


def test_av_keeps_no_gathered_copy_for_backward():
    """The offset loop saves only its inputs: no ``k*k``-fold tensor is kept for the backward."""
    attn = torch.randn(1, 24, 24, 2, 169, requires_grad=True)
    value = torch.randn(1, 24, 24, 2, 16, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        out = na2d_av(attn.softmax(-1), value, 13)
    assert max(saved) <= attn.numel(), saved
    out.sum().backward()
    assert value.grad.shape == value.shape


def test_wrong_calls_say_what_is_wrong():
    value = torch.randn(1, 6, 8, 2, 4)
    with pytest.raises(ValueError, match="larger than the input size.*heads-first"):
        na2d_av(torch.randn(1, 6, 8, 2, 49), value, 7)  # kernel 7 > 6 rows
    heads_first = value.movedim(-2, 1)  # (B, heads, H, W, C): natten 0.17's layout
    with pytest.raises(ValueError, match="heads-first"):
        na2d_av(torch.randn(1, 2, 6, 8, 25), heads_first, 5)
    with pytest.raises(ValueError, match="prod\\(kernel_size\\) = 9"):
        na2d_av(torch.randn(1, 6, 8, 2, 25), value, 3)
    with pytest.raises(ValueError, match="layout"):
        na2d_av(torch.randn(1, 6, 8, 9), value[..., 0, :], 3)  # channels, no heads axis
    with pytest.raises(ValueError, match="backend"):
        na2d_av(torch.randn(1, 6, 8, 2, 9), value, 3, backend="natten")
    if os.environ.get("TRITON_INTERPRET") != "1":
        with pytest.raises(ValueError, match="CUDA"):
            na2d_av(torch.randn(1, 6, 8, 2, 9), value, 3, backend="triton")
    with pytest.raises(ValueError, match="relative positional bias"):
        na2d_qk(value, value, 3, rpb=torch.zeros(2, 5, 5), backend="triton")


_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    from vzoo.layers import na2d_av, na2d_qk
    torch.manual_seed(0)
    res = []
    for H, W, k, d, c, dtype in json.loads(sys.argv[1]):
        dtype = getattr(torch, dtype)
        q, key = (torch.randn(1, H, W, 2, c).to(dtype).requires_grad_() for _ in range(2))
        a = torch.randn(1, H, W, 2, k[0] * k[1]).to(dtype).requires_grad_()
        s = na2d_qk(q, key, k, d, backend="triton")
        o = na2d_av(a, key, k, d, backend="triton")
        assert s.dtype == o.dtype == dtype
        gs, go = torch.randn_like(s), torch.randn_like(o)
        grads = torch.autograd.grad((s * gs).float().sum() + (o * go).float().sum(), (q, key, a))
        ref_in = [t.detach().float().requires_grad_() for t in (q, key, a)]
        s2 = na2d_qk(*ref_in[:2], k, d, backend="torch")
        o2 = na2d_av(ref_in[2], ref_in[1], k, d, backend="torch")
        ref = torch.autograd.grad((s2 * gs.float()).sum() + (o2 * go.float()).sum(), ref_in)
        errs = [(s.float() - s2).abs().max().item(), (o.float() - o2).abs().max().item()]
        errs += [(x.float() - y).abs().max().item() for x, y in zip(grads, ref)]
        res.append(errs)
    print("RESULT" + json.dumps(res))
""")

# (H, W, kernel, dilation, channels, dtype): tiny (the interpreter is slow); bf16 is checked on a GPU only
TRITON_CASES = [(6, 7, (3, 3), (1, 1), 4, "float32"), (9, 7, (3, 5), (2, 1), 3, "float32"),
                (5, 6, (3, 3), (1, 1), 8, "float16")]


def test_triton_kernels_under_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(TRITON_CASES)], env=env, cwd=str(ROOT),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads([x for x in proc.stdout.splitlines() if x.startswith("RESULT")][-1][len("RESULT"):])
    for case, errs in zip(TRITON_CASES, res):
        assert max(errs) < (2e-2 if case[-1] == "float16" else 2e-5), (case, errs)  # qk, av, dq, dk+dv, dattn


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_triton_cuda_matches_brute_force(case, dtype, tol):
    H, W, kernel, dilation = case
    kernel, dilation = _pair(kernel), _pair(dilation)
    attn = torch.randn(2, H, W, 3, kernel[0] * kernel[1], device="cuda").softmax(-1)
    value = torch.randn(2, H, W, 3, 24, device="cuda")
    a_low, v_low = attn.to(dtype).requires_grad_(), value.to(dtype).requires_grad_()
    out = na2d_av(a_low, v_low, kernel, dilation)  # auto: triton on CUDA
    torch.testing.assert_close(out.double(), reference_av(attn.cpu(), value.cpu(), kernel, dilation).cuda(),
                               atol=tol, rtol=tol)
    a_ref, v_ref = attn.clone().requires_grad_(), value.clone().requires_grad_()
    ref = na2d_av(a_ref, v_ref, kernel, dilation, backend="torch")
    g = torch.randn_like(ref)
    for x, y in zip(torch.autograd.grad(out, (a_low, v_low), g.to(dtype)), torch.autograd.grad(ref, (a_ref, v_ref), g)):
        torch.testing.assert_close(x.float(), y, atol=tol * 5, rtol=tol * 5)
    q, k = (torch.randn(2, H, W, 3, 24, device="cuda") for _ in range(2))
    torch.testing.assert_close(na2d_qk(q.to(dtype), k.to(dtype), kernel, dilation).double(),
                               reference_qk(q.cpu(), k.cpu(), kernel, dilation).cuda(), atol=tol * 24, rtol=tol)
