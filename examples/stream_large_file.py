"""Fit a file larger than the memory the fit may use: EM streamed from a ``.npy`` memory map.

Writes ``n_rows`` rows of a three-component mixture to a float32 ``.npy`` file (the size cap of
this example: 10^8 x 16 rows make 6.4 GB), then fits it with a memory budget far below the
file's size: ``chunk_size`` is chosen so that the few chunks a pass holds (see
:mod:`bayesgmm.sources`) fit the budget, and every EM iteration reads the file once, chunk by
chunk, while a background thread reads ahead. The fit equals the in-memory one up to rounding.

    python examples/stream_large_file.py --rows 20000000 --memory-mib 64 --out figures/
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import bayesgmm as bg
from bayesgmm.numerics import float_dtype
from bayesgmm.plotting import plot_history, plot_mixture, save_figures


def write_file(path: Path, n_rows: int, seed: int = 0) -> None:
    """Rows of three Gaussians in two dimensions, written block by block (bounded memory)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [4.0, 1.0], [1.0, 5.0]])
    out = np.lib.format.open_memmap(path, "w+", np.float32, (n_rows, 2))
    for a in range(0, n_rows, 1_000_000):
        b = min(a + 1_000_000, n_rows)
        out[a:b] = centres[rng.integers(0, 3, b - a)] + rng.standard_normal((b - a, 2))
    out.flush()


def rss_anon_mib() -> float | None:
    """Resident anonymous memory of this process (Linux), the part a fit adds to."""
    try:
        with open("/proc/self/status") as f:
            line = next(x for x in f if x.startswith("RssAnon:"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return None


def main(
    out_dir: str | Path | None = None,
    n_rows: int = 300_000,
    memory_mib: float = 2.0,
    data_dir: str | Path | None = None,
    show: bool = False,
):
    """Write the file, fit it in chunks within ``memory_mib``, plot; returns the FitResult."""
    folder = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="bayesgmm-"))
    path = folder / f"mixture_{n_rows}.npy"
    write_file(path, n_rows)
    X = np.load(path, mmap_mode="r")  # nothing is read yet
    file_mib = path.stat().st_size / 2**20
    # A pass holds about four chunks of rows (and their weights) in the working dtype.
    row_bytes = (X.shape[1] + 1) * np.dtype(float_dtype()).itemsize
    chunk = max(int(memory_mib * 2**20 / (4 * row_bytes)), 1000)
    print(f"file: {file_mib:.1f} MiB, budget {memory_mib} MiB -> chunks of {chunk:,} rows")

    before = rss_anon_mib()
    t = time.perf_counter()
    res = bg.Mixture(3, prior="default").fit_em(X, chunk_size=chunk, max_iter=200)
    seconds = time.perf_counter() - t
    print(res)
    print(f"{seconds:.1f} s, {res.n_iter} iterations: {res.n_iter * n_rows / seconds:,.0f} rows/s")
    if before is not None:
        print(f"resident anonymous memory: {before:.0f} MiB before, {rss_anon_mib():.0f} after")
    print("weights:", np.round(np.asarray(res.weights), 3))
    print("means:\n", np.round(np.asarray(res.means), 2))
    print(f"mean log-likelihood (scored in chunks): {res.score(X):.4f}")

    sample = np.asarray(X[:: max(n_rows // 3000, 1)], np.float64)  # a few rows to draw
    figures = {
        "stream_mixture.png": plot_mixture(res, sample, feature_names=["x1", "x2"]),
        "stream_history.png": plot_history(res),
    }
    if out_dir is not None:
        print("wrote", ", ".join(save_figures(figures, out_dir)), "to", out_dir)
    elif show:
        import matplotlib.pyplot as plt

        plt.show()
    return res


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows in the file")
    parser.add_argument("--memory-mib", type=float, default=16.0, help="memory budget of a pass")
    parser.add_argument("--data-dir", help="where to write the file (default: a temp folder)")
    parser.add_argument("--out", help="folder for the figures (default: show them)")
    args = parser.parse_args()
    main(args.out, args.rows, args.memory_mib, args.data_dir, show=args.out is None)
