"""Train the small shipped models ``tiny-rgb`` and ``tiny-gray`` on CPU.

Random 32x32 crops of ../shared/datasets/photos-train/*.png at full size and
antialiased 2x / 4x downscales (the last photos are held out for validation;
the Kodak set is never used). Each model gets a float phase, calibration and a
short quantization-aware phase, is exported to the integer model and saved to
``bitswap_plugin/weights/<name>.safetensors``. Prints float, quantized and
integer -ELBO (bits per subpixel) on the validation crops. The budget is CPU
time, so a busy machine slows the run down without changing its result much;
one thread is about as fast as two for these small layers, so train the two
models in parallel:

    python tools/make_test_model.py --which rgb --minutes 8 &
    python tools/make_test_model.py --which gray --minutes 8
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bitswap_plugin.integer_model import (
    IntegerVAE,
    integer_neg_elbo,
    load_integer_model,
    save_integer_model,
)
from bitswap_plugin.model import BitSwapVAE, ModelConfig, neg_elbo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(os.path.dirname(ROOT), "shared", "datasets", "photos-train")
WEIGHTS = os.path.join(ROOT, "bitswap_plugin", "weights")
CONFIGS = {
    "rgb": ModelConfig(channels=3, latent_channels=8, latent_layers=2, width=32, res_blocks=1, name="tiny-rgb"),
    "gray": ModelConfig(channels=1, latent_channels=4, latent_layers=2, width=32, res_blocks=1, name="tiny-gray"),
}
HELD_OUT = 5
PATCH = 32


def load_pyramids(paths: list[str], gray: bool) -> list[np.ndarray]:
    """Each photo at full size and antialiased 1/2 and 1/4 size, as (C, H, W) uint8 arrays."""
    out = []
    for path in paths:
        im = Image.open(path).convert("L" if gray else "RGB")
        for factor in (1, 2, 4):
            small = im.resize((im.width // factor, im.height // factor), Image.LANCZOS) if factor > 1 else im
            arr = np.asarray(small)
            out.append(arr[None] if gray else arr.transpose(2, 0, 1))
    return out


def random_crops(images: list[np.ndarray], n: int, rng: np.random.Generator, flip: bool) -> torch.Tensor:
    """``n`` random PATCH x PATCH crops, a uniformly chosen image (and scale) each."""
    crops = np.empty((n, images[0].shape[0], PATCH, PATCH), dtype=np.uint8)
    for i, j in enumerate(rng.integers(0, len(images), n)):
        img = images[j]
        y = rng.integers(0, img.shape[1] - PATCH + 1)
        x = rng.integers(0, img.shape[2] - PATCH + 1)
        crop = img[:, y : y + PATCH, x : x + PATCH]
        if flip and rng.random() < 0.5:
            crop = crop[:, :, ::-1]
        crops[i] = crop
    return torch.from_numpy(crops)


def train(
    model: BitSwapVAE, images: list[np.ndarray], seconds: float, lr: float, lr_end: float, batch: int, rng: np.random.Generator
) -> int:
    """Adam with gradient clipping at norm 1 and exponential lr decay over a CPU-time budget; returns steps."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99))
    start, steps, avg = time.process_time(), 0, None
    while (elapsed := time.process_time() - start) < seconds:
        for group in opt.param_groups:
            group["lr"] = lr * (lr_end / lr) ** (elapsed / seconds)
        loss = model(random_crops(images, batch, rng, flip=True))
        opt.zero_grad()
        loss.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps += 1
        value = float(loss.neg_elbo.detach())
        avg = value if avg is None else 0.98 * avg + 0.02 * value
        if steps % 200 == 0:
            print(f"  step {steps} {elapsed:.0f} cpu-s train -ELBO ~{avg:.3f} kl {loss.kl.detach().numpy().round(3)}", flush=True)
    return steps


def make(which: str, data: str, minutes: float, qat_fraction: float, out_dir: str, seed: int) -> None:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = CONFIGS[which]
    paths = sorted(glob.glob(os.path.join(data, "*.png")))
    if len(paths) <= HELD_OUT:
        raise SystemExit(f"need more than {HELD_OUT} photos in {data}")
    gray = config.channels == 1
    train_images = load_pyramids(paths[:-HELD_OUT], gray)
    val = random_crops(load_pyramids(paths[-HELD_OUT:], gray), 600, np.random.default_rng(1), flip=False)
    model = BitSwapVAE(config)
    seconds = minutes * 60
    print(f"[{config.name}] float phase", flush=True)
    steps = train(model, train_images, seconds * (1 - qat_fraction), 4e-3, 4e-4, 32, rng)
    gen = torch.Generator().manual_seed(0)
    float_elbo = neg_elbo(model, val, generator=gen)
    print(f"[{config.name}] {steps} float steps, val float -ELBO {float_elbo:.4f}", flush=True)
    model.calibrate(random_crops(train_images, 256, rng, flip=False), generator=gen)
    pre_qat = neg_elbo(model, val, generator=gen)
    print(f"[{config.name}] calibrated, val quantized -ELBO {pre_qat:.4f}", flush=True)
    steps = train(model, train_images, seconds * qat_fraction, 4e-4, 1e-4, 32, rng)
    qat_elbo = neg_elbo(model, val, generator=gen)
    integer = IntegerVAE.from_float(model)
    path = os.path.join(out_dir, f"{config.name}.safetensors")
    os.makedirs(out_dir, exist_ok=True)
    save_integer_model(integer, path)
    loaded = load_integer_model(path)
    int_elbo = integer_neg_elbo(loaded, val, torch.Generator().manual_seed(0))
    print(
        f"[{config.name}] {steps} QAT steps; validation bits/subpixel: float {float_elbo:.4f}, "
        f"quantized {qat_elbo:.4f}, integer {int_elbo:.4f} "
        f"({100 * (int_elbo / float_elbo - 1):+.2f}% vs float); max conv bound "
        f"{max(loaded.conv_bounds().values())} ({os.path.getsize(path)} bytes, hash {loaded.content_hash[:16]})",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--which", choices=["rgb", "gray", "both"], default="both")
    parser.add_argument("--data", default=DATA, help="folder of training photos (never the Kodak set)")
    parser.add_argument("--minutes", type=float, default=8.0, help="CPU-time training budget per model")
    parser.add_argument("--qat-fraction", type=float, default=0.15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", default=WEIGHTS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for which in ("rgb", "gray") if args.which == "both" else (args.which,):
        make(which, args.data, args.minutes, args.qat_fraction, args.out_dir, args.seed)


if __name__ == "__main__":
    main()
