"""Welch's test and intervals (dcutmix.report.significance) and their columns in dcutmix-report."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from test_report import write_run

from dcutmix.report import main
from dcutmix.report.significance import baseline_differences, t_quantile, t_two_sided_p, welch

# Welch's textbook example (Wikipedia, "Welch's t-test", example 1): two samples of 15 with
# unequal spread; published t = -2.46, df = 24.99 (rounded), two-sided p = 0.021.
SAMPLE_1 = [
    27.5,
    21.0,
    19.0,
    23.6,
    17.0,
    17.9,
    16.9,
    20.1,
    21.9,
    22.6,
    23.1,
    19.6,
    19.0,
    21.7,
    21.4,
]
SAMPLE_2 = [
    27.1,
    22.0,
    20.8,
    23.4,
    23.4,
    23.5,
    25.8,
    22.0,
    24.8,
    20.2,
    21.9,
    22.1,
    22.9,
    20.5,
    24.4,
]


def test_welch_matches_the_textbook_example() -> None:
    result = welch(SAMPLE_1, SAMPLE_2)
    assert result.delta == pytest.approx(20.82 - 22.98667, abs=1e-4)
    assert result.df == pytest.approx(24.99, abs=0.01)
    assert result.p_value == pytest.approx(0.021, abs=0.0005)
    # t = delta / se and the interval is delta +- t_0.975(df) se, so it gives back t = -2.46.
    se = (result.high - result.low) / 2 / t_quantile(0.975, result.df)
    assert result.delta / se == pytest.approx(-2.46, abs=0.005)
    assert result.excludes_zero and result.high < 0


def test_welch_agrees_with_scipy() -> None:
    # scipy is always there: scikit-learn, a dependency, requires it.
    from scipy import stats

    cases = [(SAMPLE_1, SAMPLE_2), ([8.0, 9.0, 8.4], [11.0, 12.0]), ([1.0, 2.0], [1.5, 1.6, 9.0])]
    for a, b in cases:
        ours = welch(a, b)
        theirs = stats.ttest_ind(a, b, equal_var=False)
        interval = theirs.confidence_interval(0.95)
        assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-9)
        assert ours.df == pytest.approx(theirs.df, rel=1e-12)
        assert (ours.low, ours.high) == pytest.approx((interval.low, interval.high), rel=1e-9)


@pytest.mark.parametrize(
    ("df", "quantile"),
    # Printed t tables, two-sided 95%.
    [(1, 12.706), (2, 4.303), (5, 2.571), (10, 2.228), (30, 2.042), (1e6, 1.960)],
)
def test_t_quantile_matches_printed_tables(df: float, quantile: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(quantile, abs=5e-4)
    assert t_quantile(0.025, df) == pytest.approx(-quantile, abs=5e-4)
    assert t_two_sided_p(t_quantile(0.975, df), df) == pytest.approx(0.05, abs=1e-9)


def test_welch_on_constant_samples_and_too_few_values() -> None:
    same = welch([1.0, 1.0], [1.0, 1.0])
    assert (same.delta, same.p_value, same.excludes_zero) == (0.0, 1.0, False)
    apart = welch([2.0, 2.0], [1.0, 1.0])
    assert (apart.low, apart.high, apart.p_value, apart.excludes_zero) == (1.0, 1.0, 0.0, True)
    with pytest.raises(ValueError, match="at least two"):
        welch([1.0], [1.0, 2.0])


def test_baseline_is_matched_on_the_other_settings() -> None:
    groups = [
        ("resnet", "cutmix", [10.0, 11.0, 12.0]),
        ("resnet", "dcutmix", [8.0, 9.0, 8.5]),
        ("tiny", "dcutmix", [8.0, 9.0]),  # no cutmix row for tiny
        ("wide", "cutmix", [10.0]),
        ("wide", "dcutmix", [8.0, 9.0]),  # the baseline has a single run
    ]
    differences = baseline_differences(groups, "cutmix")
    assert differences[0] is None
    assert differences[1] == welch([8.0, 9.0, 8.5], [10.0, 11.0, 12.0])
    assert differences[2:] == [None, None, None]


def _sweep(root: Path, name: str, dcutmix_errors: list[float]) -> Path:
    sweep = root / name
    for seed, err in enumerate([11.0, 12.0, 12.5], 1):
        write_run(
            sweep, f"cutmix-s{seed}", mode="cutmix", k=2, alpha=1.0, seed=seed, top1=(err, err)
        )
    for seed, err in enumerate(dcutmix_errors, 1):
        write_run(sweep, f"dcutmix-s{seed}", seed=seed, top1=(err, err))
    write_run(sweep, "mixup-s1", mode="mixup", k=2, alpha=1.0, top1=(9.0, 9.0))
    return sweep


def test_report_gives_the_difference_from_cutmix_in_csv_and_table(tmp_path, capsys) -> None:
    sweep = _sweep(tmp_path, "sweep", [8.0, 8.5, 9.0])
    assert main([str(sweep), "--no-plots"]) == 0
    table = capsys.readouterr().out
    with (sweep / "results.csv").open(newline="") as handle:
        lines = {line["mode"]: line for line in csv.DictReader(handle)}
    expected = welch([8.0, 8.5, 9.0], [11.0, 12.0, 12.5])
    dcutmix = lines["dcutmix"]
    assert float(dcutmix["delta_vs_baseline"]) == pytest.approx(expected.delta, rel=1e-5)
    assert float(dcutmix["delta_ci95_low"]) == pytest.approx(expected.low, rel=1e-5)
    assert float(dcutmix["delta_ci95_high"]) == pytest.approx(expected.high, rel=1e-5)
    assert float(dcutmix["p_value"]) == pytest.approx(expected.p_value, rel=1e-5)
    assert expected.high < 0
    # The baseline itself and a one-seed row get empty cells.
    for mode in ("cutmix", "mixup"):
        assert [lines[mode][c] for c in ("delta_vs_baseline", "p_value")] == ["", ""]
    assert "Δ vs cutmix (95% CI)" in table
    dcutmix_line = next(line for line in table.splitlines() if line.startswith("| dcutmix"))
    assert f"{expected.delta:+.2f} [{expected.low:+.2f}, {expected.high:+.2f}] *" in dcutmix_line


def test_an_interval_across_zero_is_not_marked(tmp_path, capsys) -> None:
    sweep = _sweep(tmp_path, "sweep", [9.0, 12.0, 14.0])
    assert main([str(sweep), "--no-plots"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("| dcutmix"))
    difference = welch([9.0, 12.0, 14.0], [11.0, 12.0, 12.5])
    assert difference.low < 0 < difference.high
    assert "[" in line and "*" not in line


def test_baseline_defaults_to_none_and_can_be_chosen(tmp_path, capsys) -> None:
    sweep = _sweep(tmp_path, "sweep", [8.0, 8.5, 9.0])
    for seed, err in enumerate([14.0, 15.0], 1):
        write_run(
            sweep, f"none-s{seed}", mode="none", k=None, alpha=None, seed=seed, top1=(err, err)
        )
    assert main([str(sweep), "--no-plots"]) == 0
    assert "Δ vs none (95% CI)" in capsys.readouterr().out
    assert main([str(sweep), "--no-plots", "--baseline", "mixup"]) == 0
    # mixup has a single run, so no row can be compared with it and the column is left out.
    assert "Δ vs" not in capsys.readouterr().out


def test_bad_baseline_and_compare_arguments_are_one_line_exit_2(tmp_path, capsys) -> None:
    sweep = _sweep(tmp_path, "sweep", [8.0, 8.5, 9.0])
    assert main([str(sweep), "--baseline", "cutmixx"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "dcutmix-report: --baseline: no mixing mode 'cutmixx'; choose one of none"
    )
    assert "\n" not in err
    assert main([str(sweep), "--compare"]) == 2
    assert "--compare: give exactly two sweep folders" in capsys.readouterr().err
    assert not (sweep / "report.md").exists()


def test_compare_puts_two_sweeps_side_by_side(tmp_path, capsys) -> None:
    before = _sweep(tmp_path, "before", [8.0, 8.5, 9.0])
    after = _sweep(tmp_path, "after", [12.0, 12.5, 13.0])
    write_run(after, "dmixup-s1", mode="dmixup", k=3, alpha=0.3, top1=(9.5, 9.5))
    out = tmp_path / "out"
    assert main([str(before), str(after), "--compare", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert (out / "compare.md").read_text() == text
    header = next(line for line in text.splitlines() if line.startswith("| mode"))
    assert [c.strip() for c in header.strip("|").split("|")][3:] == [
        "before: n", "before: top-1 err last (%)", "before: Δ (95% CI)",
        "after: n", "after: top-1 err last (%)", "after: Δ (95% CI)",
    ]  # fmt: skip
    lines = text.splitlines()
    body = lines[lines.index(header) + 2 :]
    rows = {line.split("|")[1].strip(): line for line in body}
    assert list(rows) == ["mixup", "cutmix", "dmixup", "dcutmix"]
    cells = [c.strip() for c in rows["dcutmix"].strip("|").split("|")]
    assert cells[3:5] == ["3", "8.50 ± 0.50"] and cells[6:8] == ["3", "12.50 ± 0.50"]
    assert cells[5].endswith("*") and not cells[8].endswith("*")
    # dmixup ran only in the second sweep.
    assert [c.strip() for c in rows["dmixup"].strip("|").split("|")][3:5] == ["0", "—"]
    assert not math.isnan(float(cells[5].split()[0]))
