"""``python -m utils.describe PATH [--hu-window LO HI]``: one JSON line about any CT input.

Fields: format, shape, spacing, dtype, min, max (after windowing), hu_window, n_files,
n_volumes, contiguous, source. For one volume they are :meth:`CTVolume.describe`. For
several volumes (a reference ``Data/`` folder, kits19 cases, a 3D npz), "shape",
"spacing" and "contiguous" are lists with one entry per volume, in reading order;
"format" and "hu_window" are single values when all volumes agree and lists otherwise;
"min"/"max" span all volumes, "n_files" is the total and "source" is PATH.

Exit status 0 on success; on bad input (DataError) or a bad window (ConfigError) it prints
``error: <message>`` on stderr and exits with status 2, without a traceback.
"""

import argparse
import json
import sys

from utils.base.errors import ConfigError, DataError
from utils.data.readers import DEFAULT_HU_WINDOW, read_ct


def summarise(volumes, source):
    """One dict for a list of CTVolume (see the module notes for how several are merged)."""
    if len(volumes) == 1:
        return volumes[0].describe()
    parts = [volume.describe() for volume in volumes]

    def shared_or_list(key):
        values = [part[key] for part in parts]
        return values[0] if all(value == values[0] for value in values) else values

    return {
        "format": shared_or_list("format"),
        "shape": [part["shape"] for part in parts],
        "spacing": [part["spacing"] for part in parts],
        "dtype": shared_or_list("dtype"),
        "min": min(part["min"] for part in parts),
        "max": max(part["max"] for part in parts),
        "hu_window": shared_or_list("hu_window"),
        "n_files": sum(part["n_files"] for part in parts),
        "n_volumes": len(parts),
        "contiguous": [part["contiguous"] for part in parts],
        "source": str(source),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m utils.describe", description=__doc__.splitlines()[0])
    parser.add_argument("path", help="file or folder: PNG/TIFF slices, DICOM, NIfTI or the reference npz")
    parser.add_argument(
        "--hu-window",
        nargs=2,
        type=float,
        metavar=("LO", "HI"),
        default=DEFAULT_HU_WINDOW,
        help="HU window mapped to [0, 1] for DICOM and NIfTI (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        volumes = read_ct(args.path, hu_window=tuple(args.hu_window))
    except (DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summarise(volumes, args.path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
