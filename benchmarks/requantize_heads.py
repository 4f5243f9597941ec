"""Re-export a shipped model with wider head inputs: the same weights and clips, finer head input steps.

    python benchmarks/requantize_heads.py polyphase-rgb-l3-3 polyphase-rgb-l3-4 [--bits 10]

``quantization_gap.py`` found the 8-bit activations every network's head reads
to be most of the rounding a model loses to its integer form. This reads
``models/SOURCE.float.safetensors`` (the weights and calibrated steps the
source model was exported from, in float16), sets ``head_input_bits`` and
divides each head's input step by ``(2**bits - 1) / 255``, so the head clips
where it did and reads 2**(bits - 8) times finer values; its weights keep their
precision (the integer model convolves the wider inputs in 8-bit digits).
Writes ``models/NAME.safetensors`` and ``models/NAME.float.safetensors``; no
training, so the change is the rounding alone.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from bitswap_plugin.architecture import ACT_MAX
from bitswap_plugin.integer_model import save_integer_model
from bitswap_plugin.model import Net, export_integer_model, load_float_model, save_float_model

MODELS = Path(__file__).resolve().parents[1] / "models"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source")
    parser.add_argument("name")
    parser.add_argument("--bits", type=int, default=10)
    args = parser.parse_args(argv)
    source = load_float_model(MODELS / f"{args.source}.float.safetensors").float()
    if not source.quantized or source.config.head_input_bits != 8:
        raise SystemExit(f"{args.source}'s float weights must be calibrated, with 8-bit head inputs")
    model = type(source)(dataclasses.replace(source.config, head_input_bits=args.bits, name=args.name))
    model.load_state_dict(source.state_dict())
    for net in model.modules():
        if isinstance(net, Net):
            net.act_head_step.mul_(ACT_MAX / net.spec.head_in_max)
    save_integer_model(export_integer_model(model), MODELS / f"{args.name}.safetensors")
    save_float_model(model, MODELS / f"{args.name}.float.safetensors", half=True)
    print(f"wrote {args.name}: {model.config.to_json()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
