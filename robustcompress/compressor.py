"""RobustCompressor: teachers + student + method -> a robust, verified, exportable student."""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from robustcompress.data import DataBundle, load_data
from robustcompress.data.core import DATASET_NAMES, check_label_coverage, labels_of
from robustcompress.export import export_verified
from robustcompress.export.onnx import PARITY_TOLERANCE
from robustcompress.methods import create_method
from robustcompress.models import ImageClassifier, create_model, load_weights, model_from_spec
from robustcompress.teachers import describe_teacher, prepare_teachers, split_validation
from robustcompress.trainer import TrainConfig, train
from robustcompress.io import atomic_write, check_writable, save_safetensors
from robustcompress.trainer.distributed import is_main_process, shard_evaluation
from robustcompress.trainer.loop import check_attack_budget, require_int, require_number, resolve_device, seed_everything
from robustcompress.trainer.select import BestSnapshot, check_select_mode
from robustcompress.verify import CheckSettings, EvalReport, Verification, evaluate, verify_model, write_report

log = logging.getLogger("robustcompress")
DEFAULT_METHOD = "sa-mdrad"
VALIDATION_SPLIT_SEED = 0
BUNDLE_VERSION = 2


#: Keys every bundle's config.json has (bundle_version 1 lacked the ones in BUNDLE_KEYS_SINCE_2).
BUNDLE_KEYS = ("bundle_version", "method", "method_hparams", "student", "teachers", "train_config")
BUNDLE_KEYS_SINCE_2 = ("method_kwargs", "teacher_epochs", "verify_attacks", "verify_examples")
#: TrainConfig settings added after bundle_version 2 was defined, with the value older bundles were trained with.
TRAIN_CONFIG_ADDED = {"teacher_outputs": "live"}


def _check_bundle_record(cfg: Any, config_path: Path) -> None:
    """Raise a ValueError that names what is wrong with a bundle's config.json (version, missing keys)."""
    if not isinstance(cfg, dict):
        raise ValueError(f"{config_path} does not hold a bundle description (a JSON object); re-save the bundle")
    version = cfg.get("bundle_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"{config_path} has no valid 'bundle_version' ({version!r}); it is not a robustcompress "
                         "bundle or it was edited by hand: re-save it")
    if version > BUNDLE_VERSION:
        raise ValueError(f"{config_path} has bundle_version {version}, newer than this robustcompress reads "
                         f"(up to {BUNDLE_VERSION}); upgrade robustcompress: pip install -U robustcompress")
    required = BUNDLE_KEYS + (BUNDLE_KEYS_SINCE_2 if version >= 2 else ())
    missing = [key for key in required if key not in cfg]
    if not isinstance(cfg.get("train_config"), dict):
        missing += [] if "train_config" in missing else ["train_config (not a mapping)"]
    else:
        known = {f.name for f in fields(TrainConfig)}
        missing += [f"train_config.{key}" for key in sorted(known - set(cfg["train_config"]) - set(TRAIN_CONFIG_ADDED))]
        unknown = sorted(set(cfg["train_config"]) - known)
        if unknown:
            raise ValueError(f"{config_path} has train_config settings this robustcompress does not know: {unknown}; "
                             "upgrade robustcompress or re-save the bundle")
    if missing:
        raise ValueError(f"{config_path} lacks {', '.join(missing)}; the bundle is incomplete or was edited: "
                         "re-save it (RobustCompressor.save) or re-run fit")


def onnx_output_path(path: str | os.PathLike) -> Path:
    """Where an export goes: ``path`` itself, or ``path/student.onnx`` when it is an existing folder (or ends in /)."""
    text = os.fspath(path)
    if Path(text).is_dir() or text.endswith(("/", os.sep)):
        return Path(text) / "student.onnx"
    return Path(text)


def _writable_dir(path: str | os.PathLike) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_test.{os.getpid()}"  # per process: torchrun ranks probe the same folder at once
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"output folder {path} is not writable ({exc.strerror}); pass a folder you can write to") from exc
    return path


class RobustCompressor:
    """Distil a small adversarially robust student from teachers, verify it, save and export it.

    Example::

        rc = RobustCompressor(["resnet18", "vgg11"], "mobilenetv3_small_050", method="akd", epochs=10)
        rc.fit("digits")
        print(rc.evaluate(attacks=("pgd20",)).robust_acc)
        rc.export_onnx("student.onnx")

    Teachers: a bare timm name is trained from scratch on the data (``teacher_epochs``); pre-trained ones are given
    as ``(name, checkpoint_path)``, ``"resnet18:pretrained"``, ``"hf-hub:ORG/REPO"``, an alias such as
    ``"cifar10_resnet18_autoattack"`` or an nn.Module (see robustcompress.models.sources), and
    ``teacher_finetune_epochs=N`` fine-tunes them on the data first (replacing a head with another class count).
    """

    def __init__(
        self,
        teachers: Sequence[Any] = (),
        student: Any = "resnet18",
        method: str = DEFAULT_METHOD,
        *,
        eps: float = 8 / 255,
        step_size: float | None = None,
        steps: int = 10,
        epochs: int = 10,
        batch_size: int = 128,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        schedule: str = "cosine",
        augment: bool = True,
        device: str = "auto",
        seed: int = 0,
        num_classes: int | None = None,
        input_size: int | None = None,
        teacher_weights: Sequence[float] | None = None,
        teacher_epochs: int = 10,
        teacher_finetune_epochs: int = 0,
        method_kwargs: dict[str, Any] | None = None,
        out_dir: str | os.PathLike | None = None,
        verify_attacks: Sequence[str] = ("pgd20",),
        verify_examples: int = 500,
        progress: bool = True,
        speed: str = "fast",
        teacher_outputs: str = "live",
        select: str = "last",
        val_size: int | float = 1000,
    ) -> None:
        require_number("eps", eps, least=0, most=1, hint=f"eps is in pixel units, e.g. 8/255 = {8 / 255:.4f}")
        require_int("teacher_epochs", teacher_epochs, least=1)
        require_int("verify_examples", verify_examples, least=1)
        if num_classes is not None:
            require_int("num_classes", num_classes, least=2)
        if input_size is not None:
            require_int("input_size", input_size, least=1)
        if teacher_weights is not None:
            if isinstance(teacher_weights, (str, bytes)) or not hasattr(teacher_weights, "__len__"):
                raise ValueError(f"teacher_weights must be a list of numbers, one per teacher; got {teacher_weights!r}")
            for i, weight in enumerate(teacher_weights):
                require_number(f"teacher_weights[{i}]", weight, least=0,
                               hint="a weight is a teacher's share of the distillation target (they are normalised "
                                    "to sum to 1); negative shares are meaningless, 0 leaves a teacher out")
            if sum(teacher_weights) <= 0:
                raise ValueError(f"teacher_weights {list(teacher_weights)} sum to 0; give at least one teacher a "
                                 "positive weight")
        if isinstance(teachers, (str, nn.Module)):
            teachers = [teachers]
        self.method = create_method(method, **(method_kwargs or {}))  # fails early on unknown names
        self.method_name = method
        self.method_kwargs = dict(method_kwargs or {})
        if self.method.needs_teacher and not teachers:
            raise ValueError(f"method '{method}' distils from teachers; pass teachers=[...] or use method='pgd-at' "
                             "(CLI: --teachers NAME ... or --method pgd-at)")
        if teacher_weights is not None and len(teacher_weights) != len(teachers):
            raise ValueError(f"teacher_weights has {len(teacher_weights)} entries for {len(teachers)} teachers")
        self.teacher_specs = list(teachers)
        self.student_spec = student
        self.config = TrainConfig(
            epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay,
            schedule=schedule, eps=eps, step_size=eps / 4 if step_size is None else step_size, steps=steps,
            seed=seed, augment=augment, progress=progress, speed=speed, teacher_outputs=teacher_outputs,
        )
        check_attack_budget(self.method, self.config)
        self.device = resolve_device(device)
        self.num_classes = num_classes
        self.input_size = input_size
        self.teacher_weights = None if teacher_weights is None else torch.tensor(teacher_weights, dtype=torch.float32)
        if self.teacher_weights is not None:
            self.teacher_weights = self.teacher_weights / self.teacher_weights.sum()
        self.teacher_epochs = teacher_epochs
        if teacher_finetune_epochs < 0:
            raise ValueError(f"teacher_finetune_epochs={teacher_finetune_epochs} must be 0 (no fine-tuning) or more")
        self.teacher_finetune_epochs = teacher_finetune_epochs
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.verify_attacks = tuple(verify_attacks)
        self.verify_examples = verify_examples
        self.select = check_select_mode(select)
        self.val_size = val_size
        self.last_state: dict[str, torch.Tensor] | None = None  # the final weights when select keeps another epoch
        self.selection: dict[str, Any] = {}
        self.student: ImageClassifier | None = None
        self.teachers: list[ImageClassifier] = []
        #: Per teacher: how it was obtained (trained, pre-trained, fine-tuned with accuracy before/after).
        self.teachers_info: list[dict[str, Any]] = []
        self.data_info: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.metrics: dict[str, Any] = {}
        self.timings_s: dict[str, float] = {}
        self._data: DataBundle | None = None

    # -- building -------------------------------------------------------------------------------------------------
    def _build(self, data: DataBundle) -> None:
        size = self.input_size or data.input_size
        classes = self.num_classes or data.num_classes
        if self.num_classes is not None and data.num_classes > self.num_classes:
            raise ValueError(f"the data has {data.num_classes} classes but num_classes={self.num_classes}")
        self.teachers = prepare_teachers(
            self.teacher_specs, data, num_classes=classes, input_size=size, train_epochs=self.teacher_epochs,
            finetune_epochs=self.teacher_finetune_epochs, batch_size=self.config.batch_size, seed=self.config.seed,
            device=self.device, progress=self.config.progress,
        )
        self.teachers_info = [dict(getattr(t, "teacher_info", {}) or {}) for t in self.teachers]
        if self.student is None:
            seed_everything(self.config.seed)  # the student's initial weights: the same seed draws the same ones
            self.student = create_model(self.student_spec, classes, size, data.channels, role="student")
        self.num_classes, self.input_size = classes, size
        self.data_info = data.describe()

    # -- public API -----------------------------------------------------------------------------------------------
    def fit(self, train_data: Any, val_data: Any = None, resume: bool = False, force: bool = False
            ) -> "RobustCompressor":
        """Train the student with the chosen method, then verify it on the held-out split.

        ``train_data``: 'digits', 'cifar10', an image folder (class folders, or train/ and test/ of them), an .npz
        path, a torch Dataset, a DataLoader or a DataBundle.
        ``val_data``: the held-out split when train_data is a Dataset (named datasets bring their own).
        ``resume``: continue from out_dir's last checkpoint; it must have been trained with the same settings
        (method, student, steps, lr, ...), else ValueError names the differences. ``force=True`` resumes anyway and
        records the changed settings in the bundle's history.
        """
        t0 = time.perf_counter()
        if self.out_dir is not None:  # a read-only --out is refused now, not after teachers and training
            check_writable(self.out_dir)
        data = load_data(train_data, self.input_size, test=val_data, num_classes=self.num_classes,
                         progress=self.config.progress)
        if val_data is not None and not isinstance(val_data, (str, Path)):
            data.test = load_data(val_data, data.input_size).train
            if not isinstance(train_data, (Dataset, DataLoader)) and data.train is not None:  # those are checked
                check_label_coverage(labels_of(data.train, "train_data"), labels_of(data.test, "val_data"),
                                     self.num_classes or data.num_classes, "train_data labels", "val_data labels")
        self._data = data
        self.config.crop_padding, self.config.flip = data.crop_padding, data.flip
        self._build(data)
        self.timings_s["teachers"] = time.perf_counter() - t0
        checkpoint_dir = _writable_dir(self.out_dir / "checkpoints") if self.out_dir else None
        t1 = time.perf_counter()
        assert self.student is not None
        train_set, selector = data.train, None
        if self.select == "best_robust":
            # Seed 0 whatever the run's seed: every run of a comparison selects on the same validation images.
            train_set, val_set = split_validation(data.train, self.val_size, VALIDATION_SPLIT_SEED)
            selector = BestSnapshot(self.student, self._validation_score(val_set), checkpoint_dir)
        self.history = train(
            self.student, self.teachers, self.method, train_set, self.num_classes, self.config, self.device,
            checkpoint_dir=checkpoint_dir, resume=resume, teacher_weights=self.teacher_weights,
            on_epoch_end=selector, run_info=self._run_identity(), force_resume=force,
        )
        if selector is not None and selector.best_state is not None:
            self.last_state = {k: v.detach().clone() for k, v in self.student.state_dict().items()}
            self.student.load_state_dict(selector.best_state)
            self.selection = {"select": "best_robust", "val_images": len(val_set), **selector.summary()}
            log.info("kept epoch %s of %d (validation %s)", selector.best["epoch"], self.config.epochs,
                     {k: round(v, 4) for k, v in selector.best.items() if isinstance(v, float)})
        self.timings_s["train"] = time.perf_counter() - t1
        if data.test is not None and self.verify_attacks:
            t2 = time.perf_counter()
            # A 'quick' pass (the chosen attacks, their worst case, the cheap masking checks) goes into the bundle;
            # rc.verify(...) or 'robustcompress evaluate' runs the full suite and checks.
            report_dir = self.out_dir / "verification" if self.out_dir and is_main_process() else None
            verification = self.verify(data.test, attacks=self.verify_attacks, n_examples=self.verify_examples,
                                       checks="quick", out_dir=report_dir)
            self.metrics = verification.metrics()
            self.timings_s["verify"] = time.perf_counter() - t2
        if self.out_dir and is_main_process():  # under torchrun only rank 0 writes the bundle
            self.save(self.out_dir)
        return self

    def _validation_score(self, val_set: Any) -> Any:
        """PGD-10 accuracy at the training eps on the validation split: the score select='best-robust' keeps."""
        def score(model: nn.Module) -> dict[str, Any]:
            report = evaluate(model, val_set, ("pgd10",), eps=self.config.eps, device=self.device,
                              seed=self.config.seed, progress=False)
            return {"score": report.robust_acc["pgd10"], "val_clean": report.clean_acc,
                    "val_pgd10": report.robust_acc["pgd10"]}

        return score

    def _run_identity(self) -> dict[str, Any]:
        """What a checkpoint must share with this run to be resumed by it (besides the TrainConfig)."""
        assert self.student is not None
        return {
            "method": self.method_name,
            "method_hparams": json.loads(json.dumps(self.method.hparams(), default=str)),
            "student": self.student.spec(),
            "teacher_weights": None if self.teacher_weights is None else self.teacher_weights.tolist(),
        }

    def _require_student(self) -> ImageClassifier:
        if self.student is None:
            raise RuntimeError("no student yet: call fit(...) first or RobustCompressor.load(bundle_dir)")
        return self.student

    def evaluate(
        self,
        data: Any = None,
        attacks: Sequence[str] = ("pgd20",),
        n_examples: int | None = None,
        eps: float | None = None,
        model: str = "student",
        batch_size: int = 256,
    ) -> EvalReport:
        """Clean and robust accuracy of the student (or model='teacher0', ...) on held-out data."""
        student = self._require_student()
        if data is None:
            if self._data is None or self._data.test is None:
                raise ValueError("no evaluation data: pass data=... (a dataset name, .npz path or Dataset)")
            dataset = self._data.test
        else:
            bundle = load_data(data, self.input_size)
            dataset = bundle.test if bundle.test is not None else bundle.train
        if model == "student":
            target: nn.Module = student
        elif model.startswith("teacher") and model[7:].isdigit() and int(model[7:]) < len(self.teachers):
            target = self.teachers[int(model[7:])]
        else:
            raise ValueError(f"model must be 'student' or 'teacher0'..'teacher{len(self.teachers) - 1}', got '{model}'")
        return shard_evaluation(evaluate)(  # under torchrun each rank attacks a shard; all get the full report
            target, dataset, attacks, eps=self.config.eps if eps is None else eps, n_examples=n_examples,
            batch_size=batch_size, device=self.device, seed=self.config.seed, progress=self.config.progress,
        )

    def verify(
        self,
        data: Any = None,
        attacks: Sequence[str] | None = None,
        preset: str | None = None,
        *,
        eps: float | None = None,
        n_examples: int | None = None,
        batch_size: int = 256,
        checks: str | CheckSettings = "full",
        eps_sweep: bool | Sequence[float] | None = None,
        baseline: Any = None,
        include_teachers: bool = True,
        transfer_from: dict[str, nn.Module] | None = None,
        require: Sequence[str] = (),
        out_dir: str | os.PathLike | None = None,
        resume: bool = True,
    ) -> Verification:
        """Verify the student: attack suite, per-sample worst case, gradient-masking checks, eps sweep, gate.

        ``data``: held-out data (default: the test split fit() used). ``attacks``/``preset``: attack names and/or
        'fast' | 'standard' (default 'fast': FGSM, PGD-20, CW-30, APGD-CE + APGD-T). ``checks``: 'full', 'quick'
        or 'none'. ``eps_sweep``: True for eps 0..16/255 or a list; the teachers and ``baseline`` (a model, a
        RobustCompressor or a bundle folder) are swept too and drawn in the plot. ``require``: gate conditions
        such as 'autoattack>=0.45'. ``out_dir``: write report.json, report.md and the plot there; AutoAttack state
        is kept in out_dir/autoattack_state so an interrupted run resumes (``resume=False`` starts over).
        See docs/verification.md.
        """
        student = self._require_student()
        if data is None:
            if self._data is None or self._data.test is None:
                raise ValueError("no evaluation data: pass data=... (a dataset name, .npz path or Dataset)")
            dataset, data_name = self._data.test, self._data.name
        else:
            bundle = load_data(data, self.input_size)
            dataset = bundle.test if bundle.test is not None else bundle.train
            data_name = bundle.name
        references: dict[str, nn.Module] = {}
        if include_teachers:
            names = self.teacher_specs or [t.name for t in self.teachers]
            for i, teacher in enumerate(self.teachers):
                label = describe_teacher(names[i]) if i < len(names) else teacher.name
                references[f"teacher {i} ({label})"] = teacher
        if baseline is not None:
            if isinstance(baseline, (str, os.PathLike)):
                baseline = RobustCompressor.load(baseline, device=str(self.device))
            if isinstance(baseline, RobustCompressor):
                baseline = baseline._require_student()
            references[f"baseline ({getattr(baseline, 'name', type(baseline).__name__)})"] = baseline
        state_dir = Path(out_dir) / "autoattack_state" if out_dir is not None else None
        if state_dir is not None and not resume and state_dir.is_dir():
            for stale in state_dir.glob("*.json"):
                stale.unlink()
        result = verify_model(
            student, dataset, attacks, preset, eps=self.config.eps if eps is None else eps, n_examples=n_examples,
            batch_size=batch_size, device=self.device, seed=self.config.seed, checks=checks, eps_sweep=eps_sweep,
            references=references, transfer_from=transfer_from, state_dir=state_dir, require=require,
            model_info={"name": student.name, "label": f"student ({student.name})", "method": self.method_name,
                        "source": "RobustCompressor"},
            data_info={"name": data_name, "split": "test"}, progress=self.config.progress,
            evaluate_fn=shard_evaluation(evaluate),
        )
        if out_dir is not None:
            write_report(result, out_dir)
        return result

    def describe(self) -> dict[str, Any]:
        """The JSON-serialisable description stored in bundles, reports and ONNX metadata."""
        student = self._require_student()
        return {
            "bundle_version": BUNDLE_VERSION,
            "method": self.method_name,
            "method_hparams": self.method.hparams(),
            "method_kwargs": dict(self.method_kwargs),
            "student": student.spec(),
            "teachers": [t.spec() for t in self.teachers],
            "teacher_names": [describe_teacher(s) for s in self.teacher_specs] or [t.name for t in self.teachers],
            "teacher_weights": None if self.teacher_weights is None else self.teacher_weights.tolist(),
            "teacher_finetune_epochs": self.teacher_finetune_epochs,
            "teachers_info": self.teachers_info,
            "train_config": vars(self.config).copy(),
            "select": self.select,
            "val_size": self.val_size,
            "selection": self.selection or {"select": "last"},
            "eps": self.config.eps,
            "norm": "Linf",
            "data": self.data_info,
            "metrics": self.metrics,
            "history": self.history,
            "timings_s": self.timings_s,
            "teacher_epochs": self.teacher_epochs,
            "verify_attacks": list(self.verify_attacks),
            "verify_examples": self.verify_examples,
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write student/teacher weights (safetensors) and config.json to a bundle directory."""
        directory = _writable_dir(directory)
        student = self._require_student()
        save_safetensors(student.state_dict(), directory / "student.safetensors")
        if self.last_state is not None:  # select kept an earlier epoch: the final weights travel beside it
            save_safetensors(self.last_state, directory / "student_last.safetensors")
        for i, teacher in enumerate(self.teachers):
            save_safetensors(teacher.state_dict(), directory / f"teacher_{i}.safetensors")
        text = json.dumps(self.describe(), indent=2)
        atomic_write(directory / "config.json", lambda tmp: Path(tmp).write_text(text))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str = "auto") -> "RobustCompressor":
        """Rebuild a saved bundle (no pickles: JSON config + safetensors weights)."""
        directory = Path(directory)
        config_path = directory / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"{directory} is not a robustcompress bundle (no config.json); pass the folder fit() or save() wrote")
        try:
            cfg = json.loads(config_path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{config_path} is corrupt ({exc}); re-save the bundle") from exc
        _check_bundle_record(cfg, config_path)
        tc = cfg["train_config"]
        # Built with a clean, teacher-free method and then given the saved one and its exact TrainConfig:
        # inference needs no teachers' specs, and every training setting round-trips.
        rc = cls(
            teachers=[], student=cfg["student"]["name"], method="standard", eps=tc["eps"], device=device,
            teacher_epochs=cfg.get("teacher_epochs", 10), verify_examples=cfg.get("verify_examples", 500),
            verify_attacks=cfg.get("verify_attacks", ("pgd20",)), progress=tc.get("progress", True),
        )
        rc.config = TrainConfig(**tc)
        rc.method_kwargs = dict(cfg.get("method_kwargs") or {})
        if cfg.get("teacher_weights") is not None:
            rc.teacher_weights = torch.tensor(cfg["teacher_weights"], dtype=torch.float32)
        rc.method_name = cfg["method"]
        rc.method = create_method(cfg["method"], **(cfg.get("method_hparams") or {}))
        rc.student = load_weights(model_from_spec(cfg["student"]), directory / "student.safetensors").to(rc.device).eval()
        rc.teachers = [
            load_weights(model_from_spec(spec), directory / f"teacher_{i}.safetensors").to(rc.device).eval()
            for i, spec in enumerate(cfg["teachers"])
        ]
        rc.teacher_specs = list(cfg.get("teacher_names") or [])
        rc.teacher_finetune_epochs = int(cfg.get("teacher_finetune_epochs", 0))
        rc.teachers_info = list(cfg.get("teachers_info") or [])
        rc.num_classes = cfg["student"]["num_classes"]
        rc.input_size = cfg["student"]["input_size"]
        rc.data_info = cfg.get("data", {})
        rc.metrics = cfg.get("metrics", {})
        rc.history = cfg.get("history", [])
        rc.timings_s = cfg.get("timings_s", {})
        rc.select, rc.val_size = cfg.get("select", "last"), cfg.get("val_size", 1000)
        selection = cfg.get("selection") or {}
        rc.selection = selection if selection.get("select", "last") != "last" else {}
        if (directory / "student_last.safetensors").is_file():
            from safetensors.torch import load_file

            rc.last_state = load_file(str(directory / "student_last.safetensors"))
        return rc

    def export_onnx(
        self,
        path: str | os.PathLike,
        parity_data: Any = None,
        n_parity: int = 100,
        *,
        int8: bool = False,
        calibration_examples: int = 256,
        attack_steps: int = 10,
        tolerance: float = PARITY_TOLERANCE,
        latency_runs: int = 20,
    ) -> dict[str, Any]:
        """Export the student to ONNX and verify the file on real held-out images before keeping it.

        The .onnx takes [0, 1] NCHW float32 images (normalisation inside, dynamic batch) and carries class labels,
        input size, mean/std, eps, norm, method, teachers, the training-time metrics and its own verification
        (max |logit diff| vs PyTorch, arg-max agreement, clean and PGD robust accuracy under onnxruntime) as
        metadata. ``parity_data``: labelled images for that check (default: the test split fit() used, or the
        bundle's dataset when it is 'digits'); ``n_parity`` of them are used. ``int8=True`` also writes
        ``<stem>.int8.onnx``, calibrated on ``calibration_examples`` training images. A ``<stem>.report.json`` is
        written beside the files. Raises ParityError (writing nothing) when the graph's logits differ by more than
        ``tolerance``. Returns path, max_abs_diff, argmax_agreement, clean_acc, robust_acc, report_path (plus
        int8_path) and the full report.
        """
        from robustcompress.verify.evaluate import take_examples

        student = self._require_student()
        path = onnx_output_path(path)
        check_writable(path.parent, "export folder")  # before the verification attacks, not after them
        bundle = self._export_data(parity_data)
        eval_split = bundle.test if bundle.test is not None else bundle.train
        x, y = take_examples(eval_split, n_parity)
        calibration = None
        if int8:
            # Calibrate on a seeded random sample of training images (a sorted dataset's first rows may be one
            # class); only when there is no training split fall back to the evaluation one.
            calibration_split = bundle.train if bundle.train is not None else eval_split
            order = torch.randperm(len(calibration_split), generator=torch.Generator().manual_seed(self.config.seed))
            sample = torch.utils.data.Subset(calibration_split, order[:calibration_examples].tolist())
            calibration, _ = take_examples(sample, None)
        info = self.describe()
        metadata = {
            "class_labels": self.data_info.get("class_names") or bundle.class_names,
            "mean": info["student"]["mean"],
            "std": info["student"]["std"],
            "method": self.method_name,
            "teachers": info["teacher_names"],
            "student": student.name,
            "metrics": self.metrics,
        }
        data_description = {"name": bundle.name, "eval_split": "test" if bundle.test is not None else "train",
                            "calibration_split": None if calibration is None else
                            ("train" if bundle.train is not None else "test")}
        try:
            report = export_verified(
                student, path, x, y, self.config.eps, metadata, attack_steps=attack_steps, seed=self.config.seed,
                tolerance=tolerance, int8=int8, calibration_images=calibration, latency_runs=latency_runs,
                data_description=data_description, progress=self.config.progress,
            )
        finally:
            student.to(self.device)
        fp32 = report["fp32"]
        result = {
            "path": fp32["path"],
            "max_abs_diff": fp32["parity"]["max_abs_diff"],
            "argmax_agreement": fp32["parity"]["argmax_agreement"],
            "clean_acc": fp32["clean_acc"],
            "robust_acc": fp32["robust_acc"],
            "report_path": report["report_path"],
            "report": report,
        }
        if int8:
            result["int8_path"] = report["int8"]["path"]
        return result

    def _export_data(self, data: Any) -> DataBundle:
        """Labelled images for export verification: given ones, fit()'s data, or the bundle's named dataset."""
        if data is not None:
            return load_data(data, self.input_size)
        if self._data is not None and (self._data.test is not None or self._data.train is not None):
            return self._data
        name = self.data_info.get("name")
        if name in DATASET_NAMES:
            return load_data(name, self.input_size)
        source = self.data_info.get("source")
        if source and Path(source).exists():  # an image folder or .npz the bundle was trained on
            return load_data(source, self.input_size, progress=self.config.progress)
        raise ValueError(
            f"no labelled images to verify the export on (the bundle was trained on '{name or 'unknown data'}', "
            "which cannot be reloaded by name or path); pass parity_data=... (CLI: --data) with an image folder, "
            ".npz file or dataset name"
        )
