"""The package's layering: light imports, decoding without training code, the registries,
the coders' step lists, and the front ends' use of the API (pins, truncation, bounded reads)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError
from safetensors.torch import load_file, save_file

import bitswap_plugin as bsw
from bitswap_plugin import coders, zoo
from bitswap_plugin.errors import CorruptFileError, ModelNotFoundError, TruncatedFileError, UnsupportedFormatError
from bitswap_plugin.fileformat import METHODS

ROOT = Path(__file__).resolve().parents[1]
VECTOR = ROOT / "tests" / "vectors" / "rgb-bitswap-v2-20261128.bsw"


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``code``."""
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    return set(done.stdout.split())


def test_import_and_info_load_neither_torch_nor_the_coder():
    for code in ("import bitswap_plugin", f"from bitswap_plugin.cli import main; main(['info', {str(VECTOR)!r}])",
                 f"from PIL import Image; import bitswap_plugin; Image.open({str(VECTOR)!r}).size"):
        loaded = _modules_after(code)
        assert "torch" not in loaded and "bitswap_plugin.coders" not in loaded, code


def test_decoding_never_imports_training_code():
    loaded = _modules_after(f"import bitswap_plugin as b; b.decompress(open({str(VECTOR)!r}, 'rb').read())")
    assert "bitswap_plugin.coders" in loaded
    assert not {"bitswap_plugin.model", "bitswap_plugin.train", "bitswap_plugin.bench"} & loaded


def test_methods_are_step_lists_whose_decoders_mirror_them():
    P, Q = coders.Prior, coders.Posterior
    assert coders.bitswap(2) == [Q(0), P(0), Q(1), P(1), P(2)]
    assert coders.bbans(2) == [Q(0), Q(1), P(0), P(1), P(2)]
    assert set(coders.METHODS) == set(METHODS)


def test_architecture_registry_reads_files_and_names_its_training_module(tmp_path: Path):
    likelihoods = {"bitswap-vae": "ChannelConditionedLogistic", "bitswap-polyphase": "PolyphaseLikelihood"}
    assert set(zoo.ARCHITECTURES) == set(likelihoods)
    for name, architecture in zoo.ARCHITECTURES.items():
        assert architecture.float_model_class().architecture == architecture.integer_model.architecture == name
        assert architecture.likelihood.__name__ == likelihoods[name]
    shipped = zoo.available_models()["tiny-gray"]
    assert zoo.load_model_file(shipped).architecture == "bitswap-vae"  # files without an id are bitswap-vae
    tensors = load_file(shipped)
    save_file(tensors, tmp_path / "future.safetensors", metadata={
        "format": "bitswap-integer-vae", "format_version": "1", "architecture": "pixel-context-9", "config": "{}"})
    with pytest.raises(UnsupportedFormatError, match="pixel-context-9"):
        zoo.load_model_file(tmp_path / "future.safetensors")


def test_pins_are_checked_before_coding():
    image, grey = np.zeros((8, 8), np.uint8), zoo.DEFAULT_MODELS[1]
    with pytest.raises(ModelNotFoundError, match="pins 0000000000000000"):
        bsw.compress(image, pins={grey: "00" * 32})
    with pytest.raises(ModelNotFoundError, match="does not pin it"):
        bsw.compress(image, pins={})
    assert bsw.decompress(bsw.compress(image, pins={grey: zoo.model_hash(grey)})).shape == (8, 8)


def test_truncation_is_its_own_error():
    data = VECTOR.read_bytes()
    for cut in (5, 20, 40, len(data) - 1):
        with pytest.raises(TruncatedFileError, match="truncated"):
            bsw.decompress(data[:cut])
    with pytest.raises(CorruptFileError, match="magic"):
        bsw.read_info(b"\x89PNG")


class _CountingReader(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk


def test_pillow_reads_a_damaged_header_once():
    data = bytearray(VECTOR.read_bytes())
    data[30] ^= 0xFF  # inside the header: its checksum fails
    stream = _CountingReader(bytes(data) + bytes(1 << 20))
    with pytest.raises(UnidentifiedImageError, match="checksum"):
        Image.open(stream, formats=["BSW"])
    assert stream.bytes_read <= 4096


def test_pillow_decodes_through_its_registered_decoder():
    assert "bsw" in Image.DECODERS
    with Image.open(VECTOR) as image:
        assert image.tile[0].codec_name == "bsw"
        assert np.array_equal(np.asarray(image), bsw.decompress(VECTOR.read_bytes()))


def test_float_weights_ship_beside_models_without_being_models():
    models = zoo.available_models()
    assert zoo.DEFAULT_MODELS[3] in models and not any(name.endswith(".float") for name in models)
    from bitswap_plugin.model import load_float_model

    float_model = load_float_model(ROOT / "models" / f"{zoo.DEFAULT_MODELS[3]}{zoo.FLOAT_SUFFIX}")
    assert float_model.config == zoo.load_model(zoo.DEFAULT_MODELS[3]).config and float_model.quantized
