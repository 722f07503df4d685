"""timm's own model tests (``tests/test_models.py`` of timm 1.0.31) on the smallest variant of every vzoo family.

timm's pip package does not ship its tests, and CI fetches nothing at run time, so this file applies the
same checks through timm's public API, group by group: forward (+ gradient checkpointing), backward,
default cfg, TorchScript, ``features_only``, ``forward_intermediates``, and the three torch.fx groups
(forward, backward, fx + TorchScript), traced as timm traces them (its notrace modules and functions are
leaves). Two differences, both for CI's budget: inputs are the model's test size (``min_input_size`` or
64×64, ``tests/zoo.py``) instead of timm's 96-128 px targets, except the default-cfg check which runs at
the cfg's own ``input_size`` as timm does; and the parity of fx with eager is exact only where timm's is.

Excluded, and only this: the classifier-shaped checks (``backward`` and ``backward_fx`` with
``num_classes=42``, ``default_cfgs`` with ``pool_size``) for image-to-image models (HAT): they have no
classifier, no pooled features and no ``pool_size``, so those checks do not apply.

Non-std models, classified as timm classifies its DeiT / ViT (``NON_STD_FILTERS``: ``'deit*'``, ``'vit_*'``,
...: "transformer / hybrid models don't support full set of spatial / feature APIs"): vzoo's token models
:data:`NON_STD_FAMILIES`, EViT, LV-ViT and Sparsifiner, DeiT / LV-ViT with a class token and a token sequence
(``pool_size=None``, no pooled spatial map). As in timm, their default cfg is checked by
``test_default_cfg_non_std`` (timm's ``test_model_default_cfgs_non_std``) instead of ``test_default_cfg``, and
they are out of timm's ``features_only`` test (``EXCLUDE_FEAT_FILTERS = [...] + NON_STD_FILTERS``). Where one
offers feature maps anyway (LV-ViT; Sparsifiner without token pruning) the feature tests still run on it (as timm
runs ``forward_intermediates`` on its DeiT / ViT modules); one that drops tokens (EViT) refuses them by design,
which those tests check before skipping it as excluded.

Sparsifiner's backward: its connectivity predictors (``*.mask_predictor.*``) choose keys by a top-k, so the
logits give them no gradient; the release trains them by their own loss on the low-rank attention (phase
``attn_recon``: ``forward_aux``'s ``approx_attn``, release ``losses.py``; :mod:`vzoo.tasks.classification.sparsifiner`).
``backward`` checks, instead of "every parameter gets a gradient from the logits", that the logits reach every
parameter but exactly the predictors', and the predictors' loss reaches every predictor parameter;
``backward_fx`` the first half (fx traces ``forward``, which has no ``approx_attn``).
"""
import math

import pytest
import timm
import torch
from timm.layers import get_channel_dim, get_spatial_dim
from timm.models import get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import NodePathTracer, create_feature_extractor, get_graph_node_names

from vzoo.models import model_family
from zoo import input_size, is_image_to_image, smallest_vzoo_models

MODELS = smallest_vzoo_models()
MAX_FWD_OUT_SIZE = 448  # timm: output sizes are checked at the cfg's input size up to this


def _classifier_test(name: str) -> None:
    """Skip a classifier-shaped check for an image-to-image model (the documented exclusion)."""
    with torch.device("meta"):
        model = timm.create_model(name)
    if is_image_to_image(model):
        pytest.skip("excluded: image-to-image model (no classifier, pooled features or pool_size)")


# timm's NON_STD_FILTERS classification applied to vzoo's token models (module docstring)
NON_STD_FAMILIES = ("evit", "lvvit", "sparsifiner")
NON_STD_MAX_SIZE = 320  # timm's test_model_default_cfgs_non_std skips fixed input sizes above it
# parameters trained by their own loss, not by the logits (module docstring): family -> name part
OWN_LOSS_PARAMS = {"sparsifiner": ".mask_predictor."}


def _is_non_std(name: str) -> bool:
    return model_family(name) in NON_STD_FAMILIES


def _non_std_without_features(name: str) -> None:
    """A non-std model that offers no feature maps (it drops tokens): check that it refuses them, saying why,
    then skip it as timm's ``EXCLUDE_FEAT_FILTERS`` does; any other model is tested."""
    if not _is_non_std(name):
        return
    with torch.device("meta"):
        model = timm.create_model(name)
    if not getattr(model, "reorganizes_tokens", False):
        return
    refusal = "features_only / forward_intermediates are not offered"
    with pytest.raises(RuntimeError, match=refusal):
        timm.create_model(name, features_only=True)
    with pytest.raises(RuntimeError, match=refusal):
        model.forward_intermediates(torch.empty(1, *input_size(model), device="meta"))
    pytest.skip("excluded: non-std token model that drops tokens (timm's EXCLUDE_FEAT_FILTERS); it refuses "
                "feature maps by design (checked)")


def _assert_logits_grads(named_parameters, name: str) -> None:
    """After a backward of the logits: every parameter has a gradient, except, for a family in
    :data:`OWN_LOSS_PARAMS`, exactly the parameters its own loss trains."""
    own = OWN_LOSS_PARAMS.get(model_family(name))
    params = list(named_parameters)
    no_grad = [n for n, p in params if p.grad is None]
    if own is None:
        assert not no_grad, f"no gradient for {no_grad[:5]}"
    else:
        assert no_grad == [n for n, _ in params if own in n] and no_grad, \
            f"the logits should reach every parameter but the {own!r} ones; no gradient for {no_grad[:5]}"


def _assert_own_loss_grads(model, x: torch.Tensor, name: str) -> None:
    """Sparsifiner's predictors' own loss (the release's phase ``attn_recon``, ``forward_aux``'s
    ``approx_attn``, as vzoo's training computes it) reaches every predictor parameter."""
    own = OWN_LOSS_PARAMS[model_family(name)]
    model.zero_grad(set_to_none=True)
    model.phase = "attn_recon"  # only the predictors train, on their low-rank attention's differentiable form
    sum(a.square().mean() for a in model.forward_aux(x)["approx_attn"]).backward()
    grads = [n for n, p in model.named_parameters() if p.grad is not None]
    assert grads == [n for n, _ in model.named_parameters() if own in n], f"own loss reaches {grads[:5]}"
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if own in n)


def _inputs(model, batch_size: int) -> torch.Tensor:
    return torch.randn(batch_size, *input_size(model))


def _assert_features(outputs, channels, reductions, x, output_fmt="NCHW") -> None:
    feat_axis, spatial_axis = get_channel_dim(output_fmt), get_spatial_dim(output_fmt)
    assert len(outputs) == len(channels)
    for c, r, o in zip(channels, reductions, outputs):
        assert o.shape[feat_axis] == c
        for axis, size in zip(spatial_axis, x.shape[-2:]):
            assert o.shape[axis] <= math.ceil(size / r) + 1
        assert o.shape[0] == x.shape[0]
        assert not torch.isnan(o).any()


def _fx_model(model, train: bool = False):
    """``model`` traced by torch.fx with timm's leaves, returning what its forward returns (timm's way)."""
    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(),
                         param_shapes_constant=True)
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    train_return = [train_nodes[-1]]
    if train:  # the nodes that feed the traced graph's output, in case training returns several
        graph = NodePathTracer(**tracer_kwargs).trace(model)
        nodes = list(reversed(graph.nodes))
        names = [n.name for n in nodes]
        train_return = [train_nodes[-names.index(n.name)] for n in nodes[0]._input_nodes]
    return create_feature_extractor(model, train_return_nodes=train_return, eval_return_nodes=[eval_nodes[-1]],
                                    tracer_kwargs=tracer_kwargs)


@pytest.mark.parametrize("name", MODELS)
def test_forward(name):
    model = timm.create_model(name).eval()
    x = _inputs(model, 1)
    with torch.no_grad():
        out = model(x)
        assert out.shape[0] == 1 and not torch.isnan(out).any()
        model.set_grad_checkpointing()
        torch.testing.assert_close(model(x), out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_backward(name):
    _classifier_test(name)
    model = timm.create_model(name, num_classes=42).train()
    if model_family(name) in OWN_LOSS_PARAMS:  # (Sparsifiner's default phase freezes the predictors: unfreeze,
        model.requires_grad_(True)              # as vzoo's training does, so that freezing hides no gradient)
    x = _inputs(model, 2)
    out = model(x)
    out.mean().backward()
    _assert_logits_grads(model.named_parameters(), name)
    assert out.shape[-1] == 42 and not torch.isnan(out).any()
    if model_family(name) in OWN_LOSS_PARAMS:
        _assert_own_loss_grads(model, x, name)


@pytest.mark.parametrize("name", [n for n in MODELS if not _is_non_std(n)])
def test_default_cfg(name):
    _classifier_test(name)
    model = timm.create_model(name).eval()
    assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0
    cfg, state_dict = model.default_cfg, model.state_dict()
    output_fmt = getattr(model, "output_fmt", "NCHW")
    spatial_axis, feat_axis = get_spatial_dim(output_fmt), get_channel_dim(output_fmt)
    pool_size = cfg["pool_size"]
    x = torch.randn(1, *[min(s, MAX_FWD_OUT_SIZE) for s in cfg["input_size"]])
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert [feats.shape[a] for a in spatial_axis] == list(pool_size), (tuple(feats.shape), pool_size)
        assert feats.shape[feat_axis] == model.num_features
        assert pre.shape[1] == model.head_hidden_size
        model.reset_classifier(0)
        assert model.num_classes == 0
        out = model(x)
        assert out.shape == pre.shape == (1, model.head_hidden_size)
        model.reset_classifier(0, "")
        out = model(x)
        assert out.ndim == 4 and [out.shape[a] for a in spatial_axis] == list(pool_size)
        model = timm.create_model(name, num_classes=0, global_pool="").eval()
        out = model(x)
        assert out.ndim == 4 and [out.shape[a] for a in spatial_axis] == list(pool_size)
    _assert_cfg_module_names(cfg, state_dict)


def _assert_cfg_module_names(cfg, state_dict) -> None:
    """The cfg's ``classifier`` (when it has classes) and ``first_conv`` name modules of the model."""
    classifiers = cfg["classifier"] if isinstance(cfg["classifier"], (tuple, list)) else (cfg["classifier"],)
    for c in classifiers if cfg.get("num_classes") else ():
        assert c + ".weight" in state_dict, f"classifier {c} not in the model"
    first_conv = cfg["first_conv"] if isinstance(cfg["first_conv"], (tuple, list)) else (cfg["first_conv"],)
    for c in first_conv:
        assert c + ".weight" in state_dict, f"first_conv {c} not in the model"


def _pooled_dim(out: torch.Tensor, feat_dim) -> int:
    """timm's non-std feature axis: the model's ``feature_dim``, else the last of a token sequence, else 1."""
    return feat_dim if feat_dim is not None else (-1 if out.ndim == 3 else 1)


@pytest.mark.parametrize("name", [n for n in MODELS if _is_non_std(n)])
def test_default_cfg_non_std(name):
    """timm's ``test_model_default_cfgs_non_std``: features and pre-logits widths, ``reset_classifier(0)`` and
    ``num_classes=0`` give pooled features, at the cfg's input size (a fixed one above 320 px is skipped)."""
    model = timm.create_model(name).eval()
    assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0
    cfg, state_dict = model.default_cfg, model.state_dict()
    size = cfg["input_size"]  # timm's _get_input_size without a target
    if max(size) > NON_STD_MAX_SIZE:
        pytest.skip("Fixed input size model > limit.")
    x = torch.randn(1, *size)
    feat_dim = getattr(model, "feature_dim", None)
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        if not isinstance(feats, (tuple, list)):  # (timm cannot verify multi-tensor outputs either)
            assert feats.shape[_pooled_dim(feats, feat_dim)] == model.num_features
            assert pre.shape[1] == model.head_hidden_size
        model.reset_classifier(0)
        assert model.num_classes == 0
        out = model(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        assert out.shape[_pooled_dim(out, feat_dim)] == model.head_hidden_size
        assert out.shape == pre.shape
        model = timm.create_model(name, num_classes=0).eval()
        out = model(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        assert out.shape[_pooled_dim(out, feat_dim)] == model.num_features
    _assert_cfg_module_names(cfg, state_dict)


@pytest.mark.parametrize("name", MODELS)
def test_torchscript(name):
    with timm.set_scriptable(True):
        model = timm.create_model(name).eval()
    x = _inputs(model, 1)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        out = scripted(x)
        assert out.shape[0] == 1 and not torch.isnan(out).any()
        torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_features(name):
    _non_std_without_features(name)
    model = timm.create_model(name, features_only=True).eval()
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    assert len(channels) >= 3
    x = _inputs(model, 1)
    with torch.no_grad():
        _assert_features(model(x), channels, reductions, x, getattr(model, "output_fmt", "NCHW"))


@pytest.mark.parametrize("name", MODELS)
def test_features_cfg_and_fx(name):
    """``feature_cfg=`` merges with the family's defaults, and ``feature_cls='fx'`` gives the getter's maps."""
    _non_std_without_features(name)
    torch.manual_seed(0)
    getter = timm.create_model(name, features_only=True).eval()
    last = tuple(range(len(getter.feature_info)))[-3:]
    picked = timm.create_model(name, features_only=True, feature_cfg=dict(out_indices=last)).eval()
    torch.manual_seed(0)  # the same weights as the getter's
    fx = timm.create_model(name, features_only=True, feature_cls="fx").eval()
    x = _inputs(getter, 1)
    with torch.no_grad():
        ref = getter(x)
        assert picked.feature_info.channels() == getter.feature_info.channels()[-3:]
        assert [f.shape for f in picked(x)] == [f.shape for f in ref[-3:]]
        assert fx.feature_info.channels() == getter.feature_info.channels()
        fx_maps = fx(x)
        if _is_non_std(name):  # fx takes the blocks' token sequences (B, prefix + H W, C), as for timm's ViTs
            fx_maps = [a[:, -b.shape[-2] * b.shape[-1]:].transpose(1, 2).reshape(b.shape)
                       for a, b in zip(fx_maps, ref)]
        assert [f.shape for f in fx_maps] == [f.shape for f in ref]
        for a, b in zip(fx_maps, ref):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", MODELS)
def test_forward_intermediates(name):
    _non_std_without_features(name)
    model = timm.create_model(name).eval()
    info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))
    assert len(info.channels()) >= 3
    x = _inputs(model, 1)
    with torch.no_grad():
        out, intermediates = model.forward_intermediates(x, output_fmt="NCHW")
        _assert_features(intermediates, info.channels(), info.reduction(), x)
        torch.testing.assert_close(out, model.forward_features(x))
        model.set_grad_checkpointing()
        torch.testing.assert_close(model.forward_intermediates(x, output_fmt="NCHW")[0], out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_forward_fx(name):
    model = timm.create_model(name).eval()
    x = _inputs(model, 1)
    with torch.inference_mode():
        out = model(x)
        fx_out = torch.cat(tuple(_fx_model(model)(x).values()))
    assert torch.equal(fx_out, out)
    assert not torch.isnan(out).any()


@pytest.mark.parametrize("name", MODELS)
def test_backward_fx(name):
    _classifier_test(name)
    model = timm.create_model(name, num_classes=42).train()
    if model_family(name) in OWN_LOSS_PARAMS:  # (as in test_backward)
        model.requires_grad_(True)
    x = _inputs(model, 2)
    fx = _fx_model(model, train=True)
    out = torch.cat(tuple(fx(x).values()))
    out.mean().backward()
    _assert_logits_grads(fx.named_parameters(), name)
    assert sum(p.numel() for p in fx.parameters()) == sum(p.numel() for p in model.parameters())
    assert out.shape[-1] == 42 and not torch.isnan(out).any()


@pytest.mark.parametrize("name", MODELS)
def test_forward_fx_torchscript(name):
    with timm.set_scriptable(True):
        model = timm.create_model(name).eval()
    x = _inputs(model, 1)
    scripted = torch.jit.script(_fx_model(model))
    with torch.inference_mode():
        out = torch.cat(tuple(scripted(x).values()))
        assert out.shape[0] == 1 and not torch.isnan(out).any()
        torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-5)
