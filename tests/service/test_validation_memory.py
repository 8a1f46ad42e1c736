"""The API checks a dataset in bounded memory: a chunk at a time, never a whole array.

Measured in a fresh interpreter (its peak RSS after the imports, then after checking a
256 MiB upload), so nothing else this test process holds is counted. The peak is the
kernel's ``VmHWM`` of the interpreter's own memory map: ``ru_maxrss`` would start at the
forking test process's high-water mark and hide the growth.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

ARRAY_BYTES = 256 << 20
LIMIT_BYTES = 64 << 20


def _big_npz(path: Path, nbytes: int) -> None:
    """An ``.npz`` with a float32 ``x_train`` of ``nbytes`` (zeros), written without holding it."""
    rows = nbytes // (4 * 64)
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive,
        archive.open("x_train.npy", "w", force_zip64=True) as member,
    ):
        np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False, "shape": (rows, 64)})
        chunk = bytes(1 << 20)
        for _ in range(nbytes // len(chunk)):
            member.write(chunk)


def _peak_growth(call: str, path: Path) -> int:
    """Bytes the peak RSS of a fresh interpreter grows by while it runs ``call`` on ``path``'s file."""
    code = (
        "from pathlib import Path\n"
        "from service.api.validation import check_data\n"
        "from quantlib.data import load_dataset\n"
        "def peak():\n"
        "    status = Path('/proc/self/status').read_text().splitlines()\n"
        "    return int(next(line for line in status if line.startswith('VmHWM')).split()[1]) * 1024\n"
        "before = peak()\n"
        f"with open({str(path)!r}, 'rb') as upload:\n"
        f"    {call}\n"
        "print(peak() - before)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, (call, run.stderr[-2000:])
    return int(run.stdout)


def test_a_256_mib_dataset_is_checked_within_64_mib(tmp_path: Path) -> None:
    path = tmp_path / "big.npz"
    _big_npz(path, ARRAY_BYTES)
    whole = _peak_growth("load_dataset(upload)", path)
    checked = _peak_growth("check_data(upload, 1 << 40)", path)
    print(f"\npeak memory grew by {checked >> 20} MiB checking {ARRAY_BYTES >> 20} MiB ({whole >> 20} MiB loading it)")
    assert whole >= ARRAY_BYTES * 3 // 4, f"the control: loading the array whole shows in the peak ({whole} B)"
    assert checked < LIMIT_BYTES, f"checking raised the peak by {checked} B"
