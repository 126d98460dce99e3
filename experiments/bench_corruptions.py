"""Times the 16 image corruptions on a batch of synthetic scenes (docs/method.md section 8.1).

Usage:
  python experiments/bench_corruptions.py                    # 1000 images, 32 px, severity 5
  python experiments/bench_corruptions.py --size 224 --num-images 200

Prints, per corruption type, the wall-clock and CPU seconds of one ``corrupt_images`` call over
the whole batch (CPU time is less affected by other processes on a shared machine), the
throughput, and the totals.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from rest_jax.data.image_corruptions import IMAGE_CORRUPTIONS, corrupt_images


def paint_shapes(img, yy, xx, rng, count, centre=(0.1, 0.9), radius=(0.06, 0.2)) -> None:
    """Paints ``count`` random discs, squares and triangles of random colours into ``img``."""
    for _ in range(count):
        cy, cx = rng.uniform(*centre, 2)
        r = rng.uniform(*radius)
        kind = rng.integers(3)
        if kind == 0:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        elif kind == 1:
            mask = (abs(yy - cy) < r) & (abs(xx - cx) < r)
        else:
            mask = (yy - cy > -r) & (yy - cy < r) & (abs(xx - cx) < (yy - cy + r) / 2)
        img[mask] = rng.uniform(0, 1, 3)


def synthetic_scenes(count: int, size: int, seed: int = 0) -> np.ndarray:
    """``count`` uint8 scenes ``(size, size, 3)``: a gradient background and 2-5 coloured discs,
    squares and triangles, like SynthWorld's images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = np.empty((count, size, size, 3), np.float32)
    for n in range(count):
        top, bottom = rng.uniform(0, 1, (2, 3))
        img = top + (bottom - top) * yy[..., None]
        paint_shapes(img, yy, xx, rng, rng.integers(2, 6), (0.1, 0.9), (0.06, 0.2))
        images[n] = img
    return np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=32, help="image side in px")
    parser.add_argument("--severity", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--types", nargs="*", default=list(IMAGE_CORRUPTIONS))
    args = parser.parse_args()

    images = synthetic_scenes(args.num_images, args.size, args.seed)
    ids = np.arange(args.num_images)
    print(
        f"{args.num_images} images of {args.size}x{args.size} px, severity {args.severity}, "
        f"{platform.processor() or platform.machine()}"
    )
    print(f"{'corruption':<20}{'wall s':>10}{'cpu s':>10}{'images/s':>12}")
    total_wall = total_cpu = 0.0
    for name in args.types:
        wall, cpu = time.perf_counter(), time.process_time()
        corrupt_images(images, name, args.severity, seed=args.seed, sample_ids=ids)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        total_wall += wall
        total_cpu += cpu
        print(f"{name:<20}{wall:>10.3f}{cpu:>10.3f}{args.num_images / wall:>12.0f}")
    print(f"{'total':<20}{total_wall:>10.3f}{total_cpu:>10.3f}")


if __name__ == "__main__":
    main()
