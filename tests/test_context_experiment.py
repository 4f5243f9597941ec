"""The pass-scheduled context likelihood of benchmarks/context_experiment.py, on random data."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "context_experiment.py"


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


def small_config(ce, **changes):
    base = dict(channels=3, latent_channels=4, latent_layers=2, width=16, res_blocks=1, channel_conditioning=True, name="t")
    base.update(changes)
    return ce.ModelConfig(**base)


def patches(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.mark.parametrize("name", ["independent", "checkerboard", "polyphase"])
@pytest.mark.parametrize("mixture", [1, 3])
def test_loss_finite_and_consistent(ce, name, mixture):
    torch.manual_seed(0)
    model = ce.ContextVAE(small_config(ce), ce.SCHEDULES[name], width=12, blocks=1, mixture=mixture)
    x = patches()
    ce.data_dependent_init(model, x)
    loss = model(x, generator=torch.Generator().manual_seed(1))
    for value in (loss.loss, loss.neg_elbo, loss.recon, *loss.kl, *loss.recon_sub):
        assert torch.isfinite(value)
    assert loss.kl.shape == (2,)
    assert torch.allclose(loss.recon_sub.mean(), loss.recon, rtol=1e-5)
    assert torch.allclose(loss.neg_elbo, loss.recon + loss.kl.sum(), rtol=1e-5)
    assert loss.loss >= loss.neg_elbo - 1e-5  # free bits only add
    loss.loss.backward()
    grads = [p.grad for p in model.likelihood.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_quantized_mode_runs(ce):
    torch.manual_seed(0)
    model = ce.ContextVAE(small_config(ce), ce.SCHEDULES["checkerboard"], width=12, blocks=1)
    x = patches(8)
    ce.data_dependent_init(model, x)
    model.calibrate(x, generator=torch.Generator().manual_seed(2))
    assert model.quantized
    loss = model(x, generator=torch.Generator().manual_seed(3))
    assert torch.isfinite(loss.neg_elbo)


def _pass_codes(model, z1_input, x, j):
    xs = F.pixel_unshuffle(x.float(), 2)
    return model.likelihood.pass_codes(z1_input, xs, j)


@pytest.mark.parametrize("name", ["checkerboard", "polyphase"])
def test_pass_sees_earlier_passes_only(ce, name):
    """A pass's distribution parameters ignore its own and later subimages and depend on earlier ones."""
    torch.manual_seed(0)
    config = small_config(ce)
    model = ce.ContextVAE(config, ce.SCHEDULES[name], width=12, blocks=1, mixture=2).eval()
    x = patches(2)
    z1 = torch.randint(0, config.latent_bins, (2, config.latent_channels, 16, 16), generator=torch.Generator().manual_seed(5))
    z1_input = ce.latents_to_input(z1.float(), config.latent_bins)
    schedule = model.schedule
    gen = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for j, subs in enumerate(schedule):
            base = _pass_codes(model, z1_input, x, j)
            # every subimage of this pass and of later ones: no effect
            later = [s for p in schedule[j:] for s in p]
            y = x.clone()
            for s in later:
                i, k = divmod(s, 2)
                y[:, :, i::2, k::2] = torch.randint(0, 256, y[:, :, i::2, k::2].shape, generator=gen, dtype=torch.uint8)
            assert not torch.equal(y, x)
            other = _pass_codes(model, z1_input, y, j)
            for key in base:
                assert torch.equal(base[key], other[key]), (name, j, key)
            # each subimage of an earlier pass: some effect
            for s in [s for p in schedule[:j] for s in p]:
                i, k = divmod(s, 2)
                y = x.clone()
                y[:, :, i::2, k::2] = 255 - y[:, :, i::2, k::2]
                other = _pass_codes(model, z1_input, y, j)
                assert not torch.equal(base["mean"], other["mean"]), (name, j, s)
            # and on z1
            other = model.likelihood.pass_codes(z1_input.flip(-1), F.pixel_unshuffle(x.float(), 2), j)
            assert not torch.equal(base["mean"], other["mean"])


def test_pass_inputs(ce):
    config = small_config(ce)
    model = ce.ContextVAE(config, ce.SCHEDULES["polyphase"], width=12, blocks=1)
    assert [net.spec.in_channels for net in model.likelihood.nets] == [4 + 3 * j for j in range(4)]
    assert [net.spec.out_channels for net in model.likelihood.nets] == [3] * 4
    cb = ce.ContextVAE(config, ce.SCHEDULES["checkerboard"], width=12, blocks=1)
    assert [net.spec.in_channels for net in cb.likelihood.nets] == [4, 10]
    with pytest.raises(ValueError):
        ce.ContextVAE(config, [[0, 1], [2]])


def test_single_pass_is_todays_model(ce):
    """Schedule [[0,1,2,3]] without context is BitSwapVAE's per-subpixel p(x|z1): with its weights, the same loss."""
    torch.manual_seed(0)
    config = small_config(ce)
    reference = ce.BitSwapVAE(config)
    x = patches(6)
    ce.data_dependent_init(reference, x)
    with torch.no_grad():  # a non-trivial head (it starts with zero bias)
        for p in reference.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model = ce.ContextVAE(config, [[0, 1, 2, 3]])
    assert model.likelihood.nets[0].spec.in_channels == config.latent_channels  # z1 only, no pixels
    state = {k.replace("p.0.", "p.0.nets.0.", 1) if k.startswith("p.0.") else k: v for k, v in reference.state_dict().items()}
    model.load_state_dict(state)
    for free_bits in (0.0, 1.0):
        a = reference(x, free_bits=free_bits, generator=torch.Generator().manual_seed(4))
        b = model(x, free_bits=free_bits, generator=torch.Generator().manual_seed(4))
        for key in ("loss", "neg_elbo", "recon", "kl"):
            assert torch.allclose(getattr(a, key), getattr(b, key), rtol=1e-5, atol=1e-6), key
    # and per subpixel: the pass's codes are the reference's squeezed head
    with torch.no_grad():
        z1 = torch.randint(0, config.latent_bins, (2, config.latent_channels, 16, 16), generator=torch.Generator().manual_seed(5))
        mean, log_scale, coefs = reference.prior(0, z1)
        codes = _pass_codes(model, ce.latents_to_input(z1.float(), config.latent_bins), patches(2), 0)
        for s in range(4):
            i, k = divmod(s, 2)
            assert torch.equal(codes["mean"][:, 0, s], mean[:, :, i::2, k::2])
            assert torch.equal(codes["log_scale"][:, 0, s], log_scale[:, :, i::2, k::2])
            assert torch.equal(codes["coefs"][:, 0, s], coefs[:, :, i::2, k::2])


def test_macs_count(ce):
    config = dataclasses.replace(small_config(ce), latent_layers=1)
    model = ce.ContextVAE(config, ce.SCHEDULES["independent"])
    macs = ce.count_macs(model)
    w, zc, hw = config.width, config.latent_channels, 16 * 16
    # q: conv_in 5x5 12->w, block 2 x (3x3 w->w), head 3x3 w->2zc; p: conv_in 3x3 zc->w, block, head w->(2*12+12)
    q = hw * (12 * w * 25 + 2 * w * w * 9 + w * 2 * zc * 9)
    p = hw * (zc * w * 9 + 2 * w * w * 9 + w * 36 * 9)
    assert macs["likelihood_mmac"] == pytest.approx(p / 1e6)
    assert macs["decode_mmac"] == pytest.approx((p + q) / 1e6)
