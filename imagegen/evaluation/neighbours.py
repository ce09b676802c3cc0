"""Nearest neighbours for the k-NN metrics: float32 matrix products, float64 decisions.

A squared distance ||a||² + ||b||² - 2 a·b comes from one float32 matrix product per tile
(many times faster than float64 distances on a CPU), with a bound on its rounding error. Every
decision that bound leaves open is taken again from the exact float64 distance: which points
are a point's k nearest (the candidates' distances recomputed, a row whose candidates cannot
be vouched for done whole in float64), and whether a point lies inside a ball (the pairs
within the bound of its radius recomputed; a tile keeps only the pairs that may be inside,
one comparison pass over it). So the results are the float64 computation's. Memory: the
features, one float32 tile of `tile` x `tile` distances, a mask of it and its near pairs.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

TILE = 4096  # rows and columns of one float32 distance tile: 64 MB
EXTRA = 8  # candidates kept beyond k, so the k-th is rarely in doubt
_U = 2.0**-24  # float32's unit roundoff


@dataclass(frozen=True)
class Points:
    """Features as given (the exact values), a float32 copy moved by a common centre (distances
    do not change, the norms the error bound scales with shrink: pool3 features share a large
    mean), and that copy's float64 squared norms."""

    exact: torch.Tensor  # (N, D) float32 or float64, as given
    fast: torch.Tensor  # (N, D) float32, exact - centre
    sq: torch.Tensor  # (N,) float64, ||exact - centre||²
    centre: torch.Tensor  # (D,) float64

    @classmethod
    def of(cls, x: object, centre: torch.Tensor | None = None) -> "Points":
        """`x` (N, D); `centre` (D,): the same for every set compared [default: x's mean]."""
        exact = torch.as_tensor(x)
        if exact.dtype not in (torch.float32, torch.float64):
            exact = exact.double()
        if centre is None:
            centre = sum(c.double().sum(0) for c in exact.split(TILE)) / max(len(exact), 1)
        moved = [c.double() - centre for c in exact.split(TILE)]  # a tile at a time
        fast = torch.cat([m.float() for m in moved]) if moved else exact.float()
        sq = torch.cat([m.pow(2).sum(1) for m in moved]) if moved else exact.new_zeros(0)
        return cls(exact, fast, sq.double(), centre)

    def __len__(self) -> int:
        return self.exact.shape[0]

    @property
    def slack(self) -> float:
        """Bound on a float32 squared distance's error, per unit of ||a||² + ||b||²: the dot
        product's γ_D (any summation order) plus the roundings of the inputs and sums."""
        d = self.exact.shape[1]
        return d * _U / (1 - d * _U) + 16 * _U


def _same_centre(a: Points, b: Points) -> None:
    if not torch.equal(a.centre, b.centre):
        raise ValueError("points compared must share one centre: Points.of(x, other.centre)")


def _row_bound(a: Points, b: Points, rows: slice | torch.Tensor) -> torch.Tensor:
    """The largest error of a float32 squared distance from a[rows] to any point of b (R,)."""
    return (a.sq[rows] + b.sq.max()) * a.slack


def _tiles(n: int, tile: int) -> list[slice]:
    return [slice(i, min(i + tile, n)) for i in range(0, n, tile)]


def _fast_sq(a: Points, rows: slice, b: Points, cols: slice) -> torch.Tensor:
    """float32 squared distances of a[rows] to b[cols] (rows, cols)."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # IEEE float32: what the bound assumes
    try:
        gram = a.fast[rows] @ b.fast[cols].T  # (rows, cols)
    finally:
        torch.set_float32_matmul_precision(before)
    base = a.sq[rows].float()[:, None] + b.sq[cols].float()[None, :]
    return base.sub_(gram, alpha=2)  # one rounding after the product's


def exact_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """float64 squared distances, from differences (not a Gram matrix): a (R, D) to b's rows
    (R, m, D) -> (R, m), or a (R, D) to b (R, D) row by row -> (R,)."""
    pairs = b.dim() == 2
    b = b[:, None, :] if pairs else b
    d = torch.cdist(a.double()[:, None, :], b.double(), compute_mode="donot_use_mm_for_euclid_dist")
    d = d[:, 0].pow(2)  # (R, m)
    return d[:, 0] if pairs else d


def _merge(
    values: torch.Tensor,
    index: torch.Tensor,
    rows: slice,
    new_values: torch.Tensor,
    new_index: torch.Tensor,
    m: int,
) -> None:
    """Keep each row's m smallest of its kept candidates and the new ones."""
    v = torch.cat([values[rows], new_values], 1)
    i = torch.cat([index[rows], new_index], 1)
    top = v.topk(m, dim=1, largest=False)
    values[rows], index[rows] = top.values, i.gather(1, top.indices)


def _candidates(a: Points, b: Points | None, m: int, tile: int) -> tuple[torch.Tensor, ...]:
    """Each point of `a`'s m nearest points of `b` by float32 distance (values, indices);
    b None: of `a` itself, the point excluded, each tile pair computed once (symmetry)."""
    other = a if b is None else b
    values = torch.full((len(a), m), float("inf"))
    index = torch.zeros((len(a), m), dtype=torch.long)
    for rows in _tiles(len(a), tile):
        for cols in _tiles(len(other), tile):
            if b is None and cols.start < rows.start:
                continue  # done as (cols, rows)
            d = _fast_sq(a, rows, other, cols)  # (rows, cols)
            if b is None and cols == rows:
                d.fill_diagonal_(float("inf"))
            top = d.topk(min(m, d.shape[1]), dim=1, largest=False)
            _merge(values, index, rows, top.values, top.indices + cols.start, m)
            if b is None and cols != rows:  # the same tile, read by columns
                top = d.topk(min(m, d.shape[0]), dim=0, largest=False)
                _merge(values, index, cols, top.values.T, top.indices.T + rows.start, m)
    return values, index


def kth_nearest(
    a: Points, b: Points | None, ks: tuple[int, ...], tile: int = TILE
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Each point of `a`'s k-th nearest point of `b` (b None: of `a`, itself excluded), by
    exact float64 distance, for each k: k -> (distance² (N_a,) float64, index (N_a,))."""
    other = a if b is None else b
    _same_centre(a, other)
    available = len(other) - (b is None)
    m = min(max(ks) + EXTRA, available)
    values, index = _candidates(a, b, m, tile)
    v = values.double()
    gap = 2 * _row_bound(a, other, slice(None))  # (N_a,): two error bounds apart
    out, doubtful = {}, torch.zeros(len(a), dtype=torch.bool)
    for k in ks:
        # Candidate k-1 is the k-th nearest for sure when float32 puts it further than two
        # error bounds from the candidates before and after it (every point not a candidate
        # lies at least as far as the last): one exact distance per point, then.
        p = k - 1
        clear = torch.ones(len(a), dtype=torch.bool)
        if p > 0:
            clear &= v[:, p] - v[:, p - 1] > gap
        clear &= v[:, p + 1] - v[:, p] > gap if p + 1 < m else torch.tensor(m == available)
        doubtful |= ~clear
        idx = index[:, p]
        d = torch.cat([exact_sq(a.exact[r], other.exact[idx[r]]) for r in _tiles(len(a), tile)])
        out[k] = (d, idx.clone())
    rows = doubtful.nonzero().flatten()
    for part in rows.split(max(1, tile // 8)):
        d, i = _sorted_rows(a, other, part, values[part], index[part], max(ks), b is None)
        for k in ks:
            out[k][0][part], out[k][1][part] = d[:, k - 1], i[:, k - 1]
    return out


def _sorted_rows(
    a: Points,
    b: Points,
    rows: torch.Tensor,
    values: torch.Tensor,
    index: torch.Tensor,
    need: int,
    exclude_self: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """These points' candidates (float32 `values`, `index`: (R, m)) by exact distance,
    nearest first; where a point outside them could be nearer than the `need`-th (the last
    candidate's float32 distance, less the error bound, below it), the row is computed whole."""
    exact = exact_sq(a.exact[rows], b.exact[index])  # (R, m)
    order = exact.argsort(dim=1, stable=True)
    exact, index = exact.gather(1, order), index.gather(1, order)
    floor = values[:, -1].double() - _row_bound(a, b, rows)
    if index.shape[1] < len(b) - exclude_self:  # else every point is a candidate
        for j in (floor < exact[:, need - 1]).nonzero().flatten().tolist():
            exact[j], index[j] = _whole_row(a, b, int(rows[j]), index.shape[1], exclude_self)
    return exact, index


def _whole_row(a: Points, b: Points, r: int, k: int, exclude_self: bool) -> tuple:
    """One row's k nearest, every distance in float64 (where the candidates were in doubt)."""
    d = torch.cat([exact_sq(a.exact[r : r + 1], b.exact[None, c])[0] for c in _tiles(len(b), TILE)])
    if exclude_self:
        d[r] = float("inf")
    order = d.argsort(stable=True)[:k]
    return d[order], order


def radii_sq(x: Points, ks: tuple[int, ...], tile: int = TILE) -> dict[int, torch.Tensor]:
    """Each point's squared distance to its k-th nearest other point (N,), for each k."""
    return {k: d for k, (d, _) in kth_nearest(x, None, ks, tile).items()}


@dataclass
class Ball:
    """Balls around the points of a (`of_rows`) or of b (else), of squared radii `radius_sq`
    (N_a,) or (N_b,) float64."""

    radius_sq: torch.Tensor  # (N_a,) or (N_b,) float64
    of_rows: bool


def ball_pairs(
    a: Points, b: Points, balls: dict[str, Ball], tile: int = TILE
) -> Iterator[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """For each tile (rows of a, cols of b): per ball, the pairs inside it as indices (i of a,
    j of b), exact. One pass over the tile keeps the pairs that may lie inside a ball (within
    the error bound of its radius or nearer: few); of those, the ones within the bound of it
    are recomputed in float64."""
    _same_centre(a, b)
    groups = {side: {k: v for k, v in balls.items() if v.of_rows == side} for side in (True, False)}
    for rows in _tiles(len(a), tile):
        for cols in _tiles(len(b), tile):
            d = _fast_sq(a, rows, b, cols)  # (rows, cols)
            out: dict[str, Any] = {}
            for of_rows, group in groups.items():
                if group:
                    out |= _inside(a, rows, b, cols, d, group, of_rows)
            yield out


def _inside(
    a: Points, rows: slice, b: Points, cols: slice, d: torch.Tensor, group: dict, of_rows: bool
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The pairs of tile `d` (rows, cols) inside each ball of `group`: balls all around rows
    (`of_rows`) or all around cols."""
    owners = rows if of_rows else cols
    tol = _row_bound(a, b, rows) if of_rows else _row_bound(b, a, cols)  # (owners,)
    radii = torch.stack([ball.radius_sq[owners] for ball in group.values()])  # (balls, owners)
    reach = ((radii.max(0).values + tol) * (1 + 2.0**-20)).float()  # rounded up to float32
    near = d <= (reach[:, None] if of_rows else reach[None, :])  # every pair that may be in
    i, j = near.nonzero().unbind(1)  # (P,) each, within the tile
    dn = d[i, j].double()
    t = (a.sq[rows][i] + b.sq[cols][j]) * a.slack  # each pair's own bound
    out = {}
    for name, ball in group.items():
        r = ball.radius_sq[owners][i if of_rows else j]
        inside = dn + t <= r
        maybe = (~inside & (dn - t <= r)).nonzero().flatten()
        if len(maybe):
            ii, jj = i[maybe] + rows.start, j[maybe] + cols.start
            inside[maybe] = exact_sq(a.exact[ii], b.exact[jj]) <= r[maybe]
        out[name] = (i[inside] + rows.start, j[inside] + cols.start)
    return out
