"""How much does SPADE gain over TV, and how much does that depend on its prior image?

    python3 studies/spade_prior.py                    # 2, 5 and 10 % noise, about 5 minutes on 2 CPU cores
    python3 studies/spade_prior.py --noise 0.05       # one level
    python3 studies/spade_prior.py --quick            # smoke run: one level, small crop, few evaluations

The suite's goal is SPADE at least 0.5 dB above TV. SPADE adds ``alpha |D(u - u_p)|_1`` to TV, so
what it can add is bounded by how close the prior ``u_p`` is to the clean slice. This study holds
everything else fixed and changes only the prior:

``noisy, 9 slices``
    The toolkit's default and ResPrU-Net's input: ``utils.data.prior.neighbour_prior(noisy)``, weights
    exp(-0.04 |k|) over k = -4..4.
``noisy, 3 slices``
    The same with ``half_window=1``: less blur across slices, more noise.
``TV result, 3 slices`` / ``TV result, 5 slices``
    The neighbour prior of the TV-denoised volume (TV at its tuned weight): a denoised prior.
``clean, 3 slices`` / ``clean, 9 slices``
    The neighbour prior of the *clean* volume, which no user has: what SPADE would gain from a
    prior as good as neighbouring slices can be (an upper bound for neighbour priors).

Protocol: the 2 embedded phantom validation volumes (``data/phantom/val``, generated if absent),
seeded Gaussian noise on the whole volume, priors built on the whole volume, then a central crop
(``--crop``, default 24x128x128). TV's weight and SPADE's two weights (gradient transform) are tuned
per prior on the crop by the toolkit's own tuner (``utils.application.tuning.tune`` with ``prior_from``: golden
section, coordinate ascent for SPADE) to maximise the mean PSNR with data range 1. Reported: each
prior's own PSNR, the tuned SPADE PSNR and its lead over tuned TV.

Results: printed, written to ``studies/results/spade_prior.json`` and, as the table the README
quotes, to ``studies/RESULTS_spade_prior.md`` (``--markdown``), atomically.
"""

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and not __package__:  # run by path: re-run as python3 -m studies.<name>
    os.execv(sys.executable, [sys.executable, "-m", f"studies.{Path(__file__).stem}", *sys.argv[1:]])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.common import command_line, describe_machine, markdown_table, text_table  # noqa: E402

DEFAULT_OUT = REPO / "studies" / "results" / "spade_prior.json"
DEFAULT_MARKDOWN = REPO / "studies" / "RESULTS_spade_prior.md"
GOAL_DB = 0.5

# name -> (source volume, half window); every prior uses the default decay 0.04
PRIORS = {
    "noisy, 9 slices": ("noisy", 4),
    "noisy, 3 slices": ("noisy", 1),
    "TV result, 3 slices": ("tv", 1),
    "TV result, 5 slices": ("tv", 2),
    "clean, 3 slices": ("clean", 1),
    "clean, 9 slices": ("clean", 4),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.02, 0.05, 0.10])
    parser.add_argument("--crop", type=int, nargs=3, default=[24, 128, 128], metavar=("D", "H", "W"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 %% only, 8x48x48 crop, few evaluations")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN, help="the table, for the README")
    args = parser.parse_args(argv)
    if args.quick:
        args.noise, args.crop = [0.05], [8, 48, 48]
    n_evals = 3 if args.quick else None

    from utils.data.phantom import ensure_default_dataset
    from utils.data.readers import read_ct

    started = time.monotonic()
    clean_volumes = [volume.array for path in ensure_default_dataset()["val"] for volume in read_ct(path)]
    rows = []
    for sigma in args.noise:
        rows += study(clean_volumes, sigma, tuple(args.crop), args.seed, n_evals)

    header = ("noise", "prior", "prior PSNR", "SPADE PSNR", "TV PSNR", "SPADE - TV", "beta / sigma", "alpha / sigma")
    table = [
        (
            f"{r['sigma']:g}",
            r["prior"],
            f"{r['prior_psnr']:.2f}",
            f"{r['spade_psnr']:.2f}",
            f"{r['tv_psnr']:.2f}",
            f"{r['spade_minus_tv']:+.2f}",
            f"{r['tv_weight'] / r['sigma']:.2f}",
            f"{r['prior_weight'] / r['sigma']:.2f}",
        )
        for r in rows
    ]
    print()
    print(text_table(header, table))
    minutes = (time.monotonic() - started) / 60
    machine = describe_machine()
    report = {
        "benchmark": "spade_prior",
        "command": command_line("studies/spade_prior.py", argv),
        "protocol": __doc__.split("Protocol: ")[1].split("\n\n")[0].replace("\n", " "),
        "crop": args.crop,
        "seed": args.seed,
        "minutes": round(minutes, 2),
        "machine": machine,
        "rows": rows,
    }
    markdown = [
        "# SPADE's lead over TV against the quality of its prior image",
        "",
        f"`{report['command']}`, {minutes:.1f} minutes; {machine['cpu_model']}, {machine['usable_cpus']} usable CPUs; "
        f"git {machine['git_commit']}. Embedded phantom validation volumes, central {'x'.join(map(str, args.crop))} "
        f"crop, tuned weights per prior (protocol in `studies/spade_prior.py`). Goal: SPADE at least "
        f"{GOAL_DB} dB above TV.",
        "",
        *markdown_table(header, table, "ll" + "r" * (len(header) - 2)),
        "",
    ]
    from utils.base.atomic import write_json, write_text

    write_json(args.out, report)
    write_text(args.markdown, "\n".join(markdown))
    print(f"wrote {args.out} and {args.markdown}")


def study(clean_volumes, sigma, crop, seed, n_evals):
    """Tuned TV, then tuned SPADE with each prior of ``PRIORS``, at one noise level; one row per prior."""
    import numpy as np
    from skimage.metrics import peak_signal_noise_ratio

    from utils.application import tuning
    from utils.solvers import variational
    from utils.data.prior import neighbour_prior

    # The toolkit's own tuner, on the same seeded noise and crops for every method and prior.
    options = dict(seed=seed, crop_shape=crop, progress=False, **({} if n_evals is None else {"n_evals": n_evals}))
    tv = tuning.tune("tv", clean_volumes, sigma, **options)
    print(f"sigma {sigma:g}: TV {tv['psnr']:.2f} dB (weight {tv['weight']:.4f})", flush=True)
    tv_params = tuning.solver_parameters(tv)
    sources = {
        "noisy": lambda noisy, clean: noisy,
        "clean": lambda noisy, clean: clean,
        "tv": lambda noisy, clean: variational.tv_denoise(noisy, **tv_params),
    }

    rows = []
    for name, (source, half_window) in PRIORS.items():

        def prior_from(noisy, clean, source=source, half_window=half_window):
            return neighbour_prior(sources[source](noisy, clean), half_window=half_window)

        crops = tuning.make_validation_set(clean_volumes, sigma, seed, crop, with_prior=True, prior_from=prior_from)
        prior_psnr = float(np.mean([peak_signal_noise_ratio(c, p, data_range=1.0) for c, _, p in crops]))
        spade = tuning.tune("spade", clean_volumes, sigma, prior_from=prior_from, **options)
        rows.append(
            {
                "sigma": sigma,
                "prior": name,
                "prior_source": source,
                "prior_half_window": half_window,
                "prior_psnr": round(prior_psnr, 3),
                "spade_psnr": round(spade["psnr"], 3),
                "tv_psnr": round(tv["psnr"], 3),
                "spade_minus_tv": round(spade["psnr"] - tv["psnr"], 3),
                "tv_weight": spade["tv_weight"],
                "prior_weight": spade["prior_weight"],
                "tv_weight_of_tv": tv["weight"],
            }
        )
        lead = spade["psnr"] - tv["psnr"]
        print(f"  {name}: prior {prior_psnr:.2f} dB, SPADE {spade['psnr']:.2f} dB ({lead:+.2f})", flush=True)
    return rows


if __name__ == "__main__":
    main()
