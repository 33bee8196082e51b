"""The POP3 maildrop lock across processes (`FileMaildropLocks`, RFC 1939 §8 / RFC 2449 §8.1.2 IN-USE)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from surat.pop3d.locks import FileMaildropLocks


async def test_one_lease_per_account_released_on_release(tmp_path: Path) -> None:
    locks = FileMaildropLocks(tmp_path / "locks")
    lease = await locks.acquire(7)
    assert lease is not None
    assert await locks.acquire(7) is None  # a second session of the same process
    other = await locks.acquire(8)
    assert other is not None
    await lease.release()
    await lease.release()  # twice is harmless
    again = await locks.acquire(7)
    assert again is not None
    await again.release()
    await other.release()
    assert (tmp_path / "locks").stat().st_mode & 0o777 == 0o700


HOLDER = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from surat.pop3d.locks import FileMaildropLocks

    async def main():
        lease = await FileMaildropLocks(Path(sys.argv[1])).acquire(7)
        print("held" if lease is not None else "busy", flush=True)
        if sys.argv[2] == "hold":
            time.sleep(60)

    asyncio.run(main())
    """
)


async def test_another_process_holding_the_maildrop_makes_it_in_use_until_it_dies(tmp_path: Path) -> None:
    directory = tmp_path / "locks"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory), "hold"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        locks = FileMaildropLocks(directory)
        assert await locks.acquire(7) is None
        holder.kill()  # kill -9: the kernel drops its lock, nothing expires or stays behind
        holder.wait(10)
        lease = await locks.acquire(7)
        assert lease is not None
        check = subprocess.run(
            [sys.executable, "-c", HOLDER, str(directory), "once"], capture_output=True, text=True, check=True
        )
        assert check.stdout == "busy\n"
        await lease.release()
    finally:
        holder.kill()
        holder.wait(10)
