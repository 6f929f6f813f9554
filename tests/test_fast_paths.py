"""The fast path (bf16 autocast, channels_last, inference-mode teachers, few host syncs) against the fp32 reference."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from robustcompress.attacks import kl_div, pgd
from robustcompress.methods import create_method
from robustcompress.methods.common import teacher_logits, teacher_probs, teacher_probs_batched
from robustcompress.models import create_model
from robustcompress.trainer import TrainConfig, train
from robustcompress.trainer.cpu import CpuInfo, limit_isa, parse_cpuinfo
from robustcompress.trainer.fast import plan_speed
from robustcompress.trainer.loop import TrainStep, iterate_shards

CPU = torch.device("cpu")
CONFIG = dict(epochs=1, batch_size=32, lr=0.05, eps=8 / 255, step_size=2 / 255, steps=2, progress=False)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _subset(digits16, n=96):
    x, y = digits16.train.tensors
    return TensorDataset(x[:n], y[:n])


def _model(seed=0):
    """A tiny CNN with BatchNorm (timm models are too slow for a 2-core CI under bf16 on CPU)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10),
    )
    return create_model(net, 10, 16)


AVX2 = "fpu sse2 avx avx2 fma"
ZEN4 = AVX2 + " avx512f avx512_vnni avx512_bf16"
SAPPHIRE_RAPIDS = AVX2 + " avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8"


def _cpuinfo_text(flags: str, model: str = "Some CPU") -> str:
    return "".join(f"processor\t: {i}\nmodel name\t: {model}\nflags\t\t: {flags}\n\n" for i in range(2))


def test_cpu_flags_decide_native_bf16():
    assert parse_cpuinfo(_cpuinfo_text(AVX2)).native_bf16 is None
    assert parse_cpuinfo(_cpuinfo_text(ZEN4, "AMD EPYC 9654")).describe() == {
        "model": "AMD EPYC 9654", "flags": ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"],
        "native_bf16": "avx512_bf16"}
    assert parse_cpuinfo(_cpuinfo_text(SAPPHIRE_RAPIDS)).native_bf16 == "amx_bf16"
    assert "bf16 autocast" in plan_speed("fast", CPU, "bf16", cpu=CpuInfo("X", ("amx_bf16",))).summary()
    assert "amx_bf16" in plan_speed("fast", CPU, cpu=CpuInfo("X", ("amx_bf16",))).summary()
    assert "fp32" in plan_speed("fast", CPU, cpu=CpuInfo("X", ("avx2",))).summary()


def test_speed_plans():
    reference = plan_speed("reference", CPU)
    assert reference.amp_dtype is None and not reference.channels_last and not reference.compile
    assert reference.sync_every == 1
    # "fast" is channels_last on every CPU; auto trains in bf16 only where the CPU has bf16 units and the images are
    # at least 16 px (bf16 runs of one seed were not bit-identical at 8 px), and the plan says why it kept fp32.
    for flags in (AVX2, ZEN4, SAPPHIRE_RAPIDS):
        cpu = parse_cpuinfo(_cpuinfo_text(flags))
        native = flags != AVX2
        for px, bf16 in ((None, False), (8, False), (15, False), (16, native), (32, native), (224, native)):
            plan = plan_speed("fast", CPU, cpu=cpu, input_px=px)
            assert (plan.amp_dtype is torch.bfloat16) is bf16 and plan.channels_last, (flags, px)
            assert ("auto keeps fp32" in plan.summary()) is (native and not bf16), (flags, px)
            assert plan_speed("fast", CPU, precision="fp32", cpu=cpu, input_px=px).amp_dtype is None
            assert plan_speed("fast", CPU, precision="bf16", cpu=cpu, input_px=px).amp_dtype is torch.bfloat16
            assert plan_speed("reference", CPU, cpu=cpu, input_px=px).amp_dtype is None
        assert plan.describe()["cpu"]["flags"] == list(cpu.flags)
    assert "under 16 px" in plan_speed("fast", CPU, cpu=parse_cpuinfo(_cpuinfo_text(ZEN4)), input_px=8).summary()
    assert not plan_speed("fast", CPU, channels_last=False).channels_last
    forced = plan_speed("fast", CPU, precision="bf16", channels_last=True, cpu=parse_cpuinfo(_cpuinfo_text(AVX2)))
    assert forced.amp_dtype == torch.bfloat16 and forced.channels_last and forced.sync_every > 1
    assert "without native bf16 units: oneDNN emulates it, slower than fp32" in forced.summary()  # said once, at start
    assert plan_speed("fast", CPU, precision="bf16", cpu=parse_cpuinfo(_cpuinfo_text(ZEN4))).why == ""
    assert plan_speed("compile", CPU).compile
    with pytest.raises(ValueError, match="reference' is fp32"):
        plan_speed("reference", CPU, precision="bf16")
    with pytest.raises(ValueError, match="unknown speed 'turbo'.*reference"):
        TrainConfig(speed="turbo")


def test_pgd_under_bf16_autocast_keeps_an_fp32_perturbation_that_attacks(digits16):
    model = _model().eval()
    x, y = digits16.test.tensors[0][:32], digits16.test.tensors[1][:32]
    x = x.contiguous(memory_format=torch.channels_last)
    model.to(memory_format=torch.channels_last)
    eps = 8 / 255
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_adv = pgd(model, x, y, eps=eps, step_size=eps / 4, steps=5)
    assert x_adv.dtype == torch.float32
    assert (x_adv - x).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert not torch.equal(x_adv, x)
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)


def test_teacher_outputs_from_inference_mode_are_usable_as_loss_targets(digits16):
    teachers = [_model(1), _model(2)]
    student = _model(3)
    x = digits16.test.tensors[0][:8]
    target = teacher_probs(teachers, x)
    assert not target.requires_grad and not target.is_inference() and target.dtype == torch.float32
    kl_div(student(x), target).mean().backward()  # fails if an inference tensor were saved for backward
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)
    assert all(p.grad is None for t in teachers for p in t.parameters())

    x_adv = (x + 0.01).clamp(0, 1)
    fused_clean, fused_adv = teacher_probs_batched(teachers, [x, x_adv])
    assert torch.allclose(fused_clean, target, atol=1e-5)
    assert torch.allclose(fused_adv, teacher_probs(teachers, x_adv), atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert all(z.dtype == torch.float32 for z in teacher_logits(teachers, x))


def test_teachers_see_large_batches_in_chunks_on_a_cpu():
    """Dual-path's path points reach the teachers as one large batch; on a CPU they run in chunks of
    CPU_TEACHER_CHUNK images (faster there), with the logits of one forward over the whole batch."""
    from robustcompress.methods.common import CPU_TEACHER_CHUNK

    teacher = _model(1).eval()
    sizes = []
    teacher.register_forward_pre_hook(lambda module, inputs: sizes.append(len(inputs[0])))
    x = torch.rand(2 * CPU_TEACHER_CHUNK + 44, 3, 16, 16)
    chunked = teacher_logits([teacher], x)[0]
    assert sizes == [CPU_TEACHER_CHUNK, CPU_TEACHER_CHUNK, 44]
    with torch.no_grad():
        assert torch.allclose(chunked, teacher(x), atol=1e-5)
    sizes.clear()
    teacher_logits([teacher], x[:CPU_TEACHER_CHUNK])
    assert sizes == [CPU_TEACHER_CHUNK]


class Spy(torch.nn.Module):
    """Wraps a method and records what its two halves see."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.name, self.needs_teacher = inner.name, inner.needs_teacher
        self.seen = []

    def setup(self, *args):
        self.inner.setup(*args)

    def end_epoch(self, epoch):
        self.inner.end_epoch(epoch)

    def perturb(self, ctx):
        x_adv = self.inner.perturb(ctx)
        self.seen.append({
            "autocast": torch.is_autocast_enabled("cpu"),
            "channels_last": ctx.x.is_contiguous(memory_format=torch.channels_last),
            "x_adv_dtype": x_adv.dtype,
            "eps_ok": bool((x_adv - ctx.x).abs().max() <= ctx.eps + 1e-6),
        })
        return x_adv

    def loss(self, ctx, x_adv):
        return self.inner.loss(ctx, x_adv)


def test_bf16_channels_last_training_follows_the_fp32_reference(digits16):
    data = _subset(digits16)
    teacher = _model(7).eval()
    runs = {}
    for name, extra in {"reference": {"speed": "reference"},
                        "fast": {"speed": "fast", "precision": "bf16", "channels_last": True}}.items():
        student = _model()
        spy = Spy(create_method("akd", alpha=0.5))
        history = train(student, [teacher], spy, data, 10, TrainConfig(**CONFIG, **extra), CPU)
        runs[name] = (student, spy.seen, history[0]["loss"])
    student, seen, fast_loss = runs["fast"]
    assert all(s["autocast"] and s["channels_last"] and s["x_adv_dtype"] == torch.float32 and s["eps_ok"] for s in seen)
    assert all(p.dtype == torch.float32 for p in student.parameters())
    # Models come back in the default layout, ready for export.
    assert all(p.is_contiguous() for p in list(student.parameters()) + list(teacher.parameters()))
    _, seen_ref, reference_loss = runs["reference"]
    assert not any(s["autocast"] or s["channels_last"] for s in seen_ref)
    assert abs(fast_loss - reference_loss) < 0.1 * reference_loss


def _count_host_reads(monkeypatch):
    counter = {"n": 0}
    for name in ("item", "__bool__", "tolist"):
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, **kwargs):
            counter["n"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    return counter


def test_fast_training_reads_the_loss_back_only_at_sync_points(digits16, monkeypatch):
    """The reads a run makes beyond its once-per-run ones (the training set's check at the start, the epoch
    totals at the end) grow by one per step in reference mode and by one per sync point in fast mode."""
    counts = {}
    for speed in ("reference", "fast"):
        for images in (80, 160):  # 10 and 20 steps of 8
            counter = _count_host_reads(monkeypatch)
            config = TrainConfig(**{**CONFIG, "batch_size": 8, "steps": 1, "augment": False}, speed=speed)
            train(_model(), [], create_method("pgd-at"), _subset(digits16, images), 10, config, CPU)
            counts[speed, images] = counter["n"]
            monkeypatch.undo()
    assert counts["reference", 160] - counts["reference", 80] >= 10  # one NaN check per step, as reference code does
    assert counts["fast", 160] - counts["fast", 80] <= 1  # the NaN guard at steps 0 and 10 (FAST_SYNC_EVERY)
    assert counts["fast", 80] <= 5  # step 0, the epoch totals and the training set's check when train() starts


class PlainDataset(torch.utils.data.Dataset):
    def __init__(self, tensors):
        self.tensors_ = tensors

    def __len__(self):
        return len(self.tensors_[0])

    def __getitem__(self, i):
        return self.tensors_[0][i], int(self.tensors_[1][i])


def test_any_dataset_is_batched_like_an_in_memory_one(digits16):
    data = _subset(digits16, 40)
    from_tensors = list(iterate_shards(data, 16, True, 3, CPU))
    from_items = list(iterate_shards(PlainDataset(data.tensors), 16, True, 3, CPU))
    assert [len(y) for _, y, _, _ in from_items] == [16, 16, 8]
    for (xa, ya, wa, ia), (xb, yb, wb, ib) in zip(from_tensors, from_items):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and wa == wb == 1.0 and torch.equal(ia, ib)
        assert torch.equal(ya, data.tensors[1][ia])  # the indices name the samples of the batch


def test_train_step_runs_the_whole_step_without_the_loop(digits16):
    student = _model()
    method = create_method("pgd-at")
    config = TrainConfig(**CONFIG, speed="reference")
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)
    step = TrainStep(student, [], method, optimizer, scheduler, config, plan_speed("reference", CPU), CPU, 10)
    x, y = digits16.train.tensors[0][:16], digits16.train.tensors[1][:16]
    before = [p.detach().clone() for p in student.parameters()]
    loss = step(x, y)
    assert loss.dim() == 0 and torch.isfinite(loss) and not loss.requires_grad
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))


@pytest.mark.gpu
@needs_cuda
def test_cuda_fast_step_keeps_data_on_gpu_and_never_syncs(digits16):
    device = torch.device("cuda")
    plan = plan_speed("fast", device)
    assert plan.channels_last and plan.data_on_device
    assert plan.amp_dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else None)
    from robustcompress.trainer.fast import place_dataset, speed_context

    data = place_dataset(_subset(digits16, 256), device, plan)
    assert data.tensors[0].device.type == "cuda"
    student, teacher = _model().to(device), _model(1).to(device).eval().requires_grad_(False)
    method = create_method("ard", alpha=0.9)  # teacher forward, PGD, KL and CE: the shared code paths
    config = TrainConfig(**CONFIG)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=100)
    x, y = data.tensors[0][:64], data.tensors[1][:64]
    with speed_context(plan, student, [teacher]) as (s, t):
        step = TrainStep(s, t, method, optimizer, scheduler, config, plan, device, 10)
        step(x, y)  # warm-up: cuDNN autotuning may sync
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(3):
                step(x, y)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert next(student.parameters()).is_contiguous()


@pytest.mark.gpu
@pytest.mark.slow
@needs_cuda
def test_compiled_training_runs_on_cuda(digits16):
    history = train(_model(), [_model(1)], create_method("akd"), _subset(digits16, 256), 10,
                    TrainConfig(**CONFIG, speed="compile"), torch.device("cuda"))
    assert torch.isfinite(torch.tensor(history[-1]["loss"]))


class AutocastSpy:
    """Forward pre-hook that records, per call, whether CPU autocast was on and the input's dtype."""

    def __init__(self, module):
        self.calls = []
        module.register_forward_pre_hook(self)

    def __call__(self, module, inputs):
        self.calls.append((torch.is_autocast_enabled("cpu"), inputs[0].dtype))


def test_bf16_training_is_recorded_and_every_evaluation_attack_runs_in_fp32(digits16, tmp_path):
    """precision='bf16' autocasts the training attack and loss, but evaluate() and the best-epoch selection attack
    the student in fp32 (an attack in bf16 can under-report robustness), and the bundle records the choice."""
    from robustcompress import RobustCompressor

    train_set, test_set = _subset(digits16, 96), TensorDataset(*(t[:32] for t in digits16.test.tensors))
    rc = RobustCompressor([], _model(), method="pgd-at", epochs=1, steps=2, batch_size=32, device="cpu",
                          precision="bf16", verify_attacks=(), progress=False, out_dir=tmp_path / "run",
                          select="best-robust", val_size=32)
    spy = AutocastSpy(rc.student_spec.net[0])
    original_train_epoch = __import__("robustcompress.trainer.loop", fromlist=["_train_epoch"])._train_epoch
    marks = []

    def marking(*args, **kwargs):  # where the epoch's training starts and ends in the call log
        marks.append(len(spy.calls))
        record = original_train_epoch(*args, **kwargs)
        marks.append(len(spy.calls))
        return record

    import robustcompress.trainer.loop as loop
    loop._train_epoch, saved = marking, loop._train_epoch
    try:
        rc.fit(train_set, val_data=test_set)
    finally:
        loop._train_epoch = saved
    training, selection = spy.calls[marks[0]:marks[1]], spy.calls[marks[1]:]
    assert training and all(autocast for autocast, _ in training)
    assert selection and not any(autocast for autocast, _ in selection)  # the validation PGD-10 of best-robust
    before = len(spy.calls)
    rc.evaluate(test_set, attacks=("pgd5", "apgd-ce"), n_examples=16)
    evaluation = spy.calls[before:]
    assert evaluation and all(not autocast and dtype == torch.float32 for autocast, dtype in evaluation)
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["train_config"]["precision"] == "bf16"
    assert record["training_speed"]["precision"] == "bfloat16" and "flags" in record["training_speed"]["cpu"]


@pytest.mark.parametrize("flags, size, trained", [(ZEN4, 16, "bfloat16"), (ZEN4, 8, "fp32"), (AVX2, 16, "fp32")])
def test_auto_precision_follows_the_cpu_and_the_image_size_through_fit(flags, size, trained, digits16, digits8,
                                                                      monkeypatch, tmp_path):
    """fit() with the default precision trains in bf16 on a CPU with bf16 units when its images are 16 px or more,
    and in fp32 on smaller images (not reproducible in bf16) or without bf16 units; the bundle records which."""
    import robustcompress.trainer.fast as fast
    from robustcompress import RobustCompressor

    monkeypatch.setattr(fast, "cpu_info", lambda: parse_cpuinfo(_cpuinfo_text(flags)))
    train_set = _subset(digits16, 64) if size == 16 else digits8[0]
    rc = RobustCompressor([], _model(), method="pgd-at", epochs=1, steps=1, batch_size=32, device="cpu",
                          verify_attacks=(), progress=False, out_dir=tmp_path / "run")
    spy = AutocastSpy(rc.student_spec.net[0])
    rc.fit(train_set)
    assert any(autocast for autocast, _ in spy.calls) is (trained == "bfloat16")
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["train_config"]["precision"] == "auto"
    assert record["training_speed"]["precision"] == trained
    assert ("under 16 px" in record["training_speed"].get("why", "")) is (flags == ZEN4 and size == 8)


def test_the_bundle_records_the_precision_training_used(digits16, monkeypatch, tmp_path):
    """fit() resolves the speed plan once: the bundle's training_speed is the plan the student trained with, even
    where the CPU would be read differently a second time (here: every other reading lacks bf16 units)."""
    import itertools

    import robustcompress.trainer.fast as fast
    from robustcompress import RobustCompressor

    readings = itertools.cycle([parse_cpuinfo(_cpuinfo_text(ZEN4)), parse_cpuinfo(_cpuinfo_text(AVX2))])
    monkeypatch.setattr(fast, "cpu_info", lambda: next(readings))
    rc = RobustCompressor([], _model(), method="pgd-at", epochs=1, steps=1, batch_size=32, device="cpu",
                          verify_attacks=(), progress=False, out_dir=tmp_path / "run")
    spy = AutocastSpy(rc.student_spec.net[0])
    rc.fit(_subset(digits16, 64))
    used = "bfloat16" if any(autocast for autocast, _ in spy.calls) else "fp32"
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["training_speed"]["precision"] == used == rc.training_speed["precision"]


def test_isa_limit_makes_a_cpu_look_like_the_smaller_one():
    """ONEDNN_MAX_CPU_ISA=AVX2 on an AVX512-BF16 machine runs AVX2 kernels: no native bf16, so auto/bf16 plans and
    the recorded flags are an AVX2 machine's, and the record says it was limited and what the hardware has."""
    zen4 = parse_cpuinfo(_cpuinfo_text(ZEN4, "AMD EPYC"))
    limited = limit_isa(zen4, {"ONEDNN_MAX_CPU_ISA": "avx2", "ATEN_CPU_CAPABILITY": "avx2"})
    assert limited.flags == ("avx2",) and limited.native_bf16 is None
    assert limited.describe()["isa_limit"].startswith("ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2")
    assert "avx512_bf16" in limited.describe()["isa_limit"]  # the hardware's flags stay on record
    assert limited.flags_text().startswith("avx2; kernels limited by ONEDNN_MAX_CPU_ISA=AVX2")
    assert CpuInfo("x", ()).flags_text(none="no AVX2") == "no AVX2"
    assert limit_isa(zen4, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}).native_bf16 is None
    assert limit_isa(zen4, {}) == zen4 and "isa_limit" not in zen4.describe()
    spr = parse_cpuinfo(_cpuinfo_text(SAPPHIRE_RAPIDS))
    assert limit_isa(spr, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}).native_bf16 == "avx512_bf16"
    assert limit_isa(spr, {"ONEDNN_MAX_CPU_ISA": "ALL"}).flags == spr.flags


class _ResidualNet(torch.nn.Module):
    """Conv, BatchNorm, in-place ReLU and an in-place residual add, as in a ResNet block, then pool and linear."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16),
                                        torch.nn.ReLU(inplace=True))
        self.conv, self.bn = torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.BatchNorm2d(16)
        self.head = torch.nn.Linear(16, 10)
        with torch.no_grad():  # non-trivial running statistics, so the eval-mode batch norm does something
            for bn in (self.stem[1], self.bn):
                bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        x = self.stem(x)
        out = self.bn(self.conv(x))
        out += x
        return self.head(torch.relu_(out).mean((2, 3)))


def test_bf16_rounding_does_autocast_arithmetic_with_fp32_kernels():
    """A frozen teacher's forward with fp32 kernels on bf16-rounded values gives what bf16 autocast gives (up to
    the order of fp32 sums), much closer to it than fp32 does, and hands back bf16 tensors as autocast does."""
    from robustcompress.trainer.bf16_rounding import bf16_rounded_teachers

    net = _ResidualNet().eval().to(memory_format=torch.channels_last)
    x = torch.rand(64, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        fp32 = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = net(x)
            with bf16_rounded_teachers([net]):
                assert "forward" in vars(net)
                rounded = net(x)
        assert "forward" not in vars(net)  # the module's own forward is back
    assert autocast.dtype == rounded.dtype == torch.bfloat16
    rounded, autocast = rounded.float(), autocast.float()
    assert (rounded == autocast).float().mean() > 0.9
    assert (rounded - autocast).abs().mean() < 0.25 * (fp32 - autocast).abs().mean()
    assert torch.equal(rounded.argmax(1), autocast.argmax(1))


def test_bf16_rounding_differentiates_a_frozen_model_in_its_input_like_autocast():
    """AdaAD's attack back-propagates through its teachers to the image: in the rounded mode the input gradient is
    autocast's (its signs, which PGD steps along, all but equal; its values far closer than fp32's), and a model whose
    parameters need gradients, or a call without autocast, gets its own forward."""
    from robustcompress.trainer.bf16_rounding import bf16_rounded_teachers

    net = _ResidualNet().eval().requires_grad_(False)
    x = torch.rand(64, 3, 16, 16)

    def input_gradient(rounded, autocast=True):
        xg = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            if rounded:
                with bf16_rounded_teachers([net]):
                    out = net(xg)
            else:
                out = net(xg)
        assert out.dtype == (torch.bfloat16 if autocast else torch.float32)
        F.cross_entropy(out.float(), torch.arange(64) % 10).backward()
        return xg.grad

    autocast, rounded, fp32 = input_gradient(False), input_gradient(True), input_gradient(False, autocast=False)
    assert rounded.dtype == torch.float32
    assert (rounded.sign() == autocast.sign()).float().mean() > 0.99
    assert (rounded - autocast).abs().mean() < 0.25 * (fp32 - autocast).abs().mean()
    with bf16_rounded_teachers([net]):
        assert torch.equal(net(x), net.__class__.forward(net, x))  # no autocast: fp32 as before
    trainable = _ResidualNet().eval()  # parameters that need gradients: autocast's own path, bit for bit
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = trainable(x)
        with bf16_rounded_teachers([trainable]):
            assert torch.equal(trainable(x), expected)


def test_bf16_rounding_keeps_a_models_own_tensors_fp32_when_it_writes_them():
    """Under autocast a buffer written in place keeps its fp32 value; so it does in the rounded forward (only the
    activations are rounded)."""
    from robustcompress.trainer.bf16_rounding import bf16_rounded_teachers

    class Counting(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)
            self.register_buffer("seen", torch.tensor(1.001))  # not a bf16 value: rounding would make it 1.0

        def forward(self, x):
            self.seen.add_(0.25)
            return self.linear(x)

    net = Counting().eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16), bf16_rounded_teachers([net]):
        out = net(torch.rand(2, 4))
    assert out.dtype == torch.bfloat16
    assert net.seen.item() == (torch.tensor(1.001) + 0.25).item()


def test_speed_plan_rounds_teacher_inference_only_where_bf16_is_emulated():
    avx2, zen4 = parse_cpuinfo(_cpuinfo_text(AVX2)), parse_cpuinfo(_cpuinfo_text(ZEN4))
    forced = plan_speed("fast", CPU, precision="bf16", cpu=avx2)
    assert forced.teacher_bf16_rounding
    assert forced.describe()["teacher_inference"] == "fp32 kernels on bf16-rounded values"
    assert "teachers' inference as fp32 kernels on bf16-rounded values" in forced.summary()
    for plan in (plan_speed("fast", CPU, precision="bf16", cpu=zen4),  # native bf16: oneDNN's kernels are the fast ones
                 plan_speed("fast", CPU, precision="fp32", cpu=avx2), plan_speed("fast", CPU, cpu=avx2, input_px=32),
                 plan_speed("compile", CPU, precision="bf16", cpu=avx2), plan_speed("reference", CPU, cpu=avx2)):
        assert not plan.teacher_bf16_rounding and "teacher_inference" not in plan.describe()


def test_forced_bf16_training_on_a_cpu_without_bf16_units_rounds_the_teachers_only(digits16, monkeypatch, tmp_path):
    """fit(precision='bf16') on a CPU without bf16 units: the teachers' inference forwards run rounded, the student
    trains under autocast as before, the teachers get their own forward back, and the bundle records it."""
    import robustcompress.trainer.bf16_rounding as rounding
    import robustcompress.trainer.fast as fast
    from robustcompress import RobustCompressor

    monkeypatch.setattr(fast, "cpu_info", lambda: parse_cpuinfo(_cpuinfo_text(AVX2)))
    calls = {"rounded": 0}
    real_mode = rounding.RoundToBf16

    class CountingMode(real_mode):
        def __enter__(self):
            calls["rounded"] += 1
            return super().__enter__()

    monkeypatch.setattr(rounding, "RoundToBf16", CountingMode)
    teacher = _model(7).eval()
    rc = RobustCompressor([teacher], _model(), method="akd", epochs=1, steps=1, batch_size=32, device="cpu",
                          precision="bf16", verify_attacks=(), progress=False, out_dir=tmp_path / "run")
    spy = AutocastSpy(rc.student_spec.net[0])
    rc.fit(_subset(digits16, 64))
    assert calls["rounded"] == 2  # AKD queries the teacher once per step, on x_adv: two batches of 32
    # The student's forwards (one attack step and the loss, for each of the two batches) ran under autocast.
    assert sum(autocast for autocast, _ in spy.calls) == 4
    assert "forward" not in vars(teacher)
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["training_speed"]["precision"] == "bfloat16"
    assert record["training_speed"]["teacher_inference"] == "fp32 kernels on bf16-rounded values"
