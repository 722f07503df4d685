"""OverLoCK: re-parameterization, the official checkpoint format, ContMix's positional bias, the feature
pyramid and the backbone bridge. The timm contract is ``test_model_contract.py``'s; official parity is
``tools/parity.py overlock`` (it needs the official checkout)."""
import pytest
import timm
import torch
from torch import nn

from vzoo.models.overlock import DilatedReparamBlock, OverLoCK, checkpoint_filter_fn, to_official_keys, window_bias
from vzoo.benchmarks.parity import randomize_

# a shrunk OverLoCK: every module kind, the official kernel sizes, small widths and depths
SMALL = dict(depths=(1, 1, 1, 1), sub_depths=(2, 2), embed_dims=(16, 24, 32, 48), sub_num_heads=(2, 3),
             kernel_sizes=(17, 15, 13, 7), sub_mlp_ratios=(3, 3), projection=64)


def _small(**kwargs):
    torch.manual_seed(0)
    return OverLoCK(num_classes=10, **dict(SMALL, **kwargs))


@pytest.mark.parametrize("size", [64, 224])  # ContMix on resized-up maps (64) and at the maps' own size (224)
def test_reparameterize_gives_the_same_outputs(size):
    model = randomize_(_small(), seed=1).eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        ref = model(x)
        model.reparameterize()
        out = model(x)
    assert not any(isinstance(m, nn.BatchNorm2d) and "lk_origin" in n for n, m in model.named_modules())
    assert all(m.reparameterized for m in model.modules() if isinstance(m, DilatedReparamBlock))
    torch.testing.assert_close(out, ref, atol=1e-4 * ref.abs().max().item(), rtol=1e-4)
    # the reparameterized model has exactly the keys of a model built reparameterized (the *_reparam releases)
    assert model.state_dict().keys() == _small(reparam=True).state_dict().keys()


def test_reparameterize_through_timm():
    model = randomize_(_small(), seed=2).eval()
    fused = timm.utils.reparameterize_model(model)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("reparam", [False, True])
def test_official_checkpoint_round_trip(tmp_path, reparam):
    """A file in the release's format (official key names and shapes, the deep-supervision head, weights
    under 'state_dict') loads through timm.create_model and gives the model it was made from."""
    name = "overlock_xt_reparam" if reparam else "overlock_xt"
    torch.manual_seed(0)
    model = randomize_(timm.create_model(name, **SMALL), seed=3).eval()
    official = to_official_keys(model.state_dict(), model)
    for key in ("blocks1.0.proj.3.proj.1.weight", "sub_blocks3.0.se_layer.proj.3.bias", "sub_blocks4.0.rpb2",
                "patch_embed1.0.weight", "patch_embedx.h_proj.1.running_var", "high_level_proj.weight"):
        assert key in official, key
    assert official["blocks2.0.proj.7.gamma"].shape == (1, 24 * 4, 1, 1)
    assert official["head.4.weight"].dim() == 4
    assert ("blocks1.0.proj.1.dil_conv_k5_1.weight" in official) != reparam
    official["aux_head.0.weight"] = torch.ones(48)  # the training-only head of the release: dropped on load
    official["aux_head.2.weight"] = torch.zeros(1000, 48, 1, 1)
    path = tmp_path / f"{name}.pth"
    torch.save({"state_dict": official, "meta": {}}, path)
    loaded = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **SMALL).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert checkpoint_filter_fn(model.state_dict(), model).keys() == model.state_dict().keys()  # vzoo's own pass


def test_window_bias_indexes_the_table_by_relative_position():
    """``bias[y, x, h, a*k + b] = rpb[h, y' - y + k - 1, x' - x + k - 1]`` for neighbour (y', x') = window start
    + (a, b): the relative-position indexing of natten's NAT, which the release re-implements."""
    k, H, W = 5, 7, 9
    rpb = torch.randn(2, 2 * k - 1, 2 * k - 1)
    bias = window_bias(rpb, H, W)
    for y, x in [(0, 0), (3, 4), (6, 8), (1, 7)]:
        y0, x0 = min(max(y - k // 2, 0), H - k), min(max(x - k // 2, 0), W - k)
        for a in range(k):
            for b in range(k):
                torch.testing.assert_close(bias[y, x, :, a * k + b], rpb[:, y0 + a - y + k - 1, x0 + b - x + k - 1])


def test_features_only_and_backbone_give_four_levels():
    from zoo import check_features_any_size
    check_features_any_size("overlock_xt", (96, 160), (16, 24, 32 + 12, 48 + 12), **SMALL)
    pytest.importorskip("mmdet")
    from vzoo.mm import VZooBackbone
    bb = VZooBackbone("overlock_xt", **SMALL)
    feats = bb(torch.randn(1, 3, 100, 130))  # padded to 32 inside, cropped back
    assert [f.shape[1] for f in feats] == [16, 24, 44, 60]
    assert [tuple(f.shape[2:]) for f in feats] == [(25, 33), (13, 17), (7, 9), (4, 5)]


def test_variants_match_the_release():
    """Widths, depths and parameter counts of the four official variants (meta device: no memory)."""
    expected = {"overlock_xt": (16, (56, 112, 256 + 84, 336 + 84)), "overlock_t": (33, (64, 128, 384, 640)),
                "overlock_s": (56, (64, 128, 448, 640)), "overlock_b": (95, (80, 160, 528, 720))}
    for name, (params_m, channels) in expected.items():
        with torch.device("meta"):
            model = timm.create_model(name)
            fused = timm.create_model(name + "_reparam")
        assert tuple(i["num_chs"] for i in model.feature_info) == channels
        n = sum(p.numel() for p in fused.parameters()) / 1e6
        assert abs(n - params_m) / params_m < 0.05, (name, n)
        assert fused.pretrained_cfg["notes"] == model.pretrained_cfg["notes"]


def test_compile_fullgraph_takes_the_index_tables_as_constants():
    """``torch.compile(fullgraph=True)`` captures the whole model, ContMix's ``na2d_av`` (its dense and its
    offset path) and relative-position bias included, with their cached index tables as graph constants (no
    table is rebuilt in the graph), and gives eager's outputs."""
    model = randomize_(_small(), seed=4).eval()
    x = torch.randn(1, 3, 64, 96)  # Focus-Net maps 4x6 and 2x3, resized up to the kernels
    ops = []

    def backend(graph_module, example_inputs):
        ops.extend(str(n.target) for n in graph_module.graph.nodes if n.op == "call_function")
        return graph_module

    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-6)
    assert ops and not [op for op in ops if "arange" in op or "window_bounds" in op]
