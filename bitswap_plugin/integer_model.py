"""Integer inference model: bit-exact Bit-Swap networks on every machine.

Every tensor here is an integer (int64; convolutions run through
:func:`~bitswap_plugin.fixedpoint.exact_conv2d`, which is exact by a proven
bound). A network is::

    h = rq(conv_in(x))                                  # residual stream, int64
    per block:  a = clamp(rq(h), 0, 255)                 # qrelu
                a = clamp(rq(conv1(a)), 0, 255)
                h = h + rq(conv2(a))
    codes = rq(conv_head(clamp(rq(h), 0, M)))            # (mean, log-scale) codes; M = 2**head_input_bits - 1

with ``rq(acc) = floor((acc + bias) * multiplier / 2**shift)`` per output
channel (:func:`~bitswap_plugin.fixedpoint.requantize`). The parameters come
from training's :func:`~bitswap_plugin.model.export_integer_model`, which uses
the very functions the float model's quantized mode uses, so both produce the
same codes; this module never imports training code.

:class:`IntegerVAE` answers the coder in entropy models
(:mod:`bitswap_plugin.distributions`): posteriors, priors, the likelihood of
the pixels and the top prior, so the coder never builds a distribution or
computes latent geometry itself.

Tensors hold integers, but not necessarily as int64: where the bounds prove
every value and every ``(acc + bias) * multiplier`` below 2**53, activations
and the residual stream stay in float64 and a requantization is one
multiply-add and a floor (all exact there), which is several times cheaper
than int64 arithmetic; elsewhere it runs in int64.

Files are safetensors (no pickle) with the architecture id and the
:class:`~bitswap_plugin.architecture.ModelConfig` as JSON in the metadata.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_save

from .architecture import (
    ACT_MAX,
    ARCHITECTURE,
    MAX_SHIFT,
    MULT_BITS,
    PIXEL_BINS,
    ChannelConditionedLogistic,
    ModelConfig,
    NetSpec,
    latents_to_input,
    net_specs,
    pixels_to_input,
    split_head,
    top_prior,
)
from .distributions import TOTAL, DiscretizedLogistic, SharedLogistic
from .errors import BitSwapError, CorruptFileError, UnsupportedFormatError
from .fixedpoint import FLOAT64_EXACT_LIMIT, exact_conv2d, requantize

FORMAT = "bitswap-integer-vae"
FORMAT_VERSION = "1"
_MAX_BOUND = 1 << 31
"""Load-time limit of a conv bound (shipped models stay below 2**24)."""
_MAX_PRODUCT = float(1 << 62)
"""Load-time limit of (|acc| + |bias|) * multiplier, so requantization cannot overflow int64."""


class Requantizer:
    """Per-channel floor((acc + bias) * multiplier / 2**shift)."""

    def __init__(self, bias: torch.Tensor, multiplier: torch.Tensor, shift: int) -> None:
        self.bias, self.multiplier, self.shift = bias, multiplier, shift
        self._float: tuple[torch.Tensor, torch.Tensor] | None = None
        """(bias * scale, scale) with scale = multiplier / 2**shift, as float64 channel views, once proven exact."""

    def __call__(self, acc: torch.Tensor) -> torch.Tensor:
        """The requantized integers: float64 on the proven path, else int64 (``acc`` holds integers of any dtype)."""
        if self._float is not None:
            bias, scale = self._float
            y = acc.to(torch.float64, copy=True)
            return torch.addcmul(bias, y, scale, out=y).floor_()
        return requantize(acc.to(torch.int64), self.bias, self.multiplier, self.shift)

    def _products(self, in_bound: int) -> list[int]:
        return [(in_bound + abs(b)) * m for b, m in zip(self.bias.tolist(), self.multiplier.tolist())]

    def out_bound(self, in_bound: int) -> int:
        """Largest |output| for inputs with ``|acc| <= in_bound``."""
        return (max(self._products(in_bound)) >> self.shift) + 1

    def float64_is_exact(self, in_bound: int) -> bool:
        """Whether inputs with ``|acc| <= in_bound`` keep ``|acc + bias| * multiplier`` below 2**53: then
        ``acc``, ``bias * scale``, ``acc * scale`` and their sum are all exact in float64 (integers
        below 2**53 times a power of two), and so is the floor."""
        return in_bound < FLOAT64_EXACT_LIMIT and max(self._products(in_bound)) < FLOAT64_EXACT_LIMIT

    def use_float64(self) -> None:
        """Requantize in float64 from now on (only where :meth:`float64_is_exact` holds)."""
        scale = self.multiplier.to(torch.float64) * 2.0**-self.shift
        self._float = ((self.bias.to(torch.float64) * scale).view(1, -1, 1, 1), scale.view(1, -1, 1, 1))

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.bias": self.bias,
            f"{prefix}.multiplier": self.multiplier,
            f"{prefix}.shift": torch.tensor([self.shift], dtype=torch.int64),
        }

    def to(self, device: torch.device | str) -> None:
        self.bias, self.multiplier = self.bias.to(device), self.multiplier.to(device)
        if self._float is not None:
            self._float = tuple(t.to(device) for t in self._float)

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str, channels: int) -> Requantizer:
        bias = _get(tensors, f"{prefix}.bias", (channels,))
        multiplier = _get(tensors, f"{prefix}.multiplier", (channels,))
        shift = int(_get(tensors, f"{prefix}.shift", (1,))[0])
        if not 0 <= shift <= MAX_SHIFT:
            raise CorruptFileError(f"{prefix}.shift out of range")
        if bool((multiplier < 0).any() | (multiplier > 1 << MULT_BITS).any()):
            raise CorruptFileError(f"{prefix}.multiplier out of range")
        return cls(bias, multiplier, shift)

    def check_range(self, prefix: str, max_acc: int) -> None:
        """Reject parameters for which (acc + bias) * multiplier could overflow int64."""
        if bool(((self.bias.abs().double() + max_acc) * self.multiplier.double() >= _MAX_PRODUCT).any()):
            raise CorruptFileError(f"{prefix}.bias out of range")


class IntegerConv:
    """Integer same-padded convolution followed by requantization."""

    def __init__(self, weight: torch.Tensor, rq: Requantizer, in_max: int) -> None:
        self.weight = weight.to(torch.float32, memory_format=torch.channels_last)  # small integers, exact in float32
        self.rq = rq
        self.in_max = in_max
        self.weight_sum = int(weight.abs().sum((1, 2, 3)).max())
        self.bound = self.weight_sum * in_max

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.rq(exact_conv2d(x, self.weight, self.weight_sum, self.in_max))

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.weight": self.weight.to(torch.int64),
            f"{prefix}.bound": torch.tensor([self.bound], dtype=torch.int64),
            **self.rq.tensors(prefix),
        }

    def to(self, device: torch.device | str) -> None:
        self.weight = self.weight.to(device)
        self.rq.to(device)

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str, shape: tuple[int, ...], in_max: int) -> IntegerConv:
        weight = _get(tensors, f"{prefix}.weight", shape)
        if bool((weight.abs() > 1 << 16).any()):
            raise CorruptFileError(f"{prefix}.weight out of range")
        conv = cls(weight, Requantizer.from_tensors(tensors, prefix, shape[0]), in_max)
        if conv.bound != int(_get(tensors, f"{prefix}.bound", (1,))[0]) or conv.bound >= _MAX_BOUND:
            raise CorruptFileError(f"{prefix}.bound does not match the weights")
        conv.rq.check_range(prefix, conv.bound)
        return conv


class IntegerBlock:
    def __init__(self, act_in: Requantizer, conv1: IntegerConv, conv2: IntegerConv) -> None:
        self.act_in, self.conv1, self.conv2 = act_in, conv1, conv2


class IntegerNet:
    """One integer network; see the module docstring."""

    def __init__(self, spec: NetSpec, conv_in: IntegerConv, blocks: list[IntegerBlock], act_head: Requantizer, head: IntegerConv) -> None:
        self.spec, self.conv_in, self.blocks, self.act_head, self.head = spec, conv_in, blocks, act_head, head
        writers = [conv_in] + [block.conv2 for block in blocks]
        residual_bound = sum(conv.rq.out_bound(conv.bound) for conv in writers)
        proven = [(conv.rq, conv.bound) for conv in [block.conv1 for block in blocks] + [head]]
        proven += [(act, residual_bound) for act in [block.act_in for block in blocks] + [act_head]]
        if residual_bound < FLOAT64_EXACT_LIMIT and all(conv.rq.float64_is_exact(conv.bound) for conv in writers):
            proven += [(conv.rq, conv.bound) for conv in writers]  # all or none: the residual stream has one dtype
        for rq, bound in proven:
            if rq.float64_is_exact(bound):
                rq.use_float64()

    def __call__(self, inp: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.conv_in(inp)
        for block in self.blocks:
            a = block.act_in(h).clamp_(0, ACT_MAX)
            a = block.conv1(a).clamp_(0, ACT_MAX)
            h += block.conv2(a)
        codes = self.head(self.act_head(h).clamp_(0, self.spec.head_in_max))
        return split_head(codes.to(torch.int64, memory_format=torch.contiguous_format), self.spec)

    def parts(self, prefix: str) -> Iterator[tuple[str, IntegerConv | Requantizer]]:
        yield f"{prefix}.conv_in", self.conv_in
        for j, block in enumerate(self.blocks):
            yield f"{prefix}.blocks.{j}.act_in", block.act_in
            yield f"{prefix}.blocks.{j}.conv1", block.conv1
            yield f"{prefix}.blocks.{j}.conv2", block.conv2
        yield f"{prefix}.act_head", self.act_head
        yield f"{prefix}.head", self.head

    @classmethod
    def from_tensors(cls, spec: NetSpec, width: int, blocks: int, tensors: dict[str, torch.Tensor], prefix: str) -> IntegerNet:
        w, k = width, spec.first_kernel
        conv_in = IntegerConv.from_tensors(tensors, f"{prefix}.conv_in", (w, spec.in_channels, k, k), spec.in_max)
        blocks = [
            IntegerBlock(
                Requantizer.from_tensors(tensors, f"{prefix}.blocks.{j}.act_in", 1),
                IntegerConv.from_tensors(tensors, f"{prefix}.blocks.{j}.conv1", (w, w, 3, 3), ACT_MAX),
                IntegerConv.from_tensors(tensors, f"{prefix}.blocks.{j}.conv2", (w, w, 3, 3), ACT_MAX),
            )
            for j in range(blocks)
        ]
        act_head = Requantizer.from_tensors(tensors, f"{prefix}.act_head", 1)
        head_shape = (2 * spec.out_channels + spec.coef_channels + spec.logit_channels, w, 3, 3)
        head = IntegerConv.from_tensors(tensors, f"{prefix}.head", head_shape, spec.head_in_max)
        return cls(spec, conv_in, blocks, act_head, head)


def _get(tensors: dict[str, torch.Tensor], name: str, shape: tuple[int, ...]) -> torch.Tensor:
    t = tensors.get(name)
    if t is None:
        raise CorruptFileError(f"model file lacks tensor {name}")
    if tuple(t.shape) != shape or t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise CorruptFileError(f"tensor {name} has shape {tuple(t.shape)} / dtype {t.dtype}, expected integer {shape}")
    return t.to(torch.int64)


def _check_input(t: torch.Tensor, num_bins: int, what: str) -> torch.Tensor:
    """An int64 copy of ``t``, which must hold integers in [0, num_bins) (the conv bounds assume it)."""
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{what} must be an integer tensor, got {t.dtype}")
    t = t.to(torch.int64)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_bins):
        raise BitSwapError(f"{what} must lie in [0, {num_bins})")
    return t


class IntegerVAE:
    """Integer Bit-Swap model: the entropy models the coder uses, bit-exact everywhere.

    All codes are int64: means in bins with 8 fractional bits, log-scales with 6
    (see :mod:`bitswap_plugin.fixedpoint`). Inputs may be any size that is a
    multiple of 2 (pixels) / 1 (latents) of the patch grid; networks are fully
    convolutional. ``batch`` arguments split a call into network calls of that
    many patches (memory and speed only: the integer networks give the same
    codes for any split).
    """

    architecture = ARCHITECTURE
    pixel_context = False
    """Whether the likelihood decodes pixels from decoded neighbours (format version 3 on)."""
    config_type = ModelConfig
    likelihood_type = ChannelConditionedLogistic
    """The entropy model of the pixels given z1 (:meth:`likelihood`)."""

    def __init__(self, config: ModelConfig, nets: dict[str, IntegerNet]) -> None:
        if set(nets) != set(self.network_specs(config)):
            raise BitSwapError(f"a {self.architecture} model needs the networks {sorted(self.network_specs(config))}")
        self.config = config
        self._nets = nets
        """The networks by name: ``q.i`` for q(z_{i+1} | z_i), ``p.i`` for p(z_i | z_{i+1})."""
        self.content_hash = self._canonical_hash()

    @classmethod
    def network_specs(cls, config: ModelConfig) -> dict[str, tuple[NetSpec, int, int]]:
        """(spec, width, residual blocks) of each network, by name."""
        q_specs, p_specs = net_specs(config)
        specs = {f"q.{i}": (spec, *config.net_size(i)) for i, spec in enumerate(q_specs)}
        specs.update({f"p.{i}": (spec, *config.net_size(i)) for i, spec in enumerate(p_specs)})
        return specs

    # -- network codes ----------------------------------------------------

    def posterior_codes(self, level: int, inp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes of q(z_{level+1} | .): level 0 takes pixels (N,C,H,W) in 0..255, level i>=1 z_i bins."""
        k = self.config.latent_bins
        if level == 0:
            return self._nets["q.0"](pixels_to_input(_check_input(inp, PIXEL_BINS, "pixels")))
        return self._nets[f"q.{level}"](latents_to_input(_check_input(inp, k, "latent bins"), k))

    def prior_codes(self, level: int, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Codes of p(z_level | z_{level+1}); at level 0 of p(x | z1) (pixel bins, N,C,2h,2w), plus
        the (N,3,2h,2w) channel-conditioning coefficients if the model has them."""
        k = self.config.latent_bins
        return self._nets[f"p.{level}"](latents_to_input(_check_input(z, k, "latent bins"), k))

    # -- entropy models ---------------------------------------------------

    def posterior(self, level: int, below: torch.Tensor, batch: int | None = None) -> DiscretizedLogistic:
        """q(z_{level+1} | z_level), ``below`` being pixels at level 0."""
        return DiscretizedLogistic(*batched(functools.partial(self.posterior_codes, level), below, batch), self.config.latent_bins)

    def prior(self, level: int, above: torch.Tensor, batch: int | None = None) -> DiscretizedLogistic:
        """p(z_level | z_{level+1}) for 1 <= level < L."""
        if not 1 <= level < self.config.latent_layers:
            raise ValueError(f"latent prior levels are 1..{self.config.latent_layers - 1}, got {level}")
        return DiscretizedLogistic(*batched(functools.partial(self.prior_codes, level), above, batch), self.config.latent_bins)

    @property
    def likelihood_steps(self) -> int:
        """How many entropy models the likelihood's ``steps`` yield: one per channel with channel
        conditioning, else one (a stream's scale offsets have one per step)."""
        return self.config.channels if self.config.channel_conditioning else 1

    def likelihood(self, z1: torch.Tensor, known: torch.Tensor | None = None, batch: int | None = None) -> ChannelConditionedLogistic:
        """p(x | z1); ``known`` marks padding pixels (coded at zero bits)."""
        return self.likelihood_type(batched(functools.partial(self.prior_codes, 0), z1, batch), known)

    def top_prior(self, count: int, device: torch.device | str = "cpu") -> SharedLogistic:
        """p(z_L) of ``count`` symbols: the standard logistic, one table for all."""
        return top_prior(self.config, count, device)

    # -- parameters -------------------------------------------------------

    def to(self, device: torch.device | str) -> IntegerVAE:
        """Move all tensors to ``device`` (in place); returns self."""
        for _, part in self._parts():
            part.to(device)
        return self

    def convolutions(self) -> dict[str, IntegerConv]:
        """Every convolution, by name."""
        return {name: part for name, part in self._parts() if isinstance(part, IntegerConv)}

    def _parts(self) -> Iterator[tuple[str, IntegerConv | Requantizer]]:
        for name, net in self._nets.items():
            yield from net.parts(name)

    def tensors(self) -> dict[str, torch.Tensor]:
        """All parameters as named int64 CPU tensors (the file contents)."""
        out: dict[str, torch.Tensor] = {}
        for name, part in self._parts():
            out.update({k: v.cpu().contiguous() for k, v in part.tensors(name).items()})
        return out

    def metadata(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "architecture": self.architecture,
            "config": self.config.to_json(),
        }

    def _canonical_hash(self) -> str:
        """sha256 of a canonical serialisation: metadata JSON, then each tensor (sorted by name)."""
        digest = hashlib.sha256(json.dumps(self.metadata(), sort_keys=True).encode())
        for name, t in sorted(self.tensors().items()):
            digest.update(f"\n{name}:{list(t.shape)}\n".encode())
            digest.update(t.numpy().astype("<i8").tobytes())
        return digest.hexdigest()

    @classmethod
    def from_tensors(cls, metadata: dict[str, str], tensors: dict[str, torch.Tensor]) -> IntegerVAE:
        """The model a file holds (its metadata and tensors), validating every tensor."""
        try:
            config = cls.config_type.from_json(metadata.get("config", ""))
        except BitSwapError as exc:
            raise CorruptFileError(f"bad model config: {exc}") from None
        nets = {
            name: IntegerNet.from_tensors(spec, width, blocks, tensors, name)
            for name, (spec, width, blocks) in cls.network_specs(config).items()
        }
        model = cls(config, nets)
        extra = set(tensors) - set(model.tensors())
        if extra:
            raise CorruptFileError(f"model file has unexpected tensors {sorted(extra)[:5]}")
        return model


def batched(network: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], inp: torch.Tensor,
            batch: int | None) -> tuple[torch.Tensor, ...]:
    """``network(inp)`` computed ``batch`` patches at a time (all at once for None); inside
    :func:`batches_on_threads`, CPU batches run side by side. Every batch's codes are the same
    whichever thread computes them."""
    if batch is None or inp.shape[0] <= batch:
        return network(inp)
    chunks = inp.split(batch)
    threads = _BATCH_THREADS.get() if inp.device.type == "cpu" else 1
    parts = list(_batch_pool(threads).map(network, chunks)) if threads > 1 else [network(chunk) for chunk in chunks]
    return tuple(torch.cat(part) for part in zip(*parts))


_BATCH_THREADS: contextvars.ContextVar[int] = contextvars.ContextVar("batch_threads", default=1)
_BATCH_POOLS: dict[int, ThreadPoolExecutor] = {}
os.register_at_fork(after_in_child=_BATCH_POOLS.clear)  # a forked child has none of the parent's threads


@contextlib.contextmanager
def batches_on_threads() -> Iterator[None]:
    """Spend the calling thread's torch threads on network batches side by side, one thread each,
    and run everything else on one thread. A coder's networks see 32 patches at a time and its
    other operations are small: on two cores, one thread gave kodim05 in 2.9 s each way, both
    threads on every operation 3.4 s / 4.0 s (each parallel region wakes sleeping threads), two
    batches at once 2.3 s (``benchmarks/RESULTS.md``)."""
    threads = torch.get_num_threads()
    if threads <= 1:
        yield
        return
    token = _BATCH_THREADS.set(threads)
    torch.set_num_threads(1)  # this thread's own setting (OpenMP's is per thread)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        _BATCH_THREADS.reset(token)


def _batch_pool(threads: int) -> ThreadPoolExecutor:
    """``threads`` worker threads with one torch thread each (made once per size)."""
    pool = _BATCH_POOLS.get(threads)
    if pool is None:
        pool = ThreadPoolExecutor(threads, thread_name_prefix="bitswap-batch", initializer=torch.set_num_threads, initargs=(1,))
        pool = _BATCH_POOLS.setdefault(threads, pool)
    return pool


def save_integer_model(model: IntegerVAE, path: str | os.PathLike) -> None:
    """Write ``model`` as safetensors (weights stored as int16 where they fit)."""
    tensors = {}
    for name, t in model.tensors().items():
        small = name.endswith(".weight") and bool((t.abs() <= 32767).all())
        tensors[name] = t.to(torch.int16) if small else t
    with open(path, "wb") as f:
        f.write(safetensors_bytes(tensors, model.metadata()))


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """A safetensors file, the same bytes for the same content: the library writes the metadata in
    hash-map order, which differs from run to run, and models are named by their files' hashes."""
    data = safetensors_save(tensors, metadata=metadata)
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as the library pads it
    return len(text).to_bytes(8, "little") + text + data[8 + size :]


def read_model_file(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of an integer model file (safetensors, no pickle) of a format this reader knows.

    The metadata's ``architecture`` (``bitswap-vae`` when absent, as in the
    first files) says which model class reads the tensors.
    """
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise CorruptFileError(f"cannot read model file {os.fspath(path)!r}: {exc}") from None
    if metadata.get("format") != FORMAT:
        raise CorruptFileError(f"{os.fspath(path)!r} is not a {FORMAT} file")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise UnsupportedFormatError(f"unsupported model format version {metadata.get('format_version')!r}")
    metadata.setdefault("architecture", ARCHITECTURE)
    return metadata, tensors


@torch.no_grad()
def integer_elbo_terms(
    model: IntegerVAE, x: torch.Tensor, generator: torch.Generator | None = None, recon_steps: list | None = None,
    channel_bits: list | None = None, batch: int | None = None,
) -> tuple[float, list[float]]:
    """(reconstruction, KL of each latent layer) of uint8 patches ``x`` in bits, one latent sample;
    ``recon_steps``, if given, gets the (index into x, bits) of each of the likelihood's steps, and
    ``channel_bits`` per latent layer the (KL, posterior information) of each channel, (2, C) float64
    summed over the patches: what a channel carries, and what popping it from an empty message takes.
    The networks see ``batch`` patches at a time (all at once for None), as :func:`batched` runs them.

    Latents are drawn exactly from the integer posteriors' quantized
    frequencies, and every term is the ANS cost ``-log2(freq / 2**PRECISION)``
    of the model's entropy models; the KL of layer i is what coding z_i costs
    under its prior minus what popping it from the posterior gives back.
    """
    x = x.to(torch.int64)
    latent_shape = model.config.latent_shape(x.shape[0])
    zs, posterior_bits = [], []
    inp = x
    for level in range(model.config.latent_layers):
        dist = model.posterior(level, inp, batch)
        z = dist.locate(torch.randint(0, TOTAL, (len(dist),), generator=generator, device=x.device))[0]
        posterior_bits.append(dist.information(z).view(latent_shape))
        inp = z.view(latent_shape)
        zs.append(inp)
    steps = [(index, float(dist.information(x[index]).sum())) for index, dist in model.likelihood(zs[0], batch=batch).steps(x)]
    if recon_steps is not None:
        recon_steps.extend(steps)
    recon = sum(bits for _, bits in steps)
    priors = [model.prior(level, zs[level], batch) for level in range(1, model.config.latent_layers)] + [model.top_prior(zs[-1].numel())]
    kl = []
    for z, prior, posterior in zip(zs, priors, posterior_bits):
        per_channel = torch.stack([prior.information(z).view(latent_shape) - posterior, posterior]).sum((1, 3, 4))
        kl.append(float(per_channel[0].sum()))
        if channel_bits is not None:
            channel_bits.append(per_channel)
    return recon, kl


def integer_neg_elbo(model: IntegerVAE, x: torch.Tensor, generator: torch.Generator | None = None,
                     batch: int | None = None) -> float:
    """Expected bits-back code length of uint8 patches ``x`` in bits per subpixel (one latent sample):
    :func:`integer_elbo_terms` summed."""
    recon, kl = integer_elbo_terms(model, x, generator, batch=batch)
    return (recon + sum(kl)) / x.numel()
