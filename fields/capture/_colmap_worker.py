"""Structure from motion with pycolmap, run as a script in a process of its own.

pycolmap ships its own image libraries; loaded into a process that also uses PIL (as ours
does), a later PNG write aborts the process ("double free or corruption"). So
`fields.capture.sfm` starts this file with ``python _colmap_worker.py ARGS.json``: it imports
pycolmap and nothing of ours, and reports on stdout, one JSON object a line::

    {"stage": "features" | "matching" | "mapping", "start": true}
    {"stage": ..., "done": true, "seconds": s}
    {"result": {"models": [{"path", "registered", "points"}...], "given": n}}
    {"error": "message"}

ARGS.json: ``database``, ``images`` (folder), ``output`` (folder: one sub-folder per model),
``camera_model`` (COLMAP name), ``matcher`` ("exhaustive" | "sequential"), ``threads``,
``max_features``, ``overlap`` (sequential matching), ``seed``, ``single_camera``,
``undistort`` (a folder: undistort the largest model's images to pinhole ones there).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def say(**obj: object) -> None:
    """One JSON line on stdout, flushed (the parent reads them as they come)."""
    print(json.dumps(obj), flush=True)


def run(args: dict) -> None:
    """Features, matching, mapping (and undistortion) as the arguments say, reported."""
    import pycolmap

    db, images, output = args["database"], args["images"], Path(args["output"])
    threads = int(args.get("threads", -1))
    names = sorted(p.name for p in Path(images).iterdir() if p.is_file())

    t = time.perf_counter()
    say(stage="features", start=True)
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = threads
    extraction.use_gpu = False
    extraction.sift.max_num_features = int(args.get("max_features", 8192))
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = args["camera_model"]
    mode = pycolmap.CameraMode.SINGLE if args.get("single_camera", True) else \
        pycolmap.CameraMode.PER_IMAGE
    pycolmap.extract_features(db, images, image_names=names, camera_mode=mode,
                              reader_options=reader, extraction_options=extraction,
                              device=pycolmap.Device.cpu)
    say(stage="features", done=True, seconds=time.perf_counter() - t)

    t = time.perf_counter()
    say(stage="matching", start=True)
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = threads
    matching.use_gpu = False
    if args["matcher"] == "sequential":
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = int(args.get("overlap", 10))
        pairing.quadratic_overlap = True
        pairing.loop_detection = False  # needs a vocabulary tree (a download)
        pycolmap.match_sequential(db, matching_options=matching, pairing_options=pairing,
                                  device=pycolmap.Device.cpu)
    else:
        pycolmap.match_exhaustive(db, matching_options=matching, device=pycolmap.Device.cpu)
    say(stage="matching", done=True, seconds=time.perf_counter() - t)

    t = time.perf_counter()
    say(stage="mapping", start=True)
    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = threads
    options.random_seed = int(args.get("seed", 0))
    output.mkdir(parents=True, exist_ok=True)
    models = pycolmap.incremental_mapping(db, images, str(output), options=options)
    say(stage="mapping", done=True, seconds=time.perf_counter() - t)

    out = []
    for k, rec in sorted(models.items()):
        path = output / str(k)
        path.mkdir(parents=True, exist_ok=True)
        rec.write(str(path))
        out.append({"path": str(path), "registered": int(rec.num_reg_images()),
                    "points": int(rec.num_points3D()),
                    "reprojection_error": float(rec.compute_mean_reprojection_error())})
    if args.get("undistort") and out:
        # a fisheye model: pinhole images and cameras from the model with the most images
        t = time.perf_counter()
        say(stage="undistort", start=True)
        best = max(out, key=lambda m: m["registered"])
        pycolmap.undistort_images(args["undistort"], best["path"], images)
        say(stage="undistort", done=True, seconds=time.perf_counter() - t)
    say(result={"models": out, "given": len(names)})


def main() -> None:
    """``python _colmap_worker.py ARGS.json``: `run`, any error reported, exit 1."""
    try:
        run(json.loads(Path(sys.argv[1]).read_text()))
    except Exception as e:  # reported to the parent, which names the stage
        say(error=f"{type(e).__name__}: {e}")
        sys.exit(1)


if __name__ == "__main__":
    main()
