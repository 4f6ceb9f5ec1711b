"""Search-time parameters of approximate FAISS indexes, with defaults chosen for recall.

FAISS's own defaults (``nprobe = 1``, ``efSearch = 16``) trade most of the recall away: an
IVF index with 64 lists then reads one list in 64. The defaults here read a quarter of the
lists (at least 8, at most 256) and keep 128 HNSW candidates (never fewer than the results
asked for); BENCHMARKS.md has what they cost and give. A request may override both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EF_SEARCH = 128
NPROBE_FRACTION = 4
NPROBE_MIN = 8
NPROBE_MAX = 256


@dataclass(frozen=True, slots=True)
class AnnParams:
    """What an index searches with: ``nprobe`` for IVF, ``ef_search`` for HNSW (None: the
    index is not of that kind)."""

    nprobe: int | None = None
    ef_search: int | None = None


def default_params(index: Any) -> AnnParams:
    """The defaults for this index, from its type and list count."""
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        nlist = int(ivf.nlist)
        return AnnParams(
            nprobe=min(nlist, max(NPROBE_MIN, min(NPROBE_MAX, nlist // NPROBE_FRACTION)))
        )
    if _hnsw(index) is not None:
        return AnnParams(ef_search=EF_SEARCH)
    return AnnParams()


def search_parameters(
    index: Any, fetch: int, nprobe: int | None = None, ef_search: int | None = None
) -> tuple[AnnParams, Any]:
    """The parameters in use (defaults unless overridden) and the FAISS object that carries
    them into ``index.search(..., params=...)`` (None for an exact index)."""
    import faiss

    chosen = default_params(index)
    if chosen.nprobe is not None:
        nlist = int(faiss.extract_index_ivf(index).nlist)
        ivf_params = faiss.SearchParametersIVF()
        ivf_params.nprobe = min(nlist, nprobe or chosen.nprobe)
        return AnnParams(nprobe=ivf_params.nprobe), ivf_params
    if chosen.ef_search is not None:
        hnsw_params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        hnsw_params.efSearch = max(ef_search or chosen.ef_search, fetch)
        return AnnParams(ef_search=hnsw_params.efSearch), hnsw_params
    return chosen, None


def _hnsw(index: Any) -> Any:
    import faiss

    inner = faiss.downcast_index(index.index) if hasattr(index, "id_map") else index
    return inner if isinstance(inner, faiss.IndexHNSW) else None
