"""The CIFAR-10 benchmark's teachers: made once per recipe and cached, evaluated, and which method gets which."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from table_protocol import (TEACHERS_OF, Setting, describe_device, metrics_of, per_image_of, read_json, teacher_attacks,
                            today, validation_split, with_train, write_json)


@dataclass
class Teacher:
    """A teacher model with what the table says about it."""

    role: str
    description: str
    model: torch.nn.Module
    train_time_s: float | None
    extra: dict[str, Any] = field(default_factory=dict)


# -- teachers -----------------------------------------------------------------------------------------------------------
def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def benchmark_cache() -> Path:
    from robustcompress.teachers import cache_dir

    return cache_dir() / "benchmark"


def cached_teacher(role: str, recipe: dict[str, Any], data: Any, device: torch.device, build: Callable[[], Any],
                   train: Callable[[Path], torch.nn.Module], description: str) -> Teacher:
    """Train a teacher once per (recipe, training images) and keep its weights and training time in the cache.

    ``train(checkpoint_dir)`` may checkpoint there, so a long training interrupted by the end of a session goes on
    from its last epoch when the benchmark runs again (its time is the trainer's record of every epoch and
    validation where it keeps one, else this run's wall time)."""
    from robustcompress.models import load_weights
    from robustcompress.data import data_fingerprint
    from robustcompress.io import save_safetensors

    key = digest([role, recipe, data_fingerprint(data)])
    weights_path = benchmark_cache() / f"{role}-{key}.safetensors"
    meta_path = weights_path.with_suffix(".json")
    checkpoint_dir = weights_path.with_name(weights_path.stem + "-checkpoints")
    if weights_path.is_file() and meta_path.is_file():
        print(f"{role}: cached weights {weights_path}", flush=True)
        model, meta = load_weights(build(), weights_path), read_json(meta_path)
    else:
        print(f"{role}: training ({recipe})", flush=True)
        t0 = time.perf_counter()
        model = train(checkpoint_dir)
        # A fine-tune interrupted by a session's end and resumed: its wall time here covers the last part only, the
        # trainer's own record (every epoch and validation) covers all of it.
        recorded = (getattr(model, "teacher_info", None) or {}).get("train_seconds")
        meta = {"train_time_s": recorded or time.perf_counter() - t0, "trained_on": describe_device(device),
                "date": today(), "recipe": recipe, "train_images": len(data.train)}
        save_safetensors(model.state_dict(), weights_path)
        write_json(meta_path, meta)
    extra = {"recipe": recipe, "trained_on": meta["trained_on"], "train_images": meta["train_images"],
             "checkpoint_dir": str(checkpoint_dir)}
    return Teacher(role, description, model.to(device).eval(), meta["train_time_s"], extra)


def make_teachers(setting: Setting, data: Any, device: torch.device, progress: bool,
                  roles: Sequence[str] = ("teacher1", "teacher2", "robust"),
                  store: Path | None = None) -> dict[str, Teacher]:
    """Teacher 1 (loaded, optionally fine-tuned here), teacher 2 and the robust teacher (trained once, then read
    from the cache); only ``roles`` and what they are made from are built. With a ``store`` (a folder of the
    repository), the robust teacher is read from there when it holds one of this recipe and data, and put there
    when it does not (see read_stored)."""
    from robustcompress.models import build_model
    from robustcompress.teachers import train_teacher

    full = with_train(data, setting.train_images)
    data, _ = validation_split(setting, full)
    check_roles(roles)
    teachers: dict[str, Teacher] = {}
    stored = None
    if store is not None and {"robust", "robust-final"} & set(roles):
        stored = read_stored("robust", robust_recipe(setting.robust_source, setting, data),
                             robust_data_of(setting, data), store, device)
    if stored is not None:
        teachers["robust"] = stored  # its source teacher is not made for it: the store holds the finished teacher
    # robust-final is read from the robust teacher's fine-tune; robust2 is made from the other standard teacher
    needed = set(roles) | ({setting.robust_source, "robust"} if {"robust", "robust-final"} & set(roles) and
                           stored is None else set())
    needed |= {other_source(setting)} if "robust2" in roles else set()
    if "teacher1" in needed:
        teachers["teacher1"] = make_teacher1(setting, full, device, progress)
    if not needed - {"teacher1"} - set(teachers):
        return {r: t for r, t in teachers.items() if r in roles}
    train_data = data
    epochs2 = f"{setting.teacher2_epochs} epoch{'s' * (setting.teacher2_epochs != 1)}"
    recipe2 = {"name": setting.teacher2, "epochs": setting.teacher2_epochs, "lr": setting.teacher2_lr,
               "batch_size": setting.batch_size, "seed": 0, **precision_entry(setting)}
    if "teacher2" in needed:
        teachers["teacher2"] = cached_teacher(
            "teacher2", recipe2, train_data, device,
            build=lambda: build_model(setting.teacher2, 10, 32),
            train=lambda _: train_teacher(setting.teacher2, train_data, epochs=setting.teacher2_epochs,
                                        lr=setting.teacher2_lr, batch_size=setting.batch_size, seed=0, device=device,
                                        use_cache=False, progress=progress, precision=setting.precision),
            description=f"{setting.teacher2}: standard training by robustcompress.train_teacher, {epochs2}, "
            f"{len(train_data.train)} images",
        )

    if "robust" not in teachers and "robust" in needed:
        teachers["robust"] = make_robust("robust", setting.robust_source, setting, data, teachers, device, progress)
        if store is not None:
            write_stored(teachers["robust"], robust_data_of(setting, data), store)
    if "robust-final" in roles:
        teachers["robust-final"] = final_epoch_of(teachers["robust"], device)
    if "robust2" in roles:
        teachers["robust2"] = make_robust("robust2", other_source(setting), setting, data, teachers, device,
                                          progress)
    return {r: t for r, t in teachers.items() if r in roles}


#: Every teacher role: the protocol's three, and two the ablations of AKD's teacher choices use (the robust teacher's
#: final epoch instead of its early-stopped one; the other standard teacher made robust by the same recipe, for an
#: ensemble of two robust teachers).
ROLES = ("teacher1", "teacher2", "robust", "robust-final", "robust2")


def check_roles(roles: Sequence[str]) -> None:
    """Refuse teacher roles the benchmark does not make, naming the ones it does."""
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ValueError(f"unknown role(s) {', '.join(unknown)}; the benchmark's teacher roles are {', '.join(ROLES)}")


def other_source(setting: Setting) -> str:
    """The standard teacher the robust teacher is *not* made from: the source of the second robust teacher."""
    return "teacher2" if setting.robust_source == "teacher1" else "teacher1"


def final_epoch_of(robust: Teacher, device: torch.device) -> Teacher:
    """The robust teacher's last fine-tuning epoch (AKD compares early-stopped and fully trained robust teachers),
    read from the checkpoint its fine-tuning left in the cache; refused when early stopping kept that epoch anyway,
    since the variant would then repeat the protocol's row."""
    import copy

    from robustcompress.io import load_checkpoint

    if robust.extra.get("stored"):
        raise FileNotFoundError(f"the robust teacher was read from the store {robust.extra['stored']}, which keeps the "
                                "selected epoch only, not the fine-tune's final one: run this ablation without "
                                "--teacher-store where the fine-tune's checkpoints are (its cache)")
    directory = robust.extra.get("checkpoint_dir")
    last = Path(directory) / "last.pt" if directory else None
    if last is None or not last.is_file():
        raise FileNotFoundError(f"the robust teacher's final-epoch checkpoint {last} is missing; delete its cached "
                                f"weights in {benchmark_cache()} so the benchmark fine-tunes it again and keeps one")
    best = read_json(Path(directory) / "best.json").get("best") or {}
    epochs = robust.extra["recipe"]["epochs"]
    if robust.extra["recipe"].get("select", "last") == "last" or best.get("epoch") == epochs:
        raise ValueError(f"the robust teacher is already its final epoch ({epochs}), not an early-stopped one: a "
                         "'robust-final' teacher would be the same model, so this ablation has nothing to compare")
    model = copy.deepcopy(robust.model)
    model.load_state_dict(load_checkpoint(last)["student"])
    return Teacher("robust-final", robust.description.replace("weakly adversarially fine-tuned",
                                                              "weakly adversarially fine-tuned (final epoch "
                                                              f"{epochs}, not the early-stopped {best.get('epoch')})"),
                   model.to(device).eval(), robust.train_time_s, {**robust.extra, "epoch": epochs})


def make_robust(role: str, source_role: str, setting: Setting, data: Any, teachers: dict[str, Teacher],
                device: torch.device, progress: bool) -> Teacher:
    """``source_role`` weakly adversarially fine-tuned by the setting's robust-teacher recipe (cached; checkpointed
    every epoch in the cache, so a fine-tune cut by a session's end goes on from its last epoch)."""
    from robustcompress.models import build_model

    robust_data = robust_data_of(setting, data)
    source = teachers[source_role]
    recipe = robust_recipe(source_role, setting, data)
    if source_role != "teacher1" or setting.teacher1_finetune_epochs:
        recipe["start"] = weights_of(source.model)  # a changed starting point is another robust teacher
    val_fraction = robust_val_fraction(setting, data)

    def finetune(checkpoint_dir: Path) -> torch.nn.Module:
        from robustcompress.teachers import weak_adversarial_finetune

        return weak_adversarial_finetune(
            source.model, robust_data, setting.robust_eps, steps=setting.robust_steps,
            epochs=setting.robust_epochs, lr=setting.robust_lr, device=device, seed=0, progress=progress,
            step_size=setting.robust_step_size, select=setting.robust_select, val_fraction=val_fraction,
            val_eps=setting.eps, precision=setting.precision, checkpoint_dir=checkpoint_dir,
            use_cache=False,  # cached below, with its training time
        )

    spec = source.model.spec()
    return cached_teacher(
        role, recipe, robust_data, device,
        build=lambda: build_model(spec["name"], 10, 32, mean=spec["mean"], std=spec["std"]),
        train=finetune,
        description=f"{spec['name']}: {source_role} weakly adversarially fine-tuned by "
        f"robustcompress.weak_adversarial_finetune (eps {setting.robust_eps * 255:g}/255, PGD-{setting.robust_steps}, "
        f"{setting.robust_epochs} epoch{'s' * (setting.robust_epochs != 1)}, lr {setting.robust_lr}, "
        f"{len(robust_data.train)} images)",
    )


def robust_data_of(setting: Setting, data: Any) -> Any:
    """The images a robust teacher is fine-tuned on (the students' training split, or its first N)."""
    return with_train(data, setting.robust_train_images or setting.train_images)


def robust_recipe(source_role: str, setting: Setting, data: Any) -> dict[str, Any]:
    """The robust-teacher recipe of ``setting`` (part of its cache key), without the fingerprint of the weights it
    starts from, which make_robust adds."""
    recipe = {"source": source_role, "eps": setting.robust_eps, "steps": setting.robust_steps,
              "epochs": setting.robust_epochs, "lr": setting.robust_lr, "seed": 0, **precision_entry(setting)}
    if setting.robust_step_size is not None:
        recipe["step_size"] = setting.robust_step_size
    # best_robust keeps the epoch with the best PGD-10 at the students' eps on as many held-out training images as
    # the students' validation split has (AKD's early-stopped robust teacher)
    if setting.robust_select != "last":
        recipe.update(select=setting.robust_select, val_eps=setting.eps,
                      val_fraction=robust_val_fraction(setting, data))
    return recipe


def robust_val_fraction(setting: Setting, data: Any) -> float:
    """The share of the robust teacher's training images held out to select its epoch: as many as the students'
    validation split has."""
    return (setting.val_images or 1000) / len(robust_data_of(setting, data).train)


# The repository's teacher store (cifar10_table.py --teacher-store) keeps the robust teacher, which takes hours to
# fine-tune and which most methods distil from. The cache does not outlive a machine, and the same recipe on another
# CPU gives other weights (its kernels add in another order), so without the store every new machine would re-make
# it, and the rows it trains would not pool with the rows of the earlier one.
def stored_weights(store: Path | None) -> dict[str, str]:
    """Role: weights fingerprint of each teacher the store holds ({} without a store): known without loading them."""
    return {} if store is None else {p.stem: read_json(p)["weights"] for p in sorted(store.glob("*.json"))}


def read_stored(role: str, recipe: dict[str, Any], data: Any, store: Path, device: torch.device) -> Teacher | None:
    """The store's ``role`` teacher when it was made by ``recipe`` (the weights it started from aside: the store
    keeps the finished teacher, not its source) on these training images; None when the store has none. A stored
    teacher of another recipe or data is left alone, with a note."""
    from robustcompress.data import data_fingerprint
    from robustcompress.models import build_model, load_weights

    meta = read_json(store / f"{role}.json")
    if not meta:
        return None
    made_by = {k: v for k, v in meta["recipe"].items() if k != "start"}
    if made_by != recipe or meta["data"] != data_fingerprint(data):
        print(f"note: the stored {role} teacher ({store}) was made by another recipe or from other images than this "
              f"setting's; it is not used", flush=True)
        return None
    spec = meta["spec"]
    model = load_weights(build_model(spec["name"], spec["num_classes"], spec["input_size"], mean=spec["mean"],
                                     std=spec["std"], small_input=spec["small_input"]), store / f"{role}.safetensors")
    found = weights_of(model)
    if found != meta["weights"]:
        raise ValueError(f"{store / f'{role}.safetensors'} does not hold the weights {store / f'{role}.json'} names "
                         f"(fingerprint {found}, not {meta['weights']}): restore both from git")
    print(f"{role}: stored weights {store / f'{role}.safetensors'} (made {meta['date']} on {meta['trained_on']})",
          flush=True)
    return Teacher(role, meta["description"], model.to(device).eval(), meta["train_time_s"],
                   {"recipe": meta["recipe"], "trained_on": meta["trained_on"], "train_images": meta["train_images"],
                    "stored": str(store)})


def write_stored(teacher: Teacher, data: Any, store: Path) -> None:
    """Put a finished teacher in the store (weights and what read_stored checks), unless the store holds one of
    this role already: a stored teacher is replaced only by hand, since the table's rows were trained with it."""
    from robustcompress.data import data_fingerprint
    from robustcompress.io import save_safetensors

    if read_json(store / f"{teacher.role}.json"):
        return
    store.mkdir(parents=True, exist_ok=True)
    spec = teacher.model.spec()
    save_safetensors(teacher.model.state_dict(), store / f"{teacher.role}.safetensors")
    write_json(store / f"{teacher.role}.json", {
        "role": teacher.role, "description": teacher.description, "recipe": teacher.extra["recipe"],
        "data": data_fingerprint(data), "train_images": teacher.extra["train_images"],
        "spec": {k: spec[k] for k in ("name", "num_classes", "input_size", "mean", "std", "small_input")},
        "weights": weights_of(teacher.model), "train_time_s": teacher.train_time_s,
        "trained_on": teacher.extra["trained_on"], "date": today()})
    print(f"{teacher.role}: stored in {store} (commit it: rows made on other machines then distil from it)",
          flush=True)


def precision_entry(setting: Setting) -> dict[str, str]:
    """A teacher recipe's precision entry: none in fp32, so the caches made before precision existed stay valid."""
    return {} if setting.precision == "fp32" else {"precision": setting.precision}


def weights_of(model: torch.nn.Module) -> str:
    from robustcompress.io import weights_fingerprint

    return weights_fingerprint(model)


def make_teacher1(setting: Setting, data: Any, device: torch.device, progress: bool) -> Teacher:
    """pyautoattack's pre-trained CIFAR-10 ResNet-18, fine-tuned on the benchmark's training images when the
    setting asks (robustcompress.finetune_teacher: clean, early-stopped on validation accuracy, cached).

    Called exactly as ``robustcompress fit DATA --teachers cifar10_resnet18_autoattack --finetune-teachers N`` calls
    it, so both share one cached fine-tune; its validation images (a seed-0 draw of val_images out of train) are the
    students' validation split too, so no teacher trains on the images students are selected on."""
    from robustcompress.models import load_autoattack_resnet18

    pretrained = load_autoattack_resnet18(device)
    source = {"source": "pyautoattack/examples/model_test.pt"}
    if not setting.teacher1_finetune_epochs:
        return Teacher("teacher1", "resnet18: pyautoattack's pre-trained CIFAR-10 checkpoint (standard training)",
                       pretrained, None, source)
    from robustcompress.teachers import finetune_teacher

    print(f"teacher1: fine-tuning ({setting.teacher1_finetune_epochs} epoch, lr {setting.teacher1_finetune_lr}; "
          "cached)", flush=True)
    from robustcompress.distill import VALIDATION_SPLIT_SEED

    fraction = (setting.val_images or 1000) / len(data.train)
    model = finetune_teacher(pretrained, data, setting.teacher1_finetune_epochs, setting.teacher1_finetune_lr,
                             device, VALIDATION_SPLIT_SEED, progress, batch_size=setting.batch_size,
                             val_fraction=fraction, precision=setting.precision)
    info = model.teacher_info
    epochs = setting.teacher1_finetune_epochs
    return Teacher(
        "teacher1",
        f"resnet18: pyautoattack's pre-trained CIFAR-10 checkpoint, fine-tuned here on the training JPEGs "
        f"(robustcompress.finetune_teacher, clean, {epochs} epoch{'s' * (epochs != 1)}, lr "
        f"{setting.teacher1_finetune_lr}; validation clean {100 * info['val_clean_before']:.1f}% before, "
        f"{100 * info['val_clean_after']:.1f}% after)",
        model.to(device).eval(), info.get("train_time_s"),
        {**source, "val_clean_before": info["val_clean_before"], "val_clean_after": info["val_clean_after"]},
    )


def evaluate_teacher(teacher: Teacher, setting: Setting, data: Any, device: torch.device,
                     progress: bool) -> dict[str, Any]:
    """The teacher's row; cached by weights and evaluation setting, since attacking a ResNet-18 is slow on CPU."""
    from robustcompress.data import data_fingerprint
    from robustcompress.io import weights_fingerprint
    from robustcompress.verify import evaluate

    attacks = teacher_attacks(setting)
    test_images = data_fingerprint(with_train(dataclasses.replace(data, train=data.test), setting.teacher_test_images))
    key = digest([weights_fingerprint(teacher.model), attacks, setting.eps, test_images])
    path = benchmark_cache() / f"eval-{teacher.role}-{key}.json"
    cached = read_json(path)
    if "per_image" in cached:  # older cache entries lack the per-image verdicts the paired margin needs
        print(f"{teacher.role}: cached evaluation {path}", flush=True)
        return cached
    print(f"{teacher.role}: evaluating ({', '.join(['clean', *attacks])})", flush=True)
    report = evaluate(teacher.model, data.test, attacks, eps=setting.eps, n_examples=setting.teacher_test_images,
                      device=device, seed=0, progress=progress)
    row = {**metrics_of(report), "per_image": per_image_of(report), "device": describe_device(device),
           "date": today()}
    write_json(path, row)
    return row


def teacher_roles(method: str, variant: Any = None) -> tuple[str, ...]:
    """The teachers ``method`` distils from: a variant's own choice (``Variant.teachers``), else the one the method
    was designed for; a registered method the benchmark does not know gets the robust one."""
    from robustcompress import create_method

    if variant is not None and getattr(variant, "teachers", None):
        return tuple(variant.teachers)
    return TEACHERS_OF.get(method, ("robust",) if create_method(method).needs_teacher else ())
