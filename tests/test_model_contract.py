"""The model contract, once for every model that vzoo registers with timm.

A family joins by registration alone: the smallest variant of each vzoo family (found from timm's
registry) is built at a small input size and checked for what timm users and the mm bridge rely on,
including what timm's own ``tests/test_models.py`` checks of every timm model (the default cfg's
``first_conv``, ``classifier`` and ``pool_size`` against the model) and that gradient checkpointing
changes nothing but memory. Image-to-image models (``vzoo_task = 'image-to-image'``) skip only the
classifier checks: they have no classifier, no pooled features and no ``pool_size``.
"""
import pytest
import timm
import torch
from safetensors.torch import save_file

from vzoo.hub import OfflineError
from vzoo.models import FAMILY_MODULES, CheckpointError, list_vzoo_models, model_family
from zoo import (
    assert_features_match_info, assert_grad_checkpointing_matches, input_size, is_image_to_image,
    smallest_vzoo_models,
)

MODELS = smallest_vzoo_models()
B = 2


def test_family_modules_are_the_modules_that_register_models():
    """``vzoo.models.FAMILY_MODULES`` lists families only (a fix of a timm family, like GC ViT's, is private)."""
    assert set(FAMILY_MODULES) == {model_family(n) for n in list_vzoo_models()}


@pytest.fixture(scope="module", params=MODELS)
def case(request):
    name = request.param
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    x = torch.randn(B, *input_size(model))
    return name, model, x


def test_model_class_is_documented(case):
    name, model, _ = case
    assert (type(model).__doc__ or "").strip(), f"{name}: {type(model).__name__} has no docstring Python sees"


def test_forward_and_backward(case):
    name, model, x = case
    model.train()
    out = model(x)
    if is_image_to_image(model):
        scale = getattr(model, "upscale", 1)
        assert out.shape == (B, x.shape[1], x.shape[2] * scale, x.shape[3] * scale)
    else:
        assert out.shape == (B, model.num_classes)
    assert torch.isfinite(out).all()
    out.float().pow(2).mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"{name}: parameters that get no gradient: {no_grad[:10]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)
    model.eval()


def test_features_then_head_equals_forward(case):
    name, model, x = case
    if is_image_to_image(model):
        pytest.skip("image-to-image model: no classifier")
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(model.forward_features(x)), model(x))
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
    assert pre.shape == (B, model.num_features)


def test_reset_classifier(case):
    name, _, x = case
    if is_image_to_image(case[1]):
        pytest.skip("image-to-image model: no classifier")
    model = timm.create_model(name).eval()
    model.reset_classifier(5)
    assert model(x).shape == (B, 5) and model.num_classes == 5
    model.reset_classifier(0)
    assert model(x).shape == (B, model.num_features)


def _as_tuple(names):
    return (names,) if isinstance(names, str) else tuple(names)


def test_default_cfg_matches_the_model(case):
    """timm's ``test_model_default_cfgs``: the cfg's ``first_conv`` and ``classifier`` name the model's
    first conv and classifier, and ``pool_size`` is the final map at the cfg's ``input_size`` (checked at
    the small input through the final reduction, which must divide the cfg's size). Token models (no
    ``pool_size``) are checked as timm's ``test_model_default_cfgs_non_std`` checks them."""
    name, _, x = case
    model = timm.create_model(name).eval()
    cfg, sd = model.pretrained_cfg, model.state_dict()
    for conv in _as_tuple(cfg["first_conv"]):
        assert f"{conv}.weight" in sd, f"{name}: first_conv {conv!r} is not a parameter of the model"
        assert model.get_submodule(conv).in_channels == cfg["input_size"][0] == x.shape[1]
    if is_image_to_image(model):
        return  # no classifier and no pooled final map
    (classifier,) = _as_tuple(cfg["classifier"])
    assert f"{classifier}.weight" in sd, f"{name}: classifier {classifier!r} is not a parameter of the model"
    assert model.get_submodule(classifier) is model.get_classifier()
    assert model.get_classifier().out_features == cfg["num_classes"] == model.num_classes
    with torch.no_grad():
        final = model.forward_features(x)
    if cfg.get("pool_size") is None:  # only a token model (EViT, on timm's ViT: timm's "non-std") has none
        assert final.ndim == 3 and final.shape[-1] == model.num_features, (name, tuple(final.shape))
        return
    reduction = model.feature_info[-1]["reduction"]
    assert tuple(cfg["pool_size"]) == tuple(s // reduction for s in cfg["input_size"][1:])
    assert all(s % reduction == 0 for s in cfg["input_size"][1:])
    hw = tuple(s // reduction for s in x.shape[2:])
    assert final.shape[1:] == (model.num_features, *hw)
    model.reset_classifier(0, "")  # no classifier, no pooling: the final map itself
    with torch.no_grad():
        assert model(x).shape == (B, model.num_features, *hw)


def test_grad_checkpointing_changes_nothing(case):
    """In training mode: dropout, drop-path and BatchNorm as in training."""
    name, model, x = case
    model.train()
    try:
        assert_grad_checkpointing_matches(model, x)
    finally:
        model.eval()


# families whose model class does not take timm's device/dtype arguments yet (strict: passing fails)
NO_DEVICE_DTYPE_YET = set()


def test_device_and_dtype_arguments(case, request):
    """timm's factory arguments: ``device``/``dtype`` create every weight there (here: no memory at all)."""
    name, _, _ = case
    if model_family(name) in NO_DEVICE_DTYPE_YET:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"{model_family(name)} takes no device/dtype yet"))
    model = timm.create_model(name, device="meta", dtype=torch.bfloat16)
    wrong = [n for n, t in [*model.named_parameters(), *model.named_buffers()]
             if t.device.type != "meta" or (t.is_floating_point() and t.dtype != torch.bfloat16)]
    assert not wrong, f"{name}: tensors not created on the device / in the dtype asked for: {wrong[:10]}"


def _refuses_feature_maps(name, model, x) -> bool:
    """A token-dropping model (EViT) has no H x W maps after its first drop: it must say so, clearly."""
    if not getattr(model, "reorganizes_tokens", False):
        return False
    with pytest.raises(RuntimeError, match="features_only"):
        model.forward_intermediates(x)
    with pytest.raises(RuntimeError, match="features_only"):
        timm.create_model(name, features_only=True)
    return True


def test_forward_intermediates_match_feature_info(case):
    name, model, x = case
    if _refuses_feature_maps(name, model, x):
        return
    with torch.no_grad():
        feats = model.forward_intermediates(x, intermediates_only=True)
        assert_features_match_info(feats, model.feature_info, x)
        final, feats2 = model.forward_intermediates(x)
        torch.testing.assert_close(feats2[-1], feats[-1])
        if not is_image_to_image(model):
            torch.testing.assert_close(model.forward_head(final), model(x))


def test_features_only(case):
    name, model, x = case
    if _refuses_feature_maps(name, model, x):
        return
    n = len(model.feature_info)
    out_indices = tuple(range(max(0, n - 2), n))
    fm = timm.create_model(name, features_only=True, out_indices=out_indices).eval()
    assert [i["num_chs"] for i in fm.feature_info.get_dicts()] == fm.feature_info.channels()
    with torch.no_grad():
        feats = fm(x)
    assert_features_match_info(feats, [model.feature_info[i] for i in out_indices], x)
    assert fm.feature_info.channels() == [model.feature_info[i]["num_chs"] for i in out_indices]
    assert fm.feature_info.reduction() == [model.feature_info[i]["reduction"] for i in out_indices]


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_pretrained_from_local_file(case, tmp_path, fmt):
    name, model, x = case
    path = tmp_path / f"w.{fmt}"
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    if fmt == "safetensors":
        save_file(sd, str(path))
    else:
        torch.save({"state_dict": sd, "epoch": 3}, path)  # a training checkpoint, unwrapped on load
    torch.manual_seed(123)  # a different random init, so equality proves the weights were loaded
    loaded = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_bad_checkpoints_name_the_problem(case, tmp_path):
    name, model, _ = case
    sd = dict(model.state_dict())
    dropped = sorted(sd)[len(sd) // 2]
    del sd[dropped]
    sd["not_a_layer.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as e:
        timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert dropped in str(e.value) and "not_a_layer.weight" in str(e.value)

    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupt"):
        timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(corrupt)))

    # no file: a download, refused offline (tests/conftest.py) with the file option named, or no release at all
    with pytest.raises((CheckpointError, OfflineError), match="pretrained_cfg_overlay"):
        timm.create_model(name, pretrained=True)
