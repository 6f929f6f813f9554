"""teacher_outputs="cached": clean-teacher outputs computed once, looked up per batch by sample index and flip."""
from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import TensorDataset

from robustcompress.methods import StepContext, create_method
from robustcompress.methods.teacher_outputs import CleanTeacherOutputs, CleanTeacherPlan
from robustcompress.models import build_model
from robustcompress.models.features import logits_and_features
from robustcompress.trainer import TrainConfig, train

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def two_teachers():
    models = []
    for seed, name in enumerate(["lcnet_050", "mobilenetv3_small_050"]):
        torch.manual_seed(seed)
        models.append(build_model(name, 10, 16).eval().requires_grad_(False))
    return models


@pytest.fixture(scope="module")
def images(digits16):
    x, y = digits16.train.tensors
    return x[:40], y[:40]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTCOMPRESS_CACHE", str(tmp_path / "cache"))


def test_lookup_gives_each_teachers_outputs_on_the_image_or_its_mirror(two_teachers, images):
    x, _ = images
    plan = CleanTeacherPlan((0, 1), feature_stage=-1)
    table = CleanTeacherOutputs.build(two_teachers, plan, x, flip=True, device=CPU, batch_size=16, progress=False)
    index = torch.tensor([3, 17, 29])
    flipped = torch.tensor([False, True, False])
    got = table.lookup(index, flipped, CPU)
    view = torch.where(flipped.view(-1, 1, 1, 1), x[index].flip(-1), x[index])
    for t, teacher in enumerate(two_teachers):
        with torch.no_grad():
            logits, features = logits_and_features(teacher, view, -1)
        assert torch.allclose(got.logits[t], logits, atol=1e-6, rtol=1e-5)
        assert torch.allclose(got.features[t], features, atol=1e-9, rtol=1e-2)  # bfloat16: 8 significant bits


def test_the_table_is_cached_on_disk_and_keyed_by_the_teachers(two_teachers, images, tmp_path):
    x, _ = images
    plan = CleanTeacherPlan((0,))
    first = CleanTeacherOutputs.build(two_teachers, plan, x, flip=False, device=CPU, progress=False)
    files = list((tmp_path / "cache" / "teacher_outputs").glob("*.safetensors"))
    assert len(files) == 1
    again = CleanTeacherOutputs.build(two_teachers, plan, x, flip=False, device=CPU, progress=False)
    assert torch.equal(first.logits[0], again.logits[0])
    other = CleanTeacherOutputs.build(two_teachers[::-1], plan, x, flip=False, device=CPU, progress=False)
    assert not torch.equal(first.logits[0], other.logits[0])
    assert len(list((tmp_path / "cache" / "teacher_outputs").glob("*.safetensors"))) == 2


def test_sa_mdrad_with_cached_outputs_trains_as_with_live_teachers_without_augmentation(two_teachers, images):
    x, y = images
    data = TensorDataset(x, y)
    results = {}
    for mode in ("live", "cached"):
        torch.manual_seed(0)
        student = build_model("lcnet_050", 10, 16)
        config = TrainConfig(epochs=1, batch_size=20, lr=0.05, eps=4 / 255, step_size=2 / 255, steps=1,
                             progress=False, augment=False, speed="reference", teacher_outputs=mode)
        history = train(student, two_teachers, create_method("sa-mdrad"), data, 10, config, CPU)
        results[mode] = history[0]["loss"]
    # The same targets up to the features' bfloat16 storage: the losses agree closely.
    assert results["cached"] == pytest.approx(results["live"], rel=1e-2)


def test_sa_mdrad_and_mtard_declare_what_can_be_cached():
    assert create_method("sa-mdrad").clean_teacher_plan(2) == CleanTeacherPlan((0, 1), -1)
    assert create_method("sa-mdrad", feature_weight=0).clean_teacher_plan(2) == CleanTeacherPlan((0, 1), None)
    assert create_method("mtard").clean_teacher_plan(2) == CleanTeacherPlan((1,))
    assert create_method("mtard").clean_teacher_plan(1) is None  # one teacher also sees x_adv
    # ARD's and RSLAD's teachers only see the clean image; IAD's also see the adversarial one.
    assert create_method("ard").clean_teacher_plan(1) == create_method("rslad").clean_teacher_plan(1) == \
        CleanTeacherPlan((0,))
    assert create_method("iad").clean_teacher_plan(1) is None


def test_a_method_whose_teachers_see_adversarial_images_refuses_cached_outputs(two_teachers, images):
    x, y = images
    config = TrainConfig(epochs=1, batch_size=20, steps=1, progress=False, teacher_outputs="cached")
    with pytest.raises(ValueError, match="'iad' queries its teachers on adversarial images"):
        train(build_model("lcnet_050", 10, 16), two_teachers[:1], create_method("iad"), TensorDataset(x, y), 10,
              config, CPU)


@pytest.mark.parametrize("name", ["ard", "rslad"])
def test_clean_image_distillation_takes_its_targets_from_the_cached_outputs(name, two_teachers, images):
    """With cached outputs ARD and RSLAD never call the teacher, and their loss is the live one (no crop, no
    flip: the table holds exactly the teacher's outputs on these images)."""
    x, y = images
    teacher = two_teachers[:1]
    table = CleanTeacherOutputs.build(teacher, CleanTeacherPlan((0,)), x, flip=False, device=CPU, progress=False)
    batch = table.lookup(torch.arange(8), None, CPU)
    student = build_model("lcnet_050", 10, 16)
    common = dict(x=x[:8], y=y[:8], teacher_weights=None, num_classes=10, eps=4 / 255, step_size=2 / 255, steps=1)

    class Unusable(torch.nn.Module):
        def forward(self, _):
            raise AssertionError("the teacher was queried although its outputs were cached")

    losses = []
    # each run gets its own copy of the student: a training-mode forward moves BatchNorm's running statistics,
    # which the next attack (in eval mode) would see
    for ctx in (StepContext(teachers=[Unusable()], teacher_outputs=batch, student=copy.deepcopy(student), **common),
                StepContext(teachers=teacher, student=copy.deepcopy(student), **common)):
        method = create_method(name)
        torch.manual_seed(0)  # the same attack start for both
        x_adv = method.perturb(ctx)
        losses.append(method.loss(ctx, x_adv)[0].item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_an_unknown_teacher_outputs_mode_is_refused():
    with pytest.raises(ValueError, match="unknown teacher_outputs 'offline'"):
        TrainConfig(teacher_outputs="offline")


def test_mtard_uses_the_cached_clean_teacher_outputs(two_teachers, images):
    x, y = images
    method = create_method("mtard")
    student = build_model("lcnet_050", 10, 16)
    table = CleanTeacherOutputs.build(two_teachers, CleanTeacherPlan((1,)), x, flip=False, device=CPU,
                                      progress=False)
    batch = table.lookup(torch.arange(8), None, CPU)
    batch.logits[1] = torch.zeros_like(batch.logits[1])  # a uniform clean target: only the table could say so
    ctx = StepContext(x=x[:8], y=y[:8], student=student, teachers=two_teachers, teacher_weights=None,
                      num_classes=10, eps=4 / 255, step_size=2 / 255, steps=1, teacher_outputs=batch)
    method.loss(ctx, x[:8])
    live = StepContext(x=x[:8], y=y[:8], student=student, teachers=two_teachers, teacher_weights=None,
                       num_classes=10, eps=4 / 255, step_size=2 / 255, steps=1)
    fresh = create_method("mtard")
    fresh.loss(live, x[:8])
    assert not torch.equal(method.initial_losses, fresh.initial_losses)  # the clean term used the table's target
