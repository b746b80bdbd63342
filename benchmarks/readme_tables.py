"""Copy the generated headline table of the real-CT benchmark into the README, between its markers.

    python3 -m benchmarks.readme_tables        # after python3 -m benchmarks.real_ct

The README quotes no number by hand: this reads ``benchmarks/RESULTS_real_ct.json`` (written by
``benchmarks/real_ct.py``) and rewrites the block between ``<!-- real-ct-headline:start -->`` and
``<!-- real-ct-headline:end -->`` with one row per test set and noise level: the best learned model in
one pass and with the flip self-ensemble, against BM3D, BM4D and TV (dB; positive: the model is better).
"""

import json
import re

from benchmarks.common import REPO, markdown_table
from utils.atomic import write_text

RESULTS = REPO / "benchmarks" / "RESULTS_real_ct.json"
README = REPO / "README.md"
SECTION = "real-ct-headline"


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


def fill_readme(results=RESULTS, readme=README):
    report = json.loads(results.read_text(encoding="utf-8"))
    start, end = f"<!-- {SECTION}:start -->", f"<!-- {SECTION}:end -->"
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"error: {readme} has no {start} ... {end} section to fill")
    body = "\n".join(headline_markdown(report))
    write_text(readme, pattern.sub(lambda _: f"{start}\n{body}\n{end}", text))
    return readme


if __name__ == "__main__":
    print(f"wrote the real-CT headline of {fill_readme()}")
