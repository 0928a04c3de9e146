"""One compiled program for every covariance type of a model search on small data.

A search over K and the four covariance types would compile one program per type. On small data
compiling is most of a cold search's time and running is little, so :func:`merge_types` turns the
plans of several types (:func:`bayesgmm.driver._plan`, one job each) into one job of full
covariances, each candidate's own structure a traced index (``FitSettings.kinds``, see
:func:`bayesgmm.mstep.mixed_covariances`), and :func:`split_types` hands each plan its candidates
back in its own type's shapes. Maximum likelihood only: the priors' updates differ by type.

The loop's checks then see full matrices: a spherical variance is compared with every feature's
singularity threshold (its own program compares it with their mean), and a tied covariance's
cancellation floor is the largest of the components' (its own program weighs them by count).
The threshold is (100 eps)^2 of a feature's variance and the floor 100 eps times a squared
shift of a mean, both far below the variances fits keep; results equal the per-type programs'
to round-off (tests/test_restarts.py).
"""

from __future__ import annotations

import jax
import numpy as np

from . import em
from .params import COVARIANCE_TYPES


def merge_types(planned):
    """``(Xt, w, [job])``: the single-job plans of several covariance types as one full job.

    None unless every plan is one job of all its candidates (small data) of a
    maximum-likelihood fit without given starting parameters, the plans differ only in their
    type and candidates, and there are several types. Each candidate's structure goes in
    ``FitSettings.kinds``.
    """
    if len(planned) < 2 or any(len(p[2]) != 1 for p in planned):
        return None
    jobs = [p[2][0] for p in planned]
    statics = [job[2] for job in jobs]
    settings = [job[1] for job in jobs]
    if any(s.prior is not None or s.init_params is not None for s in settings):
        return None
    common = {st._replace(covariance_type="", n_candidates=0) for st in statics}
    if len(common) != 1 or len({st.covariance_type for st in statics}) != len(statics):
        return None
    kinds = np.concatenate(
        [np.full(len(s.n_active), COVARIANCE_TYPES.index(st.covariance_type), np.int32)
         for s, st in zip(settings, statics, strict=True)]
    )  # fmt: skip
    members = [c for job in jobs for c in job[0]]
    merged_settings = settings[0]._replace(
        n_active=np.concatenate([s.n_active for s in settings]), kinds=kinds
    )
    static = statics[0]._replace(covariance_type="full", n_candidates=len(kinds))
    return planned[0][0], planned[0][1], [(members, merged_settings, static)]


def split_types(planned, out: em.FitOutput) -> list[em.FitOutput]:
    """The merged job's output (full matrices) back as one output per plan, in its own type."""
    outs, start = [], 0
    for p in planned:
        ((_, settings, static),) = p[2]
        n = len(settings.n_active)
        part = jax.tree.map(lambda a, lo=start, hi=start + n: a[lo:hi], out)
        start += n
        params = part.params
        cov, pc = np.asarray(params.covariances), np.asarray(params.precisions_chol)
        if static.covariance_type == "tied":
            cov, pc = cov[..., 0, :, :], pc[..., 0, :, :]
        elif static.covariance_type == "diag":
            cov, pc = np.diagonal(cov, 0, -2, -1), np.diagonal(pc, 0, -2, -1)
        elif static.covariance_type == "spherical":
            cov, pc = cov[..., 0, 0], pc[..., 0, 0]
        outs.append(part._replace(params=params._replace(covariances=cov, precisions_chol=pc)))
    return outs
