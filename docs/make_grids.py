"""Extract the README's grid pictures from the example's TensorBoard event files (scaled up, nearest neighbour).

python examples/digits_gan.py --scenario healthy --max-epochs 240 --logdir /tmp/ex
python examples/digits_gan.py --scenario mode-collapse --max-epochs 240 --logdir /tmp/ex
python docs/make_grids.py /tmp/ex
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

SCALE = 4


def last_image(run_dir: Path, tag: str) -> tuple[Image.Image, int]:
    """The last image written under ``tag`` in a run's event files, and its step."""
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    event = events.Images(tag)[-1]
    return Image.open(io.BytesIO(event.encoded_image_string)), event.step


def main(logdir: str) -> int:
    """Write the three PNGs next to this script."""
    out = Path(__file__).resolve().parent
    root = Path(logdir)
    healthy = sorted((root / "digits_healthy").glob("version_*"))[-1]
    collapse = sorted((root / "digits_mode-collapse").glob("version_*"))[-1]
    for name, run, tag in (
        ("real_samples", healthy, "gan/real_samples"),
        ("healthy_samples", healthy, "gan/samples"),
        ("collapse_samples", collapse, "gan/samples"),
    ):
        image, step = last_image(run, tag)
        image.resize((image.width * SCALE, image.height * SCALE), Image.NEAREST).save(out / f"{name}.png")
        print(f"{name}.png: {tag} at batch {step} of {run}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
