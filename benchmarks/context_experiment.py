"""Local pixel context for p(x|z1): compare decode-pass schedules at equal training time.

Part of issue 14. Today's p(x|z1) predicts every subpixel independently given
z1 (one discretized logistic per subpixel, channel conditioning G|R, B|R,G).
This script trains Bit-Swap VAEs whose p(x|z1) decodes the four 2x2 polyphase
subimages of the patch in *passes*, each pass conditioned on z1 and on the
subimages already decoded, and compares schedules on the validation split at
equal single-thread training time.

The VAE squeezes a 32x32 patch to 4C x 16x16 (``F.pixel_unshuffle(x, 2)``):
channel ``4c + s`` holds subimage s of colour channel c, with A=(0,0) s=0,
B=(0,1) s=1, C=(1,0) s=2, D=(1,1) s=3, each 16x16 like z1. A schedule is a
list of passes, each a list of subimage indices:

* ``independent``  ``[[0,1,2,3]]``: one pass from z1 only. With the preset's
  width and blocks this *is* today's model (same network, same head layout:
  ``tests/test_context_experiment.py`` checks that loading a ``BitSwapVAE``'s
  weights gives the identical loss);
* ``checkerboard`` ``[[0,3],[1,2]]``: {A, D} from z1, then {B, C} from z1 + A, D;
* ``polyphase``    ``[[0],[1],[2],[3]]``: A, B, C, D in turn, each from z1 +
  every subimage already decoded.

Every pass is a :class:`bitswap_plugin.model.Net` with its own
:class:`~bitswap_plugin.model.NetSpec` (so it can go through the same
quantization-aware training and integer export later). Its integer input is
the concatenation of z1 as latent integers ``2k - (K - 1)`` (|.| <= 1023) and the
already decoded subimages as pixel integers ``4 * (2p - 255)`` (|.| <= 1020,
the same range; not-yet-decoded subimages are omitted). Its head gives, per
subpixel of the pass's subimages, a mean and log-scale code and, with channel
conditioning, the 3 coefficients per pixel (``NetSpec.coef_channels``); with
``--mixture K`` K of each plus K mixture logits per pixel (PixelCNN++/L3C
style: the mixture is over whole RGB pixels, channel conditioning per
component). The posterior nets q(z1|x), q(z2|z1) and the latent prior
p(z1|z2) are ``BitSwapVAE``'s own (the class is subclassed; only p(x|z1) is
replaced).

Training (per scheme, same data stream, same seed): random 32x32 crops
(``train.PatchSampler``, scales 1 and 2, random flips) of
``photos-large/*/*.webp`` minus ``photos-large/val.txt`` plus
``photos-train/*.png``; Adam, learning rate decaying exponentially from 2e-3
to 5e-4 over the time budget, gradient clipping at 1, free bits 1 per latent
channel, data-dependent init. The budget ``--minutes`` counts *process CPU
time of the training steps* (``--clock cpu``, the default; one thread, so
equal to compute time and insensitive to other jobs on the machine) or
wall time of the training steps (``--clock wall``); validation and
checkpoints are not counted. Validation: 2048 fixed 32x32 crops (seed 12345)
of the ``val.txt`` images, one posterior sample with a fixed seed.

Outputs under ``--out`` (default ``runs/context``): per scheme
``<label>/log.jsonl`` (one JSON line per validation: CPU and wall seconds,
steps, val -ELBO, recon per subimage and per pass, KL per latent layer) and
``<label>/checkpoint.pt`` (state dict, optimizer, config; ``--resume``
continues it); for all schemes ``results.json`` and ``results.md`` (merged by
scheme label, rewritten after each scheme). The decoded training images are
cached in ``<out>/data-cache.npz``.

Never reads ``../shared/datasets/kodak``.

Examples::

    OMP_NUM_THREADS=1 python benchmarks/context_experiment.py \\
        --schemes independent checkerboard polyphase --minutes 22
    python benchmarks/context_experiment.py --schemes polyphase:w64 --minutes 22
    python benchmarks/context_experiment.py --schemes checkerboard:k5 --minutes 22 --resume

To keep a long run independent of edits to the working tree, run it on a
pinned copy of the package (``runs/`` is git-ignored)::

    mkdir -p runs/context/pkg && git archive HEAD bitswap_plugin | tar -x -C runs/context/pkg
    PYTHONPATH=runs/context/pkg python benchmarks/context_experiment.py ...

A scheme is ``NAME[:wWIDTH][:bBLOCKS][:kMIXTURE]``; the defaults are
independent w64 b2, checkerboard w64 b2, polyphase w48 b2, mixture 1.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bitswap_plugin.architecture import (
    ACT_MAX,
    COEF_FRAC,
    COEF_MAX,
    PIXEL_BINS,
    ModelConfig,
    NetSpec,
    conditioned_mean,
    latents_to_input,
    mean_code_range,
    pixels_to_input,
)
from bitswap_plugin.fixedpoint import LOG_SCALE_FRAC, LOG_SCALE_MAX, LOG_SCALE_MIN, MEAN_FRAC
from bitswap_plugin.model import BitSwapVAE, Net, discretized_logistic_log_mass
from bitswap_plugin.patches import PATCH
from bitswap_plugin.train import PRESETS, PatchSampler, learning_rate

_LN2 = math.log(2.0)
SUBIMAGES = "ABCD"
"""Polyphase subimage s = 2i + j holds pixels (2y + i, 2x + j): A=(0,0), B=(0,1), C=(1,0), D=(1,1)."""
PIXEL_CONTEXT_GAIN = 4
"""Decoded pixels enter a pass net as 4 * (2p - 255): |.| <= 1020, the range of latent inputs (<= 1023)."""
LOGIT_MAX = 8.0
"""Mixture logits (raw head units) are clamped to [-8, 8]."""

SCHEDULES = {
    "independent": [[0, 1, 2, 3]],
    "checkerboard": [[0, 3], [1, 2]],
    "polyphase": [[0], [1], [2], [3]],
}
DEFAULT_WIDTH = {"independent": (64, 2), "checkerboard": (64, 2), "polyphase": (48, 2)}


# ----------------------------------------------------------------------------
# Model


def check_schedule(schedule: list[list[int]]) -> list[list[int]]:
    """A schedule must be a partition of {0, 1, 2, 3} into non-empty passes."""
    flat = [s for p in schedule for s in p]
    if sorted(flat) != [0, 1, 2, 3] or any(not p for p in schedule):
        raise ValueError(f"schedule {schedule} is not a partition of the subimages 0..3 into non-empty passes")
    return [list(map(int, p)) for p in schedule]


def subimage(xs: torch.Tensor, s: int, channels: int) -> torch.Tensor:
    """Subimage s (N, C, H/2, W/2) of squeezed pixels ``xs`` (N, 4C, H/2, W/2) (channel 4c + s)."""
    return xs[:, s : 4 * channels : 4]


class ContextLikelihood(nn.Module):
    """p(x | z1) decoded in passes over the 2x2 polyphase subimages.

    Pass j is a :class:`Net` whose input is z1 (latent integers) followed by
    the subimages of passes 0..j-1 (pixel integers times
    :data:`PIXEL_CONTEXT_GAIN`, in schedule order). Its head layout, for the
    m subimages of the pass and K mixture components, is

    * means ``(k*C + c)*m + i`` and log-scales (the same, after the means),
    * conditioning coefficients ``(k*3 + j)*m + i`` and then, if K > 1,
      logits ``k*m + i``

    so that with K = 1 and the schedule ``[[0,1,2,3]]`` it is exactly the
    squeezed head of ``BitSwapVAE``'s p(x|z1) (means ``4c + s``, coefficients
    ``4j + s``).
    """

    def __init__(self, config: ModelConfig, schedule: list[list[int]], width: int, blocks: int, mixture: int = 1) -> None:
        super().__init__()
        if mixture < 1:
            raise ValueError("mixture must be >= 1")
        self.config, self.schedule, self.mixture = config, check_schedule(schedule), mixture
        c, zc = config.channels, config.latent_channels
        coefs = 3 if config.channel_conditioning else 0
        nets, decoded = [], 0
        for subs in self.schedule:
            m = len(subs)
            spec = NetSpec(
                in_channels=zc + c * decoded,
                out_channels=c * m * mixture,
                in_max=config.latent_bins - 1,
                in_step=config.delta / 2,
                first_kernel=3,
                num_bins=PIXEL_BINS,
                bins_per_unit=ACT_MAX / 2,
                pixel_output=False,
                coef_channels=(coefs * m + (m if mixture > 1 else 0)) * mixture,
            )
            nets.append(Net(spec, width, blocks))
            decoded += m
        self.nets = nn.ModuleList(nets)

    def context(self, z1_input: torch.Tensor, xs: torch.Tensor, j: int) -> torch.Tensor:
        """Integer input of pass j: z1 (already ``2k - (K-1)``) and the subimages of earlier passes of ``xs``."""
        c = self.config.channels
        parts = [z1_input]
        for subs in self.schedule[:j]:
            parts += [PIXEL_CONTEXT_GAIN * (2 * subimage(xs, s, c) - ACT_MAX) for s in subs]
        return torch.cat(parts, 1)

    def pass_codes(self, z1_input: torch.Tensor, xs: torch.Tensor, j: int, quantized: bool = False) -> dict[str, torch.Tensor]:
        """Clamped codes of pass j, shaped (N, K, m, C, H, W) for means and log-scales, (N, K, m, 3, H, W)
        for coefficients (absent without conditioning), (N, K, m, H, W) for logits (K > 1)."""
        net = self.nets[j]
        inp = self.context(z1_input, xs, j)
        raw = net._forward_quantized(inp) if quantized else net._forward_float(inp)
        n, _, h, w = raw.shape
        k, m, c = self.mixture, len(self.schedule[j]), self.config.channels
        size = k * c * m
        out = {
            "mean": raw[:, :size].clamp(*mean_code_range(PIXEL_BINS)).reshape(n, k, c, m, h, w).transpose(2, 3),
            "log_scale": raw[:, size : 2 * size].clamp(LOG_SCALE_MIN, LOG_SCALE_MAX).reshape(n, k, c, m, h, w).transpose(2, 3),
        }
        rest = raw[:, 2 * size :]
        if self.config.channel_conditioning:
            out["coefs"] = rest[:, : 3 * m * k].clamp(-COEF_MAX, COEF_MAX).reshape(n, k, 3, m, h, w).transpose(2, 3)
            rest = rest[:, 3 * m * k :]
        if k > 1:
            out["logits"] = (rest / (1 << COEF_FRAC)).clamp(-LOGIT_MAX, LOGIT_MAX).reshape(n, k, m, h, w)
        return out

    def pass_log_prob(self, codes: dict[str, torch.Tensor], xs: torch.Tensor, j: int, exact: bool) -> torch.Tensor:
        """log p (nats) of each pixel of pass j's subimages given the codes, (N, m, H, W)."""
        c = self.config.channels
        per_comp = []
        for comp in range(self.mixture):
            subs_lp = []
            for i, s in enumerate(self.schedule[j]):
                x_s = subimage(xs, s, c)
                coefs = codes["coefs"][:, comp, i] if "coefs" in codes else None
                mean = conditioned_mean(codes["mean"][:, comp, i], coefs, x_s, exact)
                lp = discretized_logistic_log_mass(
                    x_s, mean / (1 << MEAN_FRAC), codes["log_scale"][:, comp, i] / (1 << LOG_SCALE_FRAC), PIXEL_BINS
                )
                subs_lp.append(lp.sum(1))
            per_comp.append(torch.stack(subs_lp, 1))
        if self.mixture == 1:
            return per_comp[0]
        log_w = F.log_softmax(codes["logits"], 1)
        return torch.logsumexp(log_w + torch.stack(per_comp, 1), 1)

    def log_prob(self, z1_input: torch.Tensor, x: torch.Tensor, quantized: bool = False) -> torch.Tensor:
        """Teacher-forced log p(x | z1) (nats) per subimage, (N, 4): every pass sees the true earlier subimages."""
        xs = F.pixel_unshuffle(x.float(), 2)
        out = torch.zeros(x.shape[0], 4, dtype=torch.float32, device=x.device)
        for j, subs in enumerate(self.schedule):
            lp = self.pass_log_prob(self.pass_codes(z1_input, xs, j, quantized), xs, j, exact=quantized)
            for i, s in enumerate(subs):
                out[:, s] = lp[:, i].flatten(1).sum(1).float()
        return out

    @torch.no_grad()
    def calibrate(self, z1_input: torch.Tensor, x: torch.Tensor) -> None:
        xs = F.pixel_unshuffle(x.float(), 2)
        for j, net in enumerate(self.nets):
            net.calibrate(self.context(z1_input, xs, j))


class ContextLoss(NamedTuple):
    """Loss terms in bits per subpixel (``recon_sub``: of that subimage's subpixels; ``kl_channels``: bits per patch)."""

    loss: torch.Tensor
    neg_elbo: torch.Tensor
    recon: torch.Tensor
    kl: torch.Tensor
    recon_sub: torch.Tensor
    kl_channels: torch.Tensor


class ContextVAE(BitSwapVAE):
    """``BitSwapVAE`` with p(x|z1) (``self.p[0]``) replaced by a :class:`ContextLikelihood`."""

    def __init__(self, config: ModelConfig, schedule: list[list[int]], width: int | None = None,
                 blocks: int | None = None, mixture: int = 1) -> None:
        super().__init__(config)
        self.schedule = check_schedule(schedule)
        self.p[0] = ContextLikelihood(
            config, schedule, config.width if width is None else width, config.res_blocks if blocks is None else blocks, mixture
        )

    @property
    def likelihood(self) -> ContextLikelihood:
        return self.p[0]

    def prior(self, level: int, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if level == 0:
            raise NotImplementedError("p(x|z1) needs the decoded pixels: use likelihood.pass_codes")
        return super().prior(level, z)

    def forward(self, x: torch.Tensor, free_bits: float = 1.0, generator: torch.Generator | None = None) -> ContextLoss:
        """Loss terms for uint8 patches ``x`` (N, C, H, W), one posterior sample each (as ``BitSwapVAE.forward``)."""
        n = x.shape[0]
        dims = x[0].numel()
        zs, log_q = [], []
        inp = x
        for level in range(self.config.latent_layers):
            mean, log_scale = (t / (1 << f) for t, f in zip(self.posterior(level, inp), (MEAN_FRAC, LOG_SCALE_FRAC)))
            z = self._sample(mean, log_scale, generator)
            zs.append(z)
            log_q.append(self._latent_log_prob(z, mean, log_scale))
            inp = z
        log_p_x = self.likelihood.log_prob(latents_to_input(zs[0].float(), self.config.latent_bins), x, self.quantized)
        recon_sub = -log_p_x.sum(0) / (n * _LN2)  # bits per patch, per subimage
        recon = recon_sub.sum()
        kl_channels = []
        for level in range(self.config.latent_layers):
            if level + 1 < self.config.latent_layers:
                codes = self.prior(level + 1, zs[level + 1])
            else:
                codes = self.top_prior(zs[level].shape, x.device)
            log_p = self._latent_log_prob(zs[level], codes[0] / (1 << MEAN_FRAC), codes[1] / (1 << LOG_SCALE_FRAC))
            kl_channels.append((log_q[level] - log_p).sum((2, 3)).mean(0) / _LN2)
        kl = torch.stack(kl_channels)
        return ContextLoss(
            loss=(recon + kl.clamp(min=free_bits).sum()) / dims,
            neg_elbo=(recon + kl.sum()) / dims,
            recon=recon / dims,
            kl=kl.sum(1) / dims,
            recon_sub=recon_sub / (dims / 4),
            kl_channels=kl,
        )

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """As ``BitSwapVAE.calibrate``, with the pass nets calibrated on their teacher-forced contexts."""
        self.quantized = False
        inp = x
        for level in range(self.config.latent_layers):
            self.q[level].calibrate(pixels_to_input(inp.float()) if level == 0 else self._latent_input(inp))
            mean, log_scale = (t / (1 << f) for t, f in zip(self.posterior(level, inp), (MEAN_FRAC, LOG_SCALE_FRAC)))
            inp = self._sample(mean, log_scale, generator)
            if level == 0:
                self.likelihood.calibrate(self._latent_input(inp), x)
            else:
                self.p[level].calibrate(self._latent_input(inp))
        self.quantized = True


@torch.no_grad()
def data_dependent_init(model: nn.Module, x: torch.Tensor) -> None:
    """``train.data_dependent_init`` for every :class:`Net` of ``model`` (pass nets included)."""

    def normalise(module: nn.Conv2d, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        mean = output.mean((0, 2, 3))
        std = output.std((0, 2, 3)).clamp(min=1e-3)
        module.weight.div_(std.view(-1, 1, 1, 1))
        module.bias.sub_(mean).div_(std)
        return (output - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)

    nets = [m for m in model.modules() if isinstance(m, Net)]
    convs = [net.conv_in.conv for net in nets] + [b.conv1.conv for net in nets for b in net.blocks]
    hooks = [conv.register_forward_hook(normalise) for conv in convs]
    try:
        model(x)
    finally:
        for hook in hooks:
            hook.remove()


@torch.no_grad()
def count_macs(model: ContextVAE) -> dict[str, float]:
    """Conv multiply-adds per 32x32 patch, in millions: p(x|z1), the latent nets, and the decode total.

    Bit-Swap decoding runs every prior net (to pop) and every posterior net
    (to push the bits back), i.e. the same convolutions as one forward pass.
    """
    counts = {"likelihood": 0, "latent": 0}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            key = "likelihood" if name.startswith("p.0.") else "latent"

            def hook(mod: nn.Conv2d, _inp: tuple, out: torch.Tensor, key: str = key) -> None:
                k = mod.kernel_size[0] * mod.kernel_size[1]
                counts[key] += out[0].numel() * (mod.in_channels // mod.groups) * k

            hooks.append(module.register_forward_hook(hook))
    try:
        x = torch.randint(0, 256, (1, model.config.channels, PATCH, PATCH), dtype=torch.uint8)
        model(x, generator=torch.Generator().manual_seed(0))
    finally:
        for h in hooks:
            h.remove()
    return {
        "likelihood_mmac": counts["likelihood"] / 1e6,
        "latent_mmac": counts["latent"] / 1e6,
        "decode_mmac": (counts["likelihood"] + counts["latent"]) / 1e6,
    }


# ----------------------------------------------------------------------------
# Schemes


@dataclasses.dataclass(frozen=True)
class Scheme:
    name: str
    width: int
    blocks: int
    mixture: int = 1

    @property
    def schedule(self) -> list[list[int]]:
        return SCHEDULES[self.name]

    @property
    def label(self) -> str:
        return f"{self.name}-w{self.width}b{self.blocks}" + (f"-k{self.mixture}" if self.mixture > 1 else "")

    @classmethod
    def parse(cls, text: str, mixture: int = 1) -> Scheme:
        name, *opts = text.split(":")
        if name not in SCHEDULES:
            raise argparse.ArgumentTypeError(f"unknown scheme {name!r} (choose from {sorted(SCHEDULES)})")
        width, blocks = DEFAULT_WIDTH[name]
        for opt in opts:
            if len(opt) < 2 or opt[0] not in "wbk" or not opt[1:].isdigit():
                raise argparse.ArgumentTypeError(f"bad scheme option {opt!r} in {text!r} (wN, bN or kN)")
            value = int(opt[1:])
            width, blocks, mixture = {"w": (value, blocks, mixture), "b": (width, value, mixture), "k": (width, blocks, value)}[opt[0]]
        return cls(name, width, blocks, mixture)

    def build(self, config: ModelConfig) -> ContextVAE:
        return ContextVAE(config, self.schedule, self.width, self.blocks, self.mixture)


# ----------------------------------------------------------------------------
# Data


def dataset_paths(root: Path) -> tuple[list[Path], list[Path]]:
    """(train, validation) image paths: photos-large minus val.txt plus photos-train; val.txt. Never kodak."""
    large = root / "photos-large"
    val_names = [line.strip() for line in (large / "val.txt").read_text().splitlines() if line.strip()]
    val = [large / name for name in val_names]
    val_set = {p.resolve() for p in val}
    train = sorted(p for p in large.glob("*/*.webp") if p.resolve() not in val_set)
    train += sorted((root / "photos-train").glob("*.png"))
    for p in train + val:
        if "kodak" in p.parts:
            raise RuntimeError("refusing to read the Kodak benchmark")
    missing = [p for p in val if not p.exists()]
    if missing:
        raise FileNotFoundError(f"val.txt lists missing files: {missing[:3]}")
    return train, val


class CachedSampler(PatchSampler):
    """``PatchSampler`` whose decoded (and downscaled) images are cached in an .npz file."""

    def __init__(self, paths: list[Path], channels: int, scales: tuple[float, ...], cache: Path | None) -> None:
        key = hashlib.sha256(json.dumps([[str(p) for p in paths], channels, list(scales)]).encode()).hexdigest()[:16]
        if cache is not None and cache.exists():
            with np.load(cache) as data:
                if str(data["key"]) == key:
                    self.images = [data[f"i{i}"] for i in range(int(data["count"]))]
                    self._weigh()
                    return
        super().__init__(paths, channels, scales)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".part.npz")
            np.savez(tmp, key=np.array(key), count=np.array(len(self.images)), **{f"i{i}": a for i, a in enumerate(self.images)})
            os.replace(tmp, cache)

    def _weigh(self) -> None:
        positions = np.array([(a.shape[1] - PATCH + 1) * (a.shape[2] - PATCH + 1) for a in self.images], dtype=np.float64)
        self.weights = positions / positions.sum()


# ----------------------------------------------------------------------------
# Training


def step_streams(seed: int, step: int, stream: int) -> tuple[np.random.Generator, int]:
    """Data generator and noise seed for one step: every scheme sees the same crops at the same step."""
    ss = [seed, step, stream]
    return np.random.default_rng(ss), int(np.random.SeedSequence(ss).generate_state(1, np.uint64)[0] >> 1)


@torch.no_grad()
def evaluate(model: ContextVAE, val: torch.Tensor, batch: int = 256) -> dict:
    """Validation terms in bits per subpixel (one posterior sample, fixed seed)."""
    was = model.training
    model.eval()
    gen = torch.Generator().manual_seed(0)
    sums: dict[str, torch.Tensor] = {}
    for start in range(0, val.shape[0], batch):
        part = val[start : start + batch]
        loss = model(part, free_bits=0.0, generator=gen)
        for key in ("neg_elbo", "recon", "kl", "recon_sub", "kl_channels"):
            sums[key] = sums.get(key, 0) + getattr(loss, key).double() * part.shape[0]
    model.train(was)
    mean = {k: v / val.shape[0] for k, v in sums.items()}
    sub = mean["recon_sub"].tolist()
    return {
        "val_neg_elbo": float(mean["neg_elbo"]),
        "val_recon": float(mean["recon"]),
        "val_kl": [float(v) for v in mean["kl"]],
        "val_recon_sub": {SUBIMAGES[s]: sub[s] for s in range(4)},
        "val_recon_pass": [sum(sub[s] for s in p) / len(p) for p in model.schedule],
        "val_active_channels": [int((row > 1.0).sum()) for row in mean["kl_channels"]],
    }


def train_scheme(scheme: Scheme, config: ModelConfig, data: PatchSampler, val: torch.Tensor, args: argparse.Namespace) -> dict:
    out = Path(args.out) / scheme.label
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = out / "checkpoint.pt", out / "log.jsonl"
    torch.manual_seed(args.seed)
    model = scheme.build(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999))
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    budget = args.minutes * 60.0
    step, train_s, wall_s = 0, 0.0, 0.0
    meta = {"scheme": dataclasses.asdict(scheme), "label": scheme.label, "schedule": scheme.schedule,
            "config": json.loads(config.to_json()), "batch": args.batch, "seed": args.seed, "clock": args.clock}

    def log(record: dict) -> None:
        with open(log_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    if args.resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        saved = json.loads(state["meta"])
        if {k: saved[k] for k in meta} != json.loads(json.dumps(meta)):
            raise SystemExit(f"--resume: {ckpt_path} was written with different settings: {saved}")
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        step, train_s, wall_s = int(state["step"]), float(state["train_seconds"]), float(state["wall_seconds"])
        print(f"[{scheme.label}] resumed at step {step}, {train_s:.0f} s trained", flush=True)
    else:
        if log_path.exists():
            log_path.unlink()
        rng, _ = step_streams(args.seed, 0, 1)  # stream 1: init batch
        data_dependent_init(model, data.sample(256, rng))

    macs = count_macs(model)
    params = sum(p.numel() for p in model.parameters())
    lik_params = sum(p.numel() for p in model.likelihood.parameters())
    log({"event": "start", **meta, "parameters": params, "likelihood_parameters": lik_params, **macs,
         "budget_seconds": budget, "start_step": step, "threads": torch.get_num_threads()})

    def save() -> None:
        state = {"meta": json.dumps({**meta, "minutes": args.minutes}), "config": config.to_json(),
                 "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "step": step, "train_seconds": train_s, "wall_seconds": wall_s}
        torch.save(state, ckpt_path.with_suffix(".part"))
        os.replace(ckpt_path.with_suffix(".part"), ckpt_path)

    def validate(train_window: list[float]) -> dict:
        t0 = time.perf_counter()
        record = {"step": step, "train_seconds": round(train_s, 1), "wall_seconds": round(wall_s, 1),
                  "lr": learning_rate(int(train_s), max(1, int(budget)), args.lr, args.lr_end),
                  "train_neg_elbo": float(np.mean(train_window)) if train_window else None, **evaluate(model, val)}
        record["val_seconds"] = round(time.perf_counter() - t0, 1)
        log(record)
        save()
        print(f"[{scheme.label}] step {step} train {train_s:.0f}s val -ELBO {record['val_neg_elbo']:.4f} "
              f"pass {[round(v, 3) for v in record['val_recon_pass']]} kl {[round(v, 4) for v in record['val_kl']]}", flush=True)
        return record

    noise = torch.Generator()
    window: list[float] = []
    record = validate(window) if step == 0 else None
    next_val = train_s + args.val_minutes * 60.0
    model.train()
    while train_s < budget:
        c0, w0 = clock(), time.perf_counter()
        lr = args.lr * (args.lr_end / args.lr) ** min(1.0, train_s / budget)
        for group in optimizer.param_groups:
            group["lr"] = lr
        rng, noise_seed = step_streams(args.seed, step, 0)
        x = data.sample(args.batch, rng)
        noise.manual_seed(noise_seed)
        loss = model(x, free_bits=args.free_bits, generator=noise)
        optimizer.zero_grad(set_to_none=True)
        loss.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        window.append(float(loss.neg_elbo.detach()))
        step += 1
        train_s += clock() - c0
        wall_s += time.perf_counter() - w0
        if not math.isfinite(window[-1]):
            raise SystemExit(f"[{scheme.label}] non-finite loss at step {step}")
        if train_s >= next_val or train_s >= budget:
            record = validate(window)
            window = []
            next_val = train_s + args.val_minutes * 60.0
    if record is None or record["step"] != step:
        record = validate(window)
    return {
        "scheme": scheme.label, "schedule": scheme.schedule, "width": scheme.width, "blocks": scheme.blocks,
        "mixture": scheme.mixture, "minutes": args.minutes, "clock": args.clock, "steps": step,
        "train_seconds": round(train_s, 1), "wall_seconds": round(wall_s, 1),
        "seconds_per_step": round(train_s / max(1, step), 4),
        "val_neg_elbo": record["val_neg_elbo"], "val_recon": record["val_recon"],
        "val_recon_sub": record["val_recon_sub"], "val_recon_pass": record["val_recon_pass"],
        "val_kl": record["val_kl"], "val_active_channels": record["val_active_channels"],
        "parameters": params, "likelihood_parameters": lik_params, **macs,
        "val_patches": int(val.shape[0]),
    }


def write_results(results: list[dict], out: Path) -> None:
    """Merge ``results`` (by scheme label) into out/results.json and rewrite out/results.md."""
    path = out / "results.json"
    merged = {r["scheme"]: r for r in (json.loads(path.read_text()) if path.exists() else [])}
    merged.update({r["scheme"]: r for r in results})
    rows = list(merged.values())
    path.write_text(json.dumps(rows, indent=2) + "\n")
    base = next((r["decode_mmac"] for r in rows if r["scheme"].startswith("independent")), None)
    lines = [
        "# Local pixel context for p(x|z1): validation at equal training time",
        "",
        "Bits per subpixel on the validation crops (photos-large/val.txt). Recon per pass is the mean over that",
        "pass's subimages (A=(0,0), B=(0,1), C=(1,0), D=(1,1)). MMAC: conv multiply-adds per 32x32 patch,",
        "millions, decode direction (all q and p nets, as Bit-Swap decoding runs both); x: relative to independent.",
        "",
        "| scheme | schedule | minutes | steps | val -ELBO | recon | recon per pass | recon A/B/C/D | KL per layer | active ch. | MMAC p(x\\|z1) | MMAC decode | x | params |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['decode_mmac'] / base:.2f}" if base else ""
        subs = "/".join(f"{r['val_recon_sub'][s]:.3f}" for s in SUBIMAGES)
        lines.append(
            f"| {r['scheme']} | {r['schedule']} | {r['minutes']:g} ({r['clock']}) | {r['steps']} | **{r['val_neg_elbo']:.4f}** | "
            f"{r['val_recon']:.4f} | {' / '.join(f'{v:.3f}' for v in r['val_recon_pass'])} | {subs} | "
            f"{' / '.join(f'{v:.4f}' for v in r['val_kl'])} | {r['val_active_channels']} | {r['likelihood_mmac']:.1f} | "
            f"{r['decode_mmac']:.1f} | {ratio} | {r['parameters']:,} |"
        )
    (out / "results.md").write_text("\n".join(lines) + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schemes", nargs="+", default=["independent", "checkerboard", "polyphase"],
                        help="NAME[:wWIDTH][:bBLOCKS][:kMIXTURE], run one after another (default: the three schemes)")
    parser.add_argument("--mixture", type=int, default=1, help="logistics per subpixel for schemes without :kN (default 1)")
    parser.add_argument("--minutes", type=float, default=22.0, help="training budget per scheme (default 22)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="budget in process CPU or wall seconds of training steps")
    parser.add_argument("--val-minutes", type=float, default=3.0, help="validate every this many budget minutes (default 3)")
    parser.add_argument("--val-patches", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--lr-end", type=float, default=5e-4)
    parser.add_argument("--free-bits", type=float, default=1.0)
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    parser.add_argument("--max-train-images", type=int, help="use only the first N training images (smoke tests)")
    parser.add_argument("--max-val-images", type=int, help="use only the first N validation images (smoke tests)")
    parser.add_argument("--out", default="runs/context")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the decoded-image cache")
    parser.add_argument("--resume", action="store_true", help="continue each scheme from its checkpoint")
    parser.add_argument("--threads", type=int, default=1)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    schemes = [Scheme.parse(s, args.mixture) for s in args.schemes]
    config = PRESETS["rgb"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_paths, val_paths = dataset_paths(Path(args.datasets))
    if args.max_train_images:
        train_paths = train_paths[: args.max_train_images]
    if args.max_val_images:
        val_paths = val_paths[: args.max_val_images]
    t0 = time.perf_counter()
    full = not args.max_train_images
    cache = None if args.no_cache or not full else out / "data-cache.npz"
    data = CachedSampler(train_paths, config.channels, tuple(args.scales), cache)
    val = PatchSampler(val_paths, config.channels, (1.0,)).sample(args.val_patches, np.random.default_rng(12345), flip=False)
    print(f"data: {len(train_paths)} training images ({len(data.images)} with scales), {len(val_paths)} validation images, "
          f"{val.shape[0]} validation crops; loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    results = []
    for scheme in schemes:
        results.append(train_scheme(scheme, config, data, val, args))
        write_results(results, out)
        r = results[-1]
        print(f"[{scheme.label}] done: {r['steps']} steps, val -ELBO {r['val_neg_elbo']:.4f}, "
              f"{r['decode_mmac']:.1f} MMAC/patch decode", flush=True)
    print((out / "results.md").read_text(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
