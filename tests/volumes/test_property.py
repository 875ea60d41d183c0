"""Property: random operation sequences with random paths never touch the canary.

Runs against the fs layer directly (the routes add only parsing, tested elsewhere) so
that many sequences fit in a few seconds. Every operation may fail, but only with a
lightd error; after every step the watched canary must be untouched.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightd.errors import LightdError
from lightd.fs import ops
from lightd.fs.archive import ArchiveLimits, compress, extract
from lightd.fs.beneath import Root
from lightd.fs.paths import parse_path
from tests.support.canary import Canary, plant_links

NAMES = ["..", ".", "", "out", "out_file", "rel", "sub", "deep", "loop", "inside", "a", "b"]
NAMES += ["secret.txt", "inner.txt", "real.txt", "x.tar.gz", "\u2025", "%2e%2e"]
LIMITS = ArchiveLimits(max_total_bytes=10_000_000, max_entries=1000, max_ratio=200)

paths = st.builds(
    lambda lead, parts: lead + "/".join(parts),
    st.sampled_from(["", "/", "./"]),
    st.lists(st.sampled_from(NAMES), min_size=0, max_size=4),
)

Step = Callable[[Root], object]


def _steps() -> st.SearchStrategy[Step]:
    return st.one_of(
        st.builds(lambda p: lambda r: ops.list_dir(r, parse_path(p)), paths),
        st.builds(lambda p: lambda r: ops.open_for_read(r, parse_path(p)), paths),
        st.builds(lambda p: lambda r: ops.write_file(r, parse_path(p), b"pwned"), paths),
        st.builds(lambda p: lambda r: ops.make_folder(r, parse_path(p)), paths),
        st.builds(lambda p: lambda r: ops.delete(r, parse_path(p)), paths),
        st.builds(lambda p: lambda r: ops.change_mode(r, parse_path(p), 0o777), paths),
        st.builds(
            lambda a, b, o: lambda r: ops.move(r, parse_path(a), parse_path(b), overwrite=o),
            paths,
            paths,
            st.booleans(),
        ),
        st.builds(
            lambda a, b, o: lambda r: ops.copy(r, parse_path(a), parse_path(b), overwrite=o),
            paths,
            paths,
            st.booleans(),
        ),
        st.builds(
            lambda a, o: (
                lambda r: compress(
                    r, sources=[parse_path(a)], output=parse_path(o), fmt="tar.gz", overwrite=True
                )
            ),
            paths,
            paths,
        ),
        st.builds(
            lambda a, d: (
                lambda r: extract(
                    r,
                    archive=parse_path(a),
                    destination=parse_path(d),
                    limits=LIMITS,
                    overwrite=True,
                )
            ),
            paths,
            paths,
        ),
    )


def _run(step: Step, root: Root) -> None:
    try:
        result = step(root)
    except LightdError:
        return
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], int):
        os.close(result[0])


def test_random_operations_never_touch_the_canary(tmp_path: Path) -> None:
    canary = Canary(tmp_path)
    volume = tmp_path / "vol"

    @settings(
        max_examples=100,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.lists(_steps(), min_size=1, max_size=8))
    def check(steps: list[Step]) -> None:
        if volume.exists():
            shutil.rmtree(volume)
        volume.mkdir()
        plant_links(volume, canary)
        (volume / "a").mkdir()
        (volume / "a" / "f.txt").write_bytes(b"f")
        canary.watch()
        try:
            with Root(volume) as root:
                for number, step in enumerate(steps):
                    _run(step, root)
                    canary.assert_untouched(f"at step {number}")
        finally:
            canary.close()

    check()
