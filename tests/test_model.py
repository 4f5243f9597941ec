"""Tests of the float / integer Bit-Swap models and the shipped tiny weights."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bitswap_plugin import compress, decompress, fixedpoint, zoo
from bitswap_plugin.errors import BitSwapError, CorruptFileError
from bitswap_plugin.distributions import DiscretizedLogistic
from bitswap_plugin.fixedpoint import LOG_SCALE_FRAC, MEAN_FRAC
from bitswap_plugin.architecture import COEF_FRAC, coef_max, top_prior_codes, ChannelConditionedLogistic, ModelConfig, channel_mean, conditioned_mean
from bitswap_plugin.integer_model import IntegerVAE, integer_neg_elbo, save_integer_model
from bitswap_plugin.model import BitSwapVAE, export_integer_model, load_float_model, neg_elbo, save_float_model
from bitswap_plugin.zoo import load_model_file

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "models"
PHOTO = ROOT.parent / "shared" / "datasets" / "photos-train" / "001.png"  # a training photo, never Kodak


def _photo(gray: bool) -> np.ndarray:
    """001.png downscaled 4x, (C, H, W) uint8; a seeded random image where the photo is missing."""
    if PHOTO.exists():
        im = Image.open(PHOTO).convert("L" if gray else "RGB")
        arr = np.asarray(im.resize((im.width // 4, im.height // 4), Image.LANCZOS))
        return arr[None] if gray else arr.transpose(2, 0, 1)
    return np.random.default_rng(0).integers(0, 256, (1 if gray else 3, 200, 300), dtype=np.uint8)


def _patches(gray: bool, n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    img = _photo(gray)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        y = 2 * rng.integers(0, (img.shape[1] - size) // 2)
        x = 2 * rng.integers(0, (img.shape[2] - size) // 2)
        out.append(img[:, y : y + size, x : x + size])
    return torch.from_numpy(np.stack(out))


def _chain(model: IntegerVAE, x: torch.Tensor) -> list[torch.Tensor]:
    """All posterior and prior codes along the chain, latents taken as the rounded posterior means;
    for p(x | z1) of a model with pixel context, the parameters of its likelihood's every step."""
    k = model.config.latent_bins
    outs, zs, inp = [], [], x
    for level in range(model.config.latent_layers):
        mean, log_scale = model.posterior_codes(level, inp)
        outs += [mean, log_scale]
        inp = ((mean + (1 << (MEAN_FRAC - 1))) >> MEAN_FRAC).clamp(0, k - 1)
        zs.append(inp)
    for level in range(model.config.latent_layers):
        if level == 0 and model.pixel_context:
            outs += [t for _, dist in model.likelihood(zs[0]).steps(x.long()) for t in dist.parameters()]
        else:
            outs += list(model.prior_codes(level, zs[level]))
    return outs


def _assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert u.dtype == torch.int64 and torch.equal(u, v)


@pytest.fixture(scope="module", params=sorted(p.stem for p in WEIGHTS.glob("*.safetensors") if not p.name.endswith(zoo.FLOAT_SUFFIX)))
def shipped(request: pytest.FixtureRequest) -> IntegerVAE:
    return load_model_file(WEIGHTS / f"{request.param}.safetensors")


@pytest.fixture(scope="module", params=[False, True], ids=["independent-channels", "channel-conditioning"])
def trained_small(request: pytest.FixtureRequest) -> tuple[BitSwapVAE, torch.Tensor]:
    """A small float model trained briefly on real patches, then calibrated and QAT-tuned a little."""
    torch.manual_seed(0)
    config = ModelConfig(
        channels=3, latent_channels=4, latent_layers=2, width=16, res_blocks=1, channel_conditioning=request.param, name="t"
    )
    model = BitSwapVAE(config)
    data = _patches(False, 128, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=4e-3, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small ops: one thread is as fast and immune to oversubscription
    try:
        for step in range(40):
            if step == 32:
                model.calibrate(data, generator=gen)
            loss = model(data[(step % 8) * 16 : (step % 8 + 1) * 16], generator=gen).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model, _patches(False, 16, seed=2)


def test_config_json_roundtrip_and_validation() -> None:
    config = ModelConfig(channels=1, latent_layers=3, name="x")
    assert ModelConfig.from_json(config.to_json()) == config
    with pytest.raises(BitSwapError):
        ModelConfig(channels=2)
    with pytest.raises(BitSwapError):
        ModelConfig(latent_layers=9)
    with pytest.raises(BitSwapError):
        ModelConfig.from_json('{"channels": 3, "bogus": 1}')
    with pytest.raises(BitSwapError):
        ModelConfig.from_json('{"channels": "3"}')


def test_output_shapes_and_ranges(shipped: IntegerVAE) -> None:
    if shipped.pixel_context:
        pytest.skip("the head layout of p(x | z1) checked here is bitswap-vae's (tests/test_polyphase.py has the passes)")
    c, zc, k = shipped.config.channels, shipped.config.latent_channels, shipped.config.latent_bins
    x = _patches(c == 1, 2)
    levels = shipped.config.latent_layers
    outs = _chain(shipped, x)
    posterior_log_scales = outs[1 : 2 * levels : 2]
    mean, log_scale, *coefs = outs[2 * levels : len(outs) - 2 * (levels - 1)]
    assert mean.shape == log_scale.shape == (2, c, 32, 32)
    assert outs[0].shape == (2, zc, 16, 16)
    assert int(mean.min()) >= -(1 << MEAN_FRAC) and int(mean.max()) <= 256 << MEAN_FRAC
    for t in [*posterior_log_scales, log_scale]:
        assert int(t.min()) >= fixedpoint.LOG_SCALE_MIN and int(t.max()) <= fixedpoint.LOG_SCALE_MAX
    assert len(coefs) == int(shipped.config.channel_conditioning)
    for t in coefs:
        assert t.shape == (2, 3, 32, 32) and int(t.abs().max()) <= coef_max(COEF_FRAC)
    top_mean, top_ls = top_prior_codes(shipped.config)
    assert top_mean == (k - 1) << (MEAN_FRAC - 1)
    assert top_ls == round(shipped.config.latent_step_bits * np.log(2) * (1 << LOG_SCALE_FRAC))
    top = shipped.top_prior(3)
    assert len(top) == 3 and torch.equal(top.table, DiscretizedLogistic(torch.tensor([top_mean]), torch.tensor([top_ls]), k).cdf(torch.arange(k + 1)))
    with pytest.raises(TypeError):
        shipped.posterior_codes(0, x.float())
    with pytest.raises(BitSwapError):
        shipped.prior_codes(0, torch.full((1, zc, 16, 16), k))
    with pytest.raises(ValueError):
        shipped.prior(0, torch.zeros((1, zc, 16, 16), dtype=torch.int64))
    bad = x.to(torch.int64)
    bad[0, 0, 0, 0] = 256
    with pytest.raises(BitSwapError):
        shipped.posterior_codes(0, bad)


def test_batch_size_independence(shipped: IntegerVAE) -> None:
    x = _patches(shipped.config.channels == 1, 5)
    together = _chain(shipped, x)
    alone = [_chain(shipped, x[i : i + 1]) for i in range(5)]
    _assert_same(together, [torch.cat(parts) for parts in zip(*alone)])


def test_thread_count_independence(shipped: IntegerVAE) -> None:
    x = _patches(shipped.config.channels == 1, 4)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _chain(shipped, x)
        torch.set_num_threads(2)
        two = _chain(shipped, x)
    finally:
        torch.set_num_threads(threads)
    _assert_same(one, two)


def test_float32_and_float64_conv_paths_agree(shipped: IntegerVAE, monkeypatch: pytest.MonkeyPatch) -> None:
    x = _patches(shipped.config.channels == 1, 3)
    fast = _chain(shipped, x)
    monkeypatch.setattr(fixedpoint, "FLOAT32_EXACT_LIMIT", 0)  # force the float64 reference path
    _assert_same(fast, _chain(shipped, x))


@pytest.mark.parametrize("in_max", [255, 1023, 4095])
def test_wide_inputs_convolve_exactly_by_digits(in_max: int) -> None:
    """Weights budgeted for 8-bit inputs on wider ones: the sums pass 2**24, the digits keep them exact."""
    gen = torch.Generator().manual_seed(in_max)
    weight = torch.randint(-150, 151, (9, 48, 3, 3), generator=gen)
    weight[0] = weight[0].abs()  # with x[0] at in_max, output channel 0 sums to the bound
    weight_sum = int(weight.abs().sum((1, 2, 3)).max())
    assert weight_sum * 255 < 2**24 <= weight_sum * 1023
    x = torch.randint(0, in_max + 1, (3, 48, 8, 8), generator=gen).double()
    x[0] = in_max
    exact = fixedpoint._conv_reference(x, weight.float(), 1)
    assert (exact.abs().max() >= 2**24) == (in_max > 255)
    if in_max == 4095:  # sums to 2**27: float32 alone rounds them
        assert not torch.equal(fixedpoint._fast_conv(x, weight.float(), 1).double(), exact)
    assert torch.equal(fixedpoint.exact_conv2d(x, weight.float(), weight_sum, in_max).double(), exact)


def test_larger_tile_is_deterministic_and_matches_crops_inside(shipped: IntegerVAE) -> None:
    if shipped.pixel_context:
        pytest.skip("compares bitswap-vae's p(x | z1) codes of a crop and a tile")
    config = shipped.config
    tile = _patches(config.channels == 1, 2, size=64, seed=3)
    outs = _chain(shipped, tile)
    _assert_same(outs, _chain(shipped, tile))
    # A 32x32 crop sees the same pixels as the tile away from its zero-padded border.
    margin_q = 2 + 2 * config.res_blocks + 1  # latent positions, 5x5 first conv
    crop_q = shipped.posterior_codes(0, tile[:, :, 16:48, 16:48])
    for whole, part in zip(outs[:2], crop_q):
        inner = slice(margin_q, 16 - margin_q)
        assert torch.equal(whole[:, :, 8:24, 8:24][:, :, inner, inner], part[:, :, inner, inner])
    z = ((outs[0] + 128) >> MEAN_FRAC).clamp(0, config.latent_bins - 1)
    margin_p = 2 * (1 + 2 * config.res_blocks + 1)  # pixels
    whole_p = shipped.prior_codes(0, z)
    crop_p = shipped.prior_codes(0, z[:, :, 8:24, 8:24])
    inner = slice(margin_p, 32 - margin_p)
    for whole, part in zip(whole_p, crop_p):
        assert torch.equal(whole[:, :, 16:48, 16:48][:, :, inner, inner], part[:, :, inner, inner])


def test_shipped_convolutions_are_exact_in_float32(shipped: IntegerVAE) -> None:
    """On the whole input, or (a head reading wider activations) on its two 8-bit digits."""
    convolutions = shipped.convolutions()
    assert len(convolutions) == sum(2 + 2 * blocks for _, _, blocks in shipped.network_specs(shipped.config).values())
    for name, conv in convolutions.items():
        digits = name.endswith(".head") and conv.in_max == 2**shipped.config.head_input_bits - 1
        assert conv.bound < 2**24 or digits and conv.weight_sum * 255 < 2**24 and conv.in_max < 255 * 256, name


def test_shipped_models_compress_real_patches(shipped: IntegerVAE) -> None:
    if not PHOTO.exists():
        pytest.skip(f"{PHOTO} is not available")
    x = _patches(shipped.config.channels == 1, 32, seed=4)
    bits = integer_neg_elbo(shipped, x, torch.Generator().manual_seed(0))
    assert 1.0 < bits < 5.5
    assert os.path.getsize(WEIGHTS / f"{shipped.config.name}.safetensors") <= 20_000_000  # it ships in the wheel (#14: <= 20 MB)


def test_save_load_roundtrip_without_pickle(shipped: IntegerVAE, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.safetensors"
    save_integer_model(shipped, path)

    def no_pickle(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    loaded = load_model_file(path)
    assert loaded.content_hash == shipped.content_hash
    assert loaded.config == shipped.config
    x = _patches(shipped.config.channels == 1, 2)
    _assert_same(_chain(loaded, x), _chain(shipped, x))
    save_integer_model(loaded, tmp_path / "again.safetensors")
    assert load_model_file(tmp_path / "again.safetensors").content_hash == shipped.content_hash


def test_corrupt_files_are_rejected(shipped: IntegerVAE, tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_integer_model(shipped, path)
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError):
        load_model_file(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a model at all")
    with pytest.raises(CorruptFileError):
        load_model_file(tmp_path / "junk.safetensors")
    from safetensors.torch import save_file

    tensors = shipped.tensors()
    tensors["q.0.conv_in.bound"] = tensors["q.0.conv_in.bound"] // 2
    save_file(tensors, str(tmp_path / "bound.safetensors"), metadata=shipped.metadata())
    with pytest.raises(CorruptFileError):
        load_model_file(tmp_path / "bound.safetensors")


def test_integer_model_reproduces_quantized_float_model(trained_small: tuple[BitSwapVAE, torch.Tensor]) -> None:
    model, x = trained_small
    integer = export_integer_model(model)
    k = model.config.latent_bins
    with torch.no_grad():
        inp = x
        for level in range(model.config.latent_layers):
            got = integer.posterior_codes(level, inp)
            want = model.posterior(level, inp)
            _assert_same(list(got), [t.long() for t in want])
            z = ((got[0] + 128) >> MEAN_FRAC).clamp(0, k - 1)
            _assert_same(list(integer.prior_codes(level, z)), [t.long() for t in model.prior(level, z)])
            inp = z
    # channel conditioning: the integer path (int64, floor division) equals the QAT path (floats, floor)
    conditioned = model.config.channel_conditioning
    codes = integer.prior_codes(0, ((integer.posterior_codes(0, x)[0] + 128) >> MEAN_FRAC).clamp(0, k - 1))
    assert len(codes) == (3 if conditioned else 2)
    assert len(list(ChannelConditionedLogistic(codes).steps(x.long()))) == (3 if conditioned else 1)
    coefs = codes[2] if conditioned else None
    want = conditioned_mean(codes[0].double(), None if coefs is None else coefs.double(), x.double(), exact=True)
    got = torch.stack([channel_mean(codes[0], coefs, x.long(), c, exact=True) for c in range(3)], 1)
    _assert_same([got], [want.long()])


def test_integer_model_tracks_float_model(trained_small: tuple[BitSwapVAE, torch.Tensor]) -> None:
    """Quantization error: integer codes decoded to floats vs the unquantized float network."""
    model, x = trained_small
    integer = export_integer_model(model)
    with torch.no_grad():
        z_int = integer.posterior_codes(0, x)
        z = ((z_int[0] + 128) >> MEAN_FRAC).clamp(0, model.config.latent_bins - 1)
        x_int = integer.prior_codes(0, z)
        model.quantized = False
        try:
            z_float, x_float = model.posterior(0, x), model.prior(0, z)
        finally:
            model.quantized = True
    for (mean_i, ls_i, *_), (mean_f, ls_f, *_) in ((z_int, z_float), (x_int, x_float)):
        scale = torch.exp(ls_f / 64)  # in bins
        shift = ((mean_i - mean_f) / 256).abs() / scale
        assert float(shift.mean()) < 0.05 and float(shift.max()) < 1.0
        assert float((ls_i - ls_f).abs().mean()) / 64 < 0.05


def test_integer_elbo_matches_float_elbo(trained_small: tuple[BitSwapVAE, torch.Tensor]) -> None:
    """Exact ANS code length of the integer model vs the quantized and the unquantized float -ELBO."""
    model, x = trained_small
    integer = export_integer_model(model)
    x = torch.cat([x] * 4)
    quantized = neg_elbo(model, x, generator=torch.Generator().manual_seed(0))
    coded = integer_neg_elbo(integer, x, torch.Generator().manual_seed(0))
    model.quantized = False
    try:
        unquantized = neg_elbo(model, x, generator=torch.Generator().manual_seed(0))
    finally:
        model.quantized = True
    assert abs(coded / quantized - 1) < 0.01
    assert abs(coded / unquantized - 1) < 0.03


def test_float_checkpoint_roundtrip(trained_small: tuple[BitSwapVAE, torch.Tensor], tmp_path: Path) -> None:
    model, _ = trained_small
    save_float_model(model, str(tmp_path / "f.pt"))
    loaded = load_float_model(str(tmp_path / "f.pt"))
    assert loaded.quantized and loaded.config == model.config
    assert export_integer_model(loaded).content_hash == export_integer_model(model).content_hash


def test_export_requires_calibration() -> None:
    with pytest.raises(BitSwapError):
        export_integer_model(BitSwapVAE(ModelConfig(width=8, res_blocks=0, name="u")))


_SUBPROCESS = """
import hashlib, sys, numpy as np, torch
sys.path.insert(0, sys.argv[1])
from bitswap_plugin.zoo import load_model_file
torch.set_num_threads(int(sys.argv[3]))
model = load_model_file(sys.argv[2])
c, k = model.config.channels, model.config.latent_bins
x = torch.from_numpy(np.random.default_rng(7).integers(0, 256, (3, c, 64, 32), dtype=np.uint8))
x[1] = x[1] // 32 * 32  # a smoother image too
digest = hashlib.sha256()
inp, zs = x, []
for level in range(model.config.latent_layers):
    mean, log_scale = model.posterior_codes(level, inp)
    digest.update(mean.numpy().tobytes() + log_scale.numpy().tobytes())
    inp = ((mean + 128) >> 8).clamp(0, k - 1)
    zs.append(inp)
for level, z in enumerate(zs):
    if level == 0 and model.pixel_context:
        codes = [t for _, dist in model.likelihood(z).steps(x.long()) for t in dist.parameters()]
    else:
        codes = model.prior_codes(level, z)
    for t in codes:
        digest.update(t.numpy().tobytes())
print(digest.hexdigest())
"""


@pytest.mark.parametrize("name", sorted({zoo.DEFAULT_MODELS[3], "polyphase-rgb-l3-mix3"}))
def test_cross_isa_determinism(name: str) -> None:
    """Baseline-ISA single-thread and default-ISA two-thread processes produce identical codes
    (the RGB default, and the mixture of logistics)."""
    path = str(WEIGHTS / f"{name}.safetensors")
    base = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
    runs = [(dict(base, ATEN_CPU_CAPABILITY="default", ONEDNN_MAX_CPU_ISA="SSE41"), "1"), (base, "2")]
    digests = [
        subprocess.run(
            [sys.executable, "-c", _SUBPROCESS, str(ROOT), path, threads],
            env=env, capture_output=True, text=True, timeout=120, check=True,
        ).stdout.strip()
        for env, threads in runs
    ]
    assert len(digests[0]) == 64 and digests[0] == digests[1]


@pytest.mark.parametrize("method", ["bitswap", "bbans"])
def test_exported_model_codes_images_losslessly(
    trained_small: tuple[BitSwapVAE, torch.Tensor], tmp_path: Path, method: str
) -> None:
    """A freshly exported model (with or without channel conditioning) through the real coder, padding included."""
    model, _ = trained_small
    name = "t-conditioned" if model.config.channel_conditioning else "t-independent"
    path = tmp_path / f"{name}.safetensors"
    save_integer_model(export_integer_model(model), path)
    zoo.register_model(path)
    image = _photo(False)[:, :70, :45].transpose(1, 2, 0).copy()
    data = compress(image, model=name, method=method)
    assert decompress(data).tobytes() == image.tobytes()
