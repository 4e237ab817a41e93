"""A finished job's results from its chains' draws: InferenceData, the summary and the netCDF bytes.

One function for every caller: the worker that stores a job's last chain, the API when a reader finds a
job whose chains are all stored, and `chainyard run`. No JAX here (ArviZ and h5netcdf only).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.codec import unpack_block
from service.language.ir import Model
from service.results import summary, to_inference_data, write_netcdf
from service.sampler import SamplerSettings


@dataclass(frozen=True)
class Results:
    """What a succeeded job serves."""

    idata: Any
    """ArviZ InferenceData: posterior (chain, draw, *dims), sample_stats, observed_data."""
    summary: dict[str, Any]
    """ArviZ's summary rows and chainyard's totals and warnings (service.results.summary)."""
    draws: dict[str, np.ndarray]
    """The posterior draws, (chain, draw, *shape) per variable."""

    def netcdf(self) -> bytes:
        """The InferenceData as netCDF-4 bytes (`az.from_netcdf` reads them)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "fit.nc"
            write_netcdf(self.idata, path)
            return path.read_bytes()


def assemble(model: Model, settings: SamplerSettings, draws: dict[str, np.ndarray], stats: dict[str, np.ndarray],
             *, attrs: dict[str, Any] | None = None) -> Results:
    """Results of draws and stats stacked (chain, draw, *shape)."""
    idata = to_inference_data(model, draws, stats, attrs={**(attrs or {}), "max_tree_depth": settings.max_tree_depth})
    return Results(idata=idata, summary=summary(idata), draws=draws)


def stack_chains(blobs: list[bytes]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-chain npz blobs (codec.pack_block) -> draws and stats stacked along a new chain axis."""
    per_chain = [unpack_block(blob) for blob in blobs]
    draws = {k: np.stack([d[k] for d, _ in per_chain]) for k in per_chain[0][0]}
    stats = {k: np.stack([s[k] for _, s in per_chain]) for k in per_chain[0][1]}
    return draws, stats
