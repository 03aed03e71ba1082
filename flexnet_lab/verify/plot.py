"""timeline.png: throughput of every flow over time, each change marked with the
consistency level it achieved, loss marked; below, each change's phases in milliseconds
(two-phase: prepare, install, flip, drain, retire; per-device: prepare, commit) with the
oracle's mixed probes. A grouped change (several parts, one transaction) is one mark and
one bar, labelled with its parts."""
from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

# (phase key in a change record's `phases`, label, colour)
PHASES = (("install_ms", "install", "tab:blue"), ("flip_ms", "flip", "tab:red"),
          ("drain_ms", "drain", "tab:orange"), ("retire_ms", "retire", "tab:green"))
LEVEL_STYLE = {"per-packet": ("tab:blue", "-"), "per-device": ("grey", "--"),
               "per-flow": ("tab:purple", "-"),
               "fallback": ("tab:orange", "-.")}


def _level(ch: dict) -> str:
    """per-packet, per-device, or fallback (per-packet asked, per-device achieved)."""
    achieved = ch.get("consistency", "per-device")
    if ch.get("requested") == "per-packet" and achieved != "per-packet":
        return "fallback"
    return achieved


def _level_text(ch: dict) -> str:
    level = _level(ch)
    return "per-device (per-packet asked)" if level == "fallback" else level


def _what(ch: dict) -> str:
    """A change's description; a grouped change is one change of N parts."""
    parts = ch.get("parts") or []
    if len(parts) < 2:
        return ch["description"]
    devices = ch.get("device", "").replace(",", ", ")   # report.json has each part
    return f"one change, {len(parts)} parts on " + (devices if len(devices) <= 40 else
                                                    devices[:37] + "...")


def _label(n: int, ch: dict) -> str:
    level = _level(ch)
    text = f" {n}: {_what(ch)} [{ch.get('consistency', 'per-device')}"
    text += " (per-packet asked)]" if level == "fallback" else "]"
    o = ch.get("oracle")
    if o:
        text += f" mixed {o['mixed']}/{o['probes']}"
    return text


def plot_timeline(report: dict, path: str) -> str:
    changes = report["changes"]
    if changes:
        fig, (ax, bx) = plt.subplots(2, 1, figsize=(11, 5 + 0.35 * len(changes) + 1.2),
                                     gridspec_kw={"height_ratios": [5, 1.2 + 0.35 * len(changes)]})
    else:
        fig, ax = plt.subplots(figsize=(11, 5))
        bx = None
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
    seen = set()
    for n, ch in enumerate(changes):
        level = _level(ch)
        colour, style = LEVEL_STYLE[level]
        ax.axvline(ch["at_s"], color=colour, linestyle=style, linewidth=0.9,
                   label=None if level in seen else f"change, {_level_text(ch)}")
        seen.add(level)
        right = ch["at_s"] > 0.6 * max(report.get("duration_s") or 1, ch["at_s"])
        ax.text(ch["at_s"], top * (0.97 - 0.06 * (n % 6)), _label(n, ch) + (" " if right else ""),
                fontsize=7, rotation=0, va="top", ha="right" if right else "left")
    lo, hi = report.get("baseline_window_s", [0, 0])
    ax.axvspan(lo, hi, color="green", alpha=0.08, label="baseline window")
    ax.set_xlabel("seconds since traffic start")
    ax.set_ylabel("Mbit/s (per 0.1 s)")
    verdict = "PASSED" if report.get("passed") else "FAILED"
    ax.set_title(f"scenario {report['scenario']} on {report['topology']}: {verdict}")
    ax.legend(loc="lower left", fontsize=7)
    if bx is not None:
        _phases(bx, changes)
    with warnings.catch_warnings():
        # a crowded plot may not fit tight_layout's margins; the file is written anyway
        # and the user's terminal is no place for matplotlib's remark about it
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _phases(bx, changes: list[dict]) -> None:
    """One bar per change, in ms around the moment its new version took effect (0: the
    flip of a two-phase change, the first commit of a per-device one); symlog, since
    loading takes tens of ms and a flip a tenth of one."""
    seen = set()

    def bar(y, start, width, label, colour, hatch=None):
        if width <= 0:
            return
        bx.barh(y, width, left=start, height=0.6, color=colour, hatch=hatch,
                edgecolor="black" if hatch else colour, linewidth=0.4,
                label=None if label in seen else label)
        seen.add(label)

    right, left = 1.0, 1.0
    for n, ch in enumerate(changes):
        y = len(changes) - 1 - n
        ph = ch.get("phases") or {}
        if ph:
            bar(y, -ph.get("install_ms", 0) - ph.get("prepare_ms", 0), ph.get("prepare_ms", 0),
                "prepare (load, verify)", "lightgrey")
            x = -ph.get("install_ms", 0)
            for key, label, colour in PHASES:
                w = ph.get(key, 0)
                bar(y, x, w, label, colour)
                x += w
            right = max(right, x)
            left = max(left, ph.get("install_ms", 0) + ph.get("prepare_ms", 0))
        else:
            load = max(0.0, ch.get("total_ms", 0) - ch.get("swap_ms", 0))
            bar(y, -load, load, "prepare (load, verify)", "lightgrey")
            commit = max(ch.get("swap_ms", 0), ch.get("commit_spread_ms") or 0)
            bar(y, 0, commit, "commit (first to last device), per-device", "grey", hatch="//")
            right = max(right, commit)
            left = max(left, load)
    for n, ch in enumerate(changes):
        o = ch.get("oracle")
        parts = len(ch.get("parts") or [])
        note = f"  {_level_text(ch)}" + (f", {o['mixed']} mixed of {o['probes']} probes" if o else "")
        if parts > 1:
            note += f"; {parts} parts, one transaction"
        bx.text(right * 1.2, len(changes) - 1 - n, note, fontsize=7, va="center")
    bx.set_xscale("symlog", linthresh=1.0)
    bx.set_xlim(-left * 1.5, right * 40 + 10)
    bx.axvline(0, color="black", linewidth=0.6)
    bx.set_yticks(range(len(changes)))
    bx.set_yticklabels([f"#{n}" for n in reversed(range(len(changes)))], fontsize=7)
    bx.set_xlabel("ms from the flip (per-packet) or first commit (per-device); symlog")
    bx.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), fontsize=6, ncol=6, frameon=False)
