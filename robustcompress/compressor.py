"""RobustCompressor: teachers + student + method -> a robust, verified, exportable student (a thin facade)."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from robustcompress.bundle import read_bundle, write_bundle
from robustcompress.data import DataBundle
from robustcompress.data.core import held_out_split, load_train_data
from robustcompress.distill import initial_student, train_student
from robustcompress.export import PARITY_TOLERANCE, check_export_arguments  # onnx itself loads when used
from robustcompress.io import check_writable
from robustcompress.models import ImageClassifier
from robustcompress.output_folder import (
    CHECKPOINTS, VERIFICATION, check_output_folder, folder_lock, remove_outputs, stale_after_resume,
)
from robustcompress.run_record import restore_run, run_identity, run_record, run_weights
from robustcompress.settings import DEFAULT_METHOD, CompressConfig, check_teachers, teacher_list
from robustcompress.teachers import pick_model, prepare_teachers, teacher_references
from robustcompress.runtime_env import is_main_process, resolve_device
from robustcompress.trainer.fast import training_plan
from robustcompress.verify import CheckSettings, EvalReport, Verification, evaluate, verify_model, write_report
from robustcompress.verify.runner import autoattack_state_dir

__all__ = ["DEFAULT_METHOD", "CompressConfig", "RobustCompressor"]  # the settings' names, beside the facade


def _from_config(name: str) -> property:
    """A read-only attribute that is the config's setting ``name`` (the names RobustCompressor always had)."""
    return property(lambda self: getattr(self.config, name), doc=f"The setting config.{name} (CompressConfig).")


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

    method_name, method_kwargs, select, val_size = map(_from_config, ("method", "method_kwargs", "select", "val_size"))
    teacher_epochs, teacher_finetune_epochs = map(_from_config, ("teacher_epochs", "teacher_finetune_epochs"))
    verify_attacks, verify_examples = map(_from_config, ("verify_attacks", "verify_examples"))

    def __init__(self, teachers: Sequence[Any] = (), student: Any = "resnet18", method: str | None = None, *,
                 config: CompressConfig | None = None, **settings: Any) -> None:
        """``teachers`` and ``student``: the models (see the class docstring); every other setting is a field of
        :class:`~robustcompress.settings.CompressConfig` (method, eps, epochs, select, ...), given as keywords
        (``method`` also third positionally) or as ``config=CompressConfig(...)``; keywords override the config's.
        All of them are checked here, before any data is read or teacher trained.
        """
        if method is not None:
            settings["method"] = method
        self._adopt(CompressConfig.from_settings(settings, base=config), teacher_list(teachers), student)

    def _adopt(self, config: CompressConfig, teacher_specs: list[Any], student_spec: Any,
               device: str | None = None) -> None:
        """Take a checked config and the models' specs (``device``: where to work instead of config.device, as
        load() asks); the state a fit or load fills in starts empty."""
        self.config = config
        self.teacher_specs, self.student_spec = teacher_specs, student_spec
        self.method = config.create_method()
        self.teacher_weights = check_teachers(self.method, self.teacher_specs, config.teacher_weights)
        #: The training loop's settings; fit() fills in the data's crop padding and flip.
        self.train_config = config.train_config()
        self.device = resolve_device(config.device if device is None else device)
        #: Resolved by fit() from the data when the config leaves them None (then what the bundle records).
        self.num_classes, self.input_size = config.num_classes, config.input_size
        self.out_dir = Path(config.out_dir) if config.out_dir is not None else None
        self.last_state: dict[str, torch.Tensor] | None = None  # the final weights when select keeps another epoch
        self.selection: dict[str, Any] = {}
        self.student: ImageClassifier | None = None
        self.teachers: list[ImageClassifier] = []
        #: The teachers' specs of a student-only bundle this was loaded from (its teachers' weights are not in it).
        self.absent_teacher_specs: list[dict[str, Any]] = []
        #: Per teacher: how it was obtained (trained, pre-trained, fine-tuned with accuracy before/after).
        self.teachers_info: list[dict[str, Any]] = []
        self.data_info: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.metrics: dict[str, Any] = {}
        self.timings_s: dict[str, float] = {}
        #: How training ran: the resolved precision, layout and compile, and on a CPU its model and flags.
        self.training_speed: dict[str, Any] = {}
        self._data: DataBundle | None = None

    def _build(self, data: DataBundle) -> None:
        """Teachers ready for this data (teachers.prepare_teachers) and the student's seeded initial weights."""
        size = self.input_size or data.input_size
        classes = self.num_classes or data.num_classes
        if self.num_classes is not None and data.num_classes > self.num_classes:
            raise ValueError(f"the data has {data.num_classes} classes but num_classes={self.num_classes}")
        self.teachers = prepare_teachers(
            self.teacher_specs, data, num_classes=classes, input_size=size, train_epochs=self.teacher_epochs,
            finetune_epochs=self.teacher_finetune_epochs, batch_size=self.config.batch_size, seed=self.config.seed,
            device=self.device, progress=self.config.progress, precision=self.config.precision,
        )
        self.teachers_info = [dict(getattr(t, "teacher_info", {}) or {}) for t in self.teachers]
        if self.student is None:
            self.student = initial_student(self.student_spec, classes, size, data.channels, self.config.seed)
        self.num_classes, self.input_size = classes, size
        self.data_info = data.describe()

    def fit(self, train_data: Any, val_data: Any = None, resume: bool = False, force: bool = False,
            overwrite: bool = False) -> "RobustCompressor":
        """Train the student with the chosen method, then verify it on the held-out split.

        ``train_data``: 'digits', 'cifar10', an image folder (class folders, or train/ and test/ of them), an .npz
        path, a torch Dataset, a DataLoader or a DataBundle.
        ``val_data``: the held-out split when train_data is a Dataset (named datasets bring their own).
        ``resume``: continue from out_dir's last checkpoint; it must have been trained with the same settings
        (method, student, steps, lr, selection, training data, ...), else ValueError names the differences.
        ``force=True`` resumes anyway and records the changed settings in the bundle's history.
        ``overwrite``: out_dir may hold an earlier run's outputs (bundle, checkpoints, exports), which are removed
        before training; without it such a folder is refused (robustcompress.output_folder). out_dir is locked for
        the whole run: a second run into it stops at once, naming this one.
        """
        if resume and self.out_dir is None:
            raise ValueError("resume=True needs out_dir=..., the folder whose checkpoint to continue (CLI: --out)")
        if force and not resume:
            raise ValueError("force=True only applies to resume=True (CLI: --force to --resume); add resume=True, or "
                             "drop force to start a fresh run")
        if self.out_dir is None or not is_main_process():  # under torchrun rank 0 owns the folder
            return self._fit(train_data, val_data, resume, force, [])
        check_writable(self.out_dir)  # a read-only --out is refused now, not after teachers and training
        with folder_lock(self.out_dir):
            earlier = check_output_folder(self.out_dir, resume=resume, overwrite=overwrite)
            return self._fit(train_data, val_data, resume, force, earlier)

    def _fit(self, train_data: Any, val_data: Any, resume: bool, force: bool, earlier: list[Path]
             ) -> "RobustCompressor":
        """fit() once its output folder is checked and locked; ``earlier``: outputs to remove before training."""
        t0 = time.perf_counter()
        data = load_train_data(train_data, val_data, self.input_size, self.num_classes, self.config.progress)
        self._data = data
        self.train_config.crop_padding, self.train_config.flip = data.crop_padding, data.flip
        self._build(data)
        self.timings_s["teachers"] = time.perf_counter() - t0
        writes = self.out_dir is not None and is_main_process()
        if writes:
            remove_outputs(earlier)  # overwrite=True: no file of the earlier run survives beside this one
        # Resolved once: the plan training uses is the plan the bundle records.
        plan = training_plan(self.train_config, self.device, data.input_size)
        self.training_speed = plan.describe()
        t1 = time.perf_counter()
        run = train_student(
            self._require_student(), self.teachers, self.method, data.train, self.num_classes, self.train_config,
            self.device, select=self.select, val_size=self.val_size,
            checkpoint_dir=self.out_dir / CHECKPOINTS if self.out_dir else None, resume=resume,
            force_resume=force, teacher_weights=self.teacher_weights, run_info=run_identity(self), log_dir=self.out_dir,
            plan=plan)
        self.history, self.last_state, self.selection = run.history, run.last_state, run.selection
        self.timings_s["train"] = time.perf_counter() - t1
        if writes and resume:  # the resumed student replaces the earlier bundle: its exports no longer describe it
            remove_outputs(stale_after_resume(self.out_dir))  # type: ignore[arg-type]
        if data.test is not None and self.verify_attacks:
            t2 = time.perf_counter()
            # A 'quick' pass (the chosen attacks, their worst case, the cheap masking checks) goes into the bundle;
            # rc.verify(...) or 'robustcompress evaluate' runs the full suite and checks.
            report_dir = self.out_dir / VERIFICATION if writes else None  # type: ignore[operator]
            verification = self.verify(data.test, attacks=self.verify_attacks, n_examples=self.verify_examples,
                                       checks="quick", out_dir=report_dir)
            self.metrics = verification.metrics()
            self.timings_s["verify"] = time.perf_counter() - t2
        if writes:  # under torchrun only rank 0 writes the bundle
            self.save(self.out_dir)  # type: ignore[arg-type]
        return self

    def _require_student(self) -> ImageClassifier:
        if self.student is None:
            raise RuntimeError("no student yet: call fit(...) first or RobustCompressor.load(bundle_dir)")
        return self.student

    def evaluate(self, data: Any = None, attacks: Sequence[str] = ("pgd20",), eps: float | None = None,
                 n_examples: int | None = None, batch_size: int = 256, *, model: str = "student") -> EvalReport:
        """Clean and robust accuracy of the student (or model='teacher0', ...) on held-out data.

        The arguments follow :func:`robustcompress.verify.evaluate` (data, attacks, eps, n_examples, batch_size),
        the model being this compressor's; eps and the attack seed default to training's.
        """
        student = self._require_student()
        dataset, _ = held_out_split(data, self._data, self.input_size)
        target = pick_model(student, self.teachers, model)
        return evaluate(  # shard: under torchrun each rank attacks a share; all get the full report
            target, dataset, attacks, eps=self.config.eps if eps is None else eps, n_examples=n_examples,
            batch_size=batch_size, device=self.device, seed=self.config.seed, progress=self.config.progress,
            shard=True)

    def verify(
        self, data: Any = None, attacks: Sequence[str] | None = None, preset: str | None = None, *,
        eps: float | None = None, n_examples: int | None = None, batch_size: int = 256,
        checks: str | CheckSettings = "full", eps_sweep: bool | Sequence[float] | None = None, baseline: Any = None,
        include_teachers: bool = True, transfer_from: dict[str, nn.Module] | None = None, require: Sequence[str] = (),
        out_dir: str | os.PathLike | None = None, resume: bool = True,
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
        dataset, data_name = held_out_split(data, self._data, self.input_size)
        references = teacher_references(self.teachers, self.teacher_specs) if include_teachers else {}
        if baseline is not None:
            if isinstance(baseline, (str, os.PathLike)):
                baseline = RobustCompressor.load(baseline, device=str(self.device))
            if isinstance(baseline, RobustCompressor):
                baseline = baseline._require_student()
            references[f"baseline ({getattr(baseline, 'name', type(baseline).__name__)})"] = baseline
        result = verify_model(
            student, dataset, attacks, preset, eps=self.config.eps if eps is None else eps, n_examples=n_examples,
            batch_size=batch_size, device=self.device, seed=self.config.seed, checks=checks, eps_sweep=eps_sweep,
            references=references, transfer_from=transfer_from, state_dir=autoattack_state_dir(out_dir, resume),
            require=require, model_info={"name": student.name, "label": f"student ({student.name})",
                                         "method": self.method_name, "source": "RobustCompressor"},
            data_info={"name": data_name, "split": "test"}, progress=self.config.progress, shard=True,
        )
        if out_dir is not None:
            write_report(result, out_dir)
        return result

    def describe(self) -> dict[str, Any]:
        """The JSON-serialisable description stored in bundles (robustcompress.bundle), reports and ONNX metadata."""
        return run_record(self)

    def save(self, directory: str | os.PathLike, *, teachers: bool = True, last: bool = True) -> Path:
        """Write the bundle: student/teacher weights (safetensors) and config.json (see robustcompress.bundle).

        ``teachers=False`` writes a student-only bundle (the teachers' specs and names stay in config.json): small to
        share, and enough to evaluate, export and deploy the student, but not for the demo or transfer attacks from
        the teachers. ``last=False`` leaves out the final-epoch weights that selection did not keep.
        """
        record = self.describe()
        if not teachers and record["teachers"]:
            record["teachers_saved"] = False
        return write_bundle(directory, record, run_weights(self, teachers=teachers, last=last))

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str = "auto") -> "RobustCompressor":
        """Rebuild a saved bundle (no pickles: JSON config + safetensors weights; see robustcompress.bundle)."""
        return restore_run(cls, read_bundle(directory), device)

    def export_onnx(
        self, path: str | os.PathLike, parity_data: Any = None, n_parity: int = 100, *, int8: bool = False,
        calibration_examples: int = 256, attack_steps: int = 10, tolerance: float = PARITY_TOLERANCE,
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
        from robustcompress.export.student import export_student, labelled_data, onnx_output_path

        student = self._require_student()
        check_export_arguments(n_parity=n_parity, calibration_examples=calibration_examples, attack_steps=attack_steps,
                               tolerance=tolerance, latency_runs=latency_runs)
        check_writable(onnx_output_path(path).parent, "export folder")  # before the data is reloaded
        data = labelled_data(parity_data, self._data, self.data_info, self.input_size, self.config.progress)
        try:
            return export_student(student, path, data, self.describe(), n_parity=n_parity, int8=int8,
                                  calibration_examples=calibration_examples, attack_steps=attack_steps,
                                  tolerance=tolerance, latency_runs=latency_runs, progress=self.config.progress)
        finally:
            student.to(self.device)
