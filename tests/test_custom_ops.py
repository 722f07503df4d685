"""The Triton ops as ``torch.library`` custom ops (``vzoo::*``): schema, fake, autograd and ``torch.compile``.

On the CPU the kernels run under ``TRITON_INTERPRET=1`` in one subprocess (the variable must be set before
triton builds the kernels, see ``test_neighborhood_attention_triton.py``) that runs every check and reports;
each test below asserts one part of that report. On a CUDA machine, a CUDA-graph capture of each op
(forward and backward) must replay what eager computes (skipped without a GPU).
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

# the ops' sample calls, shared by the interpreter script and the CUDA tests: name -> (call through the
# front, the same call of the kernels' entry point, inputs); every index tensor is made before the calls
_CALLS = textwrap.dedent("""
    import torch
    from vzoo.kernels.bra import bra_triton
    from vzoo.kernels.na import na_triton
    from vzoo.kernels.na_split import na_av_triton, na_qk_triton
    from vzoo.kernels.sparse_attention import sparse_attention_triton
    from vzoo.layers import na1d, na2d, na2d_av, na2d_qk, sparse_attention
    from vzoo.layers.routing_attention import _region_mean, region_routing, routed_attention

    def calls(device):
        g = torch.Generator().manual_seed(0)

        def rand(*shape):
            return torch.randn(*shape, generator=g).to(device).requires_grad_()
        qkv = rand(2, 5, 3, 2, 8)  # sparse attention reads q, k, v in place from a qkv projection's output
        idx = torch.stack([torch.randperm(5, generator=g)[:3] for _ in range(2 * 2 * 5)]).view(2, 2, 5, 3).to(device)
        key_mask = torch.tensor([[True] * 4 + [False]] * 2, device=device)
        bq, bk = rand(1, 4, 6, 16), rand(1, 4, 6, 16)
        _, r_idx = region_routing(_region_mean(bq, 2), _region_mean(bk, 2), 2, 0.3)
        na = dict(kernel_size=(3, 3), stride=(1, 2), dilation=(1, 2), is_causal=(False, True), scale=0.5)
        return {
            "na2d": (lambda q, k, v, rpb: na2d(q, k, v, **na, rpb=rpb, backend="triton"),
                     lambda q, k, v, rpb: na_triton(q, k, v, (3, 3), (1, 2), (1, 2), (False, True), 0.5, rpb),
                     (rand(1, 5, 6, 2, 8), rand(1, 5, 6, 2, 8), rand(1, 5, 6, 2, 4), rand(2, 5, 5))),
            "na1d": (lambda q, k, v: na1d(q, k, v, 3, is_causal=True, scale=0.3, backend="triton"),
                     lambda q, k, v: na_triton(q, k, v, (3,), (1,), (1,), (True,), 0.3),
                     (rand(1, 7, 1, 8), rand(1, 7, 1, 8), rand(1, 7, 1, 8))),
            "na2d_qk_av": (lambda q, k, v: na2d_av(na2d_qk(q, k, 3, dilation=(1, 2), backend="triton").softmax(-1),
                                                   v, 3, dilation=(1, 2), backend="triton"),
                           lambda q, k, v: na_av_triton(na_qk_triton(q, k, (3, 3), (1, 2)).softmax(-1), v, (3, 3),
                                                        (1, 2)),
                           (rand(1, 5, 6, 1, 4), rand(1, 5, 6, 1, 4), rand(1, 5, 6, 1, 8))),
            "routed_attention": (lambda q, k, v: routed_attention(q, k, v, r_idx, 2, 2, 0.3, backend="triton"),
                                 lambda q, k, v: bra_triton(q, k, v, r_idx, 2, 2, 0.3),
                                 (bq, bk, rand(1, 4, 6, 12))),
            "sparse_attention": (lambda qkv: sparse_attention(*qkv.permute(2, 0, 3, 1, 4).unbind(0), idx, scale=0.3,
                                                              key_mask=key_mask, backend="triton"),
                                 lambda qkv: sparse_attention_triton(*qkv.permute(2, 0, 3, 1, 4).unbind(0), idx, 0.3,
                                                                     key_mask=key_mask),
                                 (qkv,)),
        }
""")

_SCRIPT = _CALLS + textwrap.dedent("""
    import json, os
    assert os.environ.get("TRITON_INTERPRET") == "1"
    from torch.library import opcheck

    res = {}

    def record(name, fn):
        try:
            res[name] = fn()
        except Exception as e:  # the report says what failed; the test asserts on it
            res[name] = f"{type(e).__name__}: {str(e)[:3000]}"

    def grads(out, ins):
        return torch.autograd.grad(out, ins, torch.ones_like(out) / out.numel())

    def max_diff(a, b):
        return max((x.float() - y.float()).abs().max().item() for x, y in zip(a, b))

    def eager_vs_compiled(fn, ins, backend):
        out = fn(*ins)
        ref = [out, *grads(out, ins)]
        compiled = torch.compile(fn, fullgraph=True, backend=backend)  # fullgraph: a graph break raises
        got = compiled(*ins)
        got = [got] if backend == "eager" else [got, *grads(got, ins)]
        return max_diff(ref[:len(got)], got)

    torch._dynamo.config.cache_size_limit = 64
    for name, (fn, _, ins) in calls("cpu").items():
        for backend in ("eager", "aot_eager"):
            torch._dynamo.reset()
            record(f"compile/{backend}/{name}", lambda: eager_vs_compiled(fn, ins, backend))

    def routing_module():  # the BiFormer block's attention: q, k, v read in place, routing, padding
        from vzoo.layers.routing_attention import BiLevelRoutingAttention
        module = BiLevelRoutingAttention(16, num_heads=2, n_win=3, topk=3, side_dwconv=5, auto_pad=True)
        return eager_vs_compiled(lambda x: module(x, backend="triton"), (torch.randn(1, 7, 10, 16).requires_grad_(),),
                                 "aot_eager")
    record("compile/aot_eager/BiLevelRoutingAttention", routing_module)

    def sparse_views_vs_reference():  # q, k, v read in place from a qkv output (views with gaps)
        qkv = torch.randn(2, 5, 3, 2, 8).requires_grad_()
        idx = torch.stack([torch.randperm(5)[:3] for _ in range(2 * 2 * 5)]).view(2, 2, 5, 3)
        outs = []
        for backend in ("triton", "reference"):
            out = sparse_attention(*qkv.permute(2, 0, 3, 1, 4).unbind(0), idx, backend=backend)
            outs.append([out, *grads(out, (qkv,))])
        return max_diff(*outs)
    record("sparse_views", sparse_views_vs_reference)

    ops = torch.ops.vzoo
    g = torch.Generator().manual_seed(1)

    def t(*shape, grad=True, dtype=torch.float32):
        return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_(grad)

    # opcheck: schema, fake (meta) implementation, autograd registration, AOT dispatch with dynamic shapes
    q, k, v, rpb = t(1, 4, 5, 2, 8), t(1, 4, 5, 2, 8), t(1, 4, 5, 2, 4), t(2, 5, 5)
    geo = dict(kernel=[3, 3], stride=[1, 2], dilation=[1, 1], causal=[False, True], scale=0.5)
    o, lse = ops.na_fwd(q, k, v, rpb, **geo)
    samples = {
        "na_fwd": (ops.na_fwd, (q, k, v, rpb), geo),
        "na_fwd/no_rpb": (ops.na_fwd, (q, k, v, None), geo),
        "na_bwd": (ops.na_bwd, tuple(x.detach() for x in (q, k, v, o, lse, torch.randn_like(o), rpb)), geo),
    }
    bq, bk, bv = t(1, 4, 6, 16), t(1, 4, 6, 16), t(1, 4, 6, 12)
    r_idx = torch.tensor([[[0, 1], [1, 3], [2, 0], [3, 2]]], dtype=torch.int32)
    bgeo = dict(n_win=2, num_heads=2, scale=0.3)
    bo, blse = ops.bra_fwd(bq, bk, bv, r_idx, **bgeo)
    samples["bra_fwd"] = (ops.bra_fwd, (bq, bk, bv, r_idx), bgeo)
    samples["bra_bwd"] = (ops.bra_bwd, tuple(x.detach() for x in (bq, bk, bv, bo, blse, r_idx, torch.randn_like(bo))),
                          bgeo)
    sq, sk, sv = t(1, 2, 5, 8), t(1, 2, 6, 8), t(1, 2, 6, 4)
    s_idx = torch.tensor([[0, 2, 5], [1, 2, 3], [4, 5, 0], [3, 1, 2], [5, 4, 3]] * 2, dtype=torch.int32)
    s_idx = s_idx.view(1, 2, 5, 3)
    mask = torch.tensor([[True, True, False, True, True, True]])
    so, slse = ops.sparse_attention_fwd(sq, sk, sv, s_idx, mask, 0.4)
    samples["sparse_attention_fwd"] = (ops.sparse_attention_fwd, (sq, sk, sv, s_idx, mask, 0.4), {})
    samples["sparse_attention_fwd/no_mask"] = (ops.sparse_attention_fwd, (sq, sk, sv, s_idx, None, 0.4), {})
    samples["sparse_attention_bwd"] = (ops.sparse_attention_bwd, tuple(
        x.detach() for x in (sq, sk, sv, so, slse, s_idx, mask, torch.randn_like(so))) + (0.4,), {})
    nq, nk, attn = t(1, 5, 6, 1, 4), t(1, 5, 6, 1, 4), t(1, 5, 6, 1, 9)
    split = dict(kernel_size=[3, 3], dilation=[1, 2])
    samples["na_dot"] = (ops.na_dot, (nq, nk), split)
    samples["na_weighted_sum"] = (ops.na_weighted_sum, (attn, nk), split)
    samples["na_scatter_sum"] = (ops.na_scatter_sum, (attn.detach(), nq.detach()), split)
    for name, (op, args, kwargs) in samples.items():
        record(f"opcheck/{name}", lambda: {k: str(v) for k, v in opcheck(op, args, kwargs).items()})
    print("RESULT" + json.dumps(res))
""")

_OPCHECKS = ["na_fwd", "na_fwd/no_rpb", "na_bwd", "bra_fwd", "bra_bwd", "sparse_attention_fwd",
             "sparse_attention_fwd/no_mask", "sparse_attention_bwd", "na_dot", "na_weighted_sum", "na_scatter_sum"]
_FRONTS = ["na2d", "na1d", "na2d_qk_av", "routed_attention", "sparse_attention"]


@pytest.fixture(scope="module")
def report():
    env = dict(os.environ, TRITON_INTERPRET="1", VZOO_NA_TUNE="0", VZOO_BRA_TUNE="0", VZOO_SPARSE_TUNE="0",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, cwd=str(ROOT), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


@pytest.mark.parametrize("name", _OPCHECKS)
def test_opcheck(report, name):
    result = report[f"opcheck/{name}"]
    assert isinstance(result, dict), result  # an error message otherwise
    assert set(result) == {"test_schema", "test_autograd_registration", "test_faketensor",
                           "test_aot_dispatch_dynamic"}, result
    assert all(v == "SUCCESS" for v in result.values()), result


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("name", _FRONTS)
def test_compile_fullgraph_matches_eager(report, name, backend):
    """``torch.compile(fullgraph=True)`` through the front (no graph break); aot_eager also runs the backward."""
    diff = report[f"compile/{backend}/{name}"]
    assert isinstance(diff, float), diff  # an error message otherwise
    assert diff == 0.0, diff  # the same kernels on the same inputs


def test_compile_fullgraph_routing_module(report):
    diff = report["compile/aot_eager/BiLevelRoutingAttention"]
    assert isinstance(diff, float), diff
    assert diff == 0.0, diff


def test_sparse_attention_gradients_of_strided_views(report):
    assert isinstance(report["sparse_views"], float), report["sparse_views"]
    assert report["sparse_views"] < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", _FRONTS)
def test_cuda_graph_replay_matches_eager(name):
    """One op call, forward and backward, captured in a CUDA graph: a replay on new inputs equals eager."""
    namespace = {}
    exec(_CALLS, namespace)
    _, entry, ins = namespace["calls"]("cuda")[name]

    def step():
        out = entry(*ins)
        return [out, *torch.autograd.grad(out, ins, torch.ones_like(out))]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # outside the capture: kernel compilation, autotuning, host tables
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    with torch.no_grad():
        for t in ins:
            t.copy_(torch.randn_like(t))
    graph.replay()
    torch.cuda.synchronize()
    for got, want in zip(captured, step()):  # rpb's gradient sums by atomics: not bitwise reproducible
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
