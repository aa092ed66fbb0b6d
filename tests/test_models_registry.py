"""create_model / get_spec: ImageNet weights really load (a jeans photo is a 'jean'),
the uniform feature interface, and local weights for torchvision architectures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from hedged.models import (
    ARCHS,
    ModelSpec,
    ModelWeightsError,
    Preprocess,
    create_model,
    get_spec,
    imagenet_classes,
    load_state_dict,
)
from hedged.models.registry import _bundled_weights_path

FIXTURES = Path(__file__).parent / "fixtures"
CLASSES = imagenet_classes()

# ImageNet-1k class indices (the usual order, = order of models/imagenet_classes.json).
JEAN, JERSEY, SANDAL = 608, 610, 774
# fixture -> the ImageNet class Lite0 must rank first (it gives p = 0.98, 0.98, 0.95)
FIXTURE_CLASSES = {"jeans.jpg": JEAN, "tshirt.jpg": JERSEY, "sandal.jpg": SANDAL}


@pytest.fixture(scope="module")
def lite0():
    return create_model("efficientnet_lite0")


def test_class_list_has_the_expected_names():
    assert len(CLASSES) == 1000
    assert CLASSES[JEAN].startswith("jean, blue jean, denim")
    assert CLASSES[JERSEY].startswith("jersey, T-shirt")
    assert CLASSES[SANDAL] == "sandal"


def test_specs_are_known_and_unknown_arch_is_refused():
    assert set(ARCHS) == {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet50", "mobilenet_v3_large"}
    spec = get_spec("efficientnet_lite0")
    assert isinstance(spec, ModelSpec) and spec.input_size == 224 and spec.feature_dim == 1280
    assert (get_spec("efficientnet_lite1").input_size, get_spec("efficientnet_lite2").input_size) == (240, 260)
    assert isinstance(spec.preprocess(), Preprocess) and spec.preprocess().input_size == 224
    with pytest.raises(ValueError, match="unknown architecture 'vit'.*efficientnet_lite0"):
        get_spec("vit")
    with pytest.raises(ValueError, match="unknown architecture"):
        create_model("vit", weights=None)


@pytest.mark.parametrize("name", sorted(FIXTURE_CLASSES))
def test_lite0_imagenet_top1_on_photos(lite0, name):
    x = get_spec("efficientnet_lite0").preprocess().batch([FIXTURES / name])
    with torch.inference_mode():
        probs = lite0(x).softmax(1)[0]
    assert int(probs.argmax()) == FIXTURE_CLASSES[name], CLASSES[int(probs.argmax())]
    assert float(probs[FIXTURE_CLASSES[name]]) > 0.8


@pytest.mark.parametrize("arch", ["efficientnet_lite1", "efficientnet_lite2"])
def test_larger_lite_weights_load_and_classify(arch):
    model = create_model(arch)
    state = torch.load(_bundled_weights_path(arch), weights_only=True)
    assert torch.equal(model._conv_stem.weight.detach(), state["_conv_stem.weight"])
    assert len(state) == len(model.state_dict())
    x = get_spec(arch).preprocess().batch([FIXTURES / "jeans.jpg"])
    assert x.shape == (1, 3, get_spec(arch).input_size, get_spec(arch).input_size)
    with torch.inference_mode():
        assert int(model(x).argmax()) == JEAN


def test_new_head_keeps_the_pretrained_backbone(lite0):
    model = create_model("efficientnet_lite0", num_classes=7)
    head = model.get_classifier()
    assert isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (1280, 7)
    assert torch.equal(model._blocks[3]._depthwise_conv.weight, lite0._blocks[3]._depthwise_conv.weight)
    assert not torch.equal(model.get_classifier().weight[:7], lite0.get_classifier().weight[:7])
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        assert torch.allclose(model.forward_features(x), lite0.forward_features(x))
    # explicit num_classes=1000 keeps the ImageNet head
    assert torch.equal(create_model("efficientnet_lite0", num_classes=1000)._fc.weight, lite0._fc.weight)


@pytest.mark.parametrize("arch", ARCHS)
def test_uniform_feature_interface(arch):
    model = create_model(arch, num_classes=5, weights=None)
    spec = get_spec(arch)
    assert not model.training  # returned ready for inference
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        feats = model.forward_features(x)
        assert feats.shape == (2, spec.feature_dim) == (2, model.num_features)
        assert torch.allclose(model.get_classifier()(feats), model(x), atol=1e-5)
        assert model(x.contiguous()).shape == (2, 5)  # the default layout works too
    model.reset_classifier(3)
    assert model.get_classifier().out_features == 3


def test_lite_resumes_from_a_cached_block():
    model = create_model("efficientnet_lite0", weights=None)
    x = torch.randn(1, 3, 96, 96)
    with torch.inference_mode():
        cached = model.stem(x)
        for block in model._blocks[:5]:
            cached = block(cached)
        resumed = model.forward_features(cached, start_block=5, stem=False)
        assert torch.allclose(resumed, model.forward_features(x), atol=1e-5)


@pytest.mark.parametrize("arch", ["resnet50", "mobilenet_v3_large"])
def test_torchvision_arch_needs_a_local_file(arch):
    with pytest.raises(ModelWeightsError, match=f"{arch} has no bundled weights; pass weights=PATH"):
        create_model(arch)


@pytest.mark.parametrize("arch", ["resnet50", "mobilenet_v3_large"])
def test_torchvision_arch_from_local_state_dict(arch, tmp_path):
    import torchvision

    reference = getattr(torchvision.models, arch)(weights=None).eval()
    path = tmp_path / f"{arch}.pth"
    torch.save(reference.state_dict(), path)

    model = create_model(arch, weights=path)
    assert model.get_classifier().out_features == 1000
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(model(x), reference(x), atol=1e-4)

    fresh_head = create_model(arch, num_classes=4, weights=str(path))
    assert fresh_head.get_classifier().out_features == 4
    assert set(fresh_head.state_dict()) == set(reference.state_dict())  # torchvision's own keys


def test_weights_file_errors(tmp_path):
    with pytest.raises(ModelWeightsError, match="not found.*missing.pth"):
        create_model("resnet50", weights=tmp_path / "missing.pth")
    other = tmp_path / "lite.pth"
    torch.save(create_model("efficientnet_lite0", weights=None).state_dict(), other)
    with pytest.raises(ModelWeightsError, match="do not fit resnet50"):
        create_model("resnet50", weights=other)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(ModelWeightsError, match="cannot read weights file"):
        create_model("efficientnet_lite0", weights=text)
    with pytest.raises(ValueError, match="weights must be"):
        create_model("efficientnet_lite0", weights=3)
    with pytest.raises(ValueError, match="num_classes"):
        create_model("efficientnet_lite0", num_classes=0, weights=None)


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_state_dict_loading_never_runs_pickled_code(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x": _Evil()}, path)
    with pytest.raises(ModelWeightsError, match="cannot read"):
        load_state_dict(path)


def test_checkpoint_wrappers_and_dataparallel_prefix(tmp_path):
    model = create_model("efficientnet_lite0", num_classes=3, weights=None)
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}, path)
    loaded = create_model("efficientnet_lite0", weights=path)
    assert loaded.get_classifier().out_features == 3
    assert torch.equal(loaded._fc.weight, model._fc.weight)


def test_folding_batchnorm_keeps_the_outputs(lite0):
    import copy

    fused = copy.deepcopy(lite0).fuse_batchnorm()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in lite0.modules())  # the original is untouched
    x = get_spec("efficientnet_lite0").preprocess().batch([FIXTURES / "tshirt.jpg", FIXTURES / "sandal.jpg"])
    with torch.inference_mode():
        assert torch.allclose(fused(x), lite0(x), atol=1e-3)
        assert torch.allclose(fused.forward_features(x), lite0.forward_features(x), atol=1e-4)
