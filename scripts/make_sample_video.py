#!/usr/bin/env python
"""Render the emulator's sample clips, ``airflow_provider_kirin/emulator/media/sample*.mp4``.

The emulator serves one for every completed task, by its aspect ratio, so tests can check that a
download really is a playable video of the frame size the task reports: ``sample.mp4`` 320x180
(16:9), ``sample-9x16.mp4`` 180x320 and ``sample-1x1.mp4`` 240x240. Each clip is 2 s at 24 fps:
a colour gradient that scrolls horizontally while its blue channel pulses, encoded as MPEG-4
Part 2 (FFmpeg's native ``mpeg4`` encoder, yuv420p, qscale 8, one thread) in an MP4 with
``+faststart``. Frames are computed with integer arithmetic only and encoder and muxer run
``bitexact`` (no version tags), so a given PyAV/FFmpeg build always produces the same bytes;
each clip is about 24 KB (the budget is 100 KB).

Why not H.264: ``--codec libx264`` works and gives a smaller file, but x264 in PyAV's build is
not bit-reproducible once the process has used some memory (the same call yields different
bytes after large allocations), so it is not the default.

Usage (needs PyAV, ``pip install av``)::

    python scripts/make_sample_video.py                  # writes the committed 16:9 sample
    python scripts/make_sample_video.py --width 180 --height 320 -o .../media/sample-9x16.mp4
    python scripts/make_sample_video.py --width 240 --height 240 -o .../media/sample-1x1.mp4
    python scripts/make_sample_video.py -o /tmp/x.mp4 --seconds 4 --codec libx264
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "airflow_provider_kirin/emulator/media/sample.mp4"


def frame_rgb(index: int, width: int, height: int, fps: int) -> bytes:
    """One rgb24 frame: red scrolls with x, green follows y, blue pulses once a second."""
    shift = index * 256 // (fps * 2)  # the red ramp scrolls one full period in two seconds
    reds = bytes(((x * 256 // width) + shift) % 256 for x in range(width))
    phase = index % fps
    blue = (phase * 255 // max(1, fps - 1)) if phase < fps // 2 else 255 - (phase * 255 // max(1, fps - 1))
    blues = bytes([blue]) * width
    rows = bytearray()
    row = bytearray(width * 3)
    row[0::3] = reds
    row[2::3] = blues
    for y in range(height):
        row[1::3] = bytes([y * 255 // max(1, height - 1)]) * width
        rows += row
    return bytes(rows)


def render(
    output: Path,
    seconds: float = 2.0,
    width: int = 320,
    height: int = 180,
    fps: int = 24,
    codec: str = "mpeg4",
) -> int:
    """Encode the clip to ``output``; return its size in bytes."""
    output.parent.mkdir(parents=True, exist_ok=True)
    options = {"crf": "30", "preset": "medium", "threads": "1"} if codec == "libx264" else {"qscale": "8"}
    with av.open(
        str(output), mode="w", format="mp4", options={"movflags": "+faststart", "fflags": "+bitexact"}
    ) as container:
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        stream.codec_context.flags |= int(av.codec.context.Flags.bitexact)
        for index in range(round(seconds * fps)):
            frame = av.VideoFrame(width, height, "rgb24")
            frame.planes[0].update(_padded(frame_rgb(index, width, height, fps), width * 3, frame))
            frame.pts = index
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return output.stat().st_size


def _padded(rgb: bytes, row_bytes: int, frame: av.VideoFrame) -> bytes:
    """``rgb`` with each row padded to the plane's line size (a width whose rows are not aligned,
    e.g. 180 pixels, gets padding bytes at the end of each row)."""
    line = frame.planes[0].line_size
    if line == row_bytes:
        return rgb
    pad = bytes(line - row_bytes)
    return b"".join(rgb[i : i + row_bytes] + pad for i in range(0, len(rgb), row_bytes))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=180)
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--codec", default="mpeg4", choices=["mpeg4", "libx264"])
    args = parser.parse_args(argv)
    size = render(args.output, args.seconds, args.width, args.height, args.fps, args.codec)
    print(f"wrote {args.output} ({size} bytes)")


if __name__ == "__main__":
    main()
