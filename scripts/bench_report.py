#!/usr/bin/env python3
"""make bench-report: merges the bench results that exist
(bench/results-local.json, -pair.json, -ha.json) into bench/results.json,
a Markdown table (bench/results.md) and a chart (bench/results.png: each
ratio or time against its target)."""
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def main() -> int:
    parts = {t: json.loads((BENCH / f"results-{t}.json").read_text())
             for t in ("local", "pair", "ha") if (BENCH / f"results-{t}.json").exists()}
    if not parts:
        print("[bench-report] no results yet: run make bench-local, bench-pair or bench-ha", file=sys.stderr)
        return 1
    (BENCH / "results.json").write_text(json.dumps(parts, indent=1) + "\n")
    md = []
    bars = []  # (label, value, target, higher is better)
    for tag, what in (("local", "ha / iblock"), ("pair", "secondary / primary path (modes 2 and 1)")):
        if tag in parts:
            sides = " / ".join(("iblock", "ha") if tag == "local" else ("primary", "secondary"))
            p = parts[tag]
            bed = p["accel"] + (f", -icount {p['icount']}, {p.get('disks', '')} disks" if p.get("icount") else "")
            verdict = "geometric mean of rounds" if tag == "local" else "median of pairs"
            md += [f"## {tag}: {what} ({bed}, {p['date']})", "",
                   f"| job | metric | p50 ms ({sides}) | p99 ms ({sides}) | ratio ({verdict}) | target |",
                   "|---|---|---|---|---|---|"]
            for j in parts[tag]["jobs"]:
                ok = "met" if j["ratio"] >= j["target"] else "missed"
                lat = [" / ".join(f"{v:.2f}" for v in j[k].values()) if k in j else "-" for k in ("p50_ms", "p99_ms")]
                md.append(f"| {j['job']} | {j['metric']} | {lat[0]} | {lat[1]} | {j['ratio']:.3f} | "
                          f">= {j['target']} ({ok}) |")
                bars.append((f"{tag}: {j['job']}", j["ratio"], j["target"], True))
            md.append("")
    if "ha" in parts:
        h = parts["ha"]
        md += [f"## ha: events, {h['reps']} repetitions ({h['accel']}, {h['date']})", "",
               "| measure | min s | median s | max s | target |", "|---|---|---|---|---|"]
        for j in h["jobs"]:
            t = j["target_s"]
            tgt = "-" if t is None else f"<= {t} ({'met' if j['median'] <= t else 'missed'})"
            md.append(f"| {j['measure']} | {j['min']:.2f} | {j['median']:.2f} | {j['max']:.2f} | {tgt} |")
            if t is not None:
                bars.append((f"ha: {j['measure']} (s)", j["median"], t, False))
        md.append("")
    (BENCH / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[bench-report] matplotlib missing (apt-get install python3-matplotlib): no chart")
        return 0
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(bars) + 1.2))
    labels = [b[0] for b in bars]
    vals = [b[1] / b[2] if b[2] else 0 for b in bars]
    colors = ["tab:green" if (b[1] >= b[2] if b[3] else b[1] <= b[2]) else "tab:red" for b in bars]
    ax.barh(labels, vals, color=colors)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xlabel("measured / target (ratios: >= 1 meets; times: <= 1 meets)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(BENCH / "results.png", dpi=100)
    print(f"[bench-report] {BENCH / 'results.md'}, {BENCH / 'results.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
