"""``make demo``: run the example DAG end to end against the bundled emulator, on a real Airflow.

1. a fresh ``AIRFLOW_HOME`` in ``.airflow-demo/`` (SQLite), ``airflow db migrate``;
2. the emulator on a free loopback port (``python -m airflow_provider_kirin.emulator``);
3. ``airflow dags test example_kirin_keep_video`` with ``AIRFLOW_CONN_KIRIN_DEFAULT`` pointing at it;
4. prints the Kirin task id, its status, the cost, where the video landed (checked to be a real
   MP4 with PyAV) with its sidecar, and the asset event; stops the emulator.

No account and no network are needed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / ".airflow-demo"
DAG_ID = "example_kirin_keep_video"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the emulator exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_emulator/health", timeout=1):  # needs no key
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the emulator did not answer at {url} within {timeout:.0f} s")


def run(cmd: list[str], env: dict[str, str], log: Path) -> None:
    with log.open("w") as out:
        result = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=600)
    if result.returncode != 0:
        print(log.read_text()[-6000:])
        raise SystemExit(f"`{' '.join(cmd[2:])}` failed (exit {result.returncode}); full log: {log}")


def asset_events(env: dict[str, str]) -> list[dict]:
    code = (
        "import json\n"
        "from airflow.models.asset import AssetEvent\n"
        "from airflow.utils.session import create_session\n"
        "with create_session() as s:\n"
        "    print(json.dumps([{'asset': e.uri, 'extra': e.extra} for e in s.query(AssetEvent).all()]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else []


def main() -> None:
    shutil.rmtree(HOME, ignore_errors=True)
    HOME.mkdir(parents=True)
    videos = HOME / "videos"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    emulator = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_kirin.emulator", "--port", str(port),
         "--pending-seconds", "2", "--processing-seconds", "6"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until_up(url, emulator)
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(HOME),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_KIRIN_DEFAULT": json.dumps(
                {"conn_type": "kirin", "host": url, "password": "kirin-emulator-key"}
            ),
            # The example's own Variable for where videos are kept (an env-var Variable).
            "AIRFLOW_VAR_KIRIN_VIDEO_DESTINATION": videos.as_uri(),
        }
        print(f"Kirin emulator on {url}; Airflow home {HOME}")
        print("Preparing Airflow's database (airflow db migrate)...")
        run([sys.executable, "-m", "airflow", "db", "migrate"], env, HOME / "db-migrate.log")
        print(
            f"Running `airflow dags test {DAG_ID}`: the emulator renders in ~8 s; the example keeps "
            "the provider's defaults (first status check after 20 s, then every 10 s)..."
        )
        run([sys.executable, "-m", "airflow", "dags", "test", DAG_ID], env, HOME / "dags-test.log")
        report(videos, env)
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)


def report(videos: Path, env: dict[str, str]) -> None:
    import av

    sidecars = sorted(videos.rglob("*.mp4.json"))
    if not sidecars:
        raise SystemExit(f"no video was stored under {videos}; see {HOME / 'dags-test.log'}")
    sidecar = json.loads(sidecars[0].read_text())
    video = sidecars[0].with_suffix("")
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        kind = f"{container.format.name} video, {stream.codec_context.name} {stream.width}x{stream.height}"
    print()
    print(f"Kirin task id : {sidecar['kirin_task_id']}")
    print(f"Status        : {sidecar['status']}")
    print(f"Cost          : {sidecar['cost']} USD")
    print(f"Video         : {video} ({sidecar['bytes']} bytes, {kind})")
    print(f"Sidecar       : {sidecars[0]}")
    for event in asset_events(env):
        print(f"Asset event   : {event['asset']} {json.dumps(event['extra'])}")


if __name__ == "__main__":
    main()
