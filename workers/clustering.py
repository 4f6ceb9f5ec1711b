"""Clustering of document vectors (float32, L2-normalised rows) and 2-D views of them.

``kmeans`` is spherical k-means with FAISS: it trains on a sample of at most
``max_points_per_centroid * k`` rows and then assigns every row to its nearest centroid, so it
scales to millions of rows. ``choose_k`` scores a range of k by cosine silhouette on a sample.
``agglomerative`` is exact hierarchical clustering with a cosine distance threshold; it needs
memory quadratic in the rows, so it refuses large inputs. Inputs are expected to be normalised
already (as ``embedq.workers.encoding`` produces them); rows are not copied or renormalised.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

LINKAGES = ("average", "complete", "single")
MAX_POINTS_PER_CENTROID = 256
NREDO = 3
K_RANGE_MAX = 256
"""Largest k that ``choose_k`` tries."""
K_RANGE_MAX_VALUES = 32
"""Most values of k that one ``choose_k`` call tries: each is a full k-means training."""
_BLOCK = 65_536
_LEGEND_MAX = 20
_GOLDEN = 0.618034  # spreads many clusters' colours along the colour map


def _as_matrix(vectors: Any) -> np.ndarray:
    mat = np.ascontiguousarray(vectors, dtype=np.float32)
    if mat.ndim != 2 or mat.shape[0] == 0 or mat.shape[1] == 0:
        raise ValueError(f"expected a non-empty (rows, dim) matrix, got shape {mat.shape}")
    return mat


def _normalise(mat: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(mat, axis=1, keepdims=True)
    return (mat / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def _sample_rows(mat: np.ndarray, sample: int, seed: int) -> np.ndarray:
    """At most ``sample`` rows drawn without replacement (all rows, uncopied, if fewer)."""
    if mat.shape[0] <= sample:
        return mat
    rng = np.random.default_rng(seed)
    return mat[np.sort(rng.choice(mat.shape[0], size=sample, replace=False))]


Ids = Sequence[Any] | np.ndarray


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


@dataclass
class ClusterResult:
    """Cluster labels per row, normalised centroids and cluster sizes.

    ``vectors`` is the clustered matrix itself (kept by reference) so that examples can be
    picked; it is left out of ``repr`` and ``to_dict``.
    """

    labels: np.ndarray
    centroids: np.ndarray
    sizes: list[int]
    vectors: np.ndarray = field(repr=False, compare=False)

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    def similarities(self) -> np.ndarray:
        """Cosine of each row to its own centroid, computed in blocks of rows."""
        out = np.empty(self.labels.shape[0], dtype=np.float32)
        for start in range(0, out.shape[0], _BLOCK):
            stop = start + _BLOCK
            rows = self.vectors[start:stop]
            out[start:stop] = np.einsum("ij,ij->i", rows, self.centroids[self.labels[start:stop]])
        return out

    def _example_rows(self, n: int, sims: np.ndarray) -> list[np.ndarray]:
        """Per cluster, the row numbers of its ``n`` members nearest the centroid, nearest first."""
        order = np.lexsort((-sims, self.labels))
        starts = np.searchsorted(self.labels[order], np.arange(self.k))
        return [order[s : s + min(n, size)] for s, size in zip(starts, self.sizes, strict=True)]

    def _check_ids(self, ids: Ids) -> None:
        if len(ids) != self.labels.shape[0]:
            raise ValueError(f"{len(ids)} ids for {self.labels.shape[0]} clustered rows")

    def examples(self, ids: Ids, n: int = 5) -> list[list[Any]]:
        """Per cluster, the ids of its ``n`` members most similar to the centroid (by cosine)."""
        self._check_ids(ids)
        rows = self._example_rows(n, self.similarities())
        return [[_plain(ids[i]) for i in group] for group in rows]

    def to_dict(self, ids: Ids, n_examples: int = 5, *, assignments: bool = True) -> dict[str, Any]:
        """A JSON-ready summary: clusters with sizes and examples, and each id's cluster."""
        self._check_ids(ids)
        sims = self.similarities()
        clusters = [
            {
                "cluster": c,
                "size": self.sizes[c],
                "examples": [{"id": _plain(ids[i]), "similarity": float(sims[i])} for i in rows],
            }
            for c, rows in enumerate(self._example_rows(n_examples, sims))
        ]
        out: dict[str, Any] = {"k": self.k, "clusters": clusters}
        if assignments:
            out["assignments"] = {
                str(_plain(i)): int(c) for i, c in zip(ids, self.labels, strict=True)
            }
        return out


def _result(mat: np.ndarray, labels: np.ndarray, centroids: np.ndarray) -> ClusterResult:
    labels = labels.astype(np.int64, copy=False)
    sizes = np.bincount(labels, minlength=centroids.shape[0]).tolist()
    return ClusterResult(labels=labels, centroids=centroids, sizes=sizes, vectors=mat)


# --- k-means -----------------------------------------------------------------------------


def _train_once(mat: np.ndarray, k: int, seed: int, niter: int) -> np.ndarray:
    km = faiss.Kmeans(
        mat.shape[1],
        k,
        niter=niter,
        seed=seed,
        spherical=True,
        max_points_per_centroid=MAX_POINTS_PER_CENTROID,
        # Small collections are legitimate input; FAISS would only warn about them.
        min_points_per_centroid=1,
        verbose=False,
    )
    init = getattr(faiss, "ClusteringInitMethod_KMEANS_PLUS_PLUS", None)
    if init is not None and hasattr(km.cp, "init_method"):
        km.cp.init_method = init
    km.train(mat)
    return _normalise(np.asarray(km.centroids, dtype=np.float32).reshape(k, mat.shape[1]))


def train_centroids(
    mat: np.ndarray, k: int, *, seed: int = 0, niter: int = 25, nredo: int = NREDO
) -> np.ndarray:
    """Spherical k-means centroids (k, d), normalised; FAISS trains on a row sample.

    Seeds with k-means++ where the installed FAISS offers it, runs ``nredo`` times with seeds
    ``seed``, ``seed + 1``, ... and keeps the centroids with the highest total similarity on
    one common row sample: a single run can merge two groups and split another.
    """
    if not 1 <= k <= mat.shape[0]:
        raise ValueError(f"k must be between 1 and the number of rows ({mat.shape[0]}), got {k}")
    probe = _sample_rows(mat, MAX_POINTS_PER_CENTROID * k, seed)
    best, best_score = None, -np.inf
    for run in range(max(1, nredo)):
        centroids = _train_once(mat, k, seed + run, niter)
        score = float(np.max(probe @ centroids.T, axis=1).sum(dtype=np.float64))
        if best is None or score > best_score:
            best, best_score = centroids, score
    assert best is not None
    return best


def assign(mat: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index (int64) of the nearest centroid by inner product for every row."""
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _, nearest = index.search(mat, 1)
    return nearest[:, 0].astype(np.int64)


def kmeans(
    vectors: np.ndarray, k: int, *, seed: int = 0, niter: int = 25, nredo: int = NREDO
) -> ClusterResult:
    """Spherical (cosine) k-means over all rows; labels are each row's nearest centroid."""
    mat = _as_matrix(vectors)
    centroids = train_centroids(mat, k, seed=seed, niter=niter, nredo=nredo)
    return _result(mat, assign(mat, centroids), centroids)


def _silhouette(rows: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import silhouette_score

    found = np.unique(labels).shape[0]
    if not 2 <= found <= rows.shape[0] - 1:
        return -1.0
    return float(silhouette_score(rows, labels, metric="cosine"))


def check_k_range(k_min: int, k_max: int) -> tuple[int, int]:
    """The range if ``choose_k`` accepts it; a ``ValueError`` saying why not otherwise."""
    if not 2 <= k_min <= k_max:
        raise ValueError(f"need 2 <= k_min <= k_max, got k_min={k_min}, k_max={k_max}")
    if k_max > K_RANGE_MAX:
        raise ValueError(f"k_max={k_max}: at most {K_RANGE_MAX}")
    if k_max - k_min + 1 > K_RANGE_MAX_VALUES:
        raise ValueError(
            f"k range {k_min}-{k_max} holds {k_max - k_min + 1} values of k; "
            f"at most {K_RANGE_MAX_VALUES} (each one is a k-means run)"
        )
    return k_min, k_max


def choose_k(
    vectors: np.ndarray,
    k_min: int,
    k_max: int,
    *,
    sample: int = 10_000,
    seed: int = 0,
    niter: int = 25,
    nredo: int = NREDO,
) -> tuple[int, dict[int, float]]:
    """The k in ``[k_min, k_max]`` with the best cosine silhouette, and every k's score.

    Centroids are trained as ``kmeans`` does; the silhouette (quadratic in rows) is measured
    on the same random sample of at most ``sample`` rows for every k. Ties go to the smaller
    k; a k whose sample falls into a single cluster scores -1.
    """
    mat = _as_matrix(vectors)
    check_k_range(k_min, k_max)
    rows = _sample_rows(mat, sample, seed)
    if k_max >= rows.shape[0]:
        raise ValueError(f"k_max={k_max} needs more than {rows.shape[0]} sampled rows")
    scores: dict[int, float] = {}
    for k in range(k_min, k_max + 1):
        centroids = train_centroids(mat, k, seed=seed, niter=niter, nredo=nredo)
        scores[k] = _silhouette(rows, assign(rows, centroids))
    best = max(scores, key=lambda k: (scores[k], -k))
    return best, scores


# --- Agglomerative -----------------------------------------------------------------------


def _mean_centroids(mat: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    sums = np.zeros((k, mat.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, mat)
    return _normalise(sums.astype(np.float32))


def agglomerative(
    vectors: np.ndarray, threshold: float, *, linkage: str = "average", max_rows: int = 20_000
) -> ClusterResult:
    """Hierarchical clustering cut at cosine distance ``threshold`` (1 - cosine similarity).

    Memory grows with the square of the rows (all pairwise distances), so more than
    ``max_rows`` rows are refused; use ``kmeans`` for those.
    """
    from sklearn.cluster import AgglomerativeClustering

    mat = _as_matrix(vectors)
    if linkage not in LINKAGES:
        raise ValueError(f"linkage must be one of {', '.join(LINKAGES)} for cosine distance")
    if not 0.0 < threshold <= 2.0:
        raise ValueError(f"cosine distance threshold must be in (0, 2], got {threshold}")
    n = mat.shape[0]
    if n > max_rows:
        gib = n * (n - 1) / 2 * 8 / 2**30
        raise ValueError(
            f"agglomerative clustering of {n} rows needs all pairwise distances "
            f"(about {gib:.1f} GiB); the limit is {max_rows} rows: use kmeans() instead"
        )
    if n == 1:
        labels = np.zeros(1, dtype=np.int64)
    else:
        model = AgglomerativeClustering(
            n_clusters=None, distance_threshold=threshold, metric="cosine", linkage=linkage
        )
        labels = np.asarray(model.fit_predict(mat), dtype=np.int64)
    k = int(labels.max()) + 1
    return _result(mat, labels, _mean_centroids(mat, labels, k))


# --- 2-D views ---------------------------------------------------------------------------


def project_2d(vectors: np.ndarray, *, sample: int = 20_000, seed: int = 0) -> np.ndarray:
    """Every row projected on the first two principal axes (float32, shape (n, 2)).

    The axes come from an SVD of the centred rows of a random sample of at most ``sample``
    rows; each axis is signed so that its largest loading is positive (reproducible output).
    """
    mat = _as_matrix(vectors)
    rows = _sample_rows(mat, sample, seed).astype(np.float64)
    mean = rows.mean(axis=0)
    _, _, vt = np.linalg.svd(rows - mean, full_matrices=False)
    axes = np.zeros((2, mat.shape[1]), dtype=np.float64)
    axes[: min(2, vt.shape[0])] = vt[:2]
    for axis in axes:
        if axis[np.argmax(np.abs(axis))] < 0:
            axis *= -1
    points = mat @ axes.T.astype(np.float32) - (mean @ axes.T).astype(np.float32)
    return points.astype(np.float32)


def _legend_order(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ids and their sizes, largest first."""
    ids, sizes = np.unique(labels, return_counts=True)
    order = np.argsort(-sizes, kind="stable")
    return ids[order], sizes[order]


def scatter_png(
    points: np.ndarray,
    labels: np.ndarray,
    path: str | os.PathLike[str],
    title: str,
    *,
    max_points: int = 50_000,
    seed: int = 0,
) -> Path:
    """A PNG scatter plot of 2-D points coloured by cluster, with sizes in the legend.

    At most ``max_points`` points are drawn (a random sample); the legend lists the 20
    largest clusters with their full sizes. Written to a temporary file, then renamed.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pts = np.asarray(points, dtype=np.float32)
    labs = np.asarray(labels)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] != labs.shape[0]:
        raise ValueError(f"need (n, 2) points and n labels, got {pts.shape} and {labs.shape}")
    clusters, sizes = _legend_order(labs)
    drawn = np.arange(pts.shape[0])
    if drawn.shape[0] > max_points:
        drawn = np.sort(np.random.default_rng(seed).choice(drawn, max_points, replace=False))
    fig = Figure(figsize=(8, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = colormaps["tab20" if len(clusters) <= 20 else "turbo"]
    for rank, (cluster, size) in enumerate(zip(clusters, sizes, strict=True)):
        mine = drawn[labs[drawn] == cluster]
        name = "noise" if cluster < 0 else f"cluster {cluster}"
        legend = f"{name} ({size})" if rank < _LEGEND_MAX else "_nolegend_"
        colour = colours(rank if len(clusters) <= 20 else (rank * _GOLDEN) % 1.0)
        ax.scatter(
            pts[mine, 0],
            pts[mine, 1],
            s=max(4.0, min(30.0, 6000.0 / len(pts))),
            color=colour,
            label=legend,
            linewidths=0,
        )
    _decorate(ax, title, len(clusters))
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    fig.savefig(tmp, format="png", bbox_inches="tight")
    os.replace(tmp, target)
    return target


def _decorate(ax: Any, title: str, n_clusters: int) -> None:
    ax.set_title(title)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    extra = f", {_LEGEND_MAX} largest shown" if n_clusters > _LEGEND_MAX else ""
    ax.legend(
        title=f"{n_clusters} clusters{extra}",
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        fontsize="small",
        markerscale=3,
    )
