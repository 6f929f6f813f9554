"""The seed methods and baselines: each test fails if the method's defining idea is missing."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from robustcompress.attacks import eval_mode, kl_div
from robustcompress.methods import StepContext, create_method, list_methods
from robustcompress.methods.common import teacher_probs
from robustcompress.methods.dual_path import (dual_paths, path_indices, path_weights, random_wrong_class,
                                              runner_up_class)
from robustcompress.methods.iad import introspection_weights
from robustcompress.methods.mtard import teacher_roles
from robustcompress.methods.sa_mdrad import fusion_weights, rectify_logits
from robustcompress.models import build_model
from robustcompress.models.features import logits_and_features
from robustcompress.trainer import TrainConfig, train

NEW_METHODS = ["akd", "sa-mdrad", "dual-path", "iad", "mtard", "adaad"]
EPS, STEP, STEPS = 8 / 255, 2 / 255, 3
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def batch(digits16):
    x, y = digits16.train.tensors
    return x[:16], y[:16]


@pytest.fixture(scope="module")
def teachers(digits16):
    """Two heterogeneous tiny teachers (different widths and feature channels), briefly trained on digits."""
    x, y = digits16.train.tensors
    data = TensorDataset(x[:192], y[:192])
    # fp32 on every CPU, so the fixture is the same model on machines with and without native bf16.
    config = TrainConfig(epochs=1, batch_size=64, lr=0.2, progress=False, augment=False, precision="fp32")
    models = []
    for seed, name in enumerate(["lcnet_050", "mobilenetv3_small_050"]):
        torch.manual_seed(seed)
        model = build_model(name, 10, 16)
        train(model, [], create_method("standard"), data, 10, config, CPU)
        models.append(model.eval().requires_grad_(False))
    return models


def _student(seed=0):
    torch.manual_seed(seed)
    return build_model("lcnet_050", 10, 16)


def _trained_student(teachers):
    """A student whose outputs depend on the input (a fresh timm head outputs ~0), for attack tests."""
    return copy.deepcopy(teachers[0]).requires_grad_(True).train()


def _ctx(x, y, student, teachers, steps=STEPS, epoch=0, epochs=1, weights=None):
    return StepContext(x=x, y=y, student=student, teachers=teachers, teacher_weights=weights, num_classes=10,
                       eps=EPS, step_size=STEP, steps=steps, epoch=epoch, epochs=epochs)


# --- SA-MDRAD ---------------------------------------------------------------------------------------------------

def test_rectification_swaps_exactly_argmax_and_true_class_and_leaves_correct_rows_alone():
    logits = torch.tensor([[1.0, 5.0, 2.0, 0.5],    # wrong: predicts 1, truth 0
                           [3.0, 1.0, 2.0, 0.0]])   # right: predicts 0, truth 0
    y = torch.tensor([0, 0])
    fixed = rectify_logits(logits, y)
    assert torch.equal(fixed[0], torch.tensor([5.0, 1.0, 2.0, 0.5]))  # only positions 0 and 1 traded places
    assert torch.equal(fixed[1], logits[1])
    assert (fixed.argmax(1) == y).all()


def test_fusion_weights_sum_to_one_and_favour_the_teacher_that_is_right():
    y = torch.tensor([0, 1])
    right_on_0 = torch.tensor([[4.0, 0.0], [4.0, 0.0]])  # right on sample 0, wrong on sample 1
    right_on_1 = torch.tensor([[0.0, 4.0], [0.0, 4.0]])  # the reverse
    w = fusion_weights([right_on_0, right_on_1], y)
    assert torch.allclose(w.sum(1), torch.ones(2))
    assert w[0, 0] > 0.9 and w[1, 1] > 0.9
    # A fixed prior shifts the weights but keeps rows normalised.
    w_prior = fusion_weights([right_on_0, right_on_1], y, prior=torch.tensor([0.9, 0.1]))
    assert torch.allclose(w_prior.sum(1), torch.ones(2)) and w_prior[1, 0] > w[1, 0]


def test_sa_mdrad_target_is_fused_from_rectified_teachers_and_attack_stays_in_ball(batch, teachers):
    x, y = batch
    method = create_method("sa-mdrad")
    student = _trained_student(teachers)
    method.setup(student, teachers, 10, 16)
    ctx = _ctx(x, y, student, teachers)
    x_adv = method.perturb(ctx)
    target = ctx.cache["target"]
    assert (target.argmax(1) == y).all()  # every rectified teacher puts its top logit on the truth
    assert torch.allclose(target.sum(1), torch.ones(len(y)))
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    # The attack ascends the KL to the fused clean target.
    t = method.temperature
    with torch.no_grad(), eval_mode(student):
        assert kl_div(student(x_adv), target, t).mean() > kl_div(student(x), target, t).mean()


def test_sa_mdrad_adapters_match_each_teacher_and_receive_gradient(batch, teachers):
    x, y = batch
    method = create_method("sa-mdrad")
    student = _student()
    method.setup(student, teachers, 10, 16)
    teacher_channels = [logits_and_features(t, x[:1])[1].shape[1] for t in teachers]
    assert [a.out_channels for a in method.adapters] == teacher_channels
    assert teacher_channels[0] != teacher_channels[1]  # heterogeneous teachers really are
    ctx = _ctx(x, y, student, teachers)
    loss, logits = method.loss(ctx, method.perturb(ctx))
    loss.backward()
    for adapter in method.adapters:
        assert adapter.weight.grad is not None and adapter.weight.grad.abs().sum() > 0
    assert logits.shape == (len(y), 10)


def test_sa_mdrad_without_features_needs_no_adapters(batch, teachers):
    x, y = batch
    method = create_method("sa-mdrad", feature_weight=0)
    method.setup(_student(), teachers, 10, 16)
    assert len(method.adapters) == 0
    ctx = _ctx(x, y, _student(), teachers)
    loss, _ = method.loss(ctx, method.perturb(ctx))
    assert torch.isfinite(loss)


# --- dual-path ----------------------------------------------------------------------------------------------------

def test_path_indices_are_evenly_spaced_and_end_at_the_last_iterate():
    assert path_indices(10, None) == list(range(10))
    assert path_indices(10, 1) == [9]
    assert path_indices(10, 4) == [0, 3, 6, 9]
    assert path_indices(3, 7) == [0, 1, 2]


def test_dual_paths_give_the_configured_points_in_the_ball_and_the_targeted_path_reaches_for_the_target(batch, teachers):
    x, y = batch
    student = _trained_student(teachers).eval()
    target = (y + 1) % 10
    away, towards = dual_paths(student, x, y, target, EPS, STEP, steps=5, points=3)
    assert len(away) == len(towards) == 3
    for point in away + towards:
        assert (point - x).abs().max() <= EPS + 1e-6 and point.min() >= 0 and point.max() <= 1
    with torch.no_grad():
        p_clean, p_towards, p_away = (F.softmax(student(z), 1) for z in (x, towards[-1], away[-1]))
    idx = torch.arange(len(y))
    assert p_towards[idx, target].mean() > p_clean[idx, target].mean()
    assert p_away[idx, y].mean() < p_clean[idx, y].mean()


def test_a_random_start_moves_both_paths_off_the_clean_image_but_keeps_them_in_the_ball(batch, teachers):
    """With one step (the CPU-scale protocol) the clean-start paths are plain FGSM from x; random_start=True starts
    both from one random point of the ball (FGSM-RS), drawn from torch's seeded RNG."""
    x, y = batch
    student = _trained_student(teachers).eval()
    target = (y + 1) % 10
    plain, _ = dual_paths(student, x, y, target, EPS, STEP, steps=1, points=1)
    torch.manual_seed(0)
    away, towards = dual_paths(student, x, y, target, EPS, STEP, steps=1, points=1, random_start=True)
    torch.manual_seed(0)
    again, _ = dual_paths(student, x, y, target, EPS, STEP, steps=1, points=1, random_start=True)
    assert not torch.equal(away[0], plain[0]) and torch.equal(away[0], again[0])
    for point in away + towards:
        assert (point - x).abs().max() <= EPS + 1e-6 and point.min() >= 0 and point.max() <= 1
    assert create_method("dual-path", random_start=True).hparams()["random_start"] is True


def test_path_weights_emphasise_large_drops_and_drop_noisy_points():
    y = torch.tensor([0, 0, 0])
    clean_true_p = torch.tensor([0.9, 0.9, 0.9])
    point_probs = torch.tensor([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])  # small drop, large drop, teacher wrong
    w = path_weights(clean_true_p, point_probs, y)
    assert w[2] == 0 and w[1] > w[0] > 0
    assert torch.isclose(w[:2].mean(), torch.tensor(1.0))  # averages 1 where the teacher is reliable


def test_dual_path_uses_the_teachers_runner_up_and_every_selected_point(batch, teachers):
    x, y = batch
    method = create_method("dual-path", path_points=2)
    student = _student()
    ctx = _ctx(x, y, student, teachers, steps=4)
    x_adv = method.perturb(ctx)
    probs = teacher_probs(teachers, x)
    assert torch.equal(ctx.cache["target_class"], runner_up_class(probs, y))
    assert (ctx.cache["target_class"] != y).all()
    assert len(ctx.cache["away"]) == len(ctx.cache["towards"]) == 2
    assert torch.equal(x_adv, ctx.cache["away"][-1])
    loss, logits = method.loss(ctx, x_adv)
    assert torch.isfinite(loss) and logits.shape == (len(y), 10)


def test_dual_path_random_target_is_a_seeded_wrong_class_spread_over_the_others(batch, teachers):
    x, y = batch
    method = create_method("dual-path", path_points=1, target_class="random")
    assert method.hparams()["target_class"] == "random"
    targets = []
    for seed in (0, 0, 1):
        ctx = _ctx(x, y, _student(), teachers, steps=1)
        torch.manual_seed(seed)  # after _student(), which seeds its own initial weights
        method.perturb(ctx)
        targets.append(ctx.cache["target_class"])
    assert torch.equal(targets[0], targets[1]) and not torch.equal(targets[0], targets[2])
    assert all((t != y).all() and t.min() >= 0 and t.max() < 10 for t in targets)
    assert not torch.equal(targets[0], runner_up_class(teacher_probs(teachers, x), y))
    draws = random_wrong_class(torch.zeros(5000, dtype=torch.long), 10)
    assert draws.min() == 1 and draws.max() == 9 and torch.bincount(draws, minlength=10)[1:].min() > 400
    with pytest.raises(ValueError, match="target_class='least' must be one of runner-up, random"):
        create_method("dual-path", target_class="least")


def test_dual_path_without_adaptive_weights_is_plain_distillation_along_both_paths(batch, teachers):
    x, y = batch
    student = _student().eval()  # batch statistics would differ between one forward of both paths and two
    method = create_method("dual-path", path_points=1, adaptive_weights=False)
    assert method.hparams()["adaptive_weights"] is False
    ctx = _ctx(x, y, student, teachers, steps=2)
    x_adv = method.perturb(ctx)
    loss, _ = method.loss(ctx, x_adv)
    away, towards = ctx.cache["away"][0], ctx.cache["towards"][0]
    terms = [kl_div(student(p), teacher_probs(teachers, p)).mean() for p in (away, towards)]
    clean = kl_div(student(x), teacher_probs(teachers, x)).mean()
    expected = (5 / 6) * torch.stack(terms).mean() + (1 / 6) * clean
    assert torch.isclose(loss, expected, rtol=1e-4, atol=1e-6)
    weighted, _ = create_method("dual-path", path_points=1).loss(ctx, x_adv)
    assert not torch.isclose(weighted, expected, rtol=1e-4, atol=1e-6)  # the default weighs the points


# --- AKD, IAD, MTARD, AdaAD -----------------------------------------------------------------------------------

def test_akd_with_alpha_zero_is_exactly_pgd_at(batch):
    x, y = batch
    losses = []
    for name, kwargs in (("akd", {"alpha": 0.0}), ("pgd-at", {})):
        method, student = create_method(name, **kwargs), _student()
        torch.manual_seed(1)
        ctx = _ctx(x, y, student, [])
        losses.append(method.loss(ctx, method.perturb(ctx))[0])
    assert torch.allclose(losses[0], losses[1], atol=1e-6)


def test_akd_ensemble_averages_probabilities_not_logits(batch, teachers):
    x, y = batch
    method, student = create_method("akd", alpha=1.0), _student()
    ctx = _ctx(x, y, student, teachers)
    x_adv = method.perturb(ctx)
    loss, logits = method.loss(ctx, x_adv)
    probs = torch.stack([F.softmax(t(x_adv), 1) for t in teachers]).mean(0)
    expected = -(probs * F.log_softmax(logits, 1)).sum(1).mean()
    assert torch.allclose(loss, expected, atol=1e-5)


def test_iad_trusts_the_teacher_by_its_true_class_probability_after_warmup(batch, teachers):
    x, y = batch
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    assert torch.allclose(introspection_weights(probs, torch.zeros(3, dtype=torch.long), 0.5),
                          torch.tensor([1.0, 0.5**0.5, 0.0]))
    method, student = create_method("iad"), _student()
    torch.manual_seed(2)
    x_adv = method.perturb(_ctx(x, y, student, teachers))
    soft = teacher_probs(teachers, x)
    with torch.no_grad():
        warm = method.loss(_ctx(x, y, student, teachers, epoch=0, epochs=10), x_adv)[0]
        late = method.loss(_ctx(x, y, student, teachers, epoch=9, epochs=10), x_adv)[0]
        s_adv, s_clean = student(x_adv), student(x)
    assert torch.allclose(warm, kl_div(s_adv, soft).mean(), atol=1e-5)  # warm-up: plain ARD term
    trust = introspection_weights(teacher_probs(teachers, x_adv), y, method.beta)
    expected = kl_div(s_adv, soft).mean() + ((1 - trust) * kl_div(s_adv, F.softmax(s_clean, 1))).mean()
    assert torch.allclose(late, expected, atol=1e-5)


def test_mtard_moves_weight_to_the_term_that_has_fallen_least():
    method = create_method("mtard")
    assert "nat_weight" in method.state_dict() and "initial_losses" in method.state_dict()  # survive checkpoints
    method._rebalance(torch.tensor(2.0), torch.tensor(2.0), weight_lr=0.5)  # records the initial losses
    assert torch.isclose(method.nat_weight, torch.tensor(0.5))
    method._rebalance(torch.tensor(1.0), torch.tensor(2.0), weight_lr=0.5)  # adversarial term halved, clean not
    assert method.nat_weight > 0.5


def test_mtard_gives_each_teacher_its_role(batch, teachers):
    x, y = batch
    assert teacher_roles(teachers) == (teachers[0], teachers[1])
    assert teacher_roles(teachers[:1]) == (teachers[0], teachers[0])
    with pytest.raises(ValueError, match="robust teacher first"):
        teacher_roles(teachers + teachers[:1])
    method, student = create_method("mtard"), _student()
    ctx = _ctx(x, y, student, teachers)
    x_adv = method.perturb(ctx)
    with torch.no_grad():
        loss = method.loss(ctx, x_adv)[0]
        adv = kl_div(student(x_adv), teacher_probs(teachers[:1], x_adv)).mean()
        nat = kl_div(student(x), teacher_probs(teachers[1:], x)).mean()
    assert torch.allclose(loss, 0.5 * adv + 0.5 * nat, atol=1e-5)  # first step: initial losses, weights stay 1/2


def test_adaad_attack_finds_disagreement_with_frozen_batchnorm(batch, teachers):
    x, y = batch
    method, student = create_method("adaad"), _trained_student(teachers)
    bn_before = {k: v.clone() for k, v in student.state_dict().items() if "running" in k}
    x_adv = method.perturb(_ctx(x, y, student, teachers))
    assert student.training and not any(t.training for t in teachers)
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in bn_before.items())
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    with torch.no_grad(), eval_mode(student):
        gap = [kl_div(student(z), teacher_probs(teachers, z)).mean() for z in (x, x_adv)]
    assert gap[1] > gap[0]


# --- every method --------------------------------------------------------------------------------------------------

def test_every_new_method_is_registered_and_its_hparams_are_json():
    for name in NEW_METHODS:
        assert name in list_methods()
        json.dumps(create_method(name).hparams())
    assert create_method("dual-path", path_points=3).hparams()["path_points"] == 3


@pytest.mark.parametrize("name", NEW_METHODS)
def test_method_without_teacher_is_explained(name, batch):
    x, y = batch
    with pytest.raises(ValueError, match="teacher"):
        method = create_method(name)
        method.setup(_student(), [], 10, 16)
        method.perturb(_ctx(x, y, _student(), []))


@pytest.mark.parametrize("name", NEW_METHODS)
def test_two_training_steps_reduce_the_loss(name, batch, teachers):
    x, y = batch
    student = _student()
    method = create_method(name)
    method.setup(student, teachers, 10, 16)
    optimizer = torch.optim.SGD(list(student.parameters()) + list(method.parameters()), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(2):
        torch.manual_seed(3)  # the same random start both times: only the weights differ
        ctx = _ctx(x, y, student, teachers, steps=2)
        loss, _ = method.loss(ctx, method.perturb(ctx))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[1] < losses[0], losses


def test_needs_teacher_is_a_property_of_the_method_and_its_hyperparameters():
    assert create_method("rslad").needs_teacher and create_method("akd").needs_teacher
    assert not create_method("akd", alpha=0).needs_teacher  # alpha=0 is PGD-AT
    assert not any(create_method(m).needs_teacher for m in ("pgd-at", "trades", "standard"))
    from robustcompress import RobustCompressor

    RobustCompressor([], "test_resnet", method="akd", method_kwargs={"alpha": 0})  # accepted without teachers
    with pytest.raises(ValueError, match="distils from teachers"):
        RobustCompressor([], "test_resnet", method="akd")


def test_adversarial_clean_kl_mix_is_one_registered_term():
    from robustcompress.methods import AdvCleanKL, create_loss, kd_kl, list_losses

    assert {"kd_kl", "adv_clean_kl"} <= set(list_losses()) and create_loss("kd_kl") is kd_kl
    torch.manual_seed(0)
    student = torch.nn.Linear(6, 4)
    x, x_adv = torch.rand(5, 6), torch.rand(5, 6)
    q_adv, q_clean = torch.rand(5, 4).softmax(1), torch.rand(5, 4).softmax(1)
    mix = create_loss("adv_clean_kl", adv_weight=0.25, temperature=2.0)
    assert isinstance(mix, AdvCleanKL)
    loss, logits = mix(student, x_adv, x, q_adv, q_clean)
    expected = 0.25 * kl_div(student(x_adv), q_adv, 2.0).mean() * 4 + 0.75 * kl_div(student(x), q_clean, 2.0).mean() * 4
    assert torch.allclose(loss, expected) and torch.equal(logits, student(x_adv))
    adv_only, _ = AdvCleanKL(1.0)(student, x_adv, x, q_adv)
    assert torch.equal(adv_only, kl_div(student(x_adv), q_adv).mean())


@pytest.mark.parametrize("value, words", [(float("nan"), "beta (method 'trades') must be a finite number; got nan"),
                                          ("nan", "beta (method 'trades') must be a number; got 'nan'"),
                                          (float("inf"), "must be a finite number")])
def test_a_hyperparameter_that_is_not_a_finite_number_is_refused_naming_it(value, words):
    with pytest.raises(ValueError) as info:
        create_method("trades", beta=value)
    assert words in str(info.value)


def test_cli_refuses_method_arg_nan_before_loading(tmp_path, capsys):
    from robustcompress.cli import main

    assert main(["fit", "digits", "--method", "trades", "--method-arg", "beta=nan", "--out", str(tmp_path)]) == 2
    assert "beta (method 'trades') must be a number" in capsys.readouterr().err
