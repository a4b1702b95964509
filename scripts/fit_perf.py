"""Fit the performance model's per-generation efficiency constants on published throughput; write configs/perf/.

    python scripts/fit_perf.py results/reference/published_throughput.csv

For each GPU generation (the catalogue's `perf` class: its arch, GeForce cards apart) with expressible rows (see
analysis/perf/reference.py), a coordinate search moves the six constants of `Efficiency` to minimise the mean
|log(predicted / published)| over those rows, then writes `configs/perf/<class>.yaml` with the fit's 10th-90th
percentile band and a header saying how it was fitted. Nothing is fitted per row, per model or per source.
"""

import sys
from datetime import date
from pathlib import Path

from pretrain_bench.analysis.perf import efficiency, fit, reference
from pretrain_bench.config import CONFIG_DIR
from pretrain_bench.spec import gpus


def main(path: str) -> None:
    rows = reference.read_rows(path)
    checked, _ = reference.check(rows)
    for arch in sorted({gpus.gpu(c.gpu).perf for c in checked}):
        mine = [c.row for c in checked if gpus.gpu(c.gpu).perf == arch]

        def ratios(eff, mine=mine, arch=arch):
            done, _ = reference.check(mine, {arch: eff})
            return [c.predicted / c.published for c in done]

        start = efficiency.Efficiency()
        best = fit.coordinate_search(ratios, start, efficiency.FITTED)
        low, high = fit.error_band(ratios(best))
        how = (f"fitted by scripts/fit_perf.py on {date.today()} from {Path(path).name}: {len(mine)} expressible rows "
               f"of {arch} GPUs, minimising mean |log(predicted/published)| (loss {fit.log_loss(ratios(best)):.4f})")
        best = efficiency.with_values(best, {"error_low": round(low, 3), "error_high": round(high, 3),
                                             "fitted": how})
        best = efficiency.with_values(best, {n: round(getattr(best, n), 4) for n in efficiency.FITTED})
        target = CONFIG_DIR / "perf" / f"{arch}.yaml"
        efficiency.write(target, best, f"Efficiency constants of {arch} GPUs for the performance model.\n{how}")
        values = ", ".join(f"{n}={getattr(best, n)}" for n in efficiency.FITTED)
        print(f"{arch}: {len(mine)} rows -> {target}: {values}, band {low:.3f}-{high:.3f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/reference/published_throughput.csv")
