"""What benchmarks/context_experiment.py adds to the package's models (tests/test_polyphase.py covers
those, and tests/test_mixture.py its mixtures): schemes, starting from float weights, old checkpoints,
the validation terms and the MAC count."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from bitswap_plugin.architecture import ModelConfig
from bitswap_plugin.model import BitSwapVAE, save_float_model
from bitswap_plugin.polyphase import PolyphaseConfig
from bitswap_plugin.polyphase_model import PolyphaseBitSwapVAE

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "context_experiment.py"
BASE = ModelConfig(channels=3, latent_channels=4, latent_layers=2, width=16, res_blocks=1, channel_conditioning=True, name="t")


@pytest.fixture(scope="module")
def ce():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("context_experiment", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)
        torch.set_num_threads(threads)


def poly_config(schedule: str = "03|12", **changes) -> PolyphaseConfig:
    return PolyphaseConfig(**{**dataclasses.asdict(BASE), "schedule": schedule, "context_width": 12, "context_blocks": 1, **changes})


def patches(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def latents(n: int = 2, seed: int = 5) -> torch.Tensor:
    return torch.randint(0, BASE.latent_bins, (n, BASE.latent_channels, 16, 16), generator=torch.Generator().manual_seed(seed))


def test_schemes(ce):
    assert ce.Scheme.parse("polyphase") == ce.Scheme("polyphase", 48, 2, 1)
    assert ce.Scheme.parse("polyphase:w64").label == "polyphase-w64b2"
    assert ce.Scheme.parse("checkerboard:k5:b3", mixture=2).label == "checkerboard-w64b3-k5"
    assert ce.Scheme.parse("independent", mixture=3).mixture == 3
    for bad in ("raster", "polyphase:x3", "polyphase:w", "polyphase:w6:q"):
        with pytest.raises(argparse.ArgumentTypeError):
            ce.Scheme.parse(bad)
    base = dataclasses.replace(BASE, width=64, res_blocks=2)
    assert type(ce.Scheme.parse("independent").build(base)) is BitSwapVAE
    built = {text: ce.Scheme.parse(text).build(base) for text in ("checkerboard", "polyphase:w32:b1", "independent:w32", "polyphase:k2")}
    assert all(type(m) is PolyphaseBitSwapVAE for m in built.values())
    assert [m.config.mixture for m in built.values()] == [1, 1, 1, 2]
    assert [(m.config.schedule, m.config.context_width, m.config.context_blocks) for m in built.values()] == [
        ("03|12", 64, 2), ("0|1|2|3", 32, 1), ("0123", 32, 2), ("0|1|2|3", 48, 2)]
    assert all(m.config.width == 64 and m.config.latent_channels == 4 for m in built.values())


def test_old_checkpoints_load(ce):
    """The script's earlier model class named the independent scheme's p(x|z1) network p.0.nets.0.*."""
    torch.manual_seed(0)
    saved = BitSwapVAE(BASE)
    old = {k.replace("p.0.", "p.0.nets.0.", 1) if k.startswith("p.0.") else k: v for k, v in saved.state_dict().items()}
    model = BitSwapVAE(BASE)
    ce.load_state(model, old)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in saved.state_dict().items() if isinstance(v, torch.Tensor))
    poly = PolyphaseBitSwapVAE(poly_config())
    ce.load_state(poly, PolyphaseBitSwapVAE(poly_config()).state_dict())  # pass nets keep their names
    with pytest.raises(RuntimeError):
        ce.load_state(model, {k: v for k, v in old.items() if "head" not in k})


def test_elbo_terms(ce):
    """Per-subimage recon and per-channel KL add up to the loss; BitSwapVAE's subimages are those of
    the one-pass polyphase model with the same weights."""
    torch.manual_seed(0)
    reference = BitSwapVAE(BASE)
    one_pass = PolyphaseBitSwapVAE(poly_config("0123", context_width=BASE.width, context_blocks=BASE.res_blocks))
    one_pass.load_state_dict({k.replace("p.0.", "p.0.nets.0.", 1) if k.startswith("p.0.") else k: v
                              for k, v in reference.state_dict().items()})
    x = patches(3)
    with torch.no_grad():
        terms = [ce.elbo_terms(m, x, torch.Generator().manual_seed(0)) for m in (reference, one_pass)]
    for loss, recon, kl in terms:
        assert recon.shape == (4,) and kl.shape == (2, 4)
        assert torch.allclose(loss.neg_elbo, (recon.sum() + kl.sum()) / x.numel(), rtol=1e-5)
    assert torch.allclose(terms[0][1], terms[1][1], rtol=1e-5)
    assert torch.allclose(terms[0][2], terms[1][2], rtol=1e-5)
    result = ce.evaluate(one_pass, x, [[0, 1, 2, 3]])  # one batch, the same posterior sample
    assert result["val_neg_elbo"] == pytest.approx(float(terms[1][0].neg_elbo), rel=1e-5)
    assert list(result["val_recon_sub"].values()) == pytest.approx((terms[1][1] / (x.numel() / 4)).tolist(), rel=1e-5)
    assert result["val_kl"] == pytest.approx((terms[1][2].sum(1) / x.numel()).tolist(), rel=1e-5)
    assert result["val_recon_pass"] == [pytest.approx(result["val_recon"])]


def test_macs_count(ce):
    config = dataclasses.replace(BASE, latent_layers=1)
    w, zc, hw = config.width, config.latent_channels, 16 * 16
    # q: conv_in 5x5 12->w, block 2 x (3x3 w->w), head 3x3 w->2zc; p: conv_in 3x3 zc->w, block, head w->(2*12+12)
    q = hw * (12 * w * 25 + 2 * w * w * 9 + w * 2 * zc * 9)
    p = hw * (zc * w * 9 + 2 * w * w * 9 + w * 36 * 9)
    macs = ce.count_macs(BitSwapVAE(config))
    assert macs["likelihood_mmac"] == pytest.approx(p / 1e6)
    assert macs["decode_mmac"] == pytest.approx((p + q) / 1e6)
    # checkerboard, pass nets of width 12: {A, D} from z1, then {B, C} from z1 + 6 pixel channels
    cw = 12
    p = sum(hw * ((zc + 3 * d) * cw * 9 + 2 * cw * cw * 9 + cw * (2 * 3 * 2 + 3 * 2) * 9) for d in (0, 2))
    macs = ce.count_macs(PolyphaseBitSwapVAE(poly_config(latent_layers=1)))
    assert macs["likelihood_mmac"] == pytest.approx(p / 1e6)
    assert macs["decode_mmac"] == pytest.approx((p + q) / 1e6)


def test_start_from_float_weights(ce, tmp_path):
    """``start_from`` loads a float weights file into the same model, or grows a mixture from it."""
    torch.manual_seed(0)
    config = poly_config("0|1|2|3")
    trained = PolyphaseBitSwapVAE(config)
    ce.data_dependent_init(trained, patches(2))
    path = tmp_path / "trained.float.safetensors"
    save_float_model(trained, path)
    plain, mixture = PolyphaseBitSwapVAE(config), PolyphaseBitSwapVAE(dataclasses.replace(config, mixture=2))
    for model in (plain, mixture):
        ce.start_from(model, str(path))
    weights = {k: v for k, v in trained.state_dict().items() if isinstance(v, torch.Tensor)}
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in weights.items())
    assert all(torch.equal(v, mixture.state_dict()[k]) for k, v in weights.items() if "head" not in k)
    with pytest.raises(SystemExit, match="no weights"):
        ce.start_from(PolyphaseBitSwapVAE(dataclasses.replace(config, context_width=8)), str(path))
