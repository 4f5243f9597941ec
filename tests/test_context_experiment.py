"""What benchmarks/context_experiment.py adds to the package's models (tests/test_polyphase.py covers
those): schemes, the mixture likelihood, old checkpoints, the validation terms and the MAC count."""

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
from bitswap_plugin.polyphase import PolyphaseConfig, subimage
from bitswap_plugin.polyphase_model import PassLikelihood, PolyphaseBitSwapVAE

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
    assert [type(m) for m in built.values()] == [PolyphaseBitSwapVAE, PolyphaseBitSwapVAE, PolyphaseBitSwapVAE, ce.MixtureBitSwapVAE]
    assert [(m.config.schedule, m.config.context_width, m.config.context_blocks) for m in built.values()] == [
        ("03|12", 64, 2), ("0|1|2|3", 32, 1), ("0123", 32, 2), ("0|1|2|3", 48, 2)]
    assert all(m.config.width == 64 and m.config.latent_channels == 4 for m in built.values())


@pytest.mark.parametrize("schedule, conditioning", [("03|12", True), ("0|1|2|3", True), ("0123", False)])
def test_mixture_loss_is_finite(ce, schedule, conditioning):
    torch.manual_seed(0)
    model = ce.MixtureBitSwapVAE(poly_config(schedule, channel_conditioning=conditioning), 3)
    x = patches()
    ce.data_dependent_init(model, x)
    loss = model(x, generator=torch.Generator().manual_seed(1))
    assert all(torch.isfinite(v) for v in (loss.loss, loss.neg_elbo, loss.recon, *loss.kl))
    assert torch.allclose(loss.neg_elbo, loss.recon + loss.kl.sum(), rtol=1e-5)
    loss.loss.backward()
    grads = [p.grad for p in model.p[0].parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    with pytest.raises(NotImplementedError):
        model.export()


@pytest.mark.parametrize("levels", [1, 2])
def test_one_component_is_the_plain_likelihood(ce, levels):
    torch.manual_seed(0)
    config = poly_config("0|1|2|3" if levels > 1 else "03|12", levels=levels)
    plain, mixture = PassLikelihood(config), ce.MixturePassLikelihood(config, 1)
    x, z1 = patches(2), latents()
    plain.calibrate(z1, x)
    mixture.load_state_dict(plain.state_dict())
    for quantized in (False, True):
        assert torch.allclose(mixture.recon_bits(z1, x, quantized), plain.recon_bits(z1, x, quantized), rtol=1e-6)


def test_components_and_logits_layout(ce):
    """A mixture of heads A and B whose logits pick A (or B) is A's (or B's) plain likelihood."""
    torch.manual_seed(0)
    config = poly_config()
    plains = [PassLikelihood(config), PassLikelihood(config)]
    with torch.no_grad():  # broad distributions (so that one component's tail never dominates), A's shifted in B
        for net in plains[0].nets:
            net.head.conv.weight.mul_(0.01)
    plains[1].load_state_dict({k: v + 0.1 if k.endswith("head.conv.bias") else v for k, v in plains[0].state_dict().items()})
    mixture = ce.MixturePassLikelihood(config, 2)
    mixture.load_state_dict({k: v for k, v in plains[0].state_dict().items() if "head" not in k}, strict=False)
    x, z1 = patches(2), latents()
    bits = [p.recon_bits(z1, x, False) for p in plains]
    assert (bits[0] - bits[1]).abs().min() > 1.0
    for pick in (0, 1):
        with torch.no_grad():
            for j, subimages in enumerate(config.passes):
                m = len(subimages)
                for name in ("weight", "bias"):
                    heads = [getattr(p.nets[j].head.conv, name).split((3 * m, 3 * m, 3 * m)) for p in plains]
                    logits = heads[0][0].new_zeros((2 * m,) + heads[0][0].shape[1:])  # logit k*m + i
                    if name == "bias":
                        logits.view(2, m)[pick], logits.view(2, m)[1 - pick] = 100.0, -100.0  # clamped to +-LOGIT_MAX
                    blocks = [h[b] for b in range(3) for h in heads]  # means A, B, log-scales A, B, coefficients A, B
                    getattr(mixture.nets[j].head.conv, name).copy_(torch.cat(blocks + [logits]))
        assert torch.allclose(mixture.recon_bits(z1, x, False), bits[pick], rtol=1e-5)


@pytest.mark.parametrize("levels, conditioning", [(1, True), (2, False)])
def test_a_mixture_adopting_one_logistic_starts_as_it(ce, tmp_path, levels, conditioning):
    """``adopt_single`` makes every component a copy of the trained head (the others a little
    perturbed, their scales e**+-0.5 as wide): with the logits pinned to component 0 the mixture is
    the plain likelihood, and ``start_from`` loads a float weights file into either model."""
    torch.manual_seed(0)
    config = poly_config("0|1|2|3", levels=levels, channel_conditioning=conditioning)
    trained = PolyphaseBitSwapVAE(config)
    x = patches(2)
    ce.data_dependent_init(trained, x)
    with torch.no_grad():  # broad distributions, so that no component's tail dominates where its weight is ~0
        for net in trained.p[0].nets:
            net.head.conv.weight.mul_(0.01)
    path = tmp_path / "trained.float.safetensors"
    save_float_model(trained, path)
    plain, mixture = PolyphaseBitSwapVAE(config), ce.MixtureBitSwapVAE(config, 3)
    for model in (plain, mixture):
        ce.start_from(model, str(path), torch.Generator().manual_seed(0))
    weights = {k: v for k, v in trained.state_dict().items() if isinstance(v, torch.Tensor)}
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in weights.items())
    assert all(torch.equal(v, mixture.state_dict()[k]) for k, v in weights.items() if not k.startswith("p.0."))
    z1 = latents()
    with torch.no_grad():
        reference = trained.p[0].recon_bits(z1, x, False)
        started = mixture.p[0].recon_bits(z1, x, False)
        assert not torch.allclose(started, reference, rtol=1e-4)  # the other components weigh in
        for net, p in zip(mixture.p[0].nets, mixture.p[0].plan):
            logits = 3 * sum(mixture.p[0]._head_widths(len(p.subimages)))
            net.head.conv.bias[logits : logits + len(p.subimages)] = 100.0  # clamped to LOGIT_MAX: component 0 alone
        pinned = mixture.p[0].recon_bits(z1, x, False)
    assert torch.allclose(pinned, reference, rtol=1e-3)


def test_mixture_pass_sees_earlier_passes_only(ce):
    """Changing a subimage changes no other subimage's bits in its own or an earlier pass, and every
    later pass's bits."""
    torch.manual_seed(0)
    for schedule in ("03|12", "0|1|2|3"):
        config = poly_config(schedule)
        likelihood = ce.MixturePassLikelihood(config, 2)
        pass_of = {s: j for j, subimages in enumerate(config.passes) for s in subimages}
        x, z1 = patches(2), latents()
        with torch.no_grad():
            base = likelihood.recon_bits(z1, x, False)
            for changed in range(4):
                y = x.clone()
                subimage(y, changed).copy_(255 - subimage(y, changed))
                bits = likelihood.recon_bits(z1, y, False)
                for s in range(4):
                    if s != changed:
                        assert (bits[s] != base[s]) == (pass_of[s] > pass_of[changed]), (schedule, changed, s)


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
