"""Copy the generated headline tables of the real-CT and low-dose studies into the README.

    python3 -m studies.readme_tables        # after studies.real_ct and studies.lowdose_quality

The README quotes no number by hand: this reads ``studies/RESULTS_real_ct.json`` and
``studies/RESULTS_lowdose_quality.json`` and rewrites the blocks between the README's
``<!-- real-ct-headline:... -->`` and ``<!-- lowdose-headline:... -->`` markers: per real test set and
noise level the best learned model, in one pass and with the flip self-ensemble, against BM3D, BM4D
and TV (dB; positive: the model is better); per simulated dose the PSNR of every method, and on the
real low-dose volumes the noise left in flat regions and the edge width relative to BM3D.
"""

import argparse
import json
import os
import re
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run by path: re-run as python3 -m studies.<name>
    os.execv(sys.executable, [sys.executable, "-m", f"studies.{Path(__file__).stem}", *sys.argv[1:]])

from benchmarks.common import REPO, markdown_table
from utils.base.atomic import write_text

RESULTS = REPO / "studies" / "RESULTS_real_ct.json"
LOWDOSE_RESULTS = REPO / "studies" / "RESULTS_lowdose_quality.json"
README = REPO / "README.md"
SECTION = "real-ct-headline"
LOWDOSE_SECTION = "lowdose-headline"


def headline_markdown(report):
    """Markdown lines of the headline table from a real-CT report's ``headline`` entries."""
    entries = {}
    for entry in report["headline"]:
        entries.setdefault((entry["set"], entry["noise"]), {})[entry["pass"]] = entry

    def margin(entry, method):
        value = entry.get(f"minus_{method}") if entry else None
        return "–" if value is None else f"{value:+.2f}"

    rows = []
    for (set_name, sigma), passes in entries.items():
        single, ensemble = passes.get("single"), passes.get("self-ensemble")
        if not single or not single.get("best"):
            continue
        rows.append([
            set_name, f"{sigma * 100:g} %", f"`{single['best']}`", f"{single['psnr']:.2f}",
            margin(single, "bm3d"), margin(single, "bm4d"), margin(single, "tv"),
            margin(ensemble, "bm3d"), margin(ensemble, "bm4d"),
        ])
    header = ["test set", "noise", "best learned model", "PSNR dB", "vs BM3D", "vs BM4D", "vs TV", "self-ensemble vs BM3D", "self-ensemble vs BM4D"]
    return markdown_table(header, rows, "llllrrrrr")


def lowdose_markdown(report):
    """Markdown lines: PSNR per method and simulated dose, then noise and edges on the real low-dose volumes."""
    doses = sorted(report["simulated"], key=float, reverse=True)
    methods = list(report["simulated"][doses[0]]["methods"])
    real = report.get("real", {})
    rows = []
    for method in methods:
        psnr = [f"{report['simulated'][d]['methods'][method]['psnr']:.2f}" for d in doses]
        measured = real.get(method, {})
        noise = f"{measured['noise_std_hu_median']:.1f}" if "noise_std_hu_median" in measured else "–"
        edges = f"{measured['edge_width_vs_bm3d']:.2f}" if "edge_width_vs_bm3d" in measured else "–"
        rows.append([f"`{method}`", *psnr, noise, edges])
    header = ["method", *[f"PSNR dB, dose {float(d):g}" for d in doses], "real low-dose: noise std (HU)", "edge width / BM3D"]
    return markdown_table(header, rows, "l" + "r" * (len(doses) + 2))


def _replace_section(text, section, body, readme):
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"error: {readme} has no {start} ... {end} section to fill")
    return pattern.sub(lambda _: f"{start}\n{body}\n{end}", text)


def fill_readme(results=RESULTS, readme=README, lowdose_results=LOWDOSE_RESULTS):
    """Rewrite the README's generated sections from the results files that exist."""
    text = readme.read_text(encoding="utf-8")
    text = _replace_section(text, SECTION, "\n".join(headline_markdown(json.loads(results.read_text(encoding="utf-8")))), readme)
    if lowdose_results is not None and Path(lowdose_results).is_file():
        lowdose = json.loads(Path(lowdose_results).read_text(encoding="utf-8"))
        text = _replace_section(text, LOWDOSE_SECTION, "\n".join(lowdose_markdown(lowdose)), readme)
    write_text(readme, text)
    return readme


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    print(f"wrote the generated tables of {fill_readme()}")
