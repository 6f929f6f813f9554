"""A RobustCompressor run as a bundle: the record and weights it saves, and the run rebuilt from a bundle.

The facade (robustcompress.compressor) orchestrates; this module is its serialisation, written against the one
bundle format (robustcompress.bundle), so what ``save`` writes and ``load`` reads is defined side by side here.
"""
from __future__ import annotations

import json
from typing import Any

import torch

from robustcompress.bundle import BUNDLE_VERSION, STUDENT, STUDENT_LAST, Bundle, teacher_stem
from robustcompress.data.core import describe_training_set
from robustcompress.methods import create_method
from robustcompress.settings import TRAINING_FIELDS, CompressConfig, setting_names
from robustcompress.teachers import describe_teacher

# ``rc`` below is a robustcompress.compressor.RobustCompressor; that module sits above this one (it imports it), so
# the type is named in words rather than imported.


def run_record(rc: Any) -> dict[str, Any]:
    """The JSON-serialisable description of a fitted run: the bundle's config.json, reports' and ONNX metadata."""
    student = rc._require_student()
    return {
        "bundle_version": BUNDLE_VERSION, "method": rc.method_name, "method_hparams": rc.method.hparams(),
        "method_kwargs": dict(rc.method_kwargs), "student": student.spec(),
        "teachers": [t.spec() for t in rc.teachers] or list(rc.absent_teacher_specs),
        **({"teachers_saved": False} if rc.absent_teacher_specs else {}),  # only student-only bundles say so
        "teacher_names": [describe_teacher(s) for s in rc.teacher_specs] or [t.name for t in rc.teachers],
        "teacher_weights": None if rc.teacher_weights is None else rc.teacher_weights.tolist(),
        "teacher_finetune_epochs": rc.teacher_finetune_epochs, "teachers_info": rc.teachers_info,
        "train_config": vars(rc.train_config).copy(), "select": rc.select, "val_size": rc.val_size,
        "selection": rc.selection or {"select": "last"}, "eps": rc.train_config.eps, "norm": "Linf",
        "data": rc.data_info, "metrics": rc.metrics, "history": rc.history, "timings_s": rc.timings_s,
        "teacher_epochs": rc.teacher_epochs, "verify_attacks": list(rc.verify_attacks),
        "verify_examples": rc.verify_examples, "training_speed": rc.training_speed,
        "config": rc.config.to_record(),  # every setting, whole (the keys above are kept for their readers)
    }


def run_identity(rc: Any) -> dict[str, Any]:
    """What a checkpoint must share with this run to be resumed by it (besides the TrainConfig): the method, the
    student, the teachers' weights, the selection and its validation split, and the training data (its size,
    image shape and digest: robustcompress.data.core.describe_training_set)."""
    hparams = json.loads(json.dumps(rc.method.hparams(), default=str))
    return {"method": rc.method_name, "method_hparams": hparams, "student": rc._require_student().spec(),
            "teacher_weights": None if rc.teacher_weights is None else rc.teacher_weights.tolist(),
            "select": rc.select, "val_size": rc.val_size if rc.select != "last" else None,
            "train_data": describe_training_set(rc._data.train)}


def run_weights(rc: Any, *, teachers: bool, last: bool) -> dict[str, dict[str, torch.Tensor]]:
    """The weight files of a bundle by stem: the student, the final-epoch student selection set aside, teachers."""
    weights = {STUDENT: rc._require_student().state_dict()}
    if last and rc.last_state is not None:
        weights[STUDENT_LAST] = rc.last_state
    if teachers:
        weights.update({teacher_stem(i): t.state_dict() for i, t in enumerate(rc.teachers)})
    return weights


def restore_run(cls: type, bundle: Bundle, device: str) -> Any:
    """A RobustCompressor holding a bundle's student, teachers (when saved), method and exact training settings."""
    get = bundle.get
    rc = cls.__new__(cls)
    teacher_specs = bundle.teacher_names or [spec["name"] for spec in bundle.record["teachers"]]
    rc._adopt(saved_config(bundle), teacher_specs, get("student")["name"], device)  # config.device: as trained
    rc.train_config = bundle.train_config  # exact, with the data's crop padding and flip
    rc.method = create_method(bundle.method, **get("method_hparams"))  # every hyperparameter, defaults included
    weights = get("teacher_weights")  # as normalised when trained
    rc.teacher_weights = None if weights is None else torch.tensor(weights, dtype=torch.float32)
    rc.student = bundle.student(rc.device)
    if bundle.teachers_saved:
        rc.teachers = bundle.teachers(rc.device)
    else:
        rc.absent_teacher_specs = list(bundle.record["teachers"])
    rc.last_state = bundle.last_state()
    rc.teachers_info = list(get("teachers_info"))
    rc.num_classes, rc.input_size = bundle.num_classes, bundle.input_size
    rc.data_info, rc.metrics, rc.history, rc.timings_s = map(get, ("data", "metrics", "history", "timings_s"))
    rc.training_speed = get("training_speed")
    rc.selection = get("selection") if get("selection").get("select", "last") != "last" else {}
    return rc


def saved_config(bundle: Bundle) -> CompressConfig:
    """The bundle's settings: its ``config`` entry, or for a bundle written before it existed, the same settings
    gathered from the record's other keys (the training settings from train_config)."""
    if "config" in bundle.record:
        unknown = sorted(set(bundle.record["config"]) - set(setting_names()))
        if unknown:
            raise ValueError(f"bundle {bundle.directory} has settings this robustcompress does not know: {unknown}; "
                             "upgrade robustcompress or re-save the bundle")
        return CompressConfig(**bundle.record["config"])
    get, train = bundle.get, bundle.record["train_config"]
    return CompressConfig(
        method=bundle.method, method_kwargs=get("method_kwargs"), teacher_weights=get("teacher_weights"),
        teacher_epochs=get("teacher_epochs"), teacher_finetune_epochs=int(get("teacher_finetune_epochs")),
        verify_attacks=get("verify_attacks"), verify_examples=get("verify_examples"), select=get("select"),
        val_size=get("val_size"), **{name: train[name] for name in TRAINING_FIELDS if name in train})
