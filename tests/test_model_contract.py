"""The model contract, once for every model that vzoo registers with timm.

A family joins by registration alone: the smallest variant of each vzoo family (found from timm's
registry) is built at a small input size and checked for what timm users and the mm bridge rely on.
Image-to-image models (``vzoo_task = 'image-to-image'``) skip only the classifier checks.
"""
import pytest
import timm
import torch
from safetensors.torch import save_file

from vzoo.models import CheckpointError
from zoo import input_size, is_image_to_image, smallest_vzoo_models

MODELS = smallest_vzoo_models()
B = 2


@pytest.fixture(scope="module", params=MODELS)
def case(request):
    name = request.param
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    x = torch.randn(B, *input_size(model))
    return name, model, x


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


def _check_against_info(feats, info, x):
    assert len(feats) == len(info), (len(feats), len(info))
    for f, i in zip(feats, info):
        assert f.ndim == 4 and f.shape[0] == B
        assert f.shape[1] == i["num_chs"], (tuple(f.shape), i)
        # stride-r features of an input divisible by r are exactly H/r × W/r
        assert tuple(f.shape[2:]) == (x.shape[2] // i["reduction"], x.shape[3] // i["reduction"]), (tuple(f.shape), i)


def test_forward_intermediates_match_feature_info(case):
    name, model, x = case
    with torch.no_grad():
        feats = model.forward_intermediates(x, intermediates_only=True)
        _check_against_info(feats, model.feature_info, x)
        final, feats2 = model.forward_intermediates(x)
        torch.testing.assert_close(feats2[-1], feats[-1])
        if not is_image_to_image(model):
            torch.testing.assert_close(model.forward_head(final), model(x))


def test_features_only(case):
    name, model, x = case
    n = len(model.feature_info)
    out_indices = tuple(range(max(0, n - 2), n))
    fm = timm.create_model(name, features_only=True, out_indices=out_indices).eval()
    assert [i["num_chs"] for i in fm.feature_info.get_dicts()] == fm.feature_info.channels()
    with torch.no_grad():
        feats = fm(x)
    _check_against_info(feats, [model.feature_info[i] for i in out_indices], x)
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

    with pytest.raises(CheckpointError, match="pretrained_cfg_overlay"):
        timm.create_model(name, pretrained=True)  # vzoo never downloads
