"""``BitSwapCodec``: a Zarr format 3 array -> bytes codec named ``bitswap``.

Use it as an array's ``serializer=`` (it needs each chunk's shape, which Zarr
gives array -> bytes codecs). Registered through the ``zarr.codecs`` entry
point, so arrays open without importing this package. Zarr codes chunks in
threads; the codec keeps no state, and the API it calls is thread-safe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from zarr.abc.codec import ArrayBytesCodec
from zarr.core.chunk_grids import RegularChunkGrid
from zarr.core.common import JSON, parse_named_configuration

from .adapters import check_device, check_dtype, check_layout, decode_image, default_layout, encode_image, pin_models
from .fileformat import AUTO, check_method

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer
    from zarr.core.chunk_grids import ChunkGrid
    from zarr.core.dtype.wrapper import TBaseDType, TBaseScalar, ZDType


@dataclass(frozen=True)
class BitSwapCodec(ArrayBytesCodec):
    """Lossless Bit-Swap coding of uint8 image chunks; a chunk's stack axes (all before (H, W[, C])) are one chain.

    ``model``: the model for the colour (or grey) planes, default by channel count;
    ``method``: ``"auto"`` (the smallest of Bit-Swap and the classical methods, see
    :func:`~bitswap_plugin.compress`), or one forced (``"bitswap"``, ``"webp"``, ...); ``layout``: the chunk's axes (HW, HWC,
    NHW, NHWC, NNNHW, ...), filled in from the array's shape at creation when omitted;
    ``models``: name -> SHA-256 of the models it may use, pinned from the installed
    models when omitted; ``device``: where this codec object codes, a runtime option
    kept out of the metadata (:class:`~bitswap_plugin.BitSwap` says why), so an array
    written on a GPU machine opens anywhere; arrays opened from metadata code on
    ``$BITSWAP_DEVICE``, else the CPU.
    """

    is_fixed_size = False

    model: str | None
    method: str
    layout: str | None
    models: tuple[tuple[str, str], ...]
    device: str | None = field(compare=False)

    def __init__(
        self,
        *,
        model: str | None = None,
        method: str = AUTO,
        layout: str | None = None,
        models: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        device: str | None = None,
    ) -> None:
        check_method(method)
        if layout is not None:
            check_layout(layout)
        pins = pin_models(model) if models is None else dict(models)
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "layout", layout)
        object.__setattr__(self, "models", tuple(sorted(pins.items())))
        object.__setattr__(self, "device", check_device(device))

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, configuration = parse_named_configuration(data, "bitswap", require_configuration=False)
        return cls(**(configuration or {}))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        configuration = {"model": self.model, "method": self.method, "layout": self.layout, "models": dict(self.models)}
        return {"name": "bitswap", "configuration": configuration}

    def evolve_from_array_spec(self, array_spec: ArraySpec) -> Self:
        if self.layout is None:
            return replace(self, layout=default_layout(array_spec.shape))
        return self

    def validate(self, *, shape: tuple[int, ...], dtype: ZDType[TBaseDType, TBaseScalar], chunk_grid: ChunkGrid) -> None:
        check_dtype(dtype.to_native_dtype())
        if isinstance(chunk_grid, RegularChunkGrid):
            chunks = chunk_grid.chunk_shape
            check_layout(self.layout or default_layout(chunks), chunks)

    def _layout(self, chunk_spec: ArraySpec) -> str:
        return self.layout or default_layout(chunk_spec.shape)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        array = chunk_array.as_numpy_array()
        data = await asyncio.to_thread(
            encode_image, array, self._layout(chunk_spec), model=self.model, method=self.method, models=dict(self.models),
            device=self.device,
        )
        return chunk_spec.prototype.buffer.from_bytes(data)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        data = chunk_bytes.to_bytes()
        array = await asyncio.to_thread(decode_image, data, self._layout(chunk_spec), chunk_spec.shape, self.device)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(array)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError("Bit-Swap output size depends on the data")
