"""The model registry: shipped models by name, verified by content hash.

Models are safetensors files (no pickle). A ``.bsw`` stream names each model it
used with its SHA-256, so a decoder refuses a model that merely shares a name.
Each (model, device) pair is loaded once per process and shared between
threads: integer inference keeps no state, so sharing is safe.
"""

from __future__ import annotations

import hashlib
import threading
from importlib import resources
from pathlib import Path

import torch

from .errors import ModelNotFoundError
from .integer_model import IntegerVAE, load_integer_model

DEFAULT_MODELS = {3: "bitswap-rgb", 1: "bitswap-gray"}
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


def _shipped() -> dict[str, Path]:
    return {path.stem: path for path in _model_folder().glob("*.safetensors")}


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
                model = load_integer_model(_path(name)).to(device)
                _loaded[key] = model
    return model
