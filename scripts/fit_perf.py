"""Fit the performance model's per-generation efficiency constants on published throughput; write configs/perf/.

    python scripts/fit_perf.py results/reference/published_throughput.csv
    python scripts/fit_perf.py results/reference/published_throughput.csv --hold-out torchtitan

For each GPU generation (the catalogue's `perf` class: its arch, GeForce cards apart) with expressible rows (see
analysis/perf/reference.py), a coordinate search moves the six constants of `Efficiency` to minimise the mean
|log(predicted / published)| over those rows, then writes `configs/perf/<class>.yaml` with the fit's 10th-90th
percentile band and a header saying how it was fitted. Nothing is fitted per row, per model or per source.
`--hold-out SOURCE` fits without that source's rows and reports the error on them instead of writing anything: how
the model does on measurements it has not seen.
"""

import argparse
import statistics
from datetime import date
from pathlib import Path

from pretrain_bench.analysis.perf import efficiency, fit, reference
from pretrain_bench.config import CONFIG_DIR
from pretrain_bench.spec import gpus


def fit_class(rows: list[dict], perf: str) -> efficiency.Efficiency:
    def ratios(eff):
        done, _ = reference.check(rows, {perf: eff})
        return [c.predicted / c.published for c in done]

    best = fit.coordinate_search(ratios, efficiency.Efficiency(), efficiency.FITTED)
    low, high = fit.error_band(ratios(best))
    best = efficiency.with_values(best, {n: round(getattr(best, n), 4) for n in efficiency.FITTED})
    return efficiency.with_values(best, {"error_low": round(low, 3), "error_high": round(high, 3),
                                         "fitted": f"loss {fit.log_loss(ratios(best)):.4f}"})


def main(path: str, hold_out: str | None) -> None:
    checked, _ = reference.check(reference.read_rows(path))
    by_class: dict[str, list[reference.Checked]] = {}
    for c in checked:
        by_class.setdefault(gpus.gpu(c.gpu).perf, []).append(c)
    for perf, mine in sorted(by_class.items()):
        train = [c.row for c in mine if c.row["source_key"] != hold_out]
        test = [c.row for c in mine if c.row["source_key"] == hold_out]
        if hold_out:
            if test and train:
                done, _ = reference.check(test, {perf: fit_class(train, perf)})
                errors = [abs(c.error_pct) for c in done]
                print(f"{perf}: fitted on {len(train)} rows without {hold_out}; on its {len(test)} rows median "
                      f"|error| {statistics.median(errors):.1f} %, p90 {reference.p90(errors):.1f} %")
            continue
        best = fit_class(train, perf)
        how = (f"fitted by scripts/fit_perf.py on {date.today()} from {Path(path).name}: {len(train)} expressible "
               f"rows of {perf} GPUs, minimising mean |log(predicted/published)| ({best.fitted})")
        best = efficiency.with_values(best, {"fitted": how})
        target = CONFIG_DIR / "perf" / f"{perf}.yaml"
        efficiency.write(target, best, f"Efficiency constants of {perf} GPUs for the performance model.\n{how}")
        values = ", ".join(f"{n}={getattr(best, n)}" for n in efficiency.FITTED)
        print(f"{perf}: {len(train)} rows -> {target}: {values}, band {best.error_low}-{best.error_high}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("csv", nargs="?", default="results/reference/published_throughput.csv")
    p.add_argument("--hold-out", default=None, help="a source_key to leave out of the fit and test on")
    a = p.parse_args()
    main(a.csv, a.hold_out)
