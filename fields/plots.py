"""Figures people would rather see than read, written as PNG with matplotlib (Agg, no display).

Every figure is written atomically (a temporary file renamed over the target).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fields.io import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str | os.PathLike) -> Path:
    """Writes `fig` as PNG atomically, then closes it."""
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)


def write_flow_figure(
    path: str | os.PathLike,
    source: np.ndarray,
    target: np.ndarray,
    flow: np.ndarray,
    gt: np.ndarray | None = None,
    *,
    title: str = "",
    max_arrows: int = 1500,
    seed: int = 0,
) -> Path:
    """Bird's-eye view (x, y) of both clouds with flow vectors; with ground truth, a second
    panel colours the source points by end-point error (metres, capped at 0.3).

    Arrows are drawn for at most `max_arrows` source points, the moving ones (|flow| > 5 cm)
    first, chosen at random with `seed`.
    """
    plt = _pyplot()
    source, target, flow = (np.asarray(a, dtype=np.float32) for a in (source, target, flow))
    n_panels = 1 if gt is None else 2
    fig, axes = plt.subplots(1, n_panels, figsize=(7.5 * n_panels, 7.5), squeeze=False)
    ax = axes[0, 0]
    ax.scatter(source[:, 0], source[:, 1], s=0.6, c="#1f77b4", alpha=0.5, lw=0, label="source")
    ax.scatter(target[:, 0], target[:, 1], s=0.6, c="#d62728", alpha=0.5, lw=0, label="target")
    rng = np.random.default_rng(seed)
    mag = np.linalg.norm(flow, axis=1)
    moving = np.flatnonzero(mag > 0.05)
    pick = rng.permutation(moving)[:max_arrows]
    if len(pick) < max_arrows:
        rest = rng.permutation(np.flatnonzero(mag <= 0.05))[: max_arrows - len(pick)]
        pick = np.concatenate([pick, rest])
    if len(pick):
        ax.quiver(source[pick, 0], source[pick, 1], flow[pick, 0], flow[pick, 1],
                  angles="xy", scale_units="xy", scale=1.0, width=0.0015, color="k",
                  label="flow")
    ax.set_title(f"{title} bird's-eye view: source, target, flow".strip())
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.legend(loc="upper right", markerscale=12)
    if gt is not None:
        gt = np.asarray(gt, dtype=np.float32)
        err = np.linalg.norm(flow - gt, axis=1)
        ax2 = axes[0, 1]
        sc = ax2.scatter(source[:, 0], source[:, 1], s=1.0, c=err, cmap="inferno", vmin=0.0,
                         vmax=0.3, lw=0)
        fig.colorbar(sc, ax=ax2, fraction=0.046, pad=0.04, label="end-point error (m)")
        ax2.set_title(f"end-point error, mean {err.mean():.3f} m")
        ax2.set_aspect("equal")
        ax2.set_xlabel("x (m)")
        ax2.set_facecolor("#dddddd")
    return _save(plt, fig, path)


def write_trajectory_figure(
    path: str | os.PathLike, trajectories: np.ndarray, *, max_tracks: int = 800, seed: int = 0,
    title: str = "trajectories",
) -> Path:
    """Bird's-eye view of (T, N, 3) trajectories: the moving tracks (those that travel more than
    10 cm) as lines coloured by time, start points grey."""
    plt = _pyplot()
    traj = np.asarray(trajectories, dtype=np.float32)
    if traj.ndim != 3 or traj.shape[2] != 3:
        raise ValueError(f"write_trajectory_figure: expected (T, N, 3), got {traj.shape}")
    fig, ax = plt.subplots(figsize=(7.5, 7.5))
    ax.scatter(traj[0, :, 0], traj[0, :, 1], s=0.5, c="#999999", lw=0)
    travel = np.linalg.norm(traj[-1] - traj[0], axis=1)
    moving = np.flatnonzero(travel > 0.1)
    pick = np.random.default_rng(seed).permutation(moving)[:max_tracks]
    cmap = plt.get_cmap("viridis")
    for k in range(traj.shape[0] - 1):
        seg_colour = cmap(k / max(traj.shape[0] - 2, 1))
        ax.plot(
            np.stack([traj[k, pick, 0], traj[k + 1, pick, 0]]),
            np.stack([traj[k, pick, 1], traj[k + 1, pick, 1]]),
            color=seg_colour, lw=0.6,
        )
    ax.set_title(f"{title}: {len(moving)} moving points over {traj.shape[0]} frames")
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    return _save(plt, fig, path)


def write_psnr_time_figure(path: str | os.PathLike, histories: dict[str, list[dict]],
                           title: str = "") -> Path:
    """PSNR (dB) against training seconds, one line per model (`histories`: name -> records
    with "seconds" and "psnr", as `fields.inr.fit_signal` gives)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for name, hist in histories.items():
        if hist:
            ax.plot([h["seconds"] for h in hist], [h["psnr"] for h in hist], label=name, lw=1.6)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    ax.set_title(f"PSNR versus time: {title}" if title else "PSNR versus time")
    return _save(plt, fig, path)


def write_error_time_figure(path: str | os.PathLike,
                            curves: dict[str, list[tuple[float, float]]],
                            title: str = "") -> Path:
    """Relative L2 error (log scale) against training seconds, one line per run (`curves`:
    name -> (seconds, error) pairs, as `fields bench pinn` records them)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for name, curve in curves.items():
        if curve:
            ax.plot([c[0] for c in curve], [c[1] for c in curve], label=name, lw=1.6)
    ax.set_yscale("log")
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("relative L2 error")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=2)
    ax.set_title(f"error versus time: {title}" if title else "error versus time")
    return _save(plt, fig, path)


def write_waveform_figure(path: str | os.PathLike, target, reconstruction, rate: int) -> Path:
    """Audio: the waveform of the first channel, the reconstruction over it, and the error."""
    plt = _pyplot()
    t = np.arange(len(target)) / float(rate)
    a, b = np.asarray(target)[:, 0], np.asarray(reconstruction)[:, 0]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 4.8), sharex=True)
    ax1.plot(t, a, lw=0.6, label="signal")
    ax1.plot(t, b, lw=0.6, alpha=0.8, label="reconstruction")
    ax1.legend(fontsize=8, loc="upper right")
    ax1.set_ylabel("amplitude")
    ax2.plot(t, b - a, lw=0.6, color="tab:red")
    ax2.set_ylabel("error")
    ax2.set_xlabel("time (s)")
    return _save(plt, fig, path)


def write_slices_figure(path: str | os.PathLike, volume, reconstruction) -> Path:
    """Volumes (D, H, W, C): the middle slice along each axis of the volume, the
    reconstruction and the absolute error (first channel)."""
    plt = _pyplot()
    v, r = np.asarray(volume)[..., 0], np.asarray(reconstruction)[..., 0]
    fig, axes = plt.subplots(3, 3, figsize=(9, 9))
    for k in range(3):
        sl = [slice(None)] * 3
        sl[k] = v.shape[k] // 2
        for row, (img, name) in enumerate(((v, "volume"), (r, "reconstruction"),
                                           (np.abs(r - v), "|error|"))):
            ax = axes[row, k]
            ax.imshow(img[tuple(sl)], cmap="magma" if row == 2 else "gray",
                      vmin=0, vmax=1 if row < 2 else max(1e-3, float(np.abs(r - v).max())))
            ax.set_title(f"{name}, axis {k}", fontsize=9)
            ax.axis("off")
    return _save(plt, fig, path)


def write_pde_figure(path: str | os.PathLike, axes: list, names: tuple[str, str],
                     outputs: tuple[str, ...], prediction, reference,
                     title: str = "") -> Path:
    """Solution, reference and absolute error of each output on a 1-D or 2-D grid (rows:
    outputs)."""
    plt = _pyplot()
    pred = np.asarray(prediction)
    ref = np.asarray(reference)
    m = pred.shape[-1]
    if len(axes) == 1:
        fig, ax = plt.subplots(m, 2, figsize=(10, 3.2 * m), squeeze=False)
        x = np.asarray(axes[0])
        for j in range(m):
            ax[j, 0].plot(x, ref[:, j], "k-", lw=2, label="reference")
            ax[j, 0].plot(x, pred[:, j], "r--", lw=1.2, label="PINN")
            ax[j, 0].set_xlabel(names[0])
            ax[j, 0].set_ylabel(outputs[j])
            ax[j, 0].legend()
            ax[j, 1].semilogy(x, np.abs(pred[:, j] - ref[:, j]) + 1e-300, "b-")
            ax[j, 1].set_xlabel(names[0])
            ax[j, 1].set_title(f"|error| of {outputs[j]}")
    else:
        fig, ax = plt.subplots(m, 3, figsize=(13, 3.6 * m), squeeze=False)
        a0, a1 = np.asarray(axes[0]), np.asarray(axes[1])
        ext = [a1[0], a1[-1], a0[0], a0[-1]]
        for j in range(m):
            p, r = pred[..., j], ref[..., j]
            # NaN: outside a non-box domain, or an output with no reference
            both = np.concatenate([p[np.isfinite(p)], r[np.isfinite(r)]])
            lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
            for k, (img, label, cmap) in enumerate(
                [(p, "PINN", "RdBu_r"), (r, "reference", "RdBu_r"),
                 (np.abs(p - r), "|error|", "magma")]
            ):
                kw = {"vmin": lo, "vmax": hi} if k < 2 else {}
                im = ax[j, k].imshow(img, origin="lower", aspect="auto", extent=ext, cmap=cmap,
                                     **kw)
                ax[j, k].set_title(f"{outputs[j]}: {label}")
                ax[j, k].set_xlabel(names[1])
                ax[j, k].set_ylabel(names[0])
                fig.colorbar(im, ax=ax[j, k])
    if title:
        fig.suptitle(title)
    return _save(plt, fig, path)


def write_history_figure(path: str | os.PathLike, history: list[dict]) -> Path:
    """Loss and relative L2 error against training time."""
    plt = _pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    rows = [h for h in history if "loss" in h]
    sec = [h["seconds"] for h in rows]
    ax[0].semilogy(sec, [max(h["loss"], 1e-300) for h in rows])
    ax[0].set_xlabel("seconds")
    ax[0].set_title("loss")
    if rows and "rel_l2" in rows[0]:
        ax[1].semilogy(sec, [h["rel_l2"] for h in rows])
    ax[1].set_xlabel("seconds")
    ax[1].set_title("relative L2 error")
    for a in ax:
        for h in history:
            if h.get("phase") == "stage":
                a.axvline(h["seconds"], color="grey", ls=":")
    return _save(plt, fig, path)
