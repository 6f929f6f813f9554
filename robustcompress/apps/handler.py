"""The demo's logic without a UI: load a bundle, turn any picture into a model input, attack it, compare the models."""
from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import TensorDataset

from robustcompress.attacks import craft
from robustcompress.attacks.common import eval_mode
from robustcompress.data import load_data
from robustcompress.data.core import DATASET_NAMES
from robustcompress.data.tensors import as_float_images
from robustcompress.export.onnx import (
    check_classifier_signature, is_robustcompress_export, onnx_logits, onnx_session, read_metadata,
)
from robustcompress.models import ImageClassifier
from robustcompress_runtime.images import MAX_PIXELS, open_picture, picture_to_array  # noqa: F401 (MAX_PIXELS: API)

log = logging.getLogger("robustcompress")

ATTACKS = ("FGSM", "PGD", "APGD-CE")
TARGETS = {
    "undefended": "the undefended model (white-box; the student sees the same image: transfer)",
    "student": "the robust student (white-box)",
}
MAX_EPS_255 = 16.0
MAX_STEPS = 100
# pyautoattack's APGD-CE sets its step-size checkpoints from n_iter when it is built; our wrapper keeps its default.
APGD_STEPS = 100
PROB_KEYS = ("student_clean", "student_adv", "undefended_clean", "undefended_adv", "onnx_adv")


@dataclass
class DemoModels:
    """Everything the demo needs from a bundle: both models, the exported student and the bundle's own numbers."""

    student: ImageClassifier
    undefended: ImageClassifier
    undefended_name: str
    class_names: list[str]
    input_size: int
    onnx_path: Path
    onnx_session: Any
    bundle_dir: Path
    method: str = ""
    dataset: str = ""
    #: Where the bundle's data can be reloaded from (an image folder or .npz), as DataBundle.describe() recorded it.
    data_source: str | None = None
    eps: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] | None = None
    plot_path: Path | None = None

    @property
    def device(self) -> torch.device:
        return next(self.student.parameters()).device


@dataclass
class AttackResult:
    """One attacked image: the model input before and after the attack and every model's class probabilities."""

    x_clean: torch.Tensor  # (1, 3, S, S) in [0, 1]: exactly what the models saw
    x_adv: torch.Tensor
    probs: dict[str, torch.Tensor]  # PROB_KEYS -> (num_classes,) probabilities
    class_names: list[str]
    attack: str
    eps: float
    steps: int
    target: str
    verdict: str = ""
    notes: list[str] = field(default_factory=list)

    def prediction(self, key: str) -> str:
        """The top class name for one of PROB_KEYS."""
        return self.class_names[int(self.probs[key].argmax())]

    @property
    def student_flipped(self) -> bool:
        return self.prediction("student_clean") != self.prediction("student_adv")

    @property
    def undefended_flipped(self) -> bool:
        return self.prediction("undefended_clean") != self.prediction("undefended_adv")

    def top_k(self, key: str, k: int = 3) -> dict[str, float]:
        """The k most likely classes with their probabilities, as gr.Label expects."""
        probs = self.probs[key]
        values, indices = probs.topk(min(k, len(probs)))
        return {self.class_names[int(i)]: float(v) for v, i in zip(values, indices)}


# -- loading a bundle ----------------------------------------------------------------------------------------------
def find_onnx(bundle_dir: Path) -> Path | None:
    """student.onnx in the bundle or next to it (the quickstart writes quickstart_out/student.onnx beside bundle/)."""
    for candidate in (bundle_dir / "student.onnx", bundle_dir.parent / "student.onnx", *sorted(bundle_dir.glob("*.onnx"))):
        if candidate.is_file():
            return candidate
    return None


def find_plot(bundle_dir: Path) -> Path | None:
    """The report's accuracy-vs-eps PNG in the bundle or its parent folder, preferring names that mention eps."""
    pngs = sorted(bundle_dir.glob("*.png")) + sorted(bundle_dir.parent.glob("*.png"))
    preferred = [p for p in pngs if "eps" in p.stem.lower()]
    return (preferred or pngs or [None])[0]


def _read_report(bundle_dir: Path) -> dict[str, Any] | None:
    """The quickstart's report.json when this bundle is the one it describes (it holds the teachers' numbers)."""
    path = bundle_dir.parent / "report.json"
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        log.warning("ignoring %s: not valid JSON (%s)", path, exc)
        return None
    if not isinstance(report, dict) or Path(str(report.get("bundle", ""))).name != bundle_dir.name:
        return None
    return report


def load_demo_models(bundle_dir: str | Path, onnx_path: str | Path | None = None, device: str = "cpu") -> DemoModels:
    """Load a bundle written by RobustCompressor.save and the ONNX export of its student (exported now if missing).

    The undefended model is the bundle's first teacher: teachers are trained with plain cross-entropy.
    """
    from robustcompress import RobustCompressor

    bundle = Path(bundle_dir)
    if not bundle.is_dir():
        raise FileNotFoundError(
            f"bundle folder {bundle} does not exist; pass a folder written by 'robustcompress fit' or "
            "'robustcompress quickstart' (its bundle/ folder)"
        )
    rc = RobustCompressor.load(bundle, device=device)
    assert rc.student is not None
    if not rc.teachers:
        raise ValueError(
            f"bundle {bundle} holds no teacher, so the demo has no undefended model to compare the student with; "
            "use a bundle distilled from standard teachers, such as the quickstart's"
        )
    names = list(rc.teacher_specs) or [t.name for t in rc.teachers]
    num_classes = rc.student.num_classes
    class_names = [str(c) for c in rc.data_info.get("class_names") or []]
    if len(class_names) != num_classes:
        class_names = [str(i) for i in range(num_classes)]

    if onnx_path is not None:
        onnx_file = Path(onnx_path)
        if not onnx_file.is_file():
            raise FileNotFoundError(f"ONNX file {onnx_file} does not exist; export one with 'robustcompress export {bundle}'")
    else:
        found = find_onnx(bundle)
        if found is None:
            found = Path(tempfile.mkdtemp(prefix="robustcompress-demo-")) / "student.onnx"
            log.warning("no student.onnx in or next to %s; exporting the student to %s", bundle, found)
            rc.export_onnx(found)
        onnx_file = found
    size = rc.student.input_size
    if not is_robustcompress_export(read_metadata(onnx_file)):
        raise ValueError(
            f"{onnx_file} has no robustcompress metadata, so it was not written by 'robustcompress export' and is not "
            f"this bundle's student; export the student with 'robustcompress export {bundle}' (or leave --onnx out)"
        )
    session = onnx_session(onnx_file)
    check_classifier_signature(session, onnx_file, size)
    probe = onnx_logits(onnx_file, np.zeros((1, 3, rc.student.input_size, rc.student.input_size), np.float32), session)
    if probe.shape[1] != num_classes:
        raise ValueError(
            f"{onnx_file} predicts {probe.shape[1]} classes but the bundle's student predicts {num_classes}; "
            f"it was exported from another model. Re-export with 'robustcompress export {bundle}'"
        )
    return DemoModels(
        student=rc.student.eval(),
        undefended=rc.teachers[0].eval(),
        undefended_name=str(names[0]) if names else rc.teachers[0].name,
        class_names=class_names,
        input_size=rc.student.input_size,
        onnx_path=onnx_file,
        onnx_session=session,
        bundle_dir=bundle,
        method=rc.method_name,
        dataset=str(rc.data_info.get("name", "")),
        data_source=rc.data_info.get("source"),
        eps=rc.config.eps,
        metrics=dict(rc.metrics or {}),
        report=_read_report(bundle),
        plot_path=find_plot(bundle),
    )


def gallery_images(dataset: str, input_size: int, per_class: int = 1, limit: int = 20,
                   source: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``per_class`` test images of each class (for the gallery), at most ``limit``.

    ``dataset`` is a named dataset ('digits', ...); ``source``, when given, is the image folder or .npz the bundle
    was trained on (DataBundle.describe()'s 'source'), read from disk instead.
    """
    if source and Path(source).is_dir():
        from robustcompress.data.folders import folder_examples

        x, y, _ = folder_examples(source, input_size, per_class, limit)
        return x, y
    if source and Path(source).is_file():
        split = load_data(source, input_size).test
    elif dataset in DATASET_NAMES:
        split = load_data(dataset, input_size).test
    else:
        where = f" from {source}, which no longer exists" if source else ""
        raise ValueError(f"the bundle was trained on '{dataset}'{where}, which the demo cannot reload; upload images "
                         "instead")
    assert split is not None
    if isinstance(split, TensorDataset):
        x, y = as_float_images(split.tensors[0]), split.tensors[1]
    else:
        x = torch.stack([torch.as_tensor(split[i][0]) for i in range(len(split))])
        y = torch.as_tensor([int(split[i][1]) for i in range(len(split))])
    picked: list[int] = []
    for cls in y.unique(sorted=True).tolist():
        picked += (y == cls).nonzero().flatten()[:per_class].tolist()
    picked = sorted(picked)[:limit]
    return x[picked], y[picked]


# -- turning a picture into a model input -----------------------------------------------------------------------
def open_image(path: str | Path) -> Image.Image:
    """Open a picture file with Pillow, explaining files that are not images or are absurdly large."""
    return open_picture(path)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Area-average when shrinking (exact for nearest-neighbour upscaled gallery images), bilinear when growing."""
    side = x.shape[-1]
    if side > size:
        return F.adaptive_avg_pool2d(x, size)
    if side < size:
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    return x


def check_image_values(x: torch.Tensor) -> None:
    """Raise a ValueError unless every value of an image tensor is a number in [0, 1] (NaN compares false)."""
    if not torch.isfinite(x).all():
        raise ValueError(f"the image tensor holds {int((~torch.isfinite(x)).sum())} NaN or infinite values; pass "
                         "pixels in [0, 1]")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"an image tensor must lie in [0, 1]; got [{x.min().item():.3g}, {x.max().item():.3g}]")


def image_to_tensor(image: Any, input_size: int) -> tuple[torch.Tensor, list[str]]:
    """Any picture -> a (1, 3, S, S) float tensor in [0, 1], plus notes on what was changed to get there.

    Accepts a Pillow image of any mode (greyscale, palette, RGBA, 16-bit, float), a numpy array, a file path, or a
    tensor already in [0, 1]. Non-square pictures are centre-cropped; transparency is composited onto black, the
    background of the digits data.
    """
    if isinstance(image, torch.Tensor):
        x = image.detach().float()
        if x.dim() == 3:
            x = x[None]
        if x.dim() != 4 or x.shape[:2] != (1, 3) or x.shape[-1] != x.shape[-2]:
            raise ValueError(f"an image tensor must be (3, S, S) or (1, 3, S, S); got {tuple(image.shape)}")
        check_image_values(x)
        return _resize(x.cpu(), input_size), []
    if image is None:
        raise ValueError("no image: upload a picture or pick one from the gallery first")
    if isinstance(image, (str, Path)):
        image = open_image(image)
    if not isinstance(image, (Image.Image, np.ndarray)):
        raise ValueError(f"expected a picture (Pillow image, numpy array, tensor or file path), got {type(image).__name__}")
    notes: list[str] = []
    arr = picture_to_array(image, input_size, notes)  # the rule training data and the deploy runtime use too
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].float(), notes


# -- attacking -----------------------------------------------------------------------------------------------------
def check_attack_settings(attack: str, eps_255: float, steps: int, target: str) -> None:
    """Raise a ValueError naming the allowed range for any setting outside it."""
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack '{attack}'; choose one of {', '.join(ATTACKS)}")
    try:
        eps_value = float(eps_255)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"eps must be a number of /255 steps between 0 and {MAX_EPS_255:g}; got {eps_255!r}") from exc
    if not 0 <= eps_value <= MAX_EPS_255:
        raise ValueError(f"eps must be between 0 and {MAX_EPS_255:g} (in /255 units); got {eps_255}")
    if isinstance(steps, bool) or not isinstance(steps, (int, float)) or float(steps) != int(steps):
        raise ValueError(f"steps must be a whole number between 1 and {MAX_STEPS}; got {steps!r}")
    if not 1 <= int(steps) <= MAX_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_STEPS}; got {steps}")
    if target not in TARGETS:
        raise ValueError(f"unknown attack target '{target}'; choose 'student' or 'undefended'")


#: The demo's attack menu -> the registry name (robustcompress.attacks.get_attack); PGD's holds its step count.
REGISTRY_NAMES = {"FGSM": "fgsm", "PGD": "pgd{steps}", "APGD-CE": "apgd-ce"}


def registry_name(attack: str, steps: int) -> str:
    """The registry attack behind a menu entry: FGSM -> fgsm, PGD with 10 steps -> pgd10, APGD-CE -> apgd-ce."""
    if attack not in REGISTRY_NAMES:
        raise ValueError(f"unknown attack '{attack}'; choose one of {', '.join(ATTACKS)}")
    return REGISTRY_NAMES[attack].format(steps=int(steps))


def attack_images(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str, eps: float, steps: int,
                  seed: int = 0) -> torch.Tensor:
    """Untargeted L-inf attack on ``model`` moving x away from labels y; always within eps of x and in [0, 1].

    The registry's attack (PGD with N steps is 'pgdN': step eps/4, random start), crafted as ``evaluate`` and the
    export report craft it, so the same model, attack and seed give the same images. PGD's random start comes from
    a private generator: concurrent requests do not reseed each other.
    """
    return craft(registry_name(attack, steps), model, x, y, eps, seed)


def _verdict(result: AttackResult, undefended_name: str) -> str:
    def fate(who: str, key: str) -> str:
        clean, adv = result.prediction(f"{key}_clean"), result.prediction(f"{key}_adv")
        return f"{who} kept '{clean}'" if clean == adv else f"{who} flipped from '{clean}' to '{adv}'"

    where = "on the student (white-box)" if result.target == "student" else f"crafted on {undefended_name}, transferred"
    onnx, torch_pred = result.prediction("onnx_adv"), result.prediction("student_adv")
    agrees = "as in PyTorch" if onnx == torch_pred else f"unlike PyTorch's '{torch_pred}'"
    return (
        f"{result.attack} at {result.eps * 255:g}/255 {where}: {fate('the robust student', 'student')}, "
        f"{fate('the undefended model', 'undefended')}; the exported ONNX student says '{onnx}' ({agrees})."
    )


def compare_models(
    models: DemoModels,
    x: torch.Tensor,
    attack: str = "PGD",
    eps_255: float = 8.0,
    steps: int = 10,
    target: str = "student",
    seed: int = 0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Attack a batch x (N, 3, S, S) in [0, 1]; return x_adv and every model's (N, K) probabilities by PROB_KEYS.

    The attack pushes each image away from the attacked model's own clean prediction, so no labels are needed.
    """
    check_attack_settings(attack, eps_255, steps, target)
    check_image_values(x)
    eps, steps = float(eps_255) / 255.0, int(steps)
    x = x.to(models.device)
    attacked = models.student if target == "student" else models.undefended
    with torch.no_grad(), eval_mode(models.student, models.undefended):
        student_clean = models.student(x).softmax(1)
        undefended_clean = models.undefended(x).softmax(1)
    y = (student_clean if target == "student" else undefended_clean).argmax(1)
    x_adv = attack_images(attacked, x, y, attack, eps, steps, seed).detach()
    with torch.no_grad(), eval_mode(models.student, models.undefended):
        student_adv = models.student(x_adv).softmax(1)
        undefended_adv = models.undefended(x_adv).softmax(1)
    onnx_adv = torch.from_numpy(onnx_logits(models.onnx_path, x_adv.cpu().numpy(), models.onnx_session)).softmax(1)
    probs = (student_clean, student_adv, undefended_clean, undefended_adv, onnx_adv)
    return x_adv.cpu(), dict(zip(PROB_KEYS, (p.cpu() for p in probs)))


def run_attack(
    models: DemoModels,
    image: Any,
    attack: str = "PGD",
    eps_255: float = 8.0,
    steps: int = 10,
    target: str = "student",
    seed: int = 0,
) -> AttackResult:
    """The demo's handler: attack one picture and report both models (and the ONNX student) before and after.

    ``image``: anything image_to_tensor accepts. ``eps_255``: the L-inf budget in /255 units (0..16). ``steps``: PGD
    iterations (FGSM takes one step, APGD-CE its own 100). ``target``: 'student' (white-box) or 'undefended' (the
    attack is built on the undefended model and transferred to the student). Raises ValueError on bad input.
    """
    check_attack_settings(attack, eps_255, steps, target)
    x, notes = image_to_tensor(image, models.input_size)
    x_adv, probs = compare_models(models, x, attack, eps_255, steps, target, seed)
    if attack == "APGD-CE" and float(eps_255) > 0 and torch.equal(x_adv, x):
        notes.append("APGD-CE found no image within eps that changes the attacked model's answer, "
                     "so AutoAttack returned the clean image")
    result = AttackResult(
        x_clean=x, x_adv=x_adv, probs={k: p[0] for k, p in probs.items()}, class_names=models.class_names,
        attack=attack, eps=float(eps_255) / 255.0,
        steps=APGD_STEPS if attack == "APGD-CE" else (1 if attack == "FGSM" else int(steps)), target=target, notes=notes,
    )
    result.verdict = _verdict(result, models.undefended_name)
    return result


# -- pictures for people -------------------------------------------------------------------------------------------
def upscale(x: torch.Tensor, display_side: int = 256) -> np.ndarray:
    """A (1, 3, S, S) image in [0, 1] as uint8 HxWx3, blown up with nearest neighbour so every pixel stays sharp."""
    factor = max(1, display_side // x.shape[-1])
    arr = (x[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    return arr.repeat(factor, axis=0).repeat(factor, axis=1)


def perturbation_image(x_clean: torch.Tensor, x_adv: torch.Tensor, eps: float) -> torch.Tensor:
    """The perturbation stretched to full contrast: -eps -> black, 0 -> mid grey, +eps -> white."""
    if eps <= 0:
        return torch.full_like(x_clean, 0.5)
    return ((x_adv - x_clean) / (2 * eps) + 0.5).clamp(0, 1)
