"""The figures of the reports, drawn in one place for the HIL rig's (hil/report.py, hil/campaign.py)
and the ground's. A run's: battery state of charge, power in and out, temperatures, mode,
tokens/s, link up/down and bytes, and jobs, each a PNG over simulated time. A campaign's: the
pass rate of each criterion and histograms of J/token and of the deadline hit rate over its runs.

    figures = draw_all(series, out_dir)          # [(title, file name), ...] in report order
    figures = draw_campaign(campaign, out_dir)

series maps a column name to a list of numbers, one per sample, all the same length; the
columns used are SERIES_COLUMNS (a figure whose columns are all absent is left out, so a ground
report with no battery data draws no battery figure). Matplotlib runs headless (Agg).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import matplotlib

matplotlib.use("Agg")  # no display: reports are drawn by servers and CI
import matplotlib.pyplot as plt  # noqa: E402

Series = dict[str, Sequence[float]]
MODES = {0: "BOOT", 1: "SAFE", 2: "STANDBY", 3: "INFERENCE"}  # the dictionary's MODE enum
SERIES_COLUMNS = ("t_s", "soc", "floor_soc", "solar_w", "load_w", "compute_w", "board_c", "radiator_c",
                  "limit_c", "mode", "tokens_per_s", "contact", "up_bytes", "down_bytes", "submitted", "delivered")


def _hours(series: Series) -> list[float]:
    return [t / 3600.0 for t in series["t_s"]]


def _battery(ax: plt.Axes, series: Series) -> None:
    x = _hours(series)
    ax.plot(x, [100 * v for v in series["soc"]], label="state of charge")
    if "floor_soc" in series:
        ax.plot(x, [100 * v for v in series["floor_soc"]], "r--", label="floor")
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)


def _power(ax: plt.Axes, series: Series) -> None:
    x = _hours(series)
    for column, label in (("solar_w", "solar in"), ("load_w", "bus + compute out"), ("compute_w", "compute")):
        if column in series:
            ax.plot(x, series[column], label=label)
    ax.set_ylabel("W")


def _temperatures(ax: plt.Axes, series: Series) -> None:
    x = _hours(series)
    for column, label in (("board_c", "board"), ("radiator_c", "radiator")):
        if column in series:
            ax.plot(x, series[column], label=label)
    if "limit_c" in series:
        ax.plot(x, series["limit_c"], "r--", label="limit")
    ax.set_ylabel("°C")


def _mode(ax: plt.Axes, series: Series) -> None:
    ax.step(_hours(series), series["mode"], where="post")
    ax.set_yticks(list(MODES), list(MODES.values()))
    ax.set_ylim(-0.5, 3.5)


def _tokens(ax: plt.Axes, series: Series) -> None:
    ax.plot(_hours(series), series["tokens_per_s"])
    ax.set_ylabel("tokens per wall s")


def _link(ax: plt.Axes, series: Series) -> None:
    x = _hours(series)
    ax.fill_between(x, 0, [max(max(series.get("down_bytes", [1])), 1) * c for c in series["contact"]], step="post",
                    alpha=0.15, color="green", label="contact")
    for column, label in (("up_bytes", "uplink bytes"), ("down_bytes", "downlink bytes")):
        if column in series:
            ax.plot(x, series[column], label=label)
    ax.set_ylabel("bytes (cumulative)")


def _jobs(ax: plt.Axes, series: Series) -> None:
    x = _hours(series)
    for column, label in (("submitted", "submitted"), ("delivered", "delivered")):
        if column in series:
            ax.step(x, series[column], where="post", label=label)
    ax.set_ylabel("jobs (cumulative)")


# (title, file name, the columns it needs, the drawing)
FIGURES: tuple[tuple[str, str, tuple[str, ...], Callable[[plt.Axes, Series], None]], ...] = (
    ("Battery state of charge", "battery.png", ("soc",), _battery),
    ("Power in and out", "power.png", ("solar_w", "load_w"), _power),
    ("Temperatures", "temperatures.png", ("board_c",), _temperatures),
    ("Mode", "mode.png", ("mode",), _mode),
    ("Tokens per second", "tokens.png", ("tokens_per_s",), _tokens),
    ("Link: contact and bytes", "link.png", ("contact",), _link),
    ("Jobs", "jobs.png", ("submitted",), _jobs),
)


def draw_all(series: Series, out_dir: Path) -> list[tuple[str, str]]:
    """Every figure whose columns series holds, as PNGs in out_dir; [(title, file name)]."""
    lengths = {len(values) for values in series.values()}
    if "t_s" not in series or len(lengths) != 1:
        raise ValueError("series needs a t_s column and columns of one length")

    def over_time(ax: plt.Axes) -> None:
        ax.set_xlabel("simulated time, h")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize="small")

    return _save([(title, name, lambda ax, draw=draw: draw(ax, series), 2.6) for title, name, needs, draw in FIGURES
                  if all(column in series for column in needs)], out_dir, over_time)


# -- a campaign's figures (hil/campaign.py): distributions over its runs ---------------------------

def _histogram(key: str, xlabel: str) -> Callable[[plt.Axes, dict[str, Any]], None]:
    def draw(ax: plt.Axes, campaign: dict[str, Any]) -> None:
        values = campaign[key]["values"]
        # one bin per run up to 20: a small campaign's runs each stay visible
        ax.hist(values, bins=max(1, min(20, len(values))), color="tab:blue", edgecolor="white")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("runs")
    return draw


def _criteria(ax: plt.Axes, campaign: dict[str, Any]) -> None:
    names = [c["name"] for c in campaign["criteria"]]
    rates = [100 * c["pass_rate"] for c in campaign["criteria"]]
    colors = ["tab:green" if r == 100 else "tab:red" for r in rates]
    ax.barh(names, rates, color=colors)
    ax.invert_yaxis()  # the runner's order, top down
    ax.set_xlim(0, 100)
    ax.set_xlabel(f"% of {campaign['runs']} runs passed")


# (title, file name, whether the campaign has what it draws, the drawing, figure height in inches)
CAMPAIGN_FIGURES: tuple[tuple[str, str, Callable[[dict[str, Any]], bool],
                              Callable[[plt.Axes, dict[str, Any]], None], float], ...] = (
    ("Pass rate per criterion", "criteria.png", lambda c: bool(c["criteria"]), _criteria, 3.2),
    ("J/token over the runs", "joules_per_token.png", lambda c: bool(c["joules_per_token"]["values"]),
     _histogram("joules_per_token", "J per token"), 2.6),
    ("Deadline hit rate over the runs", "deadline_hit_rate.png", lambda c: bool(c["deadline_hit_rate"]["values"]),
     _histogram("deadline_hit_rate", "deadline hit rate"), 2.6),
)


def draw_campaign(campaign: dict[str, Any], out_dir: Path) -> list[tuple[str, str]]:
    """Every figure a campaign (campaign.json's content) has data for, as PNGs in out_dir;
    [(title, file name)]. A histogram with no value (no run delivered a token) is left out."""
    return _save([(title, name, lambda ax, draw=draw: draw(ax, campaign), height)
                  for title, name, has, draw, height in CAMPAIGN_FIGURES if has(campaign)], out_dir)


def _save(figures: list[tuple[str, str, Callable[[plt.Axes], None], float]], out_dir: Path,
          finish: Callable[[plt.Axes], None] = lambda ax: None) -> list[tuple[str, str]]:
    """Draw each (title, file name, drawing, height in inches) into its own PNG in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    drawn = []
    for title, name, draw, height in figures:
        fig, ax = plt.subplots(figsize=(8, height), dpi=90)
        try:
            draw(ax)
            ax.set_title(title)
            ax.grid(alpha=0.3)
            finish(ax)
            fig.tight_layout()
            fig.savefig(out_dir / name)
        finally:
            plt.close(fig)
        drawn.append((title, name))
    return drawn
