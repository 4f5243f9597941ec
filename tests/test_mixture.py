"""A mixture of logistics per pixel: integer weights, the entropy model, the float likelihood and
its start from a trained one-logistic model. (Export, coding and files of a mixture model run in
tests/test_polyphase.py with the other polyphase models.)"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import bitswap_plugin as bsw
from bitswap_plugin import zoo
from bitswap_plugin.distributions import TOTAL, DiscretizedLogistic, DiscretizedMixture
from bitswap_plugin.errors import BitSwapError
from bitswap_plugin.fixedpoint import LOGIT_FRAC, LOGIT_MAX, MIXTURE_WEIGHT_BITS, mixture_weights, normalised_weights
from bitswap_plugin.integer_model import save_integer_model
from bitswap_plugin.model import export_integer_model
from bitswap_plugin.polyphase import PolyphaseConfig
from bitswap_plugin.polyphase_model import PassLikelihood, PolyphaseBitSwapVAE
from bitswap_plugin.train import data_dependent_init

ONE = 1 << MIXTURE_WEIGHT_BITS
CONFIG = PolyphaseConfig(channels=3, latent_channels=4, latent_layers=2, width=16, res_blocks=1, channel_conditioning=True,
                         schedule="03|12", context_width=12, context_blocks=1, name="mix-test")


def patches(n: int = 4, channels: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, channels, 32, 32), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def latents(n: int = 2, seed: int = 5) -> torch.Tensor:
    return torch.randint(0, CONFIG.latent_bins, (n, CONFIG.latent_channels, 16, 16), generator=torch.Generator().manual_seed(seed))


def random_mixture(k: int, n: int, seed: int) -> DiscretizedMixture:
    """Components anywhere, sharp to broad; weights from logits over the whole range (some ~0)."""
    gen = torch.Generator().manual_seed(seed)
    mean = torch.randint(-256, 257 * 256, (k, n), generator=gen)
    log_scale = torch.randint(-3 * 64, 7 * 64, (k, n), generator=gen)
    logits = torch.randint(-2 * LOGIT_MAX, 2 * LOGIT_MAX, (k, n), generator=gen)
    return DiscretizedMixture(mean, log_scale, mixture_weights(logits), 256)


def test_weights_are_exact_integers_that_follow_the_logits():
    logits = torch.tensor([[0, 256, -5000, 7, 0], [0, 0, 0, 7, 10**6], [0, -256, 0, 7, 0]])
    weights = mixture_weights(logits)
    assert weights.sum(0).tolist() == [ONE] * 5
    assert (weights >= 0).all()
    assert abs(int(weights[0, 0]) - int(weights[1, 0])) <= 2  # equal logits, equal shares (the remainder to component 0)
    ratio = weights[0, 1] / weights[1, 1]
    assert ratio == pytest.approx(np.e, rel=1e-3)  # one nat apart
    assert weights[2, 2] == weights[1, 2] and weights[0, 2] < ONE * np.exp(-LOGIT_MAX / (1 << LOGIT_FRAC)) * 1.01  # clamped
    assert torch.equal(normalised_weights(torch.tensor([[3], [1]])), torch.tensor([[3 * ONE // 4], [ONE // 4]]))


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_a_mixture_gives_every_bin_a_frequency_and_locate_inverts_it(k):
    family = random_mixture(k, 200, seed=k)
    bins = torch.arange(257)[:, None].expand(257, 200)
    cdf = family.cdf(bins)
    assert (cdf[0] == 0).all() and (cdf[-1] == TOTAL).all()
    assert (cdf.diff(dim=0) >= 1).all()  # every symbol is codable
    for symbol in (torch.randint(0, 256, (200,), generator=torch.Generator().manual_seed(k)), torch.zeros(200, dtype=torch.int64)):
        start, freq = family.ranges(symbol)
        assert torch.equal(start, cdf.gather(0, symbol[None])[0]) and torch.equal(freq, cdf.gather(0, symbol[None] + 1)[0] - start)
        for cf in (start, start + freq - 1, start + freq // 2):
            assert all(torch.equal(a, b) for a, b in zip(family.locate(cf), (symbol, start, freq)))
    # whole-range sweep of one symbol's cumulative frequencies: always the owner
    cf = torch.randint(0, TOTAL, (200,), generator=torch.Generator().manual_seed(99))
    symbol, start, freq = family.locate(cf)
    assert ((start <= cf) & (cf < start + freq)).all()
    assert torch.equal(family.ranges(symbol)[0], start)
    sliced = family[50:120]
    assert all(torch.equal(a, b[50:120]) for a, b in zip(sliced.locate(cf[50:120]), (symbol, start, freq)))


def test_one_component_is_the_logistic_and_padding_costs_nothing():
    gen = torch.Generator().manual_seed(3)
    mean, log_scale = torch.randint(0, 256 * 256, (1, 300), generator=gen), torch.randint(-192, 400, (1, 300), generator=gen)
    symbols = torch.randint(0, 256, (300,), generator=gen)
    known = torch.rand(300, generator=gen) < 0.3
    single = DiscretizedMixture(mean, log_scale, torch.full((1, 300), ONE), 256, known)
    logistic = DiscretizedLogistic(mean[0], log_scale[0], 256, known)
    assert all(torch.equal(a, b) for a, b in zip(single.ranges(symbols), logistic.ranges(symbols)))
    cf = torch.randint(0, TOTAL, (300,), generator=gen)
    assert all(torch.equal(a, b) for a, b in zip(single.locate(cf), logistic.locate(cf)))
    assert (single.locate(cf)[0][known] == 0).all()


def test_the_weights_after_a_channel_are_each_components_share_of_it():
    family = random_mixture(3, 100, seed=7)
    symbols = torch.randint(0, 256, (100,), generator=torch.Generator().manual_seed(8))
    after = family.posterior_weights(symbols)
    assert after.sum(0).tolist() == [ONE] * 100
    cdf = family.component_cdf(symbols[None] + torch.tensor([[0], [1]]))
    joint = family.weights * (cdf[1] - cdf[0])
    assert torch.equal(after, normalised_weights(joint))
    expected = joint.double() / joint.double().sum(0)
    assert torch.allclose(after.double() / ONE, expected, atol=4.0 / ONE)


def test_the_config_field_is_checked_and_absent_at_one():
    assert "mixture" not in CONFIG.to_json()
    assert '"mixture":3' in dataclasses.replace(CONFIG, mixture=3).to_json()
    for bad in (0, 17):
        with pytest.raises(BitSwapError, match="mixture"):
            dataclasses.replace(CONFIG, mixture=bad)


@pytest.mark.parametrize("schedule, channels, conditioning", [("03|12", 3, True), ("0|1|2|3", 3, True), ("0123", 3, False), ("03|12", 1, False)])
def test_the_mixture_loss_is_finite_and_trains(schedule, channels, conditioning):
    torch.manual_seed(0)
    model = PolyphaseBitSwapVAE(dataclasses.replace(CONFIG, schedule=schedule, channels=channels, channel_conditioning=conditioning, mixture=3))
    x = patches(channels=channels)
    data_dependent_init(model, x)
    loss = model(x, generator=torch.Generator().manual_seed(1))
    assert all(torch.isfinite(v) for v in (loss.loss, loss.neg_elbo, loss.recon, *loss.kl))
    loss.loss.backward()
    grads = [p.grad for p in model.p[0].parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_components_and_logits_layout():
    """A mixture of heads A and B whose logits pick A (or B) is A's (or B's) plain likelihood."""
    torch.manual_seed(0)
    plains = [PassLikelihood(CONFIG), PassLikelihood(CONFIG)]
    with torch.no_grad():  # broad distributions (so that one component's tail never dominates), A's shifted in B
        for net in plains[0].nets:
            net.head.conv.weight.mul_(0.01)
    plains[1].load_state_dict({k: v + 0.1 if k.endswith("head.conv.bias") else v for k, v in plains[0].state_dict().items()})
    mixture = PassLikelihood(dataclasses.replace(CONFIG, mixture=2))
    mixture.load_state_dict({k: v for k, v in plains[0].state_dict().items() if "head" not in k}, strict=False)
    x, z1 = patches(2), latents()
    bits = [p.recon_bits(z1, x, False) for p in plains]
    assert (bits[0] - bits[1]).abs().min() > 1.0
    for pick in (0, 1):
        with torch.no_grad():
            for j, subimages in enumerate(CONFIG.passes):
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
def test_a_mixture_grown_from_one_logistic_starts_as_it(levels, conditioning):
    """``adopt`` makes every component a copy of the trained head (the others a little perturbed,
    their scales e**+-0.5 as wide): with the logits pinned to component 0 the mixture is the plain
    likelihood, and every other network is the trained one."""
    torch.manual_seed(0)
    config = dataclasses.replace(CONFIG, schedule="0|1|2|3", levels=levels, channel_conditioning=conditioning)
    trained = PolyphaseBitSwapVAE(config)
    x = patches(2)
    data_dependent_init(trained, x)
    with torch.no_grad():  # broad distributions, so that no component's tail dominates where its weight is ~0
        for net in trained.p[0].nets:
            net.head.conv.weight.mul_(0.01)
    mixture = PolyphaseBitSwapVAE(dataclasses.replace(config, mixture=3))
    assert mixture.adopt(trained) == []
    weights = {k: v for k, v in trained.state_dict().items() if isinstance(v, torch.Tensor) and not k.startswith("p.0.")}
    assert all(torch.equal(v, mixture.state_dict()[k]) for k, v in weights.items())
    z1 = latents()
    with torch.no_grad():
        reference = trained.p[0].recon_bits(z1, x, False)
        started = mixture.p[0].recon_bits(z1, x, False)
        assert not torch.allclose(started, reference, rtol=1e-4)  # the other components weigh in
        for net in mixture.p[0].nets:
            net.head.conv.bias[-net.spec.logit_channels :].view(3, -1)[0] = 100.0  # clamped to LOGIT_MAX: component 0 alone
        pinned = mixture.p[0].recon_bits(z1, x, False)
    assert torch.allclose(pinned, reference, rtol=1e-3)
    with pytest.raises(BitSwapError, match="one at a time"):
        PolyphaseBitSwapVAE(dataclasses.replace(config, mixture=3, latent_channels=2)).adopt(trained, [[0, 1], [0, 1]])


def test_a_grey_mixture_model_codes_exactly(tmp_path):
    """One channel: no weight updates, one step per subimage; the file decodes to the pixels."""
    torch.manual_seed(0)
    model = PolyphaseBitSwapVAE(dataclasses.replace(CONFIG, channels=1, channel_conditioning=False, mixture=2, name="mix-grey"))
    x = patches(16, channels=1)
    data_dependent_init(model, x)
    model.calibrate(x, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "mix-grey.safetensors"
    save_integer_model(export_integer_model(model.eval()), path)
    name = zoo.register_model(path)
    rng = np.random.default_rng(4)
    image = np.clip(np.add.outer(np.arange(40), np.arange(70)) + rng.integers(0, 30, (40, 70)), 0, 255).astype(np.uint8)
    data = bsw.compress(image, model=name, method="bitswap")
    for batch in (1, None):
        np.testing.assert_array_equal(bsw.decompress(data, batch_size=batch), image)
