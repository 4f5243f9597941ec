"""The registries: architectures by id, and shipped models by name, verified by content hash.

An architecture (:data:`ARCHITECTURES`) is what a model file's ``architecture``
metadata names: the integer model class that reads the file and codes (its
``likelihood`` is the pixels' entropy model), and the float module that trains
it, imported only by training so that decoding never loads training code.

Models are safetensors files (no pickle). A ``.bsw`` stream names each model it
used with its SHA-256, so a decoder refuses a model that merely shares a name.
Each (model, device) pair is loaded once per process and shared between
threads: integer inference keeps no state, so sharing is safe.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from .errors import ModelNotFoundError, UnsupportedFormatError
from .integer_model import IntegerVAE, read_model_file
from .polyphase import PolyphaseVAE


@dataclass(frozen=True)
class Architecture:
    """One model architecture: how its files are read and coded with, and where it is trained."""

    integer_model: type
    """Reads a file's (metadata, tensors) (``from_tensors``) and answers the coder in entropy models."""
    float_model: str
    """``module:class`` of the trainable float model (imported only by training)."""

    @property
    def likelihood(self) -> type:
        """The entropy model of the pixels given the first latent layer."""
        return self.integer_model.likelihood_type

    def float_model_class(self) -> type:
        module, name = self.float_model.split(":")
        return getattr(importlib.import_module(module), name)


ARCHITECTURES = {
    IntegerVAE.architecture: Architecture(IntegerVAE, "bitswap_plugin.model:BitSwapVAE"),
    PolyphaseVAE.architecture: Architecture(PolyphaseVAE, "bitswap_plugin.polyphase_model:PolyphaseBitSwapVAE"),
}


def load_model_file(path: str | os.PathLike) -> IntegerVAE:
    """Read a model file of any registered architecture."""
    metadata, tensors = read_model_file(path)
    architecture = ARCHITECTURES.get(metadata["architecture"])
    if architecture is None:
        raise UnsupportedFormatError(
            f"model file {os.fspath(path)!r} has architecture {metadata['architecture']!r}, "
            f"which this version cannot run (known: {', '.join(ARCHITECTURES)})"
        )
    return architecture.integer_model.from_tensors(metadata, tensors)


DEFAULT_MODELS = {3: "polyphase-rgb-l4-mix3-2", 1: "polyphase-gray-l4-mix3-2"}
"""Default model name by number of image channels."""

_registry: dict[str, Path] = {}
_loaded: dict[tuple[str, str], IntegerVAE] = {}
_lock = threading.Lock()


def _model_folder() -> Path:
    """Where shipped models live: ``bitswap_plugin/models`` in an installed wheel, else (source
    checkout, editable install) the repository's top-level ``models/``."""
    package = Path(str(resources.files("bitswap_plugin")))
    installed = package / "models"
    return installed if installed.is_dir() else package.parent / "models"


FLOAT_SUFFIX = ".float.safetensors"
"""Float weights shipped beside a model (for ``bitswap train --init``), not models themselves."""


def _shipped() -> dict[str, Path]:
    paths = _model_folder().glob("*.safetensors")
    return {path.stem: path for path in paths if not path.name.endswith(FLOAT_SUFFIX)}


def available_models() -> dict[str, Path]:
    """Name -> file of every model this process can use (shipped and registered)."""
    return {**_shipped(), **_registry}


def register_model(path: str | Path, name: str | None = None) -> str:
    """Make a model file usable by name (default: the file's stem); returns the name.

    Registering a name again (another file, or the same file rewritten) takes
    effect: the model loaded under that name and the file's hash are dropped,
    else streams would name the new file's hash but be coded with the old model.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"model file {str(path)!r} does not exist")
    name = name or path.stem
    with _lock:
        _registry[name] = path
        _hashes.pop(path, None)
        for key in [key for key in _loaded if key[0] == name]:
            del _loaded[key]
    return name


def file_hash(path: Path) -> str:
    """SHA-256 of a model file, hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


_hashes: dict[Path, str] = {}


def model_hash(name: str) -> str:
    """The content hash a stream records for model ``name``."""
    path = _path(name)
    if path not in _hashes:
        _hashes[path] = file_hash(path)
    return _hashes[path]


def _path(name: str) -> Path:
    models = available_models()
    if name not in models:
        installed = ", ".join(sorted(models)) or "none"
        raise ModelNotFoundError(f"model {name!r} is not installed (installed: {installed})")
    return models[name]


def load_model(name: str, sha256: str | None = None, device: torch.device | str = "cpu") -> IntegerVAE:
    """The model called ``name`` on ``device``; with ``sha256``, only that exact file."""
    if sha256 is not None and model_hash(name) != sha256:
        raise ModelNotFoundError(
            f"model {name!r} with hash {sha256[:16]}… is not installed "
            f"(the installed {name!r} has hash {model_hash(name)[:16]}…)"
        )
    key = (name, str(torch.device(device)))
    model = _loaded.get(key)
    if model is None:
        with _lock:
            model = _loaded.get(key)
            if model is None:
                model = load_model_file(_path(name)).to(device)
                _loaded[key] = model
    return model
