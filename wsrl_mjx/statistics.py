"""Aggregate scores across seeds as Agarwal et al. (2021, "Deep RL at the Edge of the Statistical
Precipice") recommend: the interquartile mean (IQM) and 95% stratified bootstrap confidence
intervals, here for the mean and the IQM at once.

Their library, rliable, is not used: rliable 1.2 imports `arch`, whose newest release (7.2) fails
to import under pandas 3, which pip picks. The same computation is scipy's: `stats.trim_mean`
with a quarter cut from each end is rliable's `aggregate_iqm`, and `stats.bootstrap` with one
sample per task, resampled independently (`paired=False`), with percentile intervals, is
rliable's `StratifiedBootstrap` over runs (`get_interval_estimates`' default method).
tests/test_report.py checks both against rliable's own numbers on a fixed array.

What this module does not do: choose what a seed's score is (the report does) or plot.
"""

from __future__ import annotations

import dataclasses

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
  point = _mean_and_iqm(*samples)
  if all(s.size < 2 or np.all(s == s[0]) for s in samples):
    low = high = point
  else:
    interval = stats.bootstrap(
        samples, _mean_and_iqm, n_resamples=resamples, confidence_level=CONFIDENCE,
        method="percentile", paired=False, vectorized=True, axis=-1,
        rng=np.random.default_rng(seed)).confidence_interval
    low, high = interval.low, interval.high
  return Estimate(seeds=sum(s.size for s in samples), mean=float(point[0]), iqm=float(point[1]),
                  mean_low=float(low[0]), mean_high=float(high[0]), iqm_low=float(low[1]),
                  iqm_high=float(high[1]))
