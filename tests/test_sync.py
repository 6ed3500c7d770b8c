"""The sync facade: a blocking call from inside a running event loop, stopped by Ctrl-C."""

from __future__ import annotations

import glob
import signal
import sys
from pathlib import Path

import pytest

from asyncfetch._storage.journal import load
from asyncfetch._sync import run_sync
from tests.faultserver import FaultServer, make_payload
from tests.helpers import leftovers, signal_when

# An asyncio application (asyncio.run in the main thread, asyncio's own Ctrl-C handling) that
# makes a blocking asyncfetch call, from its main task or from a task it awaits.
ASYNCIO_APP = """
import asyncio, sys
import asyncfetch

url, dest, where = sys.argv[1:]

async def blocking_call():
    asyncfetch.download(url, dest, connections=2, chunk_size="1M", progress=False)

async def main():
    if where == "main task":
        await blocking_call()
    else:
        await asyncio.create_task(blocking_call())

asyncio.run(main())
"""


@pytest.mark.parametrize("where", ["main task", "child task"])
def test_ctrl_c_stops_a_sync_call_inside_asyncio_run_and_keeps_the_part(
    server: FaultServer, tmp_path: Path, where: str
) -> None:
    data = make_payload(2 << 20, seed=5)
    server.add_file("big.bin", data)
    url = server.url("big.bin", rate=100_000)  # two requests: ~10 s for the whole file
    dest = tmp_path / "big.bin"
    stderr = signal_when(  # Ctrl-C once 200 KB came, none written yet (1 MiB chunks)
        [sys.executable, "-c", ASYNCIO_APP, url, str(dest), where],
        signal.SIGINT,
        lambda: server.bytes_served("big.bin") >= 200_000,
    ).stderr

    assert stderr.rstrip().endswith("KeyboardInterrupt"), stderr  # as asyncio.run reports it
    assert server.bytes_served("big.bin") < len(data)  # stopped, not carried on to the end
    assert not dest.exists()
    (part,) = glob.glob(f"{dest}.*.part")
    journal = load(Path(part))
    assert journal is not None
    assert sum(end - start for start, end in journal.runs) >= 100_000  # kept for a resume
    assert sorted(leftovers(tmp_path)) == sorted(
        Path(p).name for p in glob.glob(f"{dest}.*.part*")
    )  # no lock left behind


def test_an_interrupt_before_the_loop_starts_closes_the_coroutine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Ctrl-C can land while uvloop is imported or its loop set up, before the coroutine runs
    import uvloop

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(uvloop, "run", interrupted)

    async def download() -> int:
        return 1

    coroutine = download()
    with pytest.raises(KeyboardInterrupt):
        run_sync(coroutine)
    assert coroutine.cr_frame is None  # closed: no "coroutine was never awaited" warning
