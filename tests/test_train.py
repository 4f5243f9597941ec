"""``bitswap train``: the whole pipeline on a few small images, exact resume, and DDP on two CPU processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bitswap_plugin import compress, decompress, zoo
from bitswap_plugin.errors import BitSwapError
from bitswap_plugin.cli import main as cli_main
from bitswap_plugin.zoo import load_model_file
from bitswap_plugin.model import load_float_model, neg_elbo
from bitswap_plugin.train import read_log

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT.parent / "shared" / "datasets" / "photos-train" / "001.png"  # a training photo, never Kodak
TINY = ["--width", "8", "--res-blocks", "0", "--batch", "8", "--val-patches", "16", "--val-images", "1", "-q"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 96x80 images cut from a training photo (smooth random images where it is missing)."""
    folder = tmp_path_factory.mktemp("photos")
    if PHOTO.exists():
        photo = np.asarray(Image.open(PHOTO).convert("RGB"))
    else:
        rng = np.random.default_rng(0)
        photo = np.cumsum(rng.integers(-3, 4, (400, 400, 3)), axis=1).clip(0, 255).astype(np.uint8)
    for i in range(4):
        Image.fromarray(photo[100 * i : 100 * i + 80, 50 : 50 + 96]).save(folder / f"{i}.png")
    return folder


def _train(data: Path, out: Path, *extra: str) -> int:
    threads = torch.get_num_threads()
    try:
        return cli_main(["train", "--data", str(data), "--out", str(out), *TINY, *extra])
    finally:
        torch.set_num_threads(threads)


def test_train_quantize_export(data: Path, tmp_path: Path) -> None:
    """Float phase, calibration, QAT and export; the exported model codes an image losslessly."""
    out = tmp_path / "run"
    assert _train(data, out, "--steps", "6", "--qat-steps", "3", "--val-every", "3", "--threads", "1") == 0
    summary = json.loads((out / "summary.json").read_text())
    log = read_log(out / "log.jsonl")
    steps = [(r["phase"], r["step"]) for r in log if "train_bpd" in r]
    steps_bpd = [r["train_bpd"] for r in log if "train_bpd" in r]
    assert steps == [("float", 3), ("float", 6), ("qat", 9)]
    assert [r["float_val_bpd"] for r in log if r.get("phase") == "calibrate"] == [summary["val_float_bpd"]]
    assert all(np.isfinite(r["train_bpd"]) and r["val_bpd"] > 0 for r in log if "train_bpd" in r)
    # the integer model's exact code length tracks the quantized float model's -ELBO on the same patches
    assert abs(summary["val_integer_bpd"] / summary["val_quantized_bpd"] - 1) < 0.02
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model_path = out / "bitswap-rgb.safetensors"
    assert load_model_file(model_path).content_hash == summary["content_hash"]
    assert load_float_model(str(out / "bitswap-rgb.float.safetensors")).quantized
    # fine-tuning starts from the exported float weights, with more scales and transposed crops,
    # under a new name (a fine-tuned model is another model)
    tuned = tmp_path / "tuned"
    args = ("--steps", "2", "--qat-steps", "2", "--val-every", "1", "--scales", "1", "1.5", "--transpose", "--threads", "1")
    assert _train(data, tuned, *args, "--init", str(out / "bitswap-rgb.float.safetensors"), "--name", "tuned-rgb",
                  "--lr", "1e-3", "--lr-end", "1e-3", "--warmup", "4") == 0
    assert (tuned / "tuned-rgb.safetensors").exists()
    tuned_log = read_log(tuned / "log.jsonl")
    assert tuned_log[0]["fresh_networks"] == [] and tuned_log[0]["val_bpd"] > 0  # the starting point, validated
    assert [r["lr"] for r in tuned_log if r.get("phase") == "float"] == pytest.approx([2.5e-4, 5e-4])  # warming up
    assert [r["lr"] for r in tuned_log if r.get("phase") == "qat"] == pytest.approx([5e-5, 1e-4])  # and again for QAT
    first = [r["train_bpd"] for r in read_log(tuned / "log.jsonl") if "train_bpd" in r][0]
    assert first < steps_bpd[0]
    name = zoo.register_model(model_path, "trained-in-test")
    image = np.asarray(Image.open(next(data.iterdir())))[:40, :50]
    assert np.array_equal(decompress(compress(image, model=name)), image)


def test_export_keeps_the_calibrated_model_when_qat_makes_it_worse(data: Path, tmp_path: Path) -> None:
    """QAT at a ruinous rate validates worse than calibration left the model: export falls back
    to the calibrated weights, says so in the log and the summary, and the file codes."""
    out = tmp_path / "run"
    assert _train(data, out, "--steps", "4", "--qat-steps", "3", "--qat-lr", "0.5", "--val-every", "2", "--threads", "1") == 0
    log = read_log(out / "log.jsonl")
    calibrated = [r["val_bpd"] for r in log if r.get("phase") == "calibrated"]
    export = [r for r in log if r.get("phase") == "export"]
    assert len(calibrated) == 1 and len(export) == 1
    assert export[0]["kept"] == "calibrated" and export[0]["qat_val_bpd"] > 1.5 * calibrated[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["qat_kept"] is False
    assert summary["val_quantized_bpd"] == pytest.approx(calibrated[0], rel=1e-4)
    image = np.asarray(Image.open(next(data.iterdir())))[:40, :50]
    name = zoo.register_model(out / "bitswap-rgb.safetensors", "calibrated-in-test")
    assert np.array_equal(decompress(compress(image, model=name)), image)


@pytest.mark.parametrize("average", [(), ("--ema", "0.9")], ids=["plain", "ema"])
def test_resume_reproduces_an_uninterrupted_run(data: Path, tmp_path: Path, average: tuple[str, ...]) -> None:
    """Stopping at a step (in the float phase, and again in QAT) and resuming gives the very same run
    (with --ema, the checkpoint holds the weight average of each phase and how many steps it holds:
    at 0.9 it is a plain mean for its first 9)."""
    args = ("--steps", "4", "--qat-steps", "3", "--val-every", "1", "--threads", "1", *average)
    assert _train(data, tmp_path / "whole", *args) == 0
    assert _train(data, tmp_path / "parts", *args, "--max-steps", "2") == 0
    assert not (tmp_path / "parts" / "summary.json").exists()
    assert _train(data, tmp_path / "parts", *args, "--max-steps", "5", "--resume") == 0
    assert _train(data, tmp_path / "parts", *args, "--resume") == 0

    def curve(run: str) -> list[tuple[int, float, float, float | None]]:
        log = read_log(tmp_path / run / "log.jsonl")
        return [(r["step"], r["train_bpd"], r["val_bpd"], r.get("val_current_bpd")) for r in log if "train_bpd" in r]

    assert len(curve("whole")) == 7 and curve("parts") == curve("whole")
    hashes = [json.loads((tmp_path / run / "summary.json").read_text())["content_hash"] for run in ("whole", "parts")]
    assert hashes[0] == hashes[1]


def test_resume_refuses_different_settings(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _train(data, tmp_path, "--steps", "2", "--qat-steps", "1", "--max-steps", "1", "--threads", "1") == 0
    assert _train(data, tmp_path, "--steps", "2", "--qat-steps", "1", "--lr", "1e-3", "--resume", "--threads", "1") == 1
    assert "settings differ" in capsys.readouterr().err


def test_settings_without_warmup_or_average_write_the_json_earlier_checkpoints_hold() -> None:
    from bitswap_plugin.train import PRESETS, Settings

    plain = json.loads(Settings(config=PRESETS["rgb"], data=[]).to_json())
    assert "warmup" not in plain and "ema" not in plain
    assert json.loads(Settings(config=PRESETS["rgb"], data=[], warmup=5).to_json())["warmup"] == 5
    assert json.loads(Settings(config=PRESETS["rgb"], data=[], ema=0.99).to_json())["ema"] == 0.99


def test_weight_average_is_the_mean_of_the_steps_and_what_validation_and_export_use(data: Path, tmp_path: Path) -> None:
    """With --ema the run validates, quantizes and exports the moving average of its weights, which
    holds the plain mean of the starting weights and every step's until 1 / (1 - ema) steps."""
    base = tmp_path / "base"
    assert _train(data, base, "--steps", "2", "--qat-steps", "1", "--threads", "1") == 0
    start = base / "bitswap-rgb.float.safetensors"
    args = ("--init", str(start), "--steps", "4", "--qat-steps", "0", "--val-every", "2", "--lr", "1e-2", "--lr-end", "1e-2",
            "--threads", "1")
    def params(model: torch.nn.Module) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    weights = [params(load_float_model(start))]
    for step in range(1, 4):  # the weights after each step, from checkpoints of a run without the average
        assert _train(data, tmp_path / "moving", *args, "--max-steps", str(step), *(("--resume",) if step > 1 else ())) == 0
        state = torch.load(tmp_path / "moving" / "checkpoint.pt", weights_only=True)
        model = load_float_model(start)
        model.load_state_dict(state["model"])
        weights.append(params(model))
    assert _train(data, tmp_path / "moving", *args, "--resume") == 0
    weights.append(params(load_float_model(tmp_path / "moving" / start.name)))
    assert _train(data, tmp_path / "mean", *args, "--ema", "0.999") == 0
    exported = params(load_float_model(tmp_path / "mean" / start.name))
    assert min((w - weights[0]).abs().max() for w in weights[1:]) > 100 * (exported - torch.stack(weights).mean(0)).abs().max()
    log = read_log(tmp_path / "mean" / "log.jsonl")
    floats = [r for r in log if r.get("phase") == "float"]
    assert len(floats) == 2 and all(abs(r["val_current_bpd"] - r["val_bpd"]) > 1e-4 for r in floats)  # validated the average, not the weights


def test_ema_must_lie_below_one() -> None:
    from bitswap_plugin.train import build_parser, settings_from_args

    with pytest.raises(BitSwapError, match="--ema"):
        settings_from_args(build_parser().parse_args(["--data", "d", "--out", "o", "--ema", "1"]))


def test_qat_never_raises_the_rate_the_float_phase_ended_at() -> None:
    from bitswap_plugin.train import build_parser, settings_from_args

    def qat_lr(*extra: str) -> float:
        return settings_from_args(build_parser().parse_args(["--data", "d", "--out", "o", *extra])).qat_lr

    assert qat_lr() == 2e-4 and qat_lr("--lr-end", "6e-5") == 6e-5 and qat_lr("--lr-end", "6e-5", "--qat-lr", "1e-3") == 1e-3


def test_bad_data_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "few").mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "few" / "a.png")
    assert cli_main(["train", "--data", str(tmp_path / "few"), "--out", str(tmp_path / "o"), "--val-images", "1"]) == 1
    assert "need more than 1 images" in capsys.readouterr().err


def test_distributed_data_parallel_on_two_cpu_processes(data: Path, tmp_path: Path) -> None:
    """torchrun with 2 processes on the gloo backend trains, keeps both replicas equal (their weight
    averages too: QAT starts from them), and exports."""
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "bitswap_plugin.train", "--data", str(data), "--out", str(out), *TINY,
        "--steps", "4", "--qat-steps", "2", "--val-every", "2", "--device", "cpu", "--ema", "0.5",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    log = read_log(out / "log.jsonl")
    assert log[0]["world_size"] == 2
    assert [r["replicas_equal"] for r in log if "replicas_equal" in r] == [True]
    assert [r["step"] for r in log if "train_bpd" in r] == [2, 4, 6]
    summary = json.loads((out / "summary.json").read_text())
    assert load_model_file(out / "bitswap-rgb.safetensors").content_hash == summary["content_hash"]


def test_train_a_polyphase_model(data: Path, tmp_path: Path) -> None:
    """The polyphase preset trains, exports through the registry and codes an image losslessly;
    --schedule and the context sizes override the preset, a field the preset lacks is refused."""
    out = tmp_path / "pp"
    extra = ("--preset", "polyphase-rgb", "--schedule", "03|12", "--context-width", "8", "--context-blocks", "0",
             "--steps", "3", "--qat-steps", "2", "--val-every", "5", "--threads", "1")
    assert _train(data, out, *extra) == 0
    model_path = out / "polyphase-rgb.safetensors"
    assert type(load_model_file(model_path)).__name__ == "PolyphaseVAE"
    assert load_float_model(out / "polyphase-rgb.float.safetensors").config.schedule == "03|12"
    name = zoo.register_model(model_path, "polyphase-in-test")
    image = np.asarray(Image.open(next(data.iterdir())))[:40, :70]
    assert np.array_equal(decompress(compress(image, model=name)), image)
    assert _train(data, tmp_path / "bad", "--context-width", "8") == 1
    # grown by a polyphase level: the passes that are new start fresh, the others keep the weights
    extra = ("--preset", "polyphase-rgb", "--context-width", "8", "--context-blocks", "0", "--steps", "0", "--qat-steps", "1",
             "--val-every", "5", "--threads", "1")
    assert _train(data, tmp_path / "one", *extra) == 0
    grown = tmp_path / "grown"
    # ... its heads widened to 10-bit inputs, which only the quantization sees, the networks above
    # z1 made lean (they start fresh; q(z1 | x) keeps its weights) and the passes wider (the trained
    # ones grow, keeping theirs)
    assert _train(data, grown, *extra, "--levels", "2", "--head-input-bits", "10", "--upper-width", "4", "--upper-blocks", "0",
                  "--context-width", "10", "--name", "grown", "--init", str(tmp_path / "one" / "polyphase-rgb.float.safetensors")) == 0
    [fresh] = [r["fresh_networks"] for r in read_log(grown / "log.jsonl") if "fresh_networks" in r]
    assert sorted(fresh) == ["p.1", "pass.0.0", "pass.0.1", "pass.0.2", "pass.0.3", "q.1"]
    config = load_float_model(grown / "grown.float.safetensors").config
    integer = load_model_file(grown / "grown.safetensors")
    assert (config.levels, config.head_input_bits, integer.config.head_input_bits) == (2, 10, 10)
    assert (integer.config.net_size(0), integer.config.net_size(1)) == ((8, 0), (4, 0))
    assert [integer._nets[name].conv_in.weight.shape[0] for name in ("q.0", "q.1", "pass.1")] == [8, 4, 10]
    name = zoo.register_model(grown / "grown.safetensors", "grown-in-test")
    assert np.array_equal(decompress(compress(image, model=name, method="bitswap")), image)
    # with fewer latent channels: every network adopts the weights of the channels that carry the most
    lean = tmp_path / "lean"
    assert _train(data, lean, *extra, "--latent-channels", "3", "--name", "lean",
                  "--init", str(tmp_path / "one" / "polyphase-rgb.float.safetensors")) == 0
    [start] = [r for r in read_log(lean / "log.jsonl") if "fresh_networks" in r]
    assert start["fresh_networks"] == [] and [len(layer) for layer in start["kept_latent_channels"]] == [3, 3]
    assert load_model_file(lean / "lean.safetensors").config.latent_channels == 3
    name = zoo.register_model(lean / "lean.safetensors", "lean-in-test")
    assert np.array_equal(decompress(compress(image, model=name, method="bitswap")), image)
    # with a mixture of logistics: the passes grow from the trained one logistic, nothing starts fresh
    mixed = tmp_path / "mixed"
    assert _train(data, mixed, *extra, "--mixture", "3", "--name", "mixed",
                  "--init", str(tmp_path / "one" / "polyphase-rgb.float.safetensors")) == 0
    [start] = [r for r in read_log(mixed / "log.jsonl") if "fresh_networks" in r]
    assert start["fresh_networks"] == [] and load_model_file(mixed / "mixed.safetensors").config.mixture == 3
    name = zoo.register_model(mixed / "mixed.safetensors", "mixed-in-test")
    assert np.array_equal(decompress(compress(image, model=name, method="bitswap")), image)


def test_synthetic_crops_are_flat_smooth_or_few_coloured(data: Path) -> None:
    from bitswap_plugin.train import PatchSampler, synthetic_patches

    crops = synthetic_patches(300, 3, np.random.default_rng(0)).astype(int)
    assert crops.shape == (300, 3, 32, 32)
    steps = np.abs(np.diff(crops, axis=3)).max(axis=(1, 2, 3))
    colours = [len(np.unique(c.reshape(3, -1), axis=1)) for c in crops]
    assert sum(s == 0 for s in steps) > 30  # flat
    assert sum(0 < s <= 4 for s in steps) > 30  # ramps and gradients
    assert sum(2 <= n <= 8 and s > 4 for n, s in zip(colours, steps)) > 30  # few-colour rectangles
    sampler = PatchSampler(sorted(data.glob("*.png")), 3, (1,))
    mixed = sampler.sample(400, np.random.default_rng(1), synthetic=0.25).numpy()
    flat = sum(len(np.unique(c)) <= 3 for c in mixed)
    assert 15 < flat < 60  # a quarter synthetic, a third of those flat and noiseless; photo crops never are
    assert (sampler.sample(64, np.random.default_rng(2)).numpy().std(axis=(2, 3)) > 0).all()


def test_fresh_networks_train_at_their_own_rate_across_a_resume(data: Path, tmp_path: Path) -> None:
    """--fresh-lr: in a run grown from --init, the networks that start fresh take steps of their own rate.

    Adam's first step moves every weight with a gradient by exactly its rate (m / sqrt(v) = ±1), so
    one step after a resume shows which rate each network got, and that the checkpoint kept the split."""
    from bitswap_plugin.train import Trainer, build_parser, settings_from_args

    base = ["--data", str(data), *TINY, "--preset", "polyphase-rgb", "--context-width", "8", "--context-blocks", "0", "--threads", "1"]
    assert _train(data, tmp_path / "one", *base[2:], "--steps", "0", "--qat-steps", "1") == 0
    args = build_parser().parse_args([*base, "--out", str(tmp_path / "grown"), "--upper-width", "4", "--steps", "5", "--qat-steps", "0",
                                      "--lr", "1e-4", "--fresh-lr", "1e-2", "--init", str(tmp_path / "one" / "polyphase-rgb.float.safetensors")])
    settings = settings_from_args(args)
    (tmp_path / "grown").mkdir()
    trainer = Trainer(settings, tmp_path / "grown", torch.device("cpu"), amp=False, progress=False)
    assert not trainer.run(resume=False, max_steps=0)
    # the fresh networks start at the replaced ones' mean codes, whatever their input, so the grown
    # model starts no worse than the one it grew from
    start = load_float_model(tmp_path / "one" / "polyphase-rgb.float.safetensors")
    start.quantized = False
    with torch.no_grad():
        codes = trainer.model.prior(1, torch.randint(0, 1024, (4, 8, 16, 16)))
    assert all(float(c.std((0, 2, 3)).max()) == 0 for c in codes)
    assert read_log(tmp_path / "grown" / "log.jsonl")[0]["val_bpd"] <= neg_elbo(start, trainer.val) * 1.02
    before = torch.load(tmp_path / "grown" / "checkpoint.pt", weights_only=True)["model"]
    trainer = Trainer(settings, tmp_path / "grown", torch.device("cpu"), amp=False, progress=False)
    assert not trainer.run(resume=True, max_steps=1)
    assert sorted(trainer.fresh) == ["p.1", "q.1"]
    names = {id(p): name for name, p in trainer.model.named_parameters()}
    for name, net in trainer.model.integer_networks():
        step = max(float((p.detach() - before[names[id(p)]]).abs().max()) for p in net.parameters())
        assert step == pytest.approx(1e-2 if name in trainer.fresh else 1e-4, rel=1e-3), name
