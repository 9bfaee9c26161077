"""Aggregate scores across seeds as Agarwal et al. (2021, "Deep RL at the Edge of the Statistical
Precipice") recommend: the interquartile mean (IQM) and 95% stratified bootstrap confidence
intervals, here for the mean and the IQM at once.

Their library, rliable, is not used: rliable 1.2 imports `arch`, whose newest release (7.2) fails
to import under pandas 3, which pip picks. The same computation is scipy's: `stats.trim_mean`
with a quarter cut from each end is rliable's `aggregate_iqm`, and `stats.bootstrap` with one
sample per task, resampled independently (`paired=False`), with percentile intervals, is
rliable's `StratifiedBootstrap` over runs (`get_interval_estimates`' default method).
tests/test_report_and_export.py checks both against rliable's own numbers on a fixed array.

`interval` is the same bootstrap for any statistic of independent samples: the claims' differences
between two arms (wsrl_mjx/claims.py). What this module does not do: choose what a seed's score
is (the report does) or plot.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 10_000


def iqm(scores, axis=None) -> np.ndarray:
  """Interquartile mean: the mean of the middle half (scipy's 25% trimmed mean; with n values,
  int(n / 4) are dropped from each end). `axis=None` pools every value, as rliable does."""
  return stats.trim_mean(scores, proportiontocut=0.25, axis=axis)


@dataclasses.dataclass(frozen=True)
class Estimate:
  """Point estimates and 95% interval ends of the mean and the IQM of one set of scores."""
  seeds: int
  mean: float
  iqm: float
  mean_low: float
  mean_high: float
  iqm_low: float
  iqm_high: float


def _mean_and_iqm(*samples, axis=-1):
  """Statistic for `stats.bootstrap`: the tasks' samples pooled -> [2, ...] (mean, IQM)."""
  pooled = np.concatenate(samples, axis=axis)
  return np.stack([np.mean(pooled, axis=axis), iqm(pooled, axis=axis)])


def estimate(scores_per_task, resamples: int = DEFAULT_RESAMPLES,
             seed: int = 0) -> Estimate:
  """Mean and IQM of the pooled scores with 95% stratified bootstrap intervals.

  `scores_per_task`: one 1-D array of per-seed scores per task (the strata; seeds are resampled
  within each task), or one 1-D array for a single task. Non-finite scores must be removed by the
  caller. With fewer than two scores, or identical ones, nothing varies: the interval is the
  point. Raises ValueError on an empty input.
  """
  if isinstance(scores_per_task, np.ndarray) or np.ndim(scores_per_task[0]) == 0:
    scores_per_task = [scores_per_task]
  samples = [np.asarray(s, np.float64).ravel() for s in scores_per_task]
  samples = [s for s in samples if s.size]
  if not samples:
    raise ValueError("no scores to aggregate")
  point, low, high = _percentile_bootstrap(samples, _mean_and_iqm, resamples, seed)
  return Estimate(seeds=sum(s.size for s in samples), mean=float(point[0]), iqm=float(point[1]),
                  mean_low=float(low[0]), mean_high=float(high[0]), iqm_low=float(low[1]),
                  iqm_high=float(high[1]))


def interval(samples: Sequence[np.ndarray], statistic: Callable, resamples: int = DEFAULT_RESAMPLES,
             seed: int = 0) -> tuple[float, float, float]:
  """(point, low, high): `statistic(*samples, axis=-1)` and its 95% percentile bootstrap interval,
  each 1-D sample resampled on its own (unpaired: e.g. the seeds of two arms, which are
  independent). With no sample that varies, the interval is the point. `statistic` returns one
  number per resample (wsrl_mjx/claims.py's differences of means and IQMs)."""
  point, low, high = _percentile_bootstrap([np.asarray(x, np.float64) for x in samples],
                                           statistic, resamples, seed)
  return float(point), float(low), float(high)


def _percentile_bootstrap(samples, statistic, resamples: int, seed: int):
  """The one bootstrap `estimate` and `interval` share: scipy's, unpaired, percentile."""
  point = statistic(*samples, axis=-1)
  if all(x.size < 2 or np.all(x == x[0]) for x in samples):
    return point, point, point
  result = stats.bootstrap(samples, statistic, n_resamples=resamples,
                           confidence_level=CONFIDENCE, method="percentile", paired=False,
                           vectorized=True, axis=-1, rng=np.random.default_rng(seed))
  return point, result.confidence_interval.low, result.confidence_interval.high
