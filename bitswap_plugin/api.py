"""The Python API: ``compress``, ``decompress`` and ``read_info``.

Every front end (CLI, numcodecs, Zarr, Pillow) goes through these
functions; none of them touches the coder or the container directly.
torch, the models and the coder are imported on first use, so reading a
header (``read_info``, ``bitswap info``, Pillow's ``Image.open``) stays light.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import container
from .errors import CorruptFileError, DeviceError, ImageTooLargeError, InvalidImageError, InvalidOptionError, ModelNotFoundError
from .fileformat import AUTO, FALLBACKS, MAX_METADATA_BYTES, METHODS, MODE_BY_CHANNELS, MODES, PATCH, StreamPlan, check_method, coded_mode

if TYPE_CHECKING:
    import torch

    from .coders import StepAdjustments
    from .integer_model import IntegerVAE

DEVICE_VARIABLE = "BITSWAP_DEVICE"
"""Environment variable naming the device for calls that give none (every front end; default: the CPU)."""
MAX_IMAGE_PIXELS = 1 << 28
"""Most pixels accepted by default (a decompression-bomb guard): 16384 x 16384. Each frame
counts as padded to whole 32 x 32 patches, since the coder works on patches."""

_SMALL_IMAGE_PATCHES = 16
"""Up to this many patches, also try deflating everything and keep the smaller."""
_ESTIMATE_FROM_PATCHES = 64
"""With ``method="auto"``, images of more patches first estimate the learned coder's size from
a sample of this many patches, and run it only if it may beat the classical stream."""
_ESTIMATE_MARGIN = 1.05
"""Run the learned coder when its estimate is below this many times the classical size
(a sample of 64 patches estimates a Kodak image's size within a few per cent)."""
_FIT_FROM_PATCHES = 24
"""Each model's step adjustments (log-scale offsets, smooth-area blends) are fitted on an evenly
spaced sample of at most this many of its patches (format version 5 on). 24 fit as well as 32
(Kodak files within 0.002 %) in 60 % of the time; 16 lost 0.07 %."""
_GRAPHICS_BITS = 1.0
"""When fast WebP needs at most this many bits per subpixel (graphics: text, charts, palettes,
masks), also try WebP's best effort, up to 30 % smaller there and quick on such content."""

Progress = Callable[[int, int], None]
"""Called as the learned coder goes, with (patches coded so far, patches to code)."""


@dataclass(frozen=True)
class ImageInfo:
    """What a ``.bsw`` header says, without decoding."""

    height: int
    width: int
    mode: str
    method: str
    frames: int
    stack: bool
    channel_axis: bool
    models: tuple[tuple[str, str], ...]
    """(name, sha256) of each model the stream needs (none for a classical method)."""
    size: int
    """Total stream size in bytes."""
    coded_mode: str = ""
    """The mode of the planes actually coded: ``mode`` less a grey image's G and B and a constant alpha."""
    metadata: Mapping[str, bytes] = dataclasses.field(default_factory=dict)
    """Named byte strings stored with the pixels (see :func:`compress`)."""

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the array :func:`decompress` returns: the shape that was compressed."""
        frames = (self.frames,) if self.stack else ()
        channels = (MODES[self.mode].channels,) if self.channel_axis else ()
        return (*frames, self.height, self.width, *channels)

    @property
    def bits_per_subpixel(self) -> float:
        return 8 * self.size / (self.frames * self.height * self.width * MODES[self.mode].channels)


def resolve_device(device: torch.device | str | None, *, require: bool = True) -> torch.device:
    """The device to code on: ``None`` -> ``$BITSWAP_DEVICE``, else the CPU; ``"auto"`` -> CUDA
    where available, else the CPU; otherwise a CPU or CUDA device (``"cuda:1"``, a ``torch.device``).

    The device changes nothing in the bytes, only where the work runs. With ``require`` a
    CUDA device must exist on this machine; without it only the spelling is checked (a
    codec configured on one machine may run on another).
    """
    import torch

    where = f"device {device!r}"
    if device is None:
        device = os.environ.get(DEVICE_VARIABLE) or "cpu"
        where = f"{DEVICE_VARIABLE}={device!r}"
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"unknown {where}: expected cpu, cuda, cuda:N or auto") from exc
    if resolved.type not in ("cpu", "cuda"):
        raise DeviceError(f"unsupported {where}: Bit-Swap codes on cpu or cuda")
    count = torch.cuda.device_count()
    if require and resolved.type == "cuda" and (resolved.index or 0) >= count:
        raise DeviceError(f"{where} is not available here ({count} CUDA devices); 'auto' falls back to the CPU")
    return resolved


def _check_device(device: torch.device | str | None) -> None:
    """Refuse a bad device even where no work runs on it (a classical stream), so a call never
    succeeds or fails by the method the encoder chose; the default (none named) needs no torch."""
    if device is not None or os.environ.get(DEVICE_VARIABLE):
        resolve_device(device)


def _check_pixels(frames: int, height: int, width: int, max_pixels: int | None) -> None:
    """Refuse more than ``max_pixels`` (default MAX_IMAGE_PIXELS), counting frames padded to
    whole patches: a stack of tiny frames costs the coder a patch each."""
    limit = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if frames * -(-height // PATCH) * -(-width // PATCH) * PATCH**2 > limit:
        raise ImageTooLargeError(f"{frames} image(s) of {height}x{width} pixels, padded to {PATCH}x{PATCH} patches, exceed the limit of {limit} pixels")


def _as_stack(array: object) -> tuple[np.ndarray, str, bool, bool]:
    """Validate an array and view it as an (N, H, W, C) uint8 stack: (stack, mode, was a stack, had a
    channel axis). A 3-axis array is (H, W, C) when its last axis is 1..4, else an (N, H, W) grey stack."""
    if isinstance(array, (bytes, bytearray, memoryview, str)):
        raise InvalidImageError("expected an image array, got bytes or str")
    try:
        image = np.asarray(array)
    except Exception as exc:  # noqa: BLE001 - anything numpy cannot view is not an image
        raise InvalidImageError(f"cannot read the input as an array: {exc}") from None
    if image.dtype != np.uint8:
        raise InvalidImageError(f"only uint8 images can be coded, got dtype {image.dtype}")
    shape = image.shape
    grey_stack = image.ndim == 3 and shape[2] not in MODE_BY_CHANNELS
    is_stack, channel_axis = image.ndim == 4 or grey_stack, image.ndim == 4 or (image.ndim == 3 and not grey_stack)
    if image.ndim == 2:
        image = image[None, :, :, None]
    elif image.ndim == 3:
        image = image[..., None] if grey_stack else image[None]
    if image.ndim != 4 or image.shape[3] not in MODE_BY_CHANNELS:
        raise InvalidImageError(f"expected an (H, W), (H, W, C), (N, H, W) or (N, H, W, C) array with C in 1..4, got shape {shape}")
    if 0 in image.shape:
        raise InvalidImageError(f"cannot code an empty image of shape {shape}")
    return np.require(image, requirements=["C", "W"]), MODE_BY_CHANNELS[image.shape[3]].name, is_stack, channel_axis


def _model_channels(model: str) -> int:
    """Channels of the images the installed model ``model`` codes."""
    from . import zoo

    return zoo.load_model(model).config.channels


def _choose_models(mode: str, model: str | None) -> list[str]:
    """Model name for each plane: ``model`` where its channel count fits, else the default."""
    from . import zoo

    names = []
    for channels in (plane.channels for plane in MODES[mode].planes):
        name = zoo.DEFAULT_MODELS[channels]
        if model is not None:
            chosen = _model_channels(model)
            if chosen == channels:
                name = model
            elif channels != 1 or mode in ("L", "LA"):
                raise InvalidImageError(f"model {model!r} codes {chosen}-channel images; this {mode} image needs {channels}")
        names.append(name)
    return names


def _planes(stack: np.ndarray, mode: str, names: list[str], device: torch.device) -> list:
    """The coder's planes of an (N, H, W, C) stack: first planes of every frame, then second planes."""
    import torch

    from . import zoo
    from .coders import Plane

    pixels = torch.from_numpy(stack).permute(0, 3, 1, 2)
    return [
        Plane(pixels[frame, plane.slice].contiguous(), zoo.load_model(name, device=device))
        for plane, name in zip(MODES[mode].planes, names)
        for frame in range(stack.shape[0])
    ]


def _check_pins(names: list[str], pins: Mapping[str, str]) -> None:
    """Refuse, before coding, a model whose installed file is not the pinned one."""
    from . import zoo

    for name in names:
        digest = zoo.model_hash(name)
        if pins.get(name) != digest:
            pinned = f"pins {pins[name][:16]}…" if name in pins else "does not pin it"
            raise ModelNotFoundError(f"the installed model {name!r} has hash {digest[:16]}…, but the configuration {pinned}")


def _check_metadata(metadata: Mapping[str, bytes] | None) -> dict[str, bytes]:
    """``metadata`` as a dict of str -> bytes within :data:`MAX_METADATA_BYTES`, or an InvalidOptionError."""
    if not metadata:
        return {}
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) and isinstance(v, (bytes, bytearray)) for k, v in metadata.items()):
        raise InvalidOptionError("metadata must map str names to bytes (e.g. {'icc_profile': b'...'})")
    try:
        size = sum(len(key.encode()) + len(value) for key, value in metadata.items())
    except UnicodeEncodeError:
        raise InvalidOptionError("metadata names must be valid Unicode text (no lone surrogates)") from None
    if size > MAX_METADATA_BYTES:
        raise InvalidOptionError(f"{size} bytes of metadata exceed the limit of {MAX_METADATA_BYTES}")
    return {key: bytes(value) for key, value in metadata.items()}


def _drop_redundant_planes(stack: np.ndarray, mode: str, grey_allowed: bool = True) -> tuple[np.ndarray, bool, int | None]:
    """(the channels worth coding, whether R = G = B everywhere (looked for if ``grey_allowed``),
    the alpha value if alpha is constant)."""
    colour = MODES[mode].planes[0].channels
    has_alpha = len(MODES[mode].planes) == 2
    grey = grey_allowed and colour == 3 and bool((stack[..., 0] == stack[..., 1]).all() and (stack[..., 0] == stack[..., 2]).all())
    alpha = int(stack[0, 0, 0, -1]) if has_alpha and (stack[..., -1] == stack[0, 0, 0, -1]).all() else None
    channels = [0] if grey else list(range(colour))
    if has_alpha and alpha is None:
        channels.append(colour)
    coded = stack if len(channels) == stack.shape[3] else np.ascontiguousarray(stack[..., channels])
    return coded, grey, alpha


def _batches_on_threads(function: Callable) -> Callable:
    """``function`` run inside :func:`~.integer_model.batches_on_threads` (imported when called:
    classical streams never load torch). Every function here that runs torch does: besides the
    speed, torch then never starts a team of OpenMP threads on the caller's thread, and a process
    forked afterwards (``multiprocessing``'s default on Linux) can still code; with GNU OpenMP a
    child of a process whose thread led such a team hangs at its first parallel operation."""

    @functools.wraps(function)
    def run(*args, **kwargs):
        from .integer_model import batches_on_threads

        with batches_on_threads():
            return function(*args, **kwargs)

    return run


@_batches_on_threads
def _learned_may_win(coded: np.ndarray, mode: str, names: list[str], classical_bytes: int) -> bool:
    """Whether the learned coder may beat ``classical_bytes``: always for small images, else when
    the -ELBO of an evenly spaced sample of patches, scaled to the image, is not far above it.
    Estimated on the CPU whatever the coding device, so every device makes the same choice."""
    import torch

    planes = _planes(coded, mode, names, resolve_device("cpu"))
    total = sum(len(plane.grid) for plane in planes)
    if total <= _ESTIMATE_FROM_PATCHES:
        return True
    chosen = set(np.linspace(0, total - 1, _ESTIMATE_FROM_PATCHES).round().astype(int).tolist())
    estimate = _neg_elbo(planes, torch.Generator().manual_seed(0), chosen) * total / len(chosen)
    return estimate / 8 < _ESTIMATE_MARGIN * classical_bytes


def compress(
    array: object,
    *,
    model: str | None = None,
    method: str = AUTO,
    device: torch.device | str | None = None,
    progress: Progress | None = None,
    max_pixels: int | None = None,
    pins: Mapping[str, str] | None = None,
    metadata: Mapping[str, bytes] | None = None,
) -> bytes:
    """Compress an 8-bit image, or a stack of images, losslessly into ``.bsw`` bytes.

    ``array``: uint8, (H, W) or (H, W, C) with C = 1 (L), 2 (LA), 3 (RGB) or 4
    (RGBA), or an (N, H, W, C) stack coded as one bits-back chain (the start-up
    cost is paid once). ``model`` names the model for the colour (or grey)
    planes; alpha is coded as a grey plane. An RGB image whose channels are
    equal is coded as one grey plane, and a constant alpha plane is not coded.

    ``method``: ``"auto"`` (default) keeps the smallest of Bit-Swap and the
    classical methods (raw pixels, WebP lossless, or PNG where WebP cannot
    code the image), so a file is never larger than the raw pixels or the
    classical stream plus its header; Bit-Swap is skipped on large images
    whose estimated size is clearly larger. ``"bitswap"`` or ``"bbans"`` force
    a bits-back scheme, ``"raw"``, ``"png"`` or ``"webp"`` a classical method.

    ``device`` picks where the work runs (:func:`resolve_device`); every device
    writes the same bytes. ``progress(done, total)`` is called as the learned
    coder codes patches (not at all when a classical method is chosen).
    ``pins`` (model name -> SHA-256) makes coding with any other model file a
    :class:`ModelNotFoundError`, raised before any work. ``metadata`` (str ->
    bytes, at most 1 MiB in all; names such as ``icc_profile``, ``exif``,
    ``dpi``) is stored, checksummed, in the header and returned by
    :func:`read_info`.
    """
    check_method(method)
    stack, mode, is_stack, channel_axis = _as_stack(array)
    frames, height, width = stack.shape[:3]
    _check_pixels(frames, height, width, max_pixels)
    stored_metadata = _check_metadata(metadata)
    classical_only = method in FALLBACKS
    coded, grey, alpha = _drop_redundant_planes(stack, mode, grey_allowed=classical_only or model is None or _model_channels(model) == 1)
    header = container.Header(
        height=height,
        width=width,
        mode=mode,
        pixel_crc=zlib.crc32(stack),
        frames=frames,
        stack=is_stack,
        channel_axis=channel_axis,
        models=[],
        plane_models=[],
        plan=StreamPlan("bitswap" if method == AUTO else method),  # the bits-back scheme auto would use
        grey_colour=grey,
        alpha=alpha,
        metadata=stored_metadata,
    )
    if classical_only:
        _check_device(device)
        stream = _classical_stream(header, coded, method, "best")
        if stream is None:
            raise InvalidOptionError(f"method {method!r} cannot code {height}x{width} images here; use 'auto' or 'raw'")
        return stream
    device = resolve_device(device)
    plane_mode = coded_mode(mode, grey, alpha is not None).name
    names = _choose_models(plane_mode, model)
    if pins is not None:
        _check_pins(list(dict.fromkeys(names)), pins)
    if method in METHODS:
        return _learned_stream(header, coded, plane_mode, names, device, progress)
    webp = _classical_stream(header, coded, "webp")
    best = min(filter(None, [_classical_stream(header, coded, "raw"), webp or _classical_stream(header, coded, "png")]), key=len)
    if webp is not None and 8 * len(webp) <= _GRAPHICS_BITS * coded.size:
        best = min(filter(None, [best, _classical_stream(header, coded, "webp", "best")]), key=len)
    if _learned_may_win(coded, plane_mode, names, len(best)):
        best = min(best, _learned_stream(header, coded, plane_mode, names, device, progress), key=len)
    return best


def _classical_stream(header: container.Header, coded: np.ndarray, method: str, effort: str = "fast") -> bytes | None:
    """The stream coding ``coded`` with a classical method, or None where this install cannot (a
    WebP side over 16383, no WebP in Pillow) or the result would not decode to the same pixels."""
    from . import classical

    if not classical.available(method, *coded.shape[1:3]):
        return None
    payload = classical.encode(coded, method, effort)
    if method != "raw" and not np.array_equal(classical.decode(payload, method, coded.shape), coded):
        return None  # a library's quirk must never cost pixels: checking costs a fast decode
    return container.pack(dataclasses.replace(header, plan=StreamPlan(method)), payload)


@_batches_on_threads
def _learned_stream(
    header: container.Header, coded: np.ndarray, mode: str, names: list[str], device: torch.device, progress: Progress | None
) -> bytes:
    """The smallest bits-back stream of ``coded`` (its planes in ``mode``) by the models ``names``
    with ``header.plan.method``. Small images also try their stream without the fitted step
    adjustments (fitted on every patch, the fit's gain is in-sample and within the chain's noise
    there) and seeding every patch (deflate alone)."""
    from . import zoo
    from .coders import StepAdjustments, encode_planes

    method = header.plan.method
    unique = list(dict.fromkeys(names))
    planes = _planes(coded, mode, names, device)
    adjustments = _adjustments(planes)
    total_patches = sum(len(plane.grid) for plane in planes)
    candidates = [(None, adjustments)]
    if total_patches <= _SMALL_IMAGE_PATCHES:
        candidates += [(None, {})] * bool(adjustments) + [(total_patches, {})]
    best, seeded_every_patch = None, False
    for index, (seed_patches, used) in enumerate(candidates):
        if seed_patches == total_patches and seeded_every_patch:
            continue  # the seed search already took every patch
        plan, coder = encode_planes(planes, method, device, seed_patches, None if index else progress, used)
        if plan.seed_patches == total_patches:
            used = {}  # no patch was coded by the chain: adjustments would be dead header bytes
            seeded_every_patch = True
        stored = [used.get(zoo.load_model(name, device=device), StepAdjustments()) for name in unique]
        plan.scale_offsets, plan.smooth_blends = [a.offsets for a in stored], [a.blends for a in stored]
        num_lanes, head, tail = coder.to_bytes()
        learned = dataclasses.replace(
            header,
            models=[(name, zoo.model_hash(name)) for name in unique],
            plane_models=[unique.index(name) for name in names],
            plan=plan,
            num_lanes=num_lanes,
        )
        data = container.pack(learned, head, tail)
        if best is None or len(data) < len(best):
            best = data
    return best


def _adjustments(planes: list) -> dict[IntegerVAE, StepAdjustments]:
    """Each model's step adjustments, fitted on a sample of its patches
    (:func:`~.coders.fit_adjustments`): those that save the most beyond the header bytes they
    take, if any do."""
    import torch

    from .coders import fit_adjustments

    by_model: dict[IntegerVAE, list] = {}
    for plane in planes:
        by_model.setdefault(plane.model, []).append(plane)
    adjustments = {}
    for model, own in by_model.items():
        counts = [len(plane.grid) for plane in own]
        chosen = np.unique(np.linspace(0, sum(counts) - 1, min(_FIT_FROM_PATCHES, sum(counts))).round().astype(int))
        sample, first = [], 0
        for plane, count in zip(own, counts):
            sample += [plane.grid.extract(plane.pixels, i, i + 1) for i in (chosen[(chosen >= first) & (chosen < first + count)] - first).tolist()]
            first += count
        fits = fit_adjustments(model, torch.cat(sample), torch.Generator().manual_seed(0))
        gains = [saved * sum(counts) / len(chosen) - 8 * fitted.header_bytes for fitted, saved in fits]
        best = int(np.argmax(gains))
        if gains[best] > 0:
            adjustments[model] = fits[best][0]
    return adjustments


def read_info(data: bytes) -> ImageInfo:
    """Parse a ``.bsw`` header (no decoding; only the header bytes are needed)."""
    header, start = container.read_header(data)
    return ImageInfo(
        height=header.height,
        width=header.width,
        mode=header.mode,
        method=header.plan.method,
        frames=header.frames,
        stack=header.stack,
        channel_axis=header.channel_axis,
        models=tuple(header.models),
        size=start + header.head_length + header.tail_length,
        coded_mode=header.coded_mode.name,
        metadata=header.metadata,
    )


def _check_seed_fits(header: container.Header, models: list[IntegerVAE]) -> None:
    """Refuse a seed longer than decoding could leave on the tail, before allocating the image.

    Decoding ends with only the tail, the seed on top. Pops never lengthen the message,
    a renormalization lengthens it by under 1/64 bit per word, a push by under 25 bits
    (24-bit probabilities, heads of at least 2**31), and the decoder pushes only latents.
    This bounds what a short stream can claim when it has few coded patches.
    """
    latents = max(m.config.latents_per_patch for m in models)
    capacity = 33 * header.tail_length // 4 + 8 * header.head_length + 25 * latents * sum(header.plan.group_sizes)
    if 32 * -(-header.plan.seed_length // 4) > capacity:
        raise CorruptFileError("corrupt .bsw file: the seed is longer than the payload can hold")


def decompress(
    data: bytes,
    *,
    device: torch.device | str | None = None,
    progress: Progress | None = None,
    max_pixels: int | None = None,
    batch_size: int | None = None,
) -> np.ndarray:
    """Decode ``.bsw`` bytes to a uint8 array: (H, W) for L, (H, W, C), or (N, H, W, C) for a stack.

    Raises :class:`~bitswap_plugin.errors.BitSwapError` subclasses for damaged,
    truncated or foreign input, for missing models, and when the decoded pixels
    do not match the stored checksum. ``device`` (:func:`resolve_device`) and
    ``batch_size`` (patches per network call; default 32 on CPU, 512 on CUDA)
    change where and how the work runs, never the result. ``progress(done,
    total)`` is called as the learned decoder decodes patches (not for a
    classical stream, nor one whose patches are all in its seed).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CorruptFileError(f"expected .bsw bytes, got {type(data).__name__}")
    header, head, tail = container.unpack(data)
    frames, height, width = header.frames, header.height, header.width
    _check_pixels(frames, height, width, max_pixels)
    coded_shape = (frames, height, width, header.coded_mode.channels)
    if header.learned:
        coded = _decode_learned(header, head, tail, resolve_device(device), batch_size, progress)
    else:  # no model: Pillow decodes it
        from . import classical

        _check_device(device)
        coded = classical.decode(head, header.plan.method, coded_shape)
    result = _restore_planes(coded, header)
    if zlib.crc32(result) != header.pixel_crc:
        raise CorruptFileError("corrupt .bsw file: decoded pixels fail the checksum")
    frames_axis = (frames,) if header.stack else ()
    channel_axis = (result.shape[3],) if header.channel_axis else ()
    return result.reshape(*frames_axis, height, width, *channel_axis)


def _restore_planes(coded: np.ndarray, header: container.Header) -> np.ndarray:
    """The (N, H, W, C) image of ``header.mode`` from its coded planes: a grey colour plane
    repeated as R, G, B, a constant alpha filled in."""
    mode = MODES[header.mode]
    if coded.shape[3] == mode.channels:
        return coded
    colour = coded[..., :1].repeat(3, axis=3) if header.grey_colour else coded[..., : mode.planes[0].channels]
    if len(mode.planes) == 1:
        return np.ascontiguousarray(colour)
    alpha = coded[..., -1:] if header.alpha is None else np.full((*coded.shape[:3], 1), header.alpha, np.uint8)
    return np.concatenate([colour, alpha], axis=3)


@_batches_on_threads
def _decode_learned(
    header: container.Header, head: bytes, tail: bytes, device: torch.device, batch_size: int | None, progress: Progress | None
) -> np.ndarray:
    """The (N, H, W, C) coded planes of a bits-back stream."""
    import torch

    from . import zoo
    from .ans import AnsCoder
    from .coders import Plane, StepAdjustments, decode_planes

    mode = header.coded_mode
    models = [zoo.load_model(name, sha256, device) for name, sha256 in header.models]
    plane_models = [models[index] for index in header.plane_models]
    if any(model.config.channels != plane.channels for model, plane in zip(plane_models, mode.planes)):
        raise CorruptFileError("corrupt .bsw file: a plane names a model with the wrong channel count")
    if any(model.pixel_context for model in models) and not header.plan.version.pixel_context:
        raise CorruptFileError(f"corrupt .bsw file: a version {header.plan.version.number} stream names a model with pixel context")
    _check_seed_fits(header, plane_models)
    plan = header.plan
    offsets, blends = plan.scale_offsets or [()] * len(models), plan.smooth_blends or [()] * len(models)
    if any(len(steps) not in (0, model.likelihood_steps) for model, steps in zip(models, offsets)):
        raise CorruptFileError("corrupt .bsw file: a model's scale offsets do not match its likelihood's steps")
    if any(len(steps) not in (0, model.likelihood_steps) or (steps and not model.pixel_context) for model, steps in zip(models, blends)):
        raise CorruptFileError("corrupt .bsw file: a model's smooth-area blends do not match its likelihood's steps")
    # every pixel is decoded (seed and groups cover all patches): pages are touched only as decoding gets there
    stack = torch.empty((header.frames, mode.channels, header.height, header.width), dtype=torch.uint8, device=device)
    planes = [Plane(stack[frame, plane.slice], model) for plane, model in zip(mode.planes, plane_models) for frame in range(header.frames)]
    coder = AnsCoder.from_bytes(header.num_lanes, head, tail, device, bottomless=False)
    adjustments = {model: StepAdjustments(tuple(o), tuple(b)) for model, o, b in zip(models, offsets, blends, strict=True)}
    decode_planes(coder, planes, header.plan, batch_size, progress, adjustments)
    return stack.permute(0, 2, 3, 1).contiguous().cpu().numpy()


# -- analysis: what the model and the coder cost, for experiments and benchmarks ----------

_ELBO_BATCH = 256
"""Patches per -ELBO evaluation (bounds memory on large images); its networks see a coder's batches."""


@_batches_on_threads
def message_bits(array: object, *, model: str | None = None, method: str = "bitswap") -> int:
    """Bits of the ANS message (lane heads and tail, seed included; no header) that codes ``array``
    as one bits-back chain from a one-patch seed: the learned coder's own cost, with none of
    :func:`compress`'s choices (how a chain starts, Bit-Swap's start-up cost, needs it)."""
    from .coders import encode_planes

    if method not in METHODS:
        raise InvalidOptionError(f"message_bits measures a bits-back method ({', '.join(METHODS)}), not {method!r}")
    stack, mode, *_ = _as_stack(array)
    device = resolve_device("cpu")
    _, coder = encode_planes(_planes(stack, mode, _choose_models(mode, model), device), method, device, seed_patches=1)
    _, heads, tail = coder.to_bytes()
    return 8 * (len(heads) + len(tail))


@_batches_on_threads
def neg_elbo_bits(array: object, *, model: str | None = None, seed: int = 0) -> float:
    """The models' negative ELBO of ``array`` in bits: the expected size of the message coding its
    patches (one latent sample per patch, drawn with ``seed``; every term an exact ANS cost),
    which a file approaches when the chain is long."""
    import torch

    stack, mode, *_ = _as_stack(array)
    planes = _planes(stack, mode, _choose_models(mode, model), resolve_device("cpu"))
    return _neg_elbo(planes, torch.Generator().manual_seed(seed))


def _neg_elbo(planes: list, generator: torch.Generator, chosen: set[int] | None = None) -> float:
    """-ELBO in bits of the patches of ``planes`` (numbered along the chain), or of those ``chosen``."""
    import torch

    from .coders import network_batch
    from .integer_model import integer_neg_elbo

    bits, first = 0.0, 0
    batches: dict[IntegerVAE, list[torch.Tensor]] = {}
    for plane in planes:
        count = len(plane.grid)
        if chosen is None:
            batches.setdefault(plane.model, []).append(plane.grid.extract(plane.pixels, 0, count))
        else:
            wanted = [i - first for i in sorted(chosen) if first <= i < first + count]
            batches.setdefault(plane.model, []).extend(plane.grid.extract(plane.pixels, i, i + 1) for i in wanted)
        first += count
    for plane_model, parts in batches.items():
        patches = torch.cat(parts)
        for start in range(0, patches.shape[0], _ELBO_BATCH):
            part = patches[start : start + _ELBO_BATCH]
            bits += integer_neg_elbo(plane_model, part, generator, network_batch(part.device)) * part.numel()
    return bits
