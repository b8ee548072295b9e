"""The transfers-per-day chart's geometry."""

from __future__ import annotations

from datetime import date, timedelta

from broker.flows.activity import DailySeries
from broker.web.pages.chart import PALETTE, stacked_bars

DAYS = [date(2026, 1, 1) + timedelta(days=i) for i in range(10)]


def series(**counts: list[int]) -> DailySeries:
    return DailySeries(days=DAYS, counts=counts)


def test_segments_stack_and_scale() -> None:
    chart = stacked_bars(
        series(a=[0] * 9 + [3], b=[0] * 9 + [1]), {"a": "Alpha", "b": "Beta"}, height=236
    )
    bottom = chart.top + chart.plot_height
    alpha, beta = chart.bars
    assert alpha.title == "Alpha: 3 on 2026-01-10" and beta.title == "Beta: 1 on 2026-01-10"
    assert alpha.y + alpha.height == bottom  # the first recipient sits on the axis
    assert abs(beta.y + beta.height - alpha.y) < 0.01  # the next one on top of it
    assert abs(alpha.height - 3 * beta.height) < 0.01  # heights proportional to counts
    assert (alpha.color, beta.color) == PALETTE[:2]
    assert chart.legend == [("Alpha", PALETTE[0], 3), ("Beta", PALETTE[1], 1)]
    assert chart.total == 4
    # the y axis tops out at a round number at or above the tallest day
    assert [t.label for t in chart.y_ticks] == ["0", "1", "2", "3", "4", "5"]


def test_bars_fit_the_plot_and_ticks_stay_readable() -> None:
    long = [date(2026, 1, 1) + timedelta(days=i) for i in range(90)]
    chart = stacked_bars(DailySeries(days=long, counts={"a": list(range(90))}), {})
    assert len(chart.bars) == 89  # no bar for a day with nothing
    assert all(
        chart.left <= b.x and b.x + b.width <= chart.left + chart.plot_width for b in chart.bars
    )
    assert all(b.y >= chart.top - 0.01 for b in chart.bars)
    assert len(chart.x_ticks) <= 9
    assert chart.x_ticks[-1].label == "31 Mar"  # the last day is always labelled
    assert chart.y_ticks[-1].label == "100"


def test_empty_series() -> None:
    chart = stacked_bars(series(), {})
    assert chart.bars == [] and chart.total == 0 and chart.legend == []
