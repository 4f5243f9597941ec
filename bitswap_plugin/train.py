"""Train a Bit-Swap model from folders of images, then quantize and export it.

One run has three phases, all resumable from the checkpoint in ``--out``:

1. **float**: Adam on random 32x32 crops (``--scales``: the images at full
   size and antialiased downscales; random flips, with ``--transpose`` random
   transposes too), learning rate decaying exponentially from ``--lr`` to
   ``--lr-end``, gradient clipping at norm 1, free bits (KL clamped at
   ``--free-bits`` bits per layer and channel), data-dependent init, or the
   weights of an earlier run with ``--init``; with ``--ema`` a moving average
   of the weights (a plain mean at first), which validation, QAT's start and
   export use;
2. **qat**: calibration of every quantizer (the calibrated model is
   validated and kept), then quantization-aware fine-tuning with the integer
   network's arithmetic in the loop;
3. **export**: the integer model the codec uses (``<out>/<name>.safetensors``)
   of QAT's weights, or of the calibrated ones where those validate better,
   the float weights (``<name>.float.safetensors``, for ``--init``) and ``summary.json``
   with the float, quantized and integer -ELBO on the same validation patches.

Validation patches come from the last ``--val-images`` photos (sorted by
name), which are never trained on, or from ``--val-data``. ``log.jsonl`` gets
a line per validation, ``curves.png`` plots it. ``--minutes`` sizes the run
from a measured step time. On CUDA the float phase may use bfloat16 autocast
(``--amp``; the output heads stay float32); under ``torchrun`` training is
data-parallel (DDP; nccl on CUDA, gloo on CPU)::

    bitswap train --data ../shared/datasets/photos-train --out runs/rgb --preset rgb --minutes 60
    torchrun --standalone --nproc-per-node 2 -m bitswap_plugin.train --data ... --out ...
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from tqdm import tqdm

from .architecture import ModelConfig
from .errors import BitSwapError
from .images import images_in
from .integer_model import integer_neg_elbo, save_integer_model
from .model import BitSwapVAE, Net, export_integer_model, load_float_model, neg_elbo, save_float_model
from .polyphase import PolyphaseConfig
from .patches import PATCH
from .zoo import ARCHITECTURES, load_model_file

PRESETS = {
    "rgb": ModelConfig(
        channels=3, latent_channels=8, latent_layers=2, width=64, res_blocks=2, channel_conditioning=True, name="bitswap-rgb"
    ),
    "gray": ModelConfig(channels=1, latent_channels=4, latent_layers=2, width=64, res_blocks=2, name="bitswap-gray"),
    "tiny-rgb": ModelConfig(channels=3, latent_channels=8, latent_layers=2, width=32, res_blocks=1, name="tiny-rgb"),
    "tiny-gray": ModelConfig(channels=1, latent_channels=4, latent_layers=2, width=32, res_blocks=1, name="tiny-gray"),
    "polyphase-rgb": PolyphaseConfig(
        channels=3, latent_channels=8, latent_layers=2, width=64, res_blocks=2, channel_conditioning=True, name="polyphase-rgb"
    ),
    "polyphase-gray": PolyphaseConfig(channels=1, latent_channels=4, latent_layers=2, width=64, res_blocks=2, name="polyphase-gray"),
}
CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"


# -- data --------------------------------------------------------------------


def image_paths(folders: list[str]) -> list[Path]:
    """Every image file directly in ``folders``, sorted by folder order then name."""
    paths = []
    for folder in folders:
        if not Path(folder).is_dir():
            raise BitSwapError(f"training data folder {folder!r} does not exist")
        paths += images_in(folder)
    return paths


class PatchSampler:
    """Random PATCH x PATCH crops of images at several antialiased scales.

    Crops are drawn uniformly over all crop positions of all scaled images, so
    a large photo gives proportionally more patches than a small one.
    """

    def __init__(self, paths: list[Path], channels: int, scales: tuple[float, ...] = (1, 2, 4)) -> None:
        self.images = []
        for path in paths:
            with Image.open(path) as im:
                im = im.convert("L" if channels == 1 else "RGB")
                for factor in scales:
                    size = (round(im.width / factor), round(im.height / factor))
                    small = im if factor == 1 else im.resize(size, Image.LANCZOS)
                    if min(small.size) >= PATCH:
                        arr = np.asarray(small)
                        self.images.append(arr[None] if channels == 1 else arr.transpose(2, 0, 1))
        if not self.images:
            raise BitSwapError(f"no image of at least {PATCH}x{PATCH} pixels among {len(paths)} files")
        positions = np.array([(a.shape[1] - PATCH + 1) * (a.shape[2] - PATCH + 1) for a in self.images], dtype=np.float64)
        self.weights = positions / positions.sum()

    def sample(
        self, n: int, rng: np.random.Generator, flip: bool = True, transpose: bool = False, synthetic: float = 0.0
    ) -> torch.Tensor:
        """(n, C, PATCH, PATCH) uint8 crops; with ``flip``, each flipped at random both ways, with
        ``transpose`` also transposed at random (all eight rotations and reflections); a
        ``synthetic`` share of them (binomially drawn) from :func:`synthetic_patches`."""
        out = np.empty((n, self.images[0].shape[0], PATCH, PATCH), dtype=np.uint8)
        made = rng.binomial(n, synthetic) if synthetic else 0
        out[:made] = synthetic_patches(made, out.shape[1], rng)
        for i, j in enumerate(rng.choice(len(self.images), n - made, p=self.weights), start=made):
            img = self.images[j]
            y = rng.integers(0, img.shape[1] - PATCH + 1)
            x = rng.integers(0, img.shape[2] - PATCH + 1)
            crop = img[:, y : y + PATCH, x : x + PATCH]
            if flip:
                crop = crop[:, :: rng.choice((1, -1)), :: rng.choice((1, -1))]
            if transpose and rng.random() < 0.5:
                crop = crop.transpose(0, 2, 1)
            out[i] = crop
        return torch.from_numpy(out)


def synthetic_patches(n: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """(n, channels, PATCH, PATCH) uint8 crops of the content photos lack: flat colour, ramps
    and 2-D gradients, and few-colour rectangles (graphics); a quarter get faint noise.

    Mixed into training (``--synthetic``) so that smooth and flat regions cost almost
    nothing instead of what the model would guess from photographs.
    """
    yy, xx = np.mgrid[0:PATCH, 0:PATCH].astype(np.float64)
    out = np.empty((n, channels, PATCH, PATCH), dtype=np.uint8)
    for i in range(n):
        base = rng.uniform(0, 255, (channels, 1, 1))
        kind = rng.integers(3)
        if kind == 0:  # flat
            crop = np.broadcast_to(base, (channels, PATCH, PATCH))
        elif kind == 1:  # ramp or gradient, per-channel slopes of up to 4 levels a pixel
            slope = rng.uniform(-4, 4, (2, channels, 1, 1)) * rng.choice((0.0, 0.1, 1.0), (2, 1, 1, 1))
            crop = base + slope[0] * yy + slope[1] * xx
        else:  # rectangles from a palette of 2-8 colours
            palette = rng.integers(0, 256, (rng.integers(2, 9), channels))
            crop = np.empty((channels, PATCH, PATCH))
            crop[:] = palette[0][:, None, None]
            for _ in range(rng.integers(1, 8)):
                y0, x0 = rng.integers(0, PATCH, 2)
                y1, x1 = y0 + rng.integers(1, PATCH + 1), x0 + rng.integers(1, PATCH + 1)
                crop[:, y0:y1, x0:x1] = palette[rng.integers(len(palette))][:, None, None]
        if rng.random() < 0.25:
            crop = crop + rng.normal(0, rng.uniform(0.3, 2), (channels, PATCH, PATCH))
        out[i] = np.clip(np.rint(crop), 0, 255)
    return out


# -- model initialisation and schedule --------------------------------------


def float_model(config: ModelConfig) -> BitSwapVAE:
    """A new float model of the architecture whose configuration type ``config`` has."""
    for architecture in ARCHITECTURES.values():
        if type(config) is architecture.integer_model.config_type:
            return architecture.float_model_class()(config)
    raise BitSwapError(f"no architecture takes a {type(config).__name__}")


@torch.no_grad()
def data_dependent_init(model: BitSwapVAE, x: torch.Tensor, nets: list[Net] | None = None) -> None:
    """Scale every input and inner convolution (of ``nets``, default all) so its outputs have zero
    mean and unit variance on ``x``.

    One forward pass: each layer is normalised as it runs, so later layers see
    normalised inputs (as in weight-normalisation's data-dependent init).
    """
    def normalise(module: torch.nn.Conv2d, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        mean = output.mean((0, 2, 3))
        std = output.std((0, 2, 3)).clamp(min=1e-3)
        module.weight.div_(std.view(-1, 1, 1, 1))
        module.bias.sub_(mean).div_(std)
        return (output - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)

    nets = [module for module in model.modules() if isinstance(module, Net)] if nets is None else nets
    convs = [net.conv_in.conv for net in nets] + [block.conv1.conv for net in nets for block in net.blocks]
    hooks = [conv.register_forward_hook(normalise) for conv in convs]
    try:
        model(x)
    finally:
        for hook in hooks:
            hook.remove()


@torch.no_grad()
def match_heads(model: BitSwapVAE, start: BitSwapVAE, x: torch.Tensor, names: list[str]) -> None:
    """Make the heads of ``model``'s networks ``names`` give, whatever their input, the mean codes per
    channel that ``start``'s networks of the same names give on patches ``x`` (float mode): zero
    weights, the mean as bias.

    A fresh network that replaces a trained one (a leaner prior, say) then starts where the trained
    one is on average, instead of at codes whose scales spread the KL by orders of magnitude; its
    weights leave zero at the first step.
    """
    nets = dict(start.integer_networks())
    means: dict[str, torch.Tensor] = {}
    hooks = [nets[name].head.conv.register_forward_hook(
        lambda _module, _inputs, output, name=name: means.__setitem__(name, output.mean((0, 2, 3))))
        for name in names]
    quantized, start.quantized = start.quantized, False
    try:
        start(x)
    finally:
        start.quantized = quantized
        for hook in hooks:
            hook.remove()
    nets = dict(model.integer_networks())
    for name in names:
        nets[name].head.conv.weight.zero_()
        nets[name].head.conv.bias.copy_(means[name])


def learning_rate(step: int, steps: int, lr: float, lr_end: float) -> float:
    """Exponential decay from ``lr`` at step 0 to ``lr_end`` at ``steps``."""
    return lr * (lr_end / lr) ** min(1.0, step / max(1, steps))


@torch.no_grad()
def _copy_into(model: torch.nn.Module, values: list[torch.Tensor]) -> None:
    """Overwrite ``model``'s parameters, in ``parameters()`` order, with ``values``."""
    for param, value in zip(model.parameters(), values, strict=True):
        param.copy_(value)


class WeightAverage:
    """A moving average of a model's parameters: their plain mean while it holds fewer than
    ``1 / (1 - decay)`` weights (so it carries no bias towards where it started), then an
    exponential average of decay ``decay``. ``saved`` and ``count`` continue a checkpoint's."""

    def __init__(self, model: torch.nn.Module, decay: float, saved: list[torch.Tensor] | None = None, count: int = 1) -> None:
        self.model, self.decay, self.count = model, decay, count
        device = next(model.parameters()).device
        self.values = [t.to(device) for t in saved] if saved is not None else [p.detach().clone() for p in model.parameters()]
        """The average, in ``parameters()`` order."""

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the model's current weights."""
        decay = min(self.decay, self.count / (self.count + 1))
        for average, param in zip(self.values, self.model.parameters(), strict=True):
            average.lerp_(param.detach(), 1 - decay)
        self.count += 1

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block."""
        current = [p.detach().clone() for p in self.model.parameters()]
        _copy_into(self.model, self.values)
        try:
            yield
        finally:
            _copy_into(self.model, current)

    def adopt(self) -> None:
        """Replace the model's weights by the average for good."""
        _copy_into(self.model, self.values)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- the run -----------------------------------------------------------------


@dataclasses.dataclass
class Settings:
    """Everything that determines a run (saved in the checkpoint; a resume must match it)."""

    config: ModelConfig
    data: list[str]
    steps: int = 20000
    qat_steps: int = 2000
    batch: int = 64
    lr: float = 2e-3
    lr_end: float = 5e-4
    qat_lr: float = 2e-4
    """Learning rate of quantization-aware training; the command's default is the lower of this and
    ``lr_end``, since a trained model loses what the decay gave it when the rate rises again."""
    warmup: int = 0
    """Steps over which the learning rate rises linearly at the start of each phase (each starts a
    fresh Adam, whose first steps move every weight by about the learning rate). It does not keep a
    trained model from losing ground to a rate above the one its training ended at; a lower ``lr``
    does (measured in models/polyphase-rgb-l2.md)."""
    ema: float = 0.0
    """Decay of an exponential moving average of the weights (0: none). Validation, QAT's start
    and export use the average: on these models the validation -ELBO follows the learning rate,
    and the average gives low-rate weights while training moves at a higher rate. Until it holds
    ``1 / (1 - ema)`` steps it is their plain mean, so it carries no bias towards where it started."""
    free_bits: float = 1.0
    val_images: int = 5
    """Hold out the last this many --data images for validation (unless val_data is given)."""
    val_data: list[str] = dataclasses.field(default_factory=list)
    """Folders of validation images; then all --data images are trained on."""
    scales: list[float] = dataclasses.field(default_factory=lambda: [1.0, 2.0, 4.0])
    """Downscale factors of the training images (antialiased)."""
    transpose: bool = False
    """Also transpose training crops at random (besides flips)."""
    synthetic: float = 0.0
    """Share of training crops made by :func:`synthetic_patches` (flat, gradients, graphics)."""
    init: str = ""
    """Float checkpoint whose weights start the run (fine-tuning); empty: data-dependent init."""
    fresh_lr: float = 0.0
    """Float-phase learning rate of the networks that start fresh in a run from ``init`` (0: ``lr``),
    on ``lr``'s schedule: new networks need a rate that would undo the trained ones."""
    val_patches: int = 1024
    val_every: int = 500
    seed: int = 0

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["config"] = json.loads(self.config.to_json())
        for optional in ("warmup", "ema", "fresh_lr"):
            if not data[optional]:
                del data[optional]  # as before the option existed, so earlier checkpoints resume
        return json.dumps(data, sort_keys=True)


class Trainer:
    """Runs :class:`Settings` in ``out``, as one process of a (possibly distributed) job."""

    def __init__(self, settings: Settings, out: Path, device: torch.device, amp: bool, progress: bool) -> None:
        self.settings, self.out, self.device = settings, out, device
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        self.amp = amp and device.type == "cuda"
        self.progress = progress and self.rank == 0
        paths = image_paths(settings.data)
        if settings.val_data:
            train_paths, val_paths = paths, image_paths(settings.val_data)
        elif len(paths) > settings.val_images:
            train_paths, val_paths = paths[: len(paths) - settings.val_images], paths[len(paths) - settings.val_images :]
        else:
            raise BitSwapError(f"need more than {settings.val_images} images for training and validation, got {len(paths)}")
        channels = settings.config.channels
        self.train_data = PatchSampler(train_paths, channels, tuple(settings.scales))
        val_sampler = PatchSampler(val_paths, channels)
        self.val = val_sampler.sample(settings.val_patches, np.random.default_rng(12345), flip=False)
        torch.manual_seed(settings.seed)  # the initial weights
        self.model = float_model(settings.config).to(device)
        self.step = 0
        self.average: WeightAverage | None = None
        """The moving average of the parameters (``settings.ema``)."""
        self.noise = torch.Generator(device=device)
        self.fresh: list[str] = []
        """Networks that started fresh in a run from ``settings.init`` (they train at ``fresh_lr``)."""
        self.float_val: float | None = None
        self.calibrated: dict | None = None
        """The model as calibration left it (quantized mode, before any QAT step) and its validation
        -ELBO: export keeps it if QAT ends worse."""

    def _streams(self, stream: int) -> np.random.Generator:
        """Data and noise generators of this rank for one step, seeded from (seed, rank, step, stream):
        a resumed run draws exactly what an uninterrupted one would, with no generator state to save."""
        seed = [self.settings.seed, self.rank, self.step, stream]
        self.noise.manual_seed(int(np.random.SeedSequence(seed).generate_state(1, np.uint64)[0] >> 1))
        return np.random.default_rng(seed)

    # -- state

    def _optimizer(self) -> torch.optim.Optimizer:
        """Adam; with ``fresh_lr``, the fresh networks in a group whose rate is scaled by ``fresh_lr / lr``."""
        networks = dict(self.model.integer_networks())
        fresh = {id(p) for name in self.fresh for p in networks[name].parameters()} if self.settings.fresh_lr else set()
        groups = [{"params": [p for p in self.model.parameters() if id(p) not in fresh]}]
        if fresh:
            groups.append({"params": [p for p in self.model.parameters() if id(p) in fresh], "scale": self.settings.fresh_lr / self.settings.lr})
        return torch.optim.Adam(groups, lr=self.settings.lr, betas=(0.9, 0.999))

    def _save(self, optimizer: torch.optim.Optimizer) -> None:
        if self.rank != 0:
            return
        state = {
            "settings": self.settings.to_json(),
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "float_val": -1.0 if self.float_val is None else self.float_val,
            "fresh": self.fresh,
        }
        if self.calibrated is not None:
            state["calibrated"] = self.calibrated
        if self.average is not None:
            state["average"], state["averaged_steps"] = self.average.values, self.average.count
        temp = self.out / (CHECKPOINT + ".part")
        torch.save(state, temp)
        os.replace(temp, self.out / CHECKPOINT)

    def _load(self, adopt_steps: bool) -> dict:
        state = torch.load(self.out / CHECKPOINT, map_location=self.device, weights_only=True)
        saved = json.loads(state["settings"])
        if adopt_steps:  # the run's length was planned from a time budget when it started
            self.settings = dataclasses.replace(self.settings, steps=saved["steps"], qat_steps=saved["qat_steps"])
        if state["settings"] != self.settings.to_json():
            raise BitSwapError(f"--resume: the settings differ from the checkpoint's: {state['settings']}")
        self.step = int(state["step"])
        self.model.load_state_dict(state["model"])
        self.float_val = None if state["float_val"] < 0 else float(state["float_val"])
        self.fresh = list(state.get("fresh", []))
        self.calibrated = state.get("calibrated")
        # an average saved before the plain-mean start has no count: it continues at the full decay
        self._start_average(state.get("average"), int(state.get("averaged_steps", 1 << 62 if "average" in state else 1)))
        return state["optimizer"]

    def _start_average(self, saved: list[torch.Tensor] | None = None, count: int = 1) -> None:
        """Start the moving average at ``saved`` (a checkpoint's, holding ``count`` weights), else at the current weights."""
        self.average = WeightAverage(self.model, self.settings.ema, saved, count) if self.settings.ema else None

    def _averaged(self) -> contextlib.AbstractContextManager:
        """The model holds the averaged weights inside the block (as it is when there is no average)."""
        return contextlib.nullcontext() if self.average is None else self.average.applied()

    def _adopt_average(self) -> None:
        """Replace the weights by their average for good (before QAT and export)."""
        if self.average is not None:
            self.average.adopt()

    # -- loop

    def _log(self, record: dict) -> None:
        if self.rank == 0:
            with open(self.out / LOG, "a") as f:
                f.write(json.dumps(record) + "\n")

    def validate(self, averaged: bool = True) -> float:
        """Validation -ELBO of the averaged weights (of the current ones if not ``averaged``)."""
        generator = torch.Generator(device=self.device).manual_seed(0)
        with self._averaged() if averaged else contextlib.nullcontext():
            return neg_elbo(self.model, self.val.to(self.device), batch_size=256, generator=generator)

    def _initialise(self) -> None:
        """Weights from ``settings.init`` (fine-tuning; quantizers are re-calibrated later), else
        data-dependent. The name may differ, since a fine-tuned model is a new model, and so may the
        configuration's growable fields: networks the earlier model lacks, or has in other shapes, get a
        data-dependent init, and the latter start at the mean codes of the networks they replace."""
        sample = self.train_data.sample(256, self._streams(1)).to(self.device)
        if not self.settings.init:
            data_dependent_init(self.model, sample)
            return
        start = load_float_model(self.settings.init)
        wanted = self.settings.config
        ignored = {"name", *wanted.growable}
        if type(start.config) is not type(wanted) or any(
            getattr(start.config, f.name) != getattr(wanted, f.name) for f in dataclasses.fields(wanted) if f.name not in ignored
        ):
            raise BitSwapError(f"--init model has config {start.config}, the run wants {wanted}")
        keep = None
        if wanted.latent_channels < start.config.latent_channels:  # keep the channels that carry the most
            kl = start.to(self.device).latent_channel_kl(sample, torch.Generator(device=self.device).manual_seed(0))
            keep = [sorted(row.argsort(descending=True)[: wanted.latent_channels].tolist()) for row in kl.cpu()]
        fresh = self.fresh = self.model.adopt(start, keep)
        self.model.quantized = False
        if fresh:
            networks = dict(self.model.integer_networks())
            data_dependent_init(self.model, sample, [networks[name] for name in fresh])
            match_heads(self.model, start.to(self.device), sample, [name for name, _ in start.integer_networks() if name in fresh])
        if self.rank == 0:
            self._log({"step": 0, "init": self.settings.init, "fresh_networks": fresh, **({"kept_latent_channels": keep} if keep else {}),
                       "val_bpd": self.validate()})

    def _train_step(self, net: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> torch.Tensor:
        """One optimizer step on patches ``x``; returns the batch's -ELBO (a device scalar, no sync)."""
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp and not self.model.quantized):
            loss = net(x, free_bits=self.settings.free_bits, generator=self.noise)
        optimizer.zero_grad(set_to_none=True)
        loss.loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        optimizer.step()
        return loss.neg_elbo.detach()

    def plan(self, minutes: float, qat_share: float = 0.15, probe_steps: int = 20) -> None:
        """Set ``steps`` and ``qat_steps`` so that training takes about ``minutes``, ``qat_share`` of it QAT.

        Times ``probe_steps`` float and QAT steps of a throwaway copy of the model;
        under DDP every rank adopts rank 0's plan.
        """
        real, self.model = self.model, copy.deepcopy(self.model)
        seconds = []
        try:
            for phase in ("float", "qat"):
                if phase == "qat":
                    self.model.calibrate(self.train_data.sample(256, self._streams(3)).to(self.device))
                optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
                for i in range(probe_steps + 3):
                    if i == 3:  # the first steps pay for warm-up
                        _synchronize(self.device)
                        start = time.monotonic()
                    self._train_step(self.model, optimizer, self.train_data.sample(self.settings.batch, self._streams(4)).to(self.device))
                _synchronize(self.device)
                seconds.append((time.monotonic() - start) / probe_steps)
        finally:
            self.model = real
        budget = minutes * 60
        plan = [max(1, int(budget * (1 - qat_share) / seconds[0])), max(1, int(budget * qat_share / seconds[1]))]
        if self.distributed:
            dist.broadcast_object_list(plan, src=0)
        self.settings = dataclasses.replace(self.settings, steps=plan[0], qat_steps=plan[1])
        self._log({"plan_minutes": minutes, "float_step_seconds": seconds[0], "qat_step_seconds": seconds[1],
                   "steps": plan[0], "qat_steps": plan[1]})

    def run(self, resume: bool, time_limit: float | None = None, minutes: float | None = None, max_steps: int | None = None) -> bool:
        """Train until done, ``time_limit`` seconds or step ``max_steps``; returns whether training (not export) is done.

        With ``minutes``, a new run first :meth:`plan`\\ s its length; a resumed one keeps its plan.
        """
        started = time.monotonic()
        optimizer_state = None
        resuming = resume and (self.out / CHECKPOINT).exists()
        if resuming:
            optimizer_state = self._load(adopt_steps=minutes is not None)
        else:
            self._initialise()
            if minutes is not None:
                self.plan(minutes)
        s = self.settings
        net = self._wrap()
        if not resuming:
            self._start_average()  # after DDP gave every rank rank 0's weights
        optimizer = self._optimizer()
        if optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
        total = s.steps + s.qat_steps
        stop = total if max_steps is None else min(total, max_steps)
        self._log({"start_step": self.step, "world_size": self.world, "device": str(self.device), "settings": json.loads(s.to_json())})
        bar = tqdm(total=total, initial=self.step, unit="step", disable=not self.progress, dynamic_ncols=True)
        window_sum, window_steps = torch.zeros((), device=self.device), 0
        while self.step < stop and (time_limit is None or time.monotonic() - started < time_limit):
            if self.step == s.steps and not self.model.quantized:
                optimizer = self._enter_qat()
            qat = self.model.quantized
            lr = s.qat_lr if qat else learning_rate(self.step, s.steps, s.lr, s.lr_end)
            lr *= min(1.0, (self.step - (s.steps if qat else 0) + 1) / max(1, s.warmup))
            for group in optimizer.param_groups:
                group["lr"] = lr * (1.0 if qat else group.get("scale", 1.0))
            x = self.train_data.sample(s.batch, self._streams(0), transpose=s.transpose, synthetic=s.synthetic).to(self.device, non_blocking=True)
            window_sum += self._train_step(net, optimizer, x)
            if self.average is not None:
                self.average.update()
            window_steps += 1
            self.step += 1
            bar.update(1)
            if self.step % s.val_every == 0 or self.step == total:
                record = {"step": self.step, "phase": "qat" if qat else "float", "train_bpd": float(window_sum) / window_steps}
                window_sum, window_steps = torch.zeros((), device=self.device), 0
                if self.rank == 0:
                    record.update(val_bpd=self.validate(), lr=lr, seconds=round(time.monotonic() - started, 1))
                    if self.average is not None:
                        record["val_current_bpd"] = self.validate(averaged=False)
                    self._log(record)
                    bar.set_postfix(train=f"{record['train_bpd']:.3f}", val=f"{record['val_bpd']:.3f}")
                self._save(optimizer)
        bar.close()
        if self.distributed:
            self._log({"step": self.step, "replicas_equal": self._replicas_equal()})
        if self.step >= total and not self.model.quantized:  # no QAT steps: calibrate for export
            optimizer = self._enter_qat()
        self._save(optimizer)
        return self.step >= total

    def _enter_qat(self) -> torch.optim.Optimizer:
        """Record the float model's validation -ELBO, take the averaged weights, calibrate every
        quantizer on a training batch (the same on all ranks) and switch to quantized mode; returns
        a fresh optimizer (and starts a fresh average)."""
        self.float_val = self.validate() if self.rank == 0 else None
        self._log({"step": self.step, "phase": "calibrate", "float_val_bpd": self.float_val})
        self._adopt_average()
        batch = self.train_data.sample(512, np.random.default_rng([self.settings.seed, 1 << 40])).to(self.device)
        self.model.calibrate(batch, generator=torch.Generator(device=self.device).manual_seed(7))
        self._start_average()
        if self.rank == 0:
            val = self.validate()
            self.calibrated = {"model": copy.deepcopy(self.model.state_dict()), "val_bpd": val}
            self._log({"step": self.step, "phase": "calibrated", "val_bpd": val})
        return self._optimizer()

    def _keep_better_of_qat_and_calibration(self) -> bool:
        """Fall back to the calibrated model if QAT's (averaged) weights validate worse than it did;
        returns whether QAT's weights stay. QAT fine-tunes at a fixed, low rate from a fresh average,
        so a short QAT phase may end behind its start; then its steps are discarded."""
        if self.calibrated is None or self.settings.qat_steps == 0:
            return True
        qat_val = self.validate()
        kept = qat_val <= self.calibrated["val_bpd"]
        if not kept:
            self.model.load_state_dict(self.calibrated["model"])
            self.average = None
        self._log({"step": self.step, "phase": "export", "qat_val_bpd": qat_val,
                   "calibrated_val_bpd": self.calibrated["val_bpd"], "kept": "qat" if kept else "calibrated"})
        return kept

    def _replicas_equal(self) -> bool:
        """Whether every rank holds bit-identical parameters (DDP keeps them so)."""
        flat = torch.cat([p.detach().flatten().double() for p in self.model.parameters()])
        digest = torch.stack([flat.sum(), (flat * torch.arange(flat.numel(), device=flat.device)).sum()])
        gathered = [torch.empty_like(digest) for _ in range(self.world)]
        dist.all_gather(gathered, digest)
        return all(torch.equal(g, digest) for g in gathered)

    def _wrap(self) -> torch.nn.Module:
        if not self.distributed:
            return self.model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    # -- export

    def export(self) -> dict:
        """Write the integer model (of the averaged weights, or of the calibrated ones where QAT
        made them worse) and summary.json; returns the summary."""
        qat_kept = self._keep_better_of_qat_and_calibration()
        self._adopt_average()
        model = self.model.cpu().eval()
        integer = export_integer_model(model)
        path = self.out / f"{self.settings.config.name}.safetensors"
        save_integer_model(integer, path)
        loaded = load_model_file(path)
        save_float_model(model, self.out / f"{self.settings.config.name}.float.safetensors")
        val = self.val
        quantized = neg_elbo(model, val, generator=torch.Generator().manual_seed(0))
        integer_bpd = integer_neg_elbo(loaded, val, torch.Generator().manual_seed(0))
        summary = {
            "model": str(path),
            "config": json.loads(self.settings.config.to_json()),
            "content_hash": loaded.content_hash,
            "parameters": sum(p.numel() for p in model.parameters()),
            "file_bytes": path.stat().st_size,
            "steps": self.settings.steps,
            "qat_steps": self.settings.qat_steps,
            "qat_kept": qat_kept,
            "val_patches": int(val.shape[0]),
            "val_float_bpd": self.float_val,
            "val_quantized_bpd": quantized,
            "val_integer_bpd": integer_bpd,
            "integer_vs_float": None if not self.float_val else integer_bpd / self.float_val - 1,
        }
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        plot_log(self.out / LOG, self.out / "curves.png")
        return summary


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_log(log: Path, png: Path) -> bool:
    """Plot train / validation bits per subpixel against step; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    records = [r for r in read_log(log) if "train_bpd" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    for phase, style in (("float", "-"), ("qat", "--")):
        rows = [r for r in records if r["phase"] == phase]
        if rows:
            steps = [r["step"] for r in rows]
            for key, color, label in (("train_bpd", "tab:blue", "train"), ("val_bpd", "tab:orange", "validation")):
                ax.plot(steps, [r[key] for r in rows], style, marker="o", ms=3, color=color, label=f"{label} ({phase})")
    ax.set_xlabel("step")
    ax.set_ylabel("-ELBO, bits per subpixel")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return True


# -- command line ------------------------------------------------------------


_INT_OVERRIDES = ("width", "res_blocks", "upper_width", "upper_blocks", "latent_channels", "latent_layers", "context_width",
                  "context_blocks", "levels", "mixture", "head_input_bits", "coef_frac")
"""Integer configuration fields the command line may override (context_*, levels, mixture and coef_frac: polyphase presets)."""


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="bitswap train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", action="append", required=True, help="folder of training images (repeatable); never the Kodak set")
    parser.add_argument("--val-data", action="append", default=[], help="folder of validation images (repeatable; default: hold out the last --val-images)")
    parser.add_argument("--out", required=True, help="run folder: checkpoint, log, curves, exported model")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="rgb", help="model configuration (default: rgb)")
    parser.add_argument("--name", help="model name (default: the preset's)")
    for field in _INT_OVERRIDES:
        parser.add_argument(f"--{field.replace('_', '-')}", type=int, help=f"override the preset's {field}")
    parser.add_argument("--schedule", help="override a polyphase preset's pass schedule (e.g. 0|1|2|3, 03|12)")
    parser.add_argument("--conditioning", action=argparse.BooleanOptionalAction, default=None,
                        help="override the preset's channel conditioning (RGB only)")
    defaults = Settings(config=PRESETS["rgb"], data=[])
    parser.add_argument("--qat-lr", type=float, help=f"learning rate of quantization-aware training "
                        f"(default: the lower of {defaults.qat_lr} and --lr-end)")
    for field in ("steps", "qat_steps", "batch", "lr", "lr_end", "warmup", "ema", "free_bits", "val_images", "val_patches", "val_every", "seed"):
        value = getattr(defaults, field)
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value, help=f"(default: {value})")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 4.0], help="downscale factors of the training images (default: 1 2 4)")
    parser.add_argument("--transpose", action="store_true", help="also transpose training crops at random")
    parser.add_argument("--synthetic", type=float, default=0.0, help="share of training crops that are synthetic flat, "
                        "gradient and few-colour content (default: 0)")
    parser.add_argument("--init", default="", help="start from these float weights (<name>.float.safetensors of an earlier run, "
                        "or the one shipped beside a model)")
    parser.add_argument("--fresh-lr", type=float, default=0.0, help="float-phase learning rate of the networks that start "
                        "fresh in a run from --init, on --lr's schedule (default: --lr)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    parser.add_argument("--minutes", type=float, help="plan --steps and --qat-steps to take about this long (85%%/15%%)")
    parser.add_argument("--time-limit", type=float, help="stop (with a checkpoint) after this many seconds; --resume continues")
    parser.add_argument("--max-steps", type=int, help="stop (with a checkpoint) at this step; --resume continues")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="bfloat16 autocast in the float phase on CUDA")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {f: getattr(args, f) for f in (*_INT_OVERRIDES, "schedule") if getattr(args, f) is not None}
    if args.conditioning is not None:
        overrides["channel_conditioning"] = args.conditioning
    if args.name:
        overrides["name"] = args.name
    preset = PRESETS[args.preset]
    unknown = set(overrides) - {field.name for field in dataclasses.fields(preset)}
    if unknown:
        raise BitSwapError(f"preset {args.preset!r} has no {', '.join(sorted(unknown))}")
    config = dataclasses.replace(preset, **overrides)
    fields = {f.name for f in dataclasses.fields(Settings)} - {"config", "data", "val_data", "init"}
    folders = {key: [os.path.abspath(d) for d in getattr(args, key)] for key in ("data", "val_data")}
    folders["init"] = os.path.abspath(args.init) if args.init else ""
    values = {f: getattr(args, f) for f in fields}
    if values["qat_lr"] is None:
        values["qat_lr"] = min(Settings.qat_lr, args.lr_end)
    if not 0 <= values["ema"] < 1:
        raise BitSwapError(f"--ema must lie in [0, 1), got {values['ema']}")
    return Settings(config=config, **folders, **values)


def run(args: argparse.Namespace) -> int:
    """Run ``bitswap train``; returns the process exit code."""
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = settings_from_args(args)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if args.device == "auto":
        device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = False  # codes need float32 precision
        torch.backends.cuda.matmul.allow_tf32 = False
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        trainer = Trainer(settings, out, device, amp=args.amp, progress=not args.quiet)
        done = trainer.run(args.resume, args.time_limit, args.minutes, args.max_steps)
        if trainer.rank == 0:
            if done:
                summary = trainer.export()
                print(json.dumps(summary, indent=2))
            else:
                print(f"stopped at step {trainer.step}; continue with --resume", file=sys.stderr)
        if distributed:
            dist.barrier()  # the ranks leave the group together, not one while rank 0 still exports
    finally:
        if distributed:
            dist.destroy_process_group()
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(build_parser().parse_args(argv))
    except BitSwapError as exc:
        print(f"bitswap train: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
