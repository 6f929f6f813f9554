"""Make teachers: train standard ones by name (cached), load pre-trained ones, fine-tune them on the user's data,
weakly adversarially fine-tune, pick early-stopped snapshots.

Maroto et al. (2022) found that the best teachers for adversarial distillation are not the last snapshot of a
long adversarial training but early-stopped ones, and adversarially trained with a weaker attack. Both are plain
functions here: ``train_teacher(..., select=...)`` and ``weak_adversarial_finetune(...)``. The returned model
carries ``teacher_info`` (a dict: how it was trained, which epoch was kept and why).
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence, Union

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from robustcompress.data import DataBundle
from robustcompress.data.splits import data_fingerprint, split_validation
from robustcompress.methods import Method, create_method
from robustcompress.models import ImageClassifier, is_pretrained_source, resolve_model
from robustcompress.models.factory import SOURCES, checkpoint_spec
from robustcompress.models.sources import PRETRAINED_ALIASES, output_classes, replace_classifier
from robustcompress.trainer import TrainConfig, train
from robustcompress.io import cache_dir, save_safetensors, weights_fingerprint, write_json
from robustcompress.trainer.fast import SpeedPlan, training_plan
from robustcompress.runtime_env import resolve_device, seed_everything
from robustcompress.trainer.loop import CHECKPOINT_NAME
from robustcompress.trainer.select import EpochCallback, train_and_select

log = logging.getLogger("robustcompress")

#: "last" (final weights), "best_robust" (best PGD-10 accuracy on a held-out validation split), "best_clean" (best
#: clean accuracy there) or an epoch (1-based).
Select = Union[str, int]
SELECT_NAMES = ("last", "best_robust", "best_clean")
VALIDATION_ATTACK = "pgd10"


def check_select(select: Select, epochs: int) -> None:
    """Explain a ``select=`` value that cannot work."""
    if isinstance(select, bool) or not isinstance(select, (str, int)):
        raise ValueError(f"select must be 'last', 'best_robust', 'best_clean' or an epoch number; got {select!r}")
    if isinstance(select, str) and select not in SELECT_NAMES:
        raise ValueError(f"select='{select}' is unknown; use 'last', 'best_robust', 'best_clean' or an epoch number "
                         f"(1..{epochs})")
    if isinstance(select, int) and not 1 <= select <= epochs:
        raise ValueError(f"select={select} is not an epoch of this run; pick 1..{epochs} (epochs={epochs})")


def fit_and_select(
    model: nn.Module,
    method: Method,
    data: DataBundle,
    config: TrainConfig,
    device: torch.device,
    select: Select = "last",
    val_fraction: float = 0.1,
    val_eps: float = 8 / 255,
    val_examples: int | None = 1000,
    val_set: Dataset | None = None,
    include_start: bool = False,
    checkpoint_dir: Path | None = None,
    plan: SpeedPlan | None = None,
) -> dict[str, Any]:
    """Train ``model`` with ``method`` and leave the selected snapshot in it; returns what was kept and why.

    select="last" keeps the final weights; an epoch number k keeps the weights after epoch k of the same
    ``config.epochs``-epoch schedule (training stops there); "best_robust" ("best_clean") trains on all but a
    held-out ``val_fraction`` of the training images (or on all of them when ``val_set`` is given), measures
    PGD-10 accuracy at ``val_eps`` (clean accuracy) on up to ``val_examples`` validation images after every epoch,
    and keeps the best epoch; ``include_start`` also scores the weights before training, as epoch 0, so
    fine-tuning that only hurts keeps the starting point. With a ``checkpoint_dir`` every epoch is checkpointed
    there (and the best snapshot), and a call with the same arguments continues after the last saved epoch.
    ``plan``: the speed plan to train with (the one its cache key records; by default the trainer resolves it).
    """
    check_select(select, config.epochs)
    train_set: Dataset = data.train  # type: ignore[assignment]
    criterion = {"best_robust": VALIDATION_ATTACK, "best_clean": "clean"}.get(select) if isinstance(select, str) else None
    if criterion is None:
        val_set = None
    elif val_set is None:
        train_set, val_set = split_validation(train_set, val_fraction, config.seed)
    score = None
    if val_set is not None:
        from robustcompress.verify import evaluate

        attacks = (VALIDATION_ATTACK,) if criterion == VALIDATION_ATTACK else ()

        def score(scored: nn.Module) -> dict[str, Any]:
            report = evaluate(scored, val_set, attacks=attacks, eps=val_eps, n_examples=val_examples, device=device,
                              seed=config.seed, progress=False)
            point = {"val_clean_acc": report.clean_acc}
            if attacks:
                point["val_robust_acc"] = report.robust_acc[VALIDATION_ATTACK]
            return {"score": point["val_robust_acc"] if attacks else report.clean_acc, **point}

    resume = checkpoint_dir is not None and (Path(checkpoint_dir) / CHECKPOINT_NAME).is_file()

    def run_epochs(on_epoch_end: EpochCallback) -> list[dict[str, Any]]:
        return train(model, [], method, train_set, data.num_classes, config, device, on_epoch_end=on_epoch_end,
                     checkpoint_dir=checkpoint_dir, resume=resume, plan=plan)

    kept = train_and_select(model, run_epochs, select, config.epochs, score=score, checkpoint_dir=checkpoint_dir,
                            score_start=include_start and not resume)
    info: dict[str, Any] = {"select": select, "method": method.name, "epochs": config.epochs,
                            "eps": config.eps, "steps": config.steps, "step_size": config.step_size, "lr": config.lr,
                            "epoch": kept.epoch}
    if kept.best is not None:
        key = "val_robust_acc" if criterion == VALIDATION_ATTACK else "val_clean_acc"
        curve = [{k: v for k, v in point.items() if k != "score"} for point in kept.curve]
        info.update({key: kept.best["score"], "val_attack": criterion, "val_eps": val_eps,
                     "val_images": len(val_set), "validation_curve": curve})  # type: ignore[arg-type]
    if kept.history:
        info["final_train_loss"] = kept.history[-1]["loss"]
        info["train_seconds"] = kept.seconds()  # all epochs and validations, across interruptions
    model.eval()
    return info


def _cached(path: Path, model: nn.Module) -> dict[str, Any] | None:
    """Load cached weights (and their selection record) into model; None when nothing is cached."""
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)))
    sidecar = path.with_suffix(".json")
    return json.loads(sidecar.read_text()) if sidecar.is_file() else {}


def _cache_path(teacher: nn.Module, kind: str, recipe: dict[str, Any]) -> Path:
    """Where a teacher made from ``recipe`` (starting weights, data, settings) is cached."""
    key = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:12]
    return cache_dir() / "teachers" / f"{teacher.name}-{kind}-{key}.safetensors"


def _load_cached(path: Path, teacher: nn.Module, what: str) -> nn.Module | None:
    """``teacher`` with the cached weights and record at ``path`` loaded, in eval mode; None when none are cached."""
    cached = _cached(path, teacher)
    if cached is None:
        return None
    log.info("%s: using cached weights %s", what, path)
    teacher.teacher_info = cached
    return teacher.eval()


def _store(path: Path, model: nn.Module, info: dict[str, Any]) -> None:
    save_safetensors(model.state_dict(), path)
    write_json(path.with_suffix(".json"), info)


def precision_key(plan: SpeedPlan) -> dict[str, str]:
    """The cache-key entry of a teacher trained in bf16 autocast ({} in fp32, so fp32 caches keep their keys): the
    same recipe in another precision is another teacher."""
    return {} if plan.amp_dtype is None else {"precision": plan.precision}


def train_teacher(
    name: str,
    data: DataBundle,
    epochs: int = 10,
    lr: float = 0.05,
    batch_size: int = 128,
    seed: int = 0,
    device: torch.device | str = "cpu",
    use_cache: bool = True,
    progress: bool = True,
    select: Select = "last",
    val_fraction: float = 0.1,
    val_eps: float = 8 / 255,
    precision: str = "auto",
) -> ImageClassifier:
    """A standard (non-robust) timm teacher trained on ``data`` with clean cross-entropy; cached on disk.

    ``select`` picks the snapshot: "last", an epoch number (early stopping at that epoch of the ``epochs``-epoch
    schedule) or "best_robust" (best PGD-10 accuracy at ``val_eps`` on a held-out ``val_fraction`` of the training
    images; the rest is trained on). The result's ``teacher_info`` says which epoch was kept. ``precision`` is the
    training precision (TrainConfig.precision).
    """
    check_select(select, epochs)
    device = resolve_device(device)
    config = TrainConfig(
        epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, eps=0.0, steps=0,
        crop_padding=data.crop_padding, flip=data.flip, progress=progress, precision=precision,
    )
    plan = training_plan(config, device, data.input_size)
    recipe: dict[str, Any] = {"name": name, "data": data_fingerprint(data), "size": data.input_size,
                              "classes": data.num_classes, "epochs": epochs, "lr": lr, "bs": batch_size, "seed": seed,
                              **precision_key(plan)}
    if select != "last":  # "last" keeps the original key, so teachers cached before select= existed are reused
        recipe.update(select=select, val_fraction=val_fraction, val_eps=val_eps)
    key = json.dumps(recipe)
    path = cache_dir() / "teachers" / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.safetensors"
    seed_everything(seed)  # the initial weights too, so the same seed gives the same teacher
    model = resolve_model(name, num_classes=data.num_classes, input_size=data.input_size, channels=data.channels,
                          role="teacher")
    if use_cache:
        cached = _cached(path, model)
        if cached is not None:
            log.info("teacher %s: using cached weights %s", name, path)
            model.teacher_info = cached or {"name": name, "select": select}  # caches from before select= have no record
            return model.eval()
    log.info("teacher %s: standard training for %d epochs (keeping %s)", name, epochs, select)
    info = fit_and_select(model, create_method("standard"), data, config, device, select, val_fraction, val_eps,
                          plan=plan)
    info["name"] = name
    if use_cache:
        _store(path, model, info)
    model.teacher_info = info
    return model


def weak_adversarial_finetune(
    model: nn.Module,
    data: DataBundle,
    eps: float,
    steps: int = 3,
    epochs: int = 5,
    lr: float = 0.01,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = True,
    *,
    step_size: float | None = None,
    batch_size: int = 128,
    select: Select = "last",
    val_fraction: float = 0.1,
    val_eps: float = 8 / 255,
    use_cache: bool = True,
    precision: str = "auto",
    checkpoint_dir: Path | None = None,
) -> ImageClassifier:
    """PGD adversarial fine-tuning of a (standard) teacher with a weak attack: a reduced ``eps`` and/or few ``steps``.

    Returns a fine-tuned copy (``model`` itself is not modified). ``step_size`` defaults to 2.5 * eps / steps
    (Madry et al.'s rule, so the few steps can reach the eps-ball's surface). ``select`` works as in
    train_teacher; with "best_robust" the validation attack uses ``val_eps`` (the budget the student will face),
    not the reduced training eps. Results are cached per (starting weights, data, settings) unless use_cache=False.
    ``checkpoint_dir``: checkpoint every epoch there, and continue from it when called again (a long fine-tuning
    survives an interruption).
    """
    if not 0 < eps <= 1:
        raise ValueError(f"eps={eps} must lie in (0, 1] (pixel units, e.g. 2/255 = {2 / 255:.4f})")
    if steps < 1 or epochs < 1:
        raise ValueError(f"steps={steps} and epochs={epochs} must both be at least 1")
    check_select(select, epochs)
    device = resolve_device(device)
    teacher = resolve_model(copy.deepcopy(model), num_classes=data.num_classes, input_size=data.input_size,
                            channels=data.channels, role="teacher")
    step = 2.5 * eps / steps if step_size is None else step_size
    config = TrainConfig(
        epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, eps=eps, steps=steps, step_size=step,
        crop_padding=data.crop_padding, flip=data.flip, progress=progress, precision=precision,
    )
    plan = training_plan(config, device, data.input_size)
    recipe = {"start": weights_fingerprint(teacher), "arch": teacher.name, "data": data_fingerprint(data),
              "eps": eps, "steps": steps, "step_size": step, "epochs": epochs, "lr": lr, "bs": batch_size,
              "seed": seed, "select": select, "val_fraction": val_fraction, "val_eps": val_eps,
              **precision_key(plan)}
    path = _cache_path(teacher, "weakat", recipe)
    if use_cache and (hit := _load_cached(path, teacher, "weak adversarial teacher")) is not None:
        return hit
    log.info("weak adversarial fine-tuning: eps %.4f, %d PGD steps, %d epochs", eps, steps, epochs)
    info = fit_and_select(teacher, create_method("pgd-at"), data, config, device, select, val_fraction, val_eps,
                          checkpoint_dir=checkpoint_dir, plan=plan)
    info["start"] = recipe["start"]
    if use_cache:
        _store(path, teacher, info)
    teacher.teacher_info = info
    return teacher


def finetune_teacher(
    model: nn.Module,
    data: DataBundle,
    epochs: int = 1,
    lr: float = 0.01,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = True,
    *,
    batch_size: int = 128,
    val_set: Dataset | None = None,
    val_fraction: float = 0.02,
    val_examples: int | None = 1000,
    use_cache: bool = True,
    precision: str = "auto",
) -> ImageClassifier:
    """Clean fine-tuning of a pre-trained teacher on the user's data, early-stopped on validation clean accuracy.

    Pre-trained weights meet a domain shift on a user's images (pyautoattack's CIFAR-10 ResNet-18 drops from 94.5%
    on exact CIFAR-10 pixels to 84.4% on JPEG copies); a short, low-lr fine-tune recovers most of it. The snapshot
    with the best clean accuracy on ``val_set`` (default: a held-out ``val_fraction`` of data.train), the starting
    weights included, is kept, so fine-tuning never makes a teacher worse on validation. Returns a fine-tuned copy
    whose ``teacher_info`` records the validation accuracy before and after; cached per (starting weights, data,
    recipe) unless use_cache=False.
    """
    if epochs < 1:
        raise ValueError(f"epochs={epochs} must be at least 1 to fine-tune; pass 0 to the caller to skip fine-tuning")
    device = resolve_device(device)
    teacher = resolve_model(copy.deepcopy(model), num_classes=data.num_classes, input_size=data.input_size,
                            channels=data.channels, role="teacher")
    config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, eps=0.0, steps=0,
                         crop_padding=data.crop_padding, flip=data.flip, progress=progress, precision=precision)
    plan = training_plan(config, device, data.input_size)
    recipe = {"start": weights_fingerprint(teacher), "arch": teacher.name, "data": data_fingerprint(data),
              "val": None if val_set is None else data_fingerprint(DataBundle("val", val_set, None, 0, 0)),
              "val_fraction": val_fraction, "epochs": epochs, "lr": lr, "bs": batch_size, "seed": seed,
              "val_examples": val_examples, **precision_key(plan)}
    path = _cache_path(teacher, "finetuned", recipe)
    if use_cache and (hit := _load_cached(path, teacher, "fine-tuned teacher")) is not None:
        return hit
    log.info("fine-tuning teacher %s on %s for %d epoch(s), lr %g", teacher.name, data.name, epochs, lr)
    started = time.perf_counter()
    info = fit_and_select(teacher, create_method("standard"), data, config, device, "best_clean", val_fraction,
                          val_examples=val_examples, val_set=val_set, include_start=True, plan=plan)
    curve = info["validation_curve"]
    info.update(start=recipe["start"], val_clean_before=curve[0]["val_clean_acc"],
                val_clean_after=info["val_clean_acc"], train_time_s=time.perf_counter() - started)
    if use_cache:
        _store(path, teacher, info)
    teacher.teacher_info = info
    return teacher


def finetune_summary(info: dict[str, Any]) -> str:
    """'validation clean accuracy 84.4% -> 91.2% (1 epoch(s) of fine-tuning, kept epoch 1)' for a teacher_info."""
    return (f"validation clean accuracy {info['val_clean_before']:.1%} -> {info['val_clean_after']:.1%} "
            f"({info['epochs']} epoch(s) of fine-tuning on {info['val_images']} held-out images, kept epoch "
            f"{info['epoch']})")


def _pretrained_teacher(spec: Any, data: DataBundle, num_classes: int, input_size: int, replace_head: bool,
                        seed: int, role: str) -> tuple[ImageClassifier, bool]:
    """A pre-trained source loaded and checked against the data's classes, and whether its head was replaced (a
    new, random one for this class count: only fine-tuning makes it a teacher)."""
    model = resolve_model(spec, input_size=input_size, channels=data.channels, role=role)
    predicted = output_classes(model, input_size, data.channels)
    if predicted != num_classes:
        if not replace_head:
            raise ValueError(
                f"{role} predicts {predicted} classes but the data has {num_classes}; pass teacher_finetune_epochs=N "
                f"(CLI: --finetune-teachers N) to replace its classifier head and fine-tune it on this data, or a "
                f"checkpoint trained on these {num_classes} classes"
            )
        # A module the user passed is theirs: its copy gets the new head.
        model = replace_classifier(copy.deepcopy(model) if isinstance(spec, nn.Module) else model, num_classes, seed)
        log.info("%s: classifier head replaced (%d -> %d classes) before fine-tuning", role, predicted, num_classes)
    replaced = predicted != num_classes
    alias = PRETRAINED_ALIASES.get(spec) if isinstance(spec, str) else None
    if alias is not None and predicted == num_classes and data.class_names and \
            list(alias.class_names) != list(data.class_names):
        log.warning("%s predicts %s in that order but the data's classes are %s; its predictions are only meaningful "
                    "if these are the same classes in the same order", role, ", ".join(alias.class_names),
                    ", ".join(data.class_names))
    return resolve_model(model, num_classes=num_classes, input_size=input_size, channels=data.channels,
                         role=role), replaced


def warn_unless_finetuned_head(info: dict[str, Any], role: str) -> None:
    """Warn when fine-tuning never beat a new random head: the kept snapshot (epoch 0) answers at chance.

    A warning, not an error: on a few held-out images (a 30-image folder holds out one) a random head can score
    as well as a trained one by luck; the warning says how many images decided it, and teacher_info keeps it.
    """
    if info.get("epoch") != 0:
        return
    info["warning"] = (
        f"{role}: fine-tuning never beat its new random classifier head on the {info['val_images']} held-out "
        f"image(s) that decided it (validation clean accuracy {info['val_clean_before']:.1%} before, at best "
        f"{info['val_clean_after']:.1%} after {info['epochs']} epoch(s)), so the student learns from a random head; "
        "fine-tune for more epochs (teacher_finetune_epochs, CLI --finetune-teachers N), give more training images, "
        "or pass a teacher trained on these classes")
    log.warning("%s", info["warning"])


def prepare_teachers(
    specs: Sequence[Any],
    data: DataBundle,
    *,
    num_classes: int | None = None,
    input_size: int | None = None,
    train_epochs: int = 10,
    finetune_epochs: int = 0,
    finetune_lr: float = 0.01,
    batch_size: int = 128,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    precision: str = "auto",
) -> list[ImageClassifier]:
    """The teachers ``specs`` name, ready for distillation on ``data``, each with a ``teacher_info`` dict.

    A bare timm name is trained from scratch on ``data`` (:func:`train_teacher`, ``train_epochs``). Every other spec
    brings weights (see :mod:`robustcompress.models.sources`: an nn.Module, ``(NAME, checkpoint)``,
    ``'NAME:pretrained'``, ``'hf-hub:...'`` or an alias such as ``'cifar10_resnet18_autoattack'``); with
    ``finetune_epochs`` > 0 it is fine-tuned on ``data`` (:func:`finetune_teacher`, clean training early-stopped on
    validation accuracy, cached), after its classifier head is replaced if it predicts another number of classes.
    Without fine-tuning, a class-count mismatch is an error.
    """
    if finetune_epochs < 0:
        raise ValueError(f"teacher fine-tuning epochs must be 0 (off) or more; got {finetune_epochs}")
    classes = num_classes or data.num_classes
    size = input_size or data.input_size
    teachers: list[ImageClassifier] = []
    for i, spec in enumerate(specs):
        role = f"teacher {i} ({describe_teacher(spec)})"
        if not is_pretrained_source(spec):
            if not isinstance(spec, str):
                raise ValueError(f"{role} must be a timm name, {SOURCES} or an nn.Module; got {spec!r}")
            # A bare name has no weights we may download: train it as a standard teacher on this data.
            model = train_teacher(spec, data, epochs=train_epochs, seed=seed, device=device, progress=progress,
                                  precision=precision)
            model = resolve_model(model, num_classes=classes, input_size=size, channels=data.channels, role=role)
            model.teacher_info = {"source": "trained", **getattr(model, "teacher_info", {})}
            teachers.append(model)
            continue
        model, head_replaced = _pretrained_teacher(spec, data, classes, size, finetune_epochs > 0, seed, role)
        if finetune_epochs > 0:
            model = finetune_teacher(model, data, finetune_epochs, finetune_lr, device, seed, progress,
                                     batch_size=batch_size, precision=precision)
            log.info("%s: %s", role, finetune_summary(model.teacher_info))
            if head_replaced:
                warn_unless_finetuned_head(model.teacher_info, role)
            model.teacher_info = {"source": "pre-trained, fine-tuned", **model.teacher_info}
        else:
            model.teacher_info = {"source": "pre-trained", **getattr(model, "teacher_info", {})}
        teachers.append(model)
    return teachers


def describe_teacher(spec: Any) -> str:
    """A short printable name for a teacher given in any accepted form."""
    pair = checkpoint_spec(spec)
    if pair is not None:  # 'NAME=PATH' and (NAME, PATH) read the same
        return f"{pair[0]}@{Path(pair[1]).name}"
    if isinstance(spec, str):
        return spec
    return getattr(spec, "name", type(spec).__name__)


def pick_model(student: nn.Module, teachers: Sequence[nn.Module], name: str) -> nn.Module:
    """The model a user names: 'student', or 'teacher0', 'teacher1', ... (the order teachers were given in)."""
    if name == "student":
        return student
    if name.startswith("teacher") and name[7:].isdigit() and int(name[7:]) < len(teachers):
        return teachers[int(name[7:])]
    raise ValueError(f"model must be 'student' or 'teacher0'..'teacher{len(teachers) - 1}', got '{name}'")


def teacher_references(teachers: Sequence[nn.Module], names: Sequence[Any] = ()) -> dict[str, nn.Module]:
    """Teachers labelled for plots and transfer attacks: 'teacher 0 (resnet18)', ... (``names``: their specs)."""
    names = list(names) or [getattr(t, "name", type(t).__name__) for t in teachers]
    return {f"teacher {i} ({describe_teacher(names[i]) if i < len(names) else getattr(t, 'name', '?')})": t
            for i, t in enumerate(teachers)}
