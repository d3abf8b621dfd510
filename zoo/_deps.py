"""Third-party modules that ``pip install zoo-registry`` leaves to the user, checked where zoo needs them.

Installing zoo brings transformers, safetensors, tokenizers, huggingface_hub and tqdm. PyTorch is the
user's to install, as with transformers: its right build (CPU, or the CUDA of the machine) is not one
a package can choose. The functions that need it call :func:`require` first, so a missing torch is a
zoo error naming the command, not a ``ModuleNotFoundError`` from deep inside a load.
"""

from __future__ import annotations

import importlib

from .errors import MissingDependencyError

__all__ = ["MissingDependencyError", "TORCH_INSTALL", "require"]

TORCH_INSTALL = (
    "pip install torch  (CPU only, smaller: pip install torch --index-url https://download.pytorch.org/whl/cpu; "
    "for a CUDA build take the command from https://pytorch.org/get-started/locally/)"
)


def require(module: str, install_hint: str, *, needed_by: str = "this") -> None:
    """Import ``module`` (its import would come next anyway) or raise :class:`MissingDependencyError`
    naming ``install_hint``. A module that is present but fails inside its own import is not hidden."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module and not module.startswith(f"{exc.name}."):
            raise  # the module is there; something it imports is missing: let that error speak
        raise MissingDependencyError(
            f"{needed_by} needs the Python package {module!r}, which is not installed. Install it with: "
            f"{install_hint}",
            name=module,
        ) from None
