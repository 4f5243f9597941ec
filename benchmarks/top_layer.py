"""What the top latent layer is worth: the -ELBO with z2 pinned to its prior's centre, against the usual one.

    python benchmarks/top_layer.py --models polyphase-rgb-l3-3 polyphase-gray-l3 [--patches 1024] [--json OUT]

For two-layer models, on fixed validation crops (``model_report.py``'s, never
Kodak) and on its flat and smooth 256x256 images, one latent sample per patch:

* usual: the bits-back code length, recon + KL(z1) + KL(z2);
* pinned: z2 fixed at the centre bin for every patch and z1 coded under
  p(z1 | z2 = centre), so z2 is neither popped nor pushed: recon + KL(z1 against
  that prior);
* H(q1), H(q2): the bits the posterior pops of one patch take, which the start
  of every chain must find on the tail (the seed) or read as phantom words.

A layer whose pinning costs nothing carries nothing, and its posterior's
entropy is pure start-up cost.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bitswap_plugin import zoo
from bitswap_plugin.distributions import TOTAL
from bitswap_plugin.integer_model import IntegerVAE
from bitswap_plugin.patches import PatchGrid
from model_report import synthetic, validation_patches, validation_paths


def _sample(dist, generator: torch.Generator) -> torch.Tensor:
    return dist.locate(torch.randint(0, TOTAL, (len(dist),), generator=generator))[0]


def terms(model: IntegerVAE, x: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
    """Bits of the uint8 patches ``x``: usual and pinned -ELBO, and the two posteriors' information.

    Both -ELBOs use the same z1 sample (a paired comparison), which is why the usual one is
    summed here rather than taken from :func:`~bitswap_plugin.integer_model.integer_elbo_terms`.
    """
    x = x.to(torch.int64)
    shape = model.config.latent_shape(x.shape[0])
    q1 = model.posterior(0, x)
    z1 = _sample(q1, generator)
    recon = sum(float(d.information(x[i]).sum()) for i, d in model.likelihood(z1.view(shape)).steps(x))
    q2 = model.posterior(1, z1.view(shape))
    z2 = _sample(q2, generator)
    h1, h2 = float(q1.information(z1).sum()), float(q2.information(z2).sum())
    usual = (recon - h1 + float(model.prior(1, z2.view(shape)).information(z1).sum())
             - h2 + float(model.top_prior(z2.numel()).information(z2).sum()))
    centre = torch.full_like(z2, model.config.latent_bins // 2).view(shape)
    pinned = recon - h1 + float(model.prior(1, centre).information(z1).sum())
    return {"usual": usual, "pinned": pinned, "h_q1": h1, "h_q2": h2}


def report(name: str, count: int) -> dict:
    model = zoo.load_model(name)
    if model.config.latent_layers != 2:
        raise SystemExit(f"{name} has {model.config.latent_layers} latent layers; this compares two")
    sets = {"validation": validation_patches(validation_paths(None), count, model.config.channels == 1)}
    for label, image in synthetic(model.config.channels).items():
        grid = PatchGrid(256, 256)
        sets[label] = grid.extract(torch.from_numpy(image.reshape(256, 256, -1)).permute(2, 0, 1), 0, len(grid))
    out = {}
    for label, patches in sets.items():
        total = {"usual": 0.0, "pinned": 0.0, "h_q1": 0.0, "h_q2": 0.0}
        generator = torch.Generator().manual_seed(0)
        for start in range(0, len(patches), 256):
            for key, value in terms(model, patches[start : start + 256], generator).items():
                total[key] += value
        n = patches.numel()
        out[label] = {"usual_bpsp": total["usual"] / n, "pinned_bpsp": total["pinned"] / n,
                      "h_q1_bits_per_patch": total["h_q1"] / len(patches), "h_q2_bits_per_patch": total["h_q2"] / len(patches)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=[zoo.DEFAULT_MODELS[3], zoo.DEFAULT_MODELS[1]])
    parser.add_argument("--patches", type=int, default=1024)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    for name in args.models:
        results[name] = report(name, args.patches)
        for label, r in results[name].items():
            print(f"{name} {label}: usual {r['usual_bpsp']:.4f}, z2 pinned {r['pinned_bpsp']:.4f} "
                  f"({r['pinned_bpsp'] / r['usual_bpsp'] - 1:+.2%}); H(q1) {r['h_q1_bits_per_patch']:.0f}, "
                  f"H(q2) {r['h_q2_bits_per_patch']:.0f} bits a patch", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
