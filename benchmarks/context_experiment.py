"""Local pixel context for p(x|z1): compare decode-pass schedules at equal training time.

Part of issue 14. Trains Bit-Swap VAEs whose p(x|z1) decodes the four 2x2
polyphase subimages of the patch (A=(0,0), B=(0,1), C=(1,0), D=(1,1), each
16x16 like z1) in *passes*, each pass conditioned on z1 and on the subimages
already decoded, and compares schedules on the validation split at equal
single-thread training time. The models are the package's:

* ``independent``  one pass from z1 only: ``bitswap_plugin.model.BitSwapVAE``
  with the rgb preset (``train.PRESETS["rgb"]``), today's model;
* ``checkerboard`` ``03|12``: {A, D} from z1, then {B, C} from z1 + A, D;
* ``polyphase``    ``0|1|2|3``: A, B, C, D in turn, each from z1 + every
  subimage already decoded;

the last two are architecture ``bitswap-polyphase``:
``polyphase_model.PolyphaseBitSwapVAE(PolyphaseConfig(schedule=...,
context_width=..., context_blocks=..., mixture=...))`` on the rgb preset
(``mixture`` K: K discretized logistics per pixel, PixelCNN++/L3C style, the
mixture over whole RGB pixels with channel conditioning per component). What
this script adds is the experiment harness.

``--init models/NAME.float.safetensors`` starts every scheme from a trained
model instead (its configuration replaces the rgb preset; the schemes must
be its schedule and pass network size). A mixture then starts as that
model's one logistic (:meth:`PassLikelihood.adopt_single`), so the
schemes compare what fine-tuning from the same weights buys at equal time.
Each validation also writes the averaged weights as
``<label>/<label>.float.safetensors``, which ``bitswap train --init`` continues.
``--warmup`` and ``--ema`` work as in ``bitswap train``.

Training (per scheme, same data stream, same seed): random 32x32 crops
(``train.PatchSampler``, scales 1 and 2, random flips) of
``photos-large/*/*.webp`` minus ``photos-large/val.txt`` plus
``photos-train/*.png``; Adam, learning rate decaying exponentially from 2e-3
to 5e-4 over the time budget, gradient clipping at 1, free bits 1 per latent
channel, data-dependent init (``train.data_dependent_init``). The budget
``--minutes`` counts *process CPU time of the training steps* (``--clock
cpu``, the default; one thread, so equal to compute time and insensitive to
other jobs on the machine) or wall time of the training steps (``--clock
wall``); validation and checkpoints are not counted. Validation: 2048 fixed
32x32 crops (seed 12345) of the ``val.txt`` images, one posterior sample with
a fixed seed; reconstruction per subimage and per pass, KL per latent layer
and channel.

Outputs under ``--out`` (default ``runs/context``): per scheme
``<label>/log.jsonl`` (one JSON line per validation: CPU and wall seconds,
steps, val -ELBO, recon per subimage and per pass, KL per latent layer) and
``<label>/checkpoint.pt`` (state dict, optimizer, model config; ``--resume``
continues it, also from checkpoints of the script's earlier own model
classes); for all schemes ``results.json`` and ``results.md`` (merged by
scheme label, rewritten after each scheme). The decoded training images are
cached in ``<out>/data-cache.npz``.

Never reads ``../shared/datasets/kodak``.

Examples::

    OMP_NUM_THREADS=1 python benchmarks/context_experiment.py \\
        --schemes independent checkerboard polyphase --minutes 22
    python benchmarks/context_experiment.py --schemes polyphase:w64 --minutes 22
    python benchmarks/context_experiment.py --schemes checkerboard:k5 --minutes 22 --resume
    python benchmarks/context_experiment.py --init models/polyphase-rgb-l3-8.float.safetensors \\
        --schemes polyphase:k3 polyphase --minutes 20 --free-bits 4 --lr 2e-5 --lr-end 1e-5 --warmup 200 --ema 0.999

To keep a long run independent of edits to the working tree, run it on a
pinned copy of the package (``runs/`` is git-ignored)::

    mkdir -p runs/context/pkg && git archive HEAD bitswap_plugin | tar -x -C runs/context/pkg
    PYTHONPATH=runs/context/pkg python benchmarks/context_experiment.py ...

A scheme is ``NAME[:wWIDTH][:bBLOCKS][:kMIXTURE]`` (width and residual blocks
of the pass networks); the defaults are independent w64 b2, checkerboard w64
b2, polyphase w48 b2, mixture 1. ``independent`` with another width, blocks
or mixture is the one-pass schedule ``0123`` of the polyphase model (the same
model as ``BitSwapVAE`` but for the p(x|z1) network).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bitswap_plugin.architecture import PIXEL_BINS, ModelConfig, conditioned_mean
from bitswap_plugin.model import LN2, BitSwapVAE, codes_to_bins, discretized_logistic_log_mass, load_float_model, save_float_model
from bitswap_plugin.patches import PATCH
from bitswap_plugin.polyphase import SUBIMAGES, PolyphaseConfig, subimage
from bitswap_plugin.polyphase_model import PassLikelihood, PolyphaseBitSwapVAE
from bitswap_plugin.train import PRESETS, PatchSampler, WeightAverage, data_dependent_init, learning_rate

SUBIMAGE_NAMES = "ABCD"
"""Polyphase subimage s = 2i + j holds pixels (2y + i, 2x + j): A=(0,0), B=(0,1), C=(1,0), D=(1,1)."""

SCHEDULES = {
    "independent": [[0, 1, 2, 3]],
    "checkerboard": [[0, 3], [1, 2]],
    "polyphase": [[0], [1], [2], [3]],
}
DEFAULT_WIDTH = {"independent": (64, 2), "checkerboard": (64, 2), "polyphase": (48, 2)}


def load_state(model: BitSwapVAE, state_dict: dict[str, torch.Tensor]) -> None:
    """Load a checkpoint's state dict (strictly). Checkpoints of this script's earlier model class name
    the independent scheme's p(x|z1) network ``p.0.nets.0.*`` where ``BitSwapVAE`` has ``p.0.*``."""
    own, old = model.state_dict(), "p.0.nets.0."
    model.load_state_dict({
        "p.0." + name[len(old) :] if name.startswith(old) and name not in own else name: value
        for name, value in state_dict.items()
    })


def start_from(model: BitSwapVAE, path: str) -> None:
    """Load the float weights ``path`` (a shipped ``models/NAME.float.safetensors``) into ``model``
    of the same configuration, a mixture growing from one logistic (``BitSwapVAE.adopt``)."""
    fresh = model.adopt(load_float_model(path))
    if fresh:
        raise SystemExit(f"--init: {path} has no weights for {fresh}")


@torch.no_grad()
def count_macs(model: BitSwapVAE) -> dict[str, float]:
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

    def build(self, config: ModelConfig) -> BitSwapVAE:
        """The scheme's model on the base configuration ``config`` (latent nets and their width)."""
        if self.name == "independent" and (self.width, self.blocks, self.mixture) == (config.width, config.res_blocks, 1):
            return BitSwapVAE(config)
        schedule = "|".join("".join(map(str, subimages)) for subimages in self.schedule)
        if isinstance(config, PolyphaseConfig):  # a trained model's (--init): the scheme must be its own
            if (config.schedule, config.context_width, config.context_blocks) != (schedule, self.width, self.blocks):
                raise SystemExit(f"--init: scheme {self.label} is not the trained model's {config.schedule} "
                                 f"w{config.context_width}b{config.context_blocks}")
            poly = config
        else:
            poly = PolyphaseConfig(**dataclasses.asdict(config), schedule=schedule, context_width=self.width, context_blocks=self.blocks)
        return PolyphaseBitSwapVAE(dataclasses.replace(poly, mixture=self.mixture))


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


def subimage_recon_bits(model: BitSwapVAE, z1: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log2 p(x | z1) of each subimage, summed over the batch: (4,)."""
    if isinstance(model.p[0], PassLikelihood):
        return model.p[0].recon_bits(z1, x, model.quantized)
    mean, log_scale, *coefs = model.prior(0, z1)
    mean = conditioned_mean(mean, coefs[0] if coefs else None, x.float(), exact=model.quantized)
    log_mass = discretized_logistic_log_mass(x.float(), *codes_to_bins(mean, log_scale), PIXEL_BINS)
    return torch.stack([-subimage(log_mass, s).sum() for s in range(SUBIMAGES)]) / LN2


def elbo_terms(model: BitSwapVAE, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple:
    """``model(x, free_bits=0)`` with its reconstruction per subimage (4,) and KL per latent layer and
    channel (L, C), in bits summed over the batch.

    Read off the model's own forward pass, whose ``recon_bits`` and ``_latent_log_prob`` are wrapped on
    the instance for the call: it takes log q of each latent layer, then log p of each. The terms are
    checked against the loss the pass returns.
    """
    log_probs, recon = [], []
    latent_log_prob = model._latent_log_prob

    def log_prob(*args: torch.Tensor) -> torch.Tensor:
        log_probs.append(latent_log_prob(*args))
        return log_probs[-1]

    def recon_bits(z1: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        recon.append(subimage_recon_bits(model, z1, pixels))
        return recon[-1].sum()

    model._latent_log_prob, model.recon_bits = log_prob, recon_bits
    try:
        loss = model(x, free_bits=0.0, generator=generator)
    finally:
        del model._latent_log_prob, model.recon_bits
    layers, dims = model.config.latent_layers, x.numel()
    kl = torch.stack([(q - p).sum((0, 2, 3)) for q, p in zip(log_probs[:layers], log_probs[layers:])]) / LN2
    if (len(log_probs), len(recon)) != (2 * layers, 1) or not (
        torch.allclose(recon[0].sum() / dims, loss.recon, rtol=1e-4) and torch.allclose(kl.sum(1) / dims, loss.kl, rtol=1e-4, atol=1e-7)
    ):
        raise RuntimeError("the model's forward pass no longer takes its terms in the order elbo_terms reads them")
    return loss, recon[0], kl


@torch.no_grad()
def evaluate(model: BitSwapVAE, val: torch.Tensor, schedule: list[list[int]], batch: int = 256) -> dict:
    """Validation terms in bits per subpixel (one posterior sample, fixed seed)."""
    was = model.training
    model.eval()
    gen = torch.Generator().manual_seed(0)
    recon_sub, kl_channels = torch.zeros(SUBIMAGES, dtype=torch.float64), 0
    for start in range(0, val.shape[0], batch):
        _, recon, kl = elbo_terms(model, val[start : start + batch], gen)
        recon_sub, kl_channels = recon_sub + recon.double(), kl_channels + kl.double()
    model.train(was)
    n, dims = val.shape[0], val[0].numel()
    sub = (recon_sub / (n * dims / SUBIMAGES)).tolist()
    kl_channels = kl_channels / n  # bits per patch
    recon, kl = sum(sub) / SUBIMAGES, (kl_channels.sum(1) / dims).tolist()
    return {
        "val_neg_elbo": recon + sum(kl),
        "val_recon": recon,
        "val_kl": kl,
        "val_recon_sub": {SUBIMAGE_NAMES[s]: sub[s] for s in range(SUBIMAGES)},
        "val_recon_pass": [sum(sub[s] for s in p) / len(p) for p in schedule],
        "val_active_channels": [int((row > 1.0).sum()) for row in kl_channels],
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
            "config": json.loads(config.to_json()), "batch": args.batch, "seed": args.seed, "clock": args.clock,
            "init": args.init, "ema": args.ema, "warmup": args.warmup}

    def log(record: dict) -> None:
        with open(log_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    if args.resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        saved = json.loads(state["meta"])
        if {k: saved[k] for k in meta} != json.loads(json.dumps(meta)):
            raise SystemExit(f"--resume: {ckpt_path} was written with different settings: {saved}")
        load_state(model, state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        saved_average = state.get("average"), int(state.get("averaged_steps", 1))
        step, train_s, wall_s = int(state["step"]), float(state["train_seconds"]), float(state["wall_seconds"])
        print(f"[{scheme.label}] resumed at step {step}, {train_s:.0f} s trained", flush=True)
    else:
        saved_average = None, 1
        if log_path.exists():
            log_path.unlink()
        if args.init:
            start_from(model, args.init)
        else:
            rng, _ = step_streams(args.seed, 0, 1)  # stream 1: init batch
            data_dependent_init(model, data.sample(256, rng))

    average = WeightAverage(model, args.ema, *saved_average) if args.ema else None
    macs = count_macs(model)
    params = sum(p.numel() for p in model.parameters())
    lik_params = sum(p.numel() for p in model.p[0].parameters())
    log({"event": "start", **meta, "parameters": params, "likelihood_parameters": lik_params, **macs,
         "budget_seconds": budget, "start_step": step, "threads": torch.get_num_threads()})

    def save() -> None:
        state = {"meta": json.dumps({**meta, "minutes": args.minutes}), "config": model.config.to_json(),
                 "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "step": step, "train_seconds": train_s, "wall_seconds": wall_s}
        if average is not None:
            state["average"], state["averaged_steps"] = average.values, average.count
        torch.save(state, ckpt_path.with_suffix(".part"))
        os.replace(ckpt_path.with_suffix(".part"), ckpt_path)

    def validate(train_window: list[float]) -> dict:
        t0 = time.perf_counter()
        record = {"step": step, "train_seconds": round(train_s, 1), "wall_seconds": round(wall_s, 1),
                  "lr": learning_rate(int(train_s), max(1, int(budget)), args.lr, args.lr_end),
                  "train_neg_elbo": float(np.mean(train_window)) if train_window else None}
        with average.applied() if average is not None else contextlib.nullcontext():
            record.update(evaluate(model, val, scheme.schedule))
            save_float_model(model, out / f"{scheme.label}.float.safetensors")
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
        lr = learning_rate(train_s, budget, args.lr, args.lr_end) * min(1.0, (step + 1) / max(1, args.warmup))
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
        if average is not None:
            average.update()
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
        subs = "/".join(f"{r['val_recon_sub'][s]:.3f}" for s in SUBIMAGE_NAMES)
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
    parser.add_argument("--warmup", type=int, default=0, help="steps of a linear rise of the learning rate (default 0)")
    parser.add_argument("--ema", type=float, default=0.0, help="validate a moving average of the weights of this decay "
                                                              "(train.WeightAverage; default 0: the weights themselves)")
    parser.add_argument("--init", help="start every scheme from these float weights (a models/NAME.float.safetensors; "
                                       "its configuration replaces the rgb preset, and mixtures start as its one logistic)")
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
    config = load_float_model(args.init).config if args.init else PRESETS["rgb"]
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
