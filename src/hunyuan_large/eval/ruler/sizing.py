"""Fitting a haystack to a token budget: the largest count whose prompt fits, found by bisection."""

from __future__ import annotations

from collections.abc import Callable


def fit(tokens: Callable[[int], int], budget: int, smallest: int = 1) -> int:
    """The largest n >= smallest with tokens(n) <= budget, for tokens() growing with n and
    tokens(smallest) <= budget (the caller checks, to say what is too small).

    Doubling finds a count over budget, bisection the boundary; only counts that were measured to
    fit are returned, so the budget holds even where tokens() is not strictly monotone."""
    lo, hi = smallest, smallest * 2
    while tokens(hi) <= budget:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # tokens(lo) fits, tokens(hi) does not
        mid = (lo + hi) // 2
        if tokens(mid) <= budget:
            lo = mid
        else:
            hi = mid
    return lo
