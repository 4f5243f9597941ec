"""Architecture bitswap-polyphase: pass context, integer export, coding, files and training."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import bitswap_plugin as bsw
from bitswap_plugin import container, zoo
from bitswap_plugin.errors import BitSwapError, CorruptFileError
from bitswap_plugin.fileformat import VERSION, VERSIONS
from bitswap_plugin.integer_model import integer_neg_elbo, save_integer_model
from bitswap_plugin.model import export_integer_model, load_float_model, neg_elbo, save_float_model
from bitswap_plugin.architecture import COEF_FRAC, latents_to_input, pixels_to_input
from bitswap_plugin.polyphase import MAX_COEF_FRAC, MAX_LEVELS, PolyphaseConfig, PolyphaseVAE, pass_input, pass_plan, pixel_slices, subimage
from bitswap_plugin.polyphase_model import PolyphaseBitSwapVAE

CONFIG = PolyphaseConfig(channels=3, latent_channels=4, latent_layers=2, width=16, res_blocks=1, channel_conditioning=True,
                         context_width=12, context_blocks=1, name="pp-test")
NESTED = dataclasses.replace(CONFIG, levels=3, name="pp-test-3-levels")
"""Subimage A decoded as its own subimages, and their A as theirs."""
WIDE_HEAD = dataclasses.replace(NESTED, head_input_bits=10, name="pp-test-wide-head")
"""Heads reading 10-bit activations, convolved in 8-bit digits."""
MIXTURE = dataclasses.replace(NESTED, levels=4, mixture=3, head_input_bits=12, coef_frac=12, name="pp-test-mixture")
"""As the RGB default: four levels (subimage A recursed down to 2x2 pixels a patch), three logistics per
pixel, their weights following the decoded channels, from heads reading the widest activations a
config allows (12 bits), channel-conditioning coefficients of 12 fractional bits."""


def _smooth(n: int, channels: int, seed: int) -> torch.Tensor:
    """(n, C, 32, 32) uint8 patches: random ramps plus noise (learnable, not constant)."""
    rng = np.random.default_rng(seed)
    ramp = np.add.outer(np.arange(32), np.arange(32))[None, None]
    base = rng.integers(0, 160, (n, channels, 1, 1)) + ramp * rng.uniform(0.5, 2.5, (n, 1, 1, 1))
    return torch.from_numpy(np.clip(base + rng.integers(0, 12, (n, channels, 32, 32)), 0, 255).astype(np.uint8))


@pytest.fixture(scope="module", params=[CONFIG, NESTED, WIDE_HEAD, MIXTURE],
                ids=lambda config: f"levels{config.levels}-head{config.head_input_bits}-mixture{config.mixture}")
def trained(request: pytest.FixtureRequest) -> tuple[PolyphaseBitSwapVAE, torch.Tensor]:
    """A small polyphase model trained briefly, calibrated and QAT-tuned a little."""
    torch.manual_seed(0)
    model = PolyphaseBitSwapVAE(request.param)
    data = _smooth(64, 3, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=4e-3)
    for step in range(50):
        if step == 40:
            model.calibrate(data[:32], generator=torch.Generator().manual_seed(0))
        loss = model(data[step % 2 * 32 : step % 2 * 32 + 32])
        optimizer.zero_grad()
        loss.loss.backward()
        optimizer.step()
    return model, data


@pytest.fixture(scope="module")
def registered(trained, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("pp") / f"{trained[0].config.name}.safetensors"
    save_integer_model(export_integer_model(trained[0]), path)
    return zoo.register_model(path)


def test_schedules_are_validated():
    assert PolyphaseConfig(schedule="03|12").passes == ((0, 3), (1, 2))
    for bad in ("0|1|2", "0|1|2|3|3", "01|2|x", "", "0||123"):
        with pytest.raises(BitSwapError, match="schedule"):
            PolyphaseConfig(schedule=bad)
    assert PolyphaseConfig.from_json(CONFIG.to_json()) == CONFIG


def test_levels_are_validated_and_leave_earlier_configs_as_they_were():
    assert "levels" not in CONFIG.to_json() and PolyphaseConfig.from_json(NESTED.to_json()) == NESTED
    assert "head_input_bits" not in CONFIG.to_json() and PolyphaseConfig.from_json(WIDE_HEAD.to_json()) == WIDE_HEAD
    for bad in (7, 13):
        with pytest.raises(BitSwapError, match="head_input_bits"):
            dataclasses.replace(CONFIG, head_input_bits=bad)
    for bad in (0, 5):
        with pytest.raises(BitSwapError, match="levels"):
            dataclasses.replace(CONFIG, levels=bad)
    with pytest.raises(BitSwapError, match="first pass must be subimage A alone"):
        dataclasses.replace(CONFIG, levels=2, schedule="03|12")
    with pytest.raises(BitSwapError, match="cannot be exact in float32"):  # z1 squeezed 4**3 times: 2,048 inputs
        PolyphaseBitSwapVAE(dataclasses.replace(CONFIG, latent_channels=32, levels=4))
    assert [p.name for p in pass_plan(NESTED)] == [
        "pass.0.0.0", "pass.0.0.1", "pass.0.0.2", "pass.0.0.3", "pass.0.1", "pass.0.2", "pass.0.3", "pass.1", "pass.2", "pass.3"]


@pytest.mark.parametrize("config", [CONFIG, NESTED, dataclasses.replace(CONFIG, schedule="03|12")])
def test_the_passes_cover_every_pixel_once(config: PolyphaseConfig):
    count = torch.zeros(1, 1, 32, 32, dtype=torch.int64)
    for p in pass_plan(config):
        for s in p.subimages:
            subimage(count, s, p.depth).add_(1)
    assert bool((count == 1).all())


def test_a_pass_sees_only_earlier_passes(trained):
    model = export_integer_model(trained[0])
    plan = pass_plan(model.config)
    cells = [(j, p.depth, s) for j, p in enumerate(plan) for s in p.subimages]
    pass_at = {(pixel_slices(s, depth)[0].start, pixel_slices(s, depth)[1].start, 2 << depth): j for j, depth, s in cells}
    x = _smooth(2, 3, 5).long()
    z1 = torch.randint(0, 1024, (2, 4, 16, 16), generator=torch.Generator().manual_seed(3))
    base = [(index, dist.ranges(x[index])) for index, dist in model.likelihood(z1).steps(x)]
    for changed, depth, s in cells:  # perturb one subimage: only the steps of later passes may change
        y = x.clone()
        subimage(y, s, depth).copy_(255 - subimage(y, s, depth))
        steps = list(model.likelihood(z1).steps(y))
        assert len(steps) == len(base)
        for (index, ranges), (_, dist) in zip(base, steps):
            same = all(torch.equal(a, b) for a, b in zip(ranges, dist.ranges(x[index])))
            step_pass = pass_at[(index[2].start, index[3].start, index[2].step)]
            if step_pass < changed or (step_pass == changed and index[1].start == 0):
                assert same, (changed, index)
    later = list(model.likelihood(z1).steps(torch.where(subimage_mask(0), 255 - x, x)))
    assert any(not torch.equal(a.ranges(x[i])[0], b[1][0]) for (i, a), b in zip(later, base))


def subimage_mask(s: int) -> torch.Tensor:
    mask = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    subimage(mask, s).fill_(True)
    return mask


def test_integer_model_reproduces_the_quantized_model(trained):
    model, data = trained
    integer = export_integer_model(model)
    assert isinstance(integer, PolyphaseVAE)
    heads = [conv for name, conv in integer.convolutions().items() if name.endswith(".head")]
    assert {conv.in_max for conv in heads} == {2**model.config.head_input_bits - 1}
    if model.config.head_input_bits > 8:  # the digits are needed: float32 alone could round these sums
        assert max(conv.bound for conv in heads) >= 2**24
    z1 = torch.randint(0, 1024, (4, 4, 16, 16), generator=torch.Generator().manual_seed(2))
    x = data[:4]
    with torch.no_grad():  # every pass, at every level, gives the integer model's very codes
        for p, net in zip(model.p[0].plan, model.p[0].nets):
            float_codes = net(pass_input(latents_to_input(z1.float(), 1024), x.float(), p), True)
            integer_codes = integer.pass_codes(p.name, pass_input(latents_to_input(z1, 1024), x.long(), p))
            assert all(torch.equal(a.long(), b) for a, b in zip(float_codes, integer_codes)), p.name
    x = torch.cat([data] * 2)
    quantized = neg_elbo(model, x, generator=torch.Generator().manual_seed(0))
    coded = integer_neg_elbo(integer, x, torch.Generator().manual_seed(0))
    assert abs(coded / quantized - 1) < 0.01, (coded, quantized)


def test_files_round_trip_and_decode_alike_in_any_batch(registered: str):
    rng = np.random.default_rng(9)
    image = np.clip(np.add.outer(np.arange(90), np.arange(110))[..., None] + rng.integers(0, 20, (90, 110, 3)), 0, 255).astype(np.uint8)
    for method in ("bitswap", "bbans"):
        data = bsw.compress(image, model=registered, method=method)
        assert bsw.read_info(data).models[0][0] == registered
        for batch in (1, 7, None):
            np.testing.assert_array_equal(bsw.decompress(data, batch_size=batch), image)
    rgba = np.dstack([image, image[..., :1]])
    np.testing.assert_array_equal(bsw.decompress(bsw.compress(rgba, model=registered)), rgba)


def test_an_export_writes_the_same_bytes_every_time(trained, tmp_path: Path):
    """Models are named by their files' hashes: the metadata must not come out in a random order."""
    model, _ = trained
    integer, files = export_integer_model(model), set()
    for i in range(6):
        save_integer_model(integer, tmp_path / f"{i}.safetensors")
        save_float_model(model, tmp_path / f"{i}.float.safetensors", half=True)
        files.add(((tmp_path / f"{i}.safetensors").read_bytes(), (tmp_path / f"{i}.float.safetensors").read_bytes()))
    assert len(files) == 1
    assert zoo.load_model_file(tmp_path / "0.safetensors").metadata() == integer.metadata()


def test_float_weights_round_trip_in_half_precision(trained, tmp_path: Path):
    model, _ = trained
    save_float_model(model, tmp_path / "pp.float.safetensors", half=True)
    loaded = load_float_model(tmp_path / "pp.float.safetensors")
    assert type(loaded) is PolyphaseBitSwapVAE and loaded.config == model.config and loaded.quantized
    for (name, a), (_, b) in zip(model.named_parameters(), loaded.named_parameters()):
        assert torch.equal(a.detach().half().float(), b.detach()), name
    assert (tmp_path / "pp.float.safetensors").stat().st_size < 0.6 * 4 * sum(p.numel() for p in model.parameters())


def test_streams_before_version_3_cannot_name_a_model_with_pixel_context(registered: str):
    image = np.full((64, 96, 3), 90, np.uint8)
    data = bsw.compress(image, model=registered, method="bitswap")
    header, head, tail = container.unpack(data)
    assert header.plan.version == VERSION
    header.plan.version, header.plan.scale_offsets, header.plan.smooth_blends = VERSIONS[2], [], []
    with pytest.raises(CorruptFileError, match="version 2 stream names a model with pixel context"):
        bsw.decompress(container.pack(header, head, tail))


def test_a_model_with_fewer_latent_channels_keeps_the_weights_of_the_channels_it_keeps(trained):
    model, data = trained
    keep = [[3, 1], [0, 2]]  # z1's channels 3 and 1, z2's 0 and 2
    small = PolyphaseBitSwapVAE(dataclasses.replace(model.config, latent_channels=2, name="small"))
    assert small.adopt(model, keep) == []
    kl = model.latent_channel_kl(data, torch.Generator().manual_seed(0))
    assert kl.shape == (2, 4) and bool((kl > -1e-3).all())

    x = pixels_to_input(data[:4].float())
    for full, kept in zip(model.q[0](x), small.q[0](x)):  # q(z1 | x): the kept channels' mean and log-scale
        assert torch.equal(kept, full[:, keep[0]])
    reduced = copy.deepcopy(model)  # the model with the dropped channels' input weights zeroed
    dropped = [[c for c in range(4) if c not in layer] for layer in keep]
    for name, net in reduced.integer_networks():
        (reads, _), weight = model.latent_ports()[name], net.conv_in.conv.weight.data
        if reads:
            layer, block = reads
            for c in dropped[layer - 1]:
                weight[:, c * block : (c + 1) * block] = 0
    z2 = torch.randint(0, 1024, (4, 4, 16, 16))
    for full, kept in zip(reduced.p[1](latents_to_input(z2.float(), 1024)), small.p[1](latents_to_input(z2[:, keep[1]].float(), 1024))):
        assert torch.allclose(kept, full[:, keep[0]], atol=0.1)  # p(z1 | z2) reads the kept channels of z2, writes those of z1
    z1, pixels = torch.randint(0, 1024, (4, 4, 16, 16)), data[:4].float()
    for p, net, small_net in zip(model.p[0].plan, reduced.p[0].nets, small.p[0].nets):  # passes at every level
        full = net(pass_input(latents_to_input(z1.float(), 1024), pixels, p))
        kept = small_net(pass_input(latents_to_input(z1[:, keep[0]].float(), 1024), pixels, p))
        assert all(torch.allclose(a, b, atol=0.1) for a, b in zip(full, kept)), (p.name, [float((a - b).abs().max()) for a, b in zip(full, kept)])  # codes: 1/256 bin; float32 sums in another order


def test_a_grown_model_adopts_the_networks_it_shares(trained):
    model = trained[0]
    if model.config.levels == MAX_LEVELS:  # the deepest model grows no further
        with pytest.raises(BitSwapError, match="levels"):
            dataclasses.replace(model.config, levels=MAX_LEVELS + 1)
        return
    grown = PolyphaseBitSwapVAE(dataclasses.replace(model.config, levels=model.config.levels + 1, name="grown"))
    fresh = grown.adopt(model)
    assert fresh == [p.name for p in pass_plan(grown.config) if p.depth == model.config.levels]
    theirs = dict(model.integer_networks())
    for name, net in grown.integer_networks():
        if name not in fresh:
            assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), theirs[name].state_dict().values())), name


def test_a_wider_deeper_model_starts_as_the_trained_one_and_learns_with_its_new_channels(trained):
    """Growing ``context_width``, ``context_blocks``, ``width`` and ``res_blocks`` keeps every
    trained weight and the float model's function; the new channels are live (they get gradients)."""
    model, data = trained
    config = model.config
    grown = PolyphaseBitSwapVAE(dataclasses.replace(config, context_width=config.context_width + 6, context_blocks=config.context_blocks + 1,
                                                    width=config.width + 4, res_blocks=config.res_blocks + 1, name="grown-wider"))
    assert grown.adopt(model) == []
    assert grown.p[0].nets[-1].conv_in.conv.weight.shape[0] == config.context_width + 6 and len(grown.q[0].blocks) == config.res_blocks + 1
    reference = copy.deepcopy(model)
    reference.quantized = False  # growing keeps the float model; quantizers are calibrated anew
    generator = torch.Generator().manual_seed(0)
    before = reference(data[:8], generator=generator).neg_elbo
    after = grown(data[:8], generator=generator.manual_seed(0)).neg_elbo
    assert torch.allclose(before, after, rtol=1e-5), (float(before), float(after.detach()))
    head = grown.p[0].nets[-1].head.conv.weight
    assert bool((head[:, config.context_width :] == 0).all()) and bool((grown.p[0].nets[-1].conv_in.conv.weight != 0).any())
    after.backward()
    assert float(head.grad[:, config.context_width :].abs().sum()) > 0  # the zero weights reading new channels learn
    narrower = PolyphaseBitSwapVAE(dataclasses.replace(config, context_width=config.context_width - 2, name="narrower"))
    assert narrower.adopt(model) == [p.name for p in pass_plan(config)]


def test_finer_coefficient_codes_carry_the_same_float_model(trained):
    """``coef_frac`` only changes how finely the integer model rounds the coefficients: a model
    adopting weights of another precision gives the same float likelihood, its codes scaled."""
    model, data = trained
    frac = model.config.coef_frac
    assert ("coef_frac" in model.config.to_json()) == (frac != COEF_FRAC)
    assert PolyphaseConfig.from_json(model.config.to_json()) == model.config
    for bad in (COEF_FRAC - 1, MAX_COEF_FRAC + 1):
        with pytest.raises(BitSwapError, match="coef_frac"):
            dataclasses.replace(model.config, coef_frac=bad)
    other = MAX_COEF_FRAC if frac == COEF_FRAC else COEF_FRAC
    finer = PolyphaseBitSwapVAE(dataclasses.replace(model.config, coef_frac=other, name="other-coef-frac"))
    assert finer.adopt(model) == []
    z1 = torch.randint(0, 1024, (4, model.config.latent_channels, 16, 16))
    z1_input, pixels = latents_to_input(z1.float(), 1024), data[:4].float()
    for p, net, other_net in zip(model.p[0].plan, model.p[0].nets, finer.p[0].nets):
        mine, theirs = net(pass_input(z1_input, pixels, p)), other_net(pass_input(z1_input, pixels, p))
        assert torch.equal(mine[0], theirs[0]) and torch.equal(mine[1], theirs[1]), p.name  # means, log-scales
        assert torch.allclose(theirs[2], mine[2] * 2.0 ** (other - frac), rtol=1e-5, atol=1e-3), p.name  # coefficients
    assert torch.allclose(model.p[0].recon_bits(z1, data[:4], False), finer.p[0].recon_bits(z1, data[:4], False), rtol=1e-5)
