"""Adversarial training and distillation methods, each one file with its inner maximisation and outer loss."""
from robustcompress.methods.losses import AdvCleanKL, create_loss, kd_kl, list_losses, register_loss
from robustcompress.methods.registry import (
    Method,
    StepContext,
    create_method,
    list_methods,
    register_method,
)

# Importing the modules registers them.
from robustcompress.methods import (  # noqa: E402,F401
    adaad,
    akd,
    ard,
    dual_path,
    iad,
    mtard,
    pgd_at,
    rslad,
    sa_mdrad,
    standard,
    trades,
)

__all__ = ["AdvCleanKL", "Method", "StepContext", "create_loss", "create_method", "kd_kl", "list_losses",
           "list_methods", "register_loss", "register_method"]
