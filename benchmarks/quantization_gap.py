"""Where a model's float-to-integer gap comes from: its −ELBO with one kind of rounding switched off at a time.

    python benchmarks/quantization_gap.py --models polyphase-rgb-l3-3 polyphase-gray-l3 [--patches 1024] [--json OUT]

Loads a model's shipped float weights (``models/NAME.float.safetensors``: the
weights and calibrated steps its integer file was exported from) and
evaluates, on fixed validation crops (``model_report.py``'s, never Kodak) with
one posterior sample per crop (the same samples for every row):

* float: no quantization at all;
* quantized: the exact emulation of the integer model (what the files cost);
* quantized, with one rounding site made exact (the value before the floor,
  less the half step the floor's bias adds): integer weights, the activations
  read from the residual stream by each block and by the head, activations
  inside a block, the residual stream, the head's codes (all of them, then
  each kind alone: means, log-scales, channel coefficients, mixture logits);
* 10-bit activations read from the residual stream (steps a quarter as large,
  clipped at 1023), by the head only (models whose heads read 8 bits) and by
  every block (and 8-bit head), with the readers' weights coarser by what keeps
  the float32 convolution exact: a what-if that changes the integer model,
  here without retraining.

Rows that do not cost what ``quantized`` costs point at the rounding that a
wider integer model would recover.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from bitswap_plugin import model as float_model
from bitswap_plugin.architecture import NetSpec
from bitswap_plugin.fixedpoint import FLOAT32_EXACT_LIMIT, by_digits
from model_report import validation_patches, validation_paths

ROOT = Path(__file__).resolve().parents[1]
HEAD_CODES = ("means", "log-scales", "coefficients", "logits")
"""The kinds of code a head gives, in the order of its channels (:func:`architecture.split_head`)."""
SITES = ("weights", "block inputs", "activations inside a block", "residual stream", "head inputs", "head codes",
         *(f"head codes: {kind}" for kind in HEAD_CODES))
"""Rounding sites: block and head inputs are the activations read from the residual stream (qrelu)."""
WIDE_ACT_MAX = 1023


def _exact_requant(acc: torch.Tensor, rq: float_model.Requant) -> torch.Tensor:
    """What :func:`float_model._apply_requant` rounds to nearest, unrounded."""
    view = (1, -1, 1, 1)
    scale = rq.multiplier.to(acc.device).view(view) * 2.0**-rq.shift
    return (acc.double() + rq.bias.to(acc.device).view(view)) * scale - 0.5


def _head_kinds(spec: NetSpec) -> torch.Tensor:
    """The index in :data:`HEAD_CODES` of each of a head's output channels."""
    sizes = (spec.out_channels, spec.out_channels, spec.coef_channels, spec.logit_channels)
    return torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))


def _roles(net: float_model.BitSwapVAE) -> dict[float_model.QConv, str]:
    """The rounding site of each convolution's output."""
    roles = {}
    for module in net.modules():
        if isinstance(module, float_model.Net):
            roles[module.head] = "head codes"
            roles[module.conv_in] = "residual stream"
            for block in module.blocks:
                roles[block.conv1] = "activations inside a block"
                roles[block.conv2] = "residual stream"
    return roles


@contextlib.contextmanager
def exact_at(net: float_model.BitSwapVAE, site: str | None) -> Iterator[None]:
    """Quantized mode with the rounding at ``site`` (one of :data:`SITES`) switched off."""
    roles = _roles(net)
    saved = float_model.QConv.forward_quantized, float_model._qrelu
    exact_kinds = {}
    """Per head, which output channels are exact (where ``site`` is one kind of head code)."""
    if site is not None and site.startswith("head codes: "):
        kind = HEAD_CODES.index(site.removeprefix("head codes: "))
        exact_kinds = {m.head: (_head_kinds(m.spec) == kind).view(1, -1, 1, 1) for m in net.modules() if isinstance(m, float_model.Net)}

    def forward_quantized(conv, x, in_step, out_step, out_offset=None, in_max=None):
        w_int, rq = conv.quant_params(in_step, out_step, out_offset)
        if site == "weights":
            w, _, step = conv.weight_step(in_step, out_step, out_offset)
            w_int = (w / step.view(-1, 1, 1, 1)).float()
        acc = F.conv2d(x.float(), w_int, padding=conv.conv.padding)
        if in_max is not None and in_max > conv.in_max:  # as QConv.forward_quantized: exact sums by digits
            acc = by_digits(x, lambda digits: F.conv2d(digits, w_int, padding=conv.conv.padding))
        if conv in exact_kinds:
            return torch.where(exact_kinds[conv].to(acc.device), _exact_requant(acc, rq), float_model._apply_requant(acc, rq))
        return (_exact_requant if roles[conv] == site else float_model._apply_requant)(acc, rq)

    head_steps = {float(module.act_head_step) for module in net.modules() if isinstance(module, float_model.Net)}

    def qrelu(h, in_step, act_step, act_max=float_model.ACT_MAX):
        reader = "head inputs" if act_step in head_steps else "block inputs"  # a head's step is its own float
        requant = _exact_requant if site == reader else float_model._apply_requant
        return requant(h, float_model.qrelu_params(in_step, act_step)).clamp(0, act_max)

    float_model.QConv.forward_quantized, float_model._qrelu = forward_quantized, qrelu
    try:
        yield
    finally:
        float_model.QConv.forward_quantized, float_model._qrelu = saved


@contextlib.contextmanager
def wide_activations(net: float_model.BitSwapVAE, head_only: bool) -> Iterator[None]:
    """Activations read from the residual stream (by the heads only, or by every reader) in 10 bits
    (heads that already read more keep theirs); the convolutions reading them keep exact sums."""
    saved_qrelu = float_model._qrelu
    readers = []
    for module in net.modules():
        if isinstance(module, float_model.Net):
            readers += [] if head_only else [(block.conv1, block, "act_in_step") for block in module.blocks]
            if module.spec.head_in_max == float_model.ACT_MAX:
                readers.append((module.head, module, "act_head_step"))
    saved = [(conv.budget, float(getattr(owner, name))) for conv, owner, name in readers]
    ratio = float_model.ACT_MAX / WIDE_ACT_MAX
    for conv, owner, name in readers:
        conv.budget = (FLOAT32_EXACT_LIMIT - 1) // WIDE_ACT_MAX - conv.conv.weight[0].numel()
        getattr(owner, name).mul_(ratio)
    wide = {float(getattr(owner, name)) for _, owner, name in readers}
    float_model._qrelu = lambda h, in_step, act_step, act_max=float_model.ACT_MAX: float_model._apply_requant(
        h, float_model.qrelu_params(in_step, act_step)).clamp(0, WIDE_ACT_MAX if act_step in wide else act_max)
    try:
        yield
    finally:
        float_model._qrelu = saved_qrelu
        for (conv, owner, name), (budget, step) in zip(readers, saved):
            conv.budget = budget
            getattr(owner, name).fill_(step)


def report(name: str, val_paths: list[Path], count: int) -> dict[str, float]:
    net = float_model.load_float_model(ROOT / "models" / f"{name}.float.safetensors").float()
    if not net.quantized:
        raise SystemExit(f"{name}'s float weights must be calibrated")
    patches = validation_patches(val_paths, count, net.config.channels == 1)

    def neg_elbo(quantized: bool) -> float:
        net.quantized = quantized
        return float_model.neg_elbo(net, patches, 128, generator=torch.Generator().manual_seed(7))

    rows = {"float": neg_elbo(False), "quantized": neg_elbo(True)}
    for site in SITES:
        with exact_at(net, site):
            rows[f"quantized, exact {site}"] = neg_elbo(True)
    if net.config.head_input_bits > 8:  # the heads read wide activations already
        what_ifs = [(False, "every block")]
    else:
        what_ifs = [(True, "the heads"), (False, "every reader")]
    for head_only, readers in what_ifs:
        with wide_activations(net, head_only):
            rows[f"quantized, {WIDE_ACT_MAX + 1}-level activations for {readers}"] = neg_elbo(True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--val-dir", type=Path, help="folder of held-out photos (default: photos-large's val.txt)")
    parser.add_argument("--patches", type=int, default=1024)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    paths = validation_paths(args.val_dir)
    results = {}
    for name in args.models:
        rows = report(name, paths, args.patches)
        results[name] = rows
        print(name)
        for label, value in rows.items():
            print(f"  {label:60s} {value:.4f}  ({value - rows['quantized']:+.4f})")
    if args.json:
        args.json.write_text(json.dumps({"patches": args.patches, "models": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
