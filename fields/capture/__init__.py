"""Your own capture in: photos or a video -> cameras by structure from motion -> a scene folder
that `fields fit nerf|neus --data` reads.

- `frames`: a video's frames, the sharpest of each window (imageio-ffmpeg);
- `sfm`: COLMAP's feature extraction, matching and incremental mapping through pycolmap, in
  a process of its own (`_colmap_worker.py`);
- `process`: the whole job: image copies (downscaled), SfM, orientation and scale
  (`normalise`), ``transforms.json``, the sparse points, a report and a picture;
- `align`: similarity alignment (Umeyama) and camera errors against known cameras, for
  `fields bench capture` (`bench`).
"""

from fields.capture.process import CaptureError, process_images, process_video

__all__ = ["CaptureError", "process_images", "process_video"]
