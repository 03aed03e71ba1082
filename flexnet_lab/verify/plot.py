"""timeline.png: throughput of every flow over time, each change marked, loss marked."""
from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def plot_timeline(report: dict, path: str) -> str:
    fig, ax = plt.subplots(figsize=(11, 5))
    for flow in report["flows"]:
        # iperf3's last interval can be a few ms long: its rate is noise, leave it out
        ivs = [i for i in flow["intervals"] if i[1] - i[0] >= 0.05]
        if not ivs:
            continue
        xs = [(i[0] + i[1]) / 2 for i in ivs]
        ax.plot(xs, [i[2] for i in ivs], label=f"{flow['name']} ({flow['proto']} "
                f"{flow['src']}→{flow['dst']})", linewidth=1.2)
        lossy = [(x, i[2]) for x, i in zip(xs, ivs) if i[4] > 0]
        if lossy:
            ax.scatter([p[0] for p in lossy], [p[1] for p in lossy], color="red", zorder=5,
                       marker="x", s=50, label=f"{flow['name']}: loss")
    top = ax.get_ylim()[1] or 1.0
    for n, ch in enumerate(report["changes"]):
        ax.axvline(ch["at_s"], color="grey", linestyle="--", linewidth=0.8)
        ax.text(ch["at_s"], top * (0.97 - 0.06 * (n % 6)), f" {n}: {ch['description']}",
                fontsize=7, rotation=0, va="top")
    lo, hi = report.get("baseline_window_s", [0, 0])
    ax.axvspan(lo, hi, color="green", alpha=0.08, label="baseline window")
    ax.set_xlabel("seconds since traffic start")
    ax.set_ylabel("Mbit/s (per 0.1 s)")
    verdict = "PASSED" if report.get("passed") else "FAILED"
    ax.set_title(f"scenario {report['scenario']} on {report['topology']}: {verdict}")
    ax.legend(loc="lower left", fontsize=7)
    with warnings.catch_warnings():
        # a crowded plot may not fit tight_layout's margins; the file is written anyway
        # and the user's terminal is no place for matplotlib's remark about it
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
