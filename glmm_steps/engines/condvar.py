"""Conditional variances of the random effects, in time linear in the number of levels.

With ``A = Lambda' Z' W Z Lambda + I`` the precision of the spherical random effects
(lme4's ``L L'``), the conditional covariance of ``b = Lambda u`` is
``scale * Lambda A^-1 Lambda'``, and a random effect's ``cond_sd`` is the root of one
diagonal entry. mixedlm 1.3.0 gets them by solving ``A`` for every column of
``Lambda'``: O(q^2) work and memory traffic, 451 s for the 100,200 levels of a
million-row hospital/patient fit that itself takes a few seconds.

Here the term with the most levels (patients) comes first. Every observation
belongs to one level of a factor, so that term's block ``A11`` of ``A`` is block
diagonal (one small ``k x k`` block per level) and inverts block by block. The
other terms (hospitals, a crossed factor) form a dense Schur complement
``S = A22 - A21 A11^-1 A12`` of their own, small size, and

    (A^-1)_22 = S^-1,    (A^-1)_11 = A11^-1 + V S^-1 V',   V = A11^-1 A12,

where ``V`` keeps the sparsity of ``A12`` (a patient touches one hospital). The
cost is O(nnz(A12) * q2), with q2 the size of the other terms.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg, sparse

# The Schur complement is dense: above this many columns outside the largest term
# (two large crossed factors), the caller falls back to the engine's own method.
MAX_SCHUR = 5000
_BATCH = 4_000_000  # dense entries per batch of V S^-1: 32 MB


def _diagonal_blocks(matrix: sparse.spmatrix, n: int, k: int) -> np.ndarray | None:
    """The ``n`` diagonal ``k x k`` blocks of ``matrix``, or None if it has entries off them."""
    coo = sparse.coo_matrix(matrix)
    coo.sum_duplicates()
    row, col = coo.row, coo.col
    if not np.array_equal(row // k, col // k):
        return None
    blocks = np.zeros((n, k, k))
    blocks[row // k, row % k, col % k] = coo.data
    return blocks


def _rowwise_block_products(left: sparse.csr_matrix, right: np.ndarray, k: int) -> np.ndarray:
    """For consecutive groups of ``k`` rows, the ``k x k`` blocks of ``left @ right.T``
    restricted to the group (``right`` dense, same shape as ``left``)."""
    n = left.shape[0] // k
    out = np.empty((n, k, k))
    for i in range(k):
        for j in range(k):
            out[:, i, j] = np.asarray(left[i::k].multiply(right[j::k]).sum(axis=1)).ravel()
    return out


def conditional_variances(
    precision: sparse.spmatrix, lam: sparse.spmatrix, terms: list[tuple[int, int]], scale: float = 1.0
) -> list[np.ndarray] | None:
    """Diagonal of ``scale * lam @ inv(precision) @ lam.T``, per random-effect term.

    ``terms`` lists (levels, terms per level) for each block of the random effects in
    their order in ``precision`` (level-major within a block, as lme4 orders ``u``);
    ``lam`` is block diagonal with the same ``k x k`` block per level. Returns one
    (levels, k) array per term of conditional variances, or None when ``precision``
    lacks the structure this method needs (the caller then asks the engine)."""
    blocks = conditional_covariances(precision, lam, terms, scale)
    return None if blocks is None else [np.einsum("lii->li", b) for b in blocks]


def conditional_covariances(
    precision: sparse.spmatrix, lam: sparse.spmatrix, terms: list[tuple[int, int]], scale: float = 1.0
) -> list[np.ndarray] | None:
    """The diagonal ``k x k`` blocks of ``scale * lam @ inv(precision) @ lam.T``: each
    level's conditional covariance of its random effects (lme4's ``postVar``), as one
    (levels, k, k) array per term; arguments and None as :func:`conditional_variances`."""
    sizes = [n * k for n, k in terms]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    big = int(np.argmax(sizes))
    n1, k1 = terms[big]
    inner = np.arange(starts[big], starts[big + 1])
    outer = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in range(len(terms)) if i != big] or [[]])
    outer = outer.astype(int)
    if len(outer) > MAX_SCHUR:
        return None
    A = sparse.csc_matrix(precision)
    blocks = _diagonal_blocks(A[inner][:, inner], n1, k1)
    if blocks is None:
        return None
    inverse = {big: np.linalg.inv(blocks)}
    if len(outer):
        A12 = A[inner][:, outer].tocsr()
        block_inverse = sparse.bsr_matrix(
            (inverse[big], np.arange(n1), np.arange(n1 + 1)), shape=(len(inner), len(inner))
        )
        V = (block_inverse @ A12).tocsr()
        schur = A[outer][:, outer].toarray() - (A12.T @ V).toarray()
        S_inv = linalg.cho_solve(linalg.cho_factor(schur, lower=True), np.eye(len(outer)))
        levels_per_batch = max(1, _BATCH // (k1 * len(outer)))
        for first in range(0, n1, levels_per_batch):
            rows = slice(first * k1, min(first + levels_per_batch, n1) * k1)
            V_rows = V[rows]
            inverse[big][first : first + levels_per_batch] += _rowwise_block_products(V_rows, V_rows @ S_inv, k1)
        at = 0
        for i, (n, k) in enumerate(terms):
            if i != big:
                idx = at + np.arange(n * k).reshape(n, k)
                inverse[i] = S_inv[idx[:, :, None], idx[:, None, :]]
                at += n * k
    L = sparse.csc_matrix(lam)
    out = []
    for i, (n, k) in enumerate(terms):
        lam_blocks = _diagonal_blocks(L[starts[i] : starts[i + 1]][:, starts[i] : starts[i + 1]], n, k)
        if lam_blocks is None:
            return None
        out.append(scale * np.einsum("lij,ljm,lkm->lik", lam_blocks, inverse[i], lam_blocks))
    return out
