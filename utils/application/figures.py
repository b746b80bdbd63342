"""Comparison figures in the reference repository's layouts, drawn for print.

* :func:`comparison_grid`: clean | noisy | TV | BM3D | CNN | U-Net ... side by side (the reference's
  ``display_grid``), each titled ``"<method>, err: x.xx, PSNR yy.y dB"``, with a second row zoomed on a
  region marked by a box (the reference's ``_zoom_`` figures, rows 100:200 and columns 150:250 of its
  256x256 slices). Unlike the reference, the error and PSNR are those of the image shown, not the mean
  over the test set, and every panel uses the same grey scale [0, 1] (the reference's 2D demo auto-scaled).
* :func:`volume_views`: one column per method, rows axial, axial zoom, coronal and sagittal, drawn with
  the voxel spacing so that thick slices look thick; titles give the error and PSNR of the whole volume.
* :func:`before_after`: a scan before and after denoising (no clean reference), axial and, for volumes,
  coronal and sagittal views in one display window, with the noise measured in a marked flat patch.
* :func:`convergence_plot`: relative error (%) after every iteration, TV against SPADE, one panel per
  noise level.

Figures are built on ``matplotlib.figure.Figure`` (no pyplot state, no display needed) and written
atomically (``utils.base.atomic.atomic_path``) as PNG at ``DPI`` with a tight bounding box.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from scipy import ndimage as ndi

from utils.base.atomic import atomic_path
from utils.data.metrics import psnr, rel_err_percent

DPI = 150
PANEL_INCHES = 2.1
MAX_COLUMNS = 6
ZOOM_COLOUR = "#ffbf00"
PLANE_COLOUR = "#4fc3f7"
TITLE_SIZE = 7.5
# Titles longer than this many characters go on two lines (name, then the numbers).
ONE_LINE_TITLE = 26
METHOD_COLOURS = {"tv": "#1f77b4", "spade": "#d62728"}
DISPLAY_NAMES = {"clean": "Clean", "noisy": "Noisy", "tv": "TV", "spade": "SPADE", "bm3d": "BM3D", "bm4d": "BM4D"}
# Gradient magnitude (per pixel, [0, 1] scale) above which an edge counts no more: ~70 HU at 1400 HU width.
DETAIL_CAP = 0.05


def display_name(name):
    """How a method is labelled in figures: the baselines as in the papers (TV, BM3D), models by file stem."""
    return DISPLAY_NAMES.get(name, name)


def panel_title(name, clean, estimate):
    """``"<name>, err: x.xx, PSNR yy.y dB"`` for the image shown (rel. error in %, PSNR with data range 1)."""
    return f"{display_name(name)}, err: {rel_err_percent(clean, estimate):.2f}, PSNR {psnr(clean, estimate):.1f} dB"


def pick_zoom_region(image, fraction=0.35):
    """The square region (``(rows, cols)`` slices) of side ``fraction`` x the smaller image side holding the
    most detail of ``image`` (use the clean image): the largest sum of gradient magnitude, each pixel's
    gradient capped at ``DETAIL_CAP`` so that many soft-tissue edges outweigh one bone/air border.

    Chosen from the data, not fixed, so the zoom lands on anatomy for any image size; deterministic.
    """
    image = np.asarray(image, dtype=np.float64)
    side = min(max(8, round(fraction * min(image.shape))), *image.shape)
    detail = np.minimum(ndi.gaussian_gradient_magnitude(image, sigma=1.0), DETAIL_CAP)
    # Sum over every side x side window, indexed by its top-left corner (integral image).
    integral = np.pad(detail.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    windows = integral[side:, side:] - integral[:-side, side:] - integral[side:, :-side] + integral[:-side, :-side]
    row, col = np.unravel_index(int(np.argmax(windows)), windows.shape)
    return slice(int(row), int(row) + side), slice(int(col), int(col) + side)


def comparison_grid(path, clean, panels, zoom=None, title=None, max_columns=MAX_COLUMNS, reference_label="clean"):
    """Write the side-by-side comparison of 2D images, with a zoom row under each row of panels.

    Args:
        path: PNG file to write.
        clean: the reference image ``(H, W)`` on [0, 1], shown first.
        panels: ``[(name, image), ...]`` in display order (noisy, baselines, models); each titled with
            its own error and PSNR against ``clean``.
        zoom: ``(rows, cols)`` slices of the zoomed region; None picks it with :func:`pick_zoom_region`;
            False draws no zoom row.
        title: optional figure title (settings: data, noise).
        max_columns: panels per row before wrapping to a new row pair.
    Returns:
        ``path``.
    """
    clean = np.asarray(clean, dtype=np.float32)
    if zoom is None:
        zoom = pick_zoom_region(clean)
    entries = [(reference_label, clean, display_name(reference_label))] + [
        (name, np.asarray(image, np.float32), panel_title(name, clean, image)) for name, image in panels
    ]
    titles = _wrap_titles([t for _, _, t in entries])
    n_cols = min(len(entries), max_columns)
    n_blocks = math.ceil(len(entries) / n_cols)
    rows_per_block = 2 if zoom else 1
    height, width = clean.shape
    # Height per panel row: the image's aspect plus room for a (two-line) title.
    row_inches = PANEL_INCHES * height / width
    title_inches = 0.16 * max(t.count("\n") + 1 for t in titles)
    figure = Figure(
        figsize=(n_cols * PANEL_INCHES, n_blocks * rows_per_block * row_inches + n_blocks * title_inches + (0.3 if title else 0)),
        layout="compressed",
    )
    figure.get_layout_engine().set(w_pad=0.01, h_pad=0.01, wspace=0.0, hspace=0.0)
    axes = figure.subplots(n_blocks * rows_per_block, n_cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for k, ((name, image, _), text) in enumerate(zip(entries, titles)):
        block, col = divmod(k, n_cols)
        ax = axes[block * rows_per_block, col]
        _show(ax, image)
        ax.set_title(text, fontsize=TITLE_SIZE, pad=3)
        if zoom:
            rows, cols = zoom
            ax.add_patch(
                Rectangle((cols.start - 0.5, rows.start - 0.5), cols.stop - cols.start, rows.stop - rows.start,
                          fill=False, edgecolor=ZOOM_COLOUR, linewidth=0.9)
            )
            zoom_ax = axes[block * rows_per_block + 1, col]
            _show(zoom_ax, image[rows, cols])
            _frame(zoom_ax, ZOOM_COLOUR)
    if title:
        figure.suptitle(title, fontsize=TITLE_SIZE + 1)
    return _save(figure, path)


def volume_views(path, clean, panels, spacing=None, zoom=None, centre=None, title=None, reference_label="clean"):
    """Write axial, zoomed axial, coronal and sagittal views of volumes ``(D, H, W)``, one column per method.

    Args:
        clean: reference volume on [0, 1]; ``panels``: ``[(name, volume), ...]`` as in :func:`comparison_grid`
            (titles give the error and PSNR of the whole volume).
        spacing: ``(dz, dy, dx)`` in mm, for the aspect of the coronal and sagittal views (None: isotropic).
        zoom: ``(rows, cols)`` of the axial zoom; None picks it on the clean axial slice.
        centre: ``(z, y, x)`` voxel the three planes pass through; None: the middle of the volume.
    """
    clean = np.asarray(clean, dtype=np.float32)
    depth, height, width = clean.shape
    dz, dy, dx = spacing if spacing is not None else (1.0, 1.0, 1.0)
    if centre is None:
        # The coronal and sagittal planes cross the middle of the zoomed region, so all views show it.
        z = depth // 2
        zoom = zoom or pick_zoom_region(clean[z])
        y, x = ((s.start + s.stop) // 2 for s in zoom)
    else:
        z, y, x = centre
        zoom = zoom or pick_zoom_region(clean[z])
    entries = [(reference_label, clean, display_name(reference_label))] + [
        (name, np.asarray(vol, np.float32), panel_title(name, clean, vol)) for name, vol in panels
    ]
    titles = _wrap_titles([t for _, _, t in entries])
    views = [
        (f"axial\nz={z}", lambda v: v[z], dy / dx),
        ("axial\nzoom", lambda v: v[z][zoom], dy / dx),
        (f"coronal\ny={y}", lambda v: v[:, y, :], dz / dx),
        (f"sagittal\nx={x}", lambda v: v[:, :, x], dz / dy),
    ]
    # Row heights in physical units relative to the panel width, so each view keeps its true aspect.
    ratios = [height * dy / (width * dx), 1.0, depth * dz / (width * dx), depth * dz / (height * dy)]
    ratios = [max(r, 0.08) for r in ratios]
    n_cols = len(entries)
    title_inches = 0.16 * max(t.count("\n") + 1 for t in titles)
    figure = Figure(
        figsize=(n_cols * PANEL_INCHES + 0.3, PANEL_INCHES * sum(ratios) + title_inches + (0.3 if title else 0)),
        layout="compressed",
    )
    figure.get_layout_engine().set(w_pad=0.01, h_pad=0.01, wspace=0.0, hspace=0.0)
    axes = figure.subplots(len(views), n_cols, squeeze=False, gridspec_kw={"height_ratios": ratios})
    for col, ((name, volume, _), text) in enumerate(zip(entries, titles)):
        for row, (label, cut, aspect) in enumerate(views):
            ax = axes[row, col]
            _show(ax, cut(volume), aspect=aspect)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 1:
                _frame(ax, ZOOM_COLOUR)
            else:
                for spine in ax.spines.values():
                    spine.set_visible(False)
            if col == 0:
                ax.set_ylabel(label, fontsize=TITLE_SIZE, rotation=0, ha="right", va="center", labelpad=4)
        axes[0, col].set_title(text, fontsize=TITLE_SIZE, pad=3)
        if col == 0:  # where the coronal and sagittal planes cut, on the reference only
            axes[0, col].axhline(y, color=PLANE_COLOUR, linewidth=0.6, linestyle="--")
            axes[0, col].axvline(x, color=PLANE_COLOUR, linewidth=0.6, linestyle="--")
        rows, cols = zoom
        axes[0, col].add_patch(
            Rectangle((cols.start - 0.5, rows.start - 0.5), cols.stop - cols.start, rows.stop - rows.start,
                      fill=False, edgecolor=ZOOM_COLOUR, linewidth=0.9)
        )
    if title:
        figure.suptitle(title, fontsize=TITLE_SIZE + 1)
    return _save(figure, path)


def before_after(path, before, after, spacing=None, title=None, patch=None, labels=("before", "after")):
    """Write ``before`` | ``after`` views of a scan on the [0, 1] display scale (already windowed).

    Args:
        before, after: ``(D, H, W)`` arrays in [0, 1] (a 2D slice is ``(1, H, W)``); volumes of 8 slices
            or more also get coronal and sagittal views through the middle.
        spacing: ``(dz, dy, dx)`` in mm for the aspect of the views (None: isotropic).
        patch: ``((z, row, col), size, stds)``: a square drawn on the axial views, titled with the std
            measured there in each image (``stds``, one formatted string per column).
    """
    before, after = np.asarray(before, np.float32), np.asarray(after, np.float32)
    depth, height, width = before.shape
    dz, dy, dx = spacing if spacing is not None else (1.0, 1.0, 1.0)
    z = patch[0][0] if patch else depth // 2
    views = [(f"axial\nz={z}", lambda v: v[z], dy / dx, height * dy / (width * dx))]
    if depth >= 8:
        views += [
            (f"coronal\ny={height // 2}", lambda v: v[::-1, height // 2, :], dz / dx, depth * dz / (width * dx)),
            (f"sagittal\nx={width // 2}", lambda v: v[::-1, :, width // 2], dz / dy, depth * dz / (height * dy)),
        ]
    ratios = [max(r, 0.08) for *_, r in views]
    figure = Figure(figsize=(2 * PANEL_INCHES * 1.6 + 0.3, PANEL_INCHES * 1.6 * sum(ratios) + 0.5), layout="compressed")
    axes = figure.subplots(len(views), 2, squeeze=False, gridspec_kw={"height_ratios": ratios})
    for col, (label, volume) in enumerate(zip(labels, (before, after))):
        for row, (name, cut, aspect, _) in enumerate(views):
            ax = axes[row, col]
            _show(ax, cut(volume), aspect=aspect)
            ax.set_axis_off()
            if col == 0:
                ax.set_axis_on()
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                ax.set_ylabel(name, fontsize=TITLE_SIZE, rotation=0, ha="right", va="center", labelpad=4)
        heading = label
        if patch:
            (_, r, c), size, stds = patch
            axes[0, col].add_patch(Rectangle((c - 0.5, r - 0.5), size, size, fill=False, edgecolor=ZOOM_COLOUR, linewidth=0.9))
            heading = f"{label}: std {stds[col]} in the box"
        axes[0, col].set_title(heading, fontsize=TITLE_SIZE, pad=3)
    if title:
        figure.suptitle(title, fontsize=TITLE_SIZE + 1)
    return _save(figure, path)


def convergence_plot(path, histories, title=None):
    """Write relative error (%) against iteration, one panel per entry of ``histories``.

    Args:
        histories: ``{panel title: {method name: 1-D array of rel. error in % after each iteration}}``,
            e.g. ``{"sigma = 0.05": {"tv": ..., "spade": ...}}``.
    """
    panels = [(label, curves) for label, curves in histories.items() if curves]
    n = max(1, len(panels))
    figure = Figure(figsize=(3.2 * n, 2.7))
    axes = figure.subplots(1, n, squeeze=False)[0]
    for ax, (label, curves) in zip(axes, panels):
        for name, history in curves.items():
            history = np.asarray(history, dtype=np.float64)
            if history.size == 0:
                continue
            iterations = np.arange(1, history.size + 1)
            colour = METHOD_COLOURS.get(name.lower())
            line = ax.plot(iterations, history, linewidth=1.4, color=colour, label=f"{display_name(name)} (final {history[-1]:.2f} %)")[0]
            ax.plot(iterations[-1], history[-1], "o", markersize=3.5, color=line.get_color())
        ax.set_title(label, fontsize=TITLE_SIZE + 1)
        ax.set_xlabel("iteration", fontsize=TITLE_SIZE)
        ax.set_ylabel("relative error (%)", fontsize=TITLE_SIZE)
        ax.tick_params(labelsize=TITLE_SIZE - 1)
        ax.grid(True, linewidth=0.4, alpha=0.5)
        ax.legend(fontsize=TITLE_SIZE - 1, frameon=False)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    if title:
        figure.suptitle(title, fontsize=TITLE_SIZE + 1)
    figure.set_layout_engine("constrained")
    return _save(figure, path)


def _show(ax, image, aspect=1.0):
    ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", aspect=aspect)


def _frame(ax, colour):
    """Keep the axes box (ticks off) as a coloured frame, so a zoom panel is tied to its marked region."""
    ax.set_axis_on()
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(1.2)


def _wrap_titles(titles):
    """One line each when all are short; otherwise the name (wrapped at underscores) above the numbers."""
    if max(len(t) for t in titles) <= ONE_LINE_TITLE:
        return titles
    wrapped = []
    for text in titles:
        name, sep, numbers = text.partition(", err: ")
        name = _wrap_name(name, ONE_LINE_TITLE)
        wrapped.append(f"{name},\nerr: {numbers}" if sep else name)
    return wrapped


def _wrap_name(name, width):
    """Break a long file stem before underscores into lines of at most ``width`` characters where possible."""
    lines, current = [], ""
    for k, part in enumerate(name.split("_")):
        piece = part if k == 0 else "_" + part
        if current and len(current) + len(piece) > width:
            lines.append(current)
            current = piece
        else:
            current += piece
    lines.append(current)
    return "\n".join(lines)


def _save(figure, path):
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=DPI, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return path
