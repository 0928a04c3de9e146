"""Warning classes of the package (no dependencies: importable from every layer)."""

from __future__ import annotations

__all__ = ["MultimodalPosteriorWarning"]


class MultimodalPosteriorWarning(UserWarning):
    """The posterior has separated modes, or chains that disagree beyond a label permutation.

    Raised by ``Mixture.sample_posterior``. Per-component summaries then mix components that are
    not the same thing in every draw; the message names the modes found and their estimated
    masses, which are also in ``post.posterior.attrs`` (``mode_masses``, ``mode_summary``).
    """
