"""A phone-sized capture of the built-in tabletop: 50 JPEG photos at 1080×1920 (portrait),
nerfstudio format, for timing set-up and periodic evaluation at the size of a real capture.

    .venv/bin/python scripts/make_phone_capture.py /tmp/phone        # then:
    .venv/bin/fields fit nerf --data /tmp/phone --downscale 4 --max-seconds 120

The photos are rendered at a quarter of the size (`fields.scenes.capture`: hand-held orbit,
exposures 0.75–1.25) and upscaled 4× (bicubic), so that decoding and downscaling cost what a
phone's photos cost; `transforms.json` holds the true cameras (OpenGL camera-to-world).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from fields.io import write_json
from fields.scenes.capture import CaptureSpec, _exposed, capture_cameras, render_capture


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--photos", type=int, default=50)
    ap.add_argument("--scale", type=int, default=4, help="upscaling of the rendered photos")
    a = ap.parse_args()
    spec = CaptureSpec(n=a.photos, width=270, height=480, fov=40.0)
    cams = capture_cameras(spec)
    images, _ = _exposed(render_capture(spec, cams), spec)
    (a.folder / "images").mkdir(parents=True, exist_ok=True)
    w, h = spec.width * a.scale, spec.height * a.scale
    frames = []
    for i, img in enumerate(images):
        name = f"images/IMG_{i:04d}.jpg"
        Image.fromarray(np.asarray(img)).resize((w, h), Image.BICUBIC).save(
            a.folder / name, quality=92)
        c2w = np.eye(4)
        c2w[:3, :4] = cams.c2w[i, :3, :4].numpy()
        frames.append({"file_path": name, "transform_matrix": c2w.tolist()})
    f = spec.focal * a.scale
    write_json(a.folder / "transforms.json", {
        "camera_model": "OPENCV", "fl_x": f, "fl_y": f, "cx": w / 2, "cy": h / 2, "w": w, "h": h,
        "frames": frames})
    print(f"{a.folder}: {len(frames)} photos, {w}x{h}")


if __name__ == "__main__":
    main()
