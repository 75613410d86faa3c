"""Random-access TFDS sources of a dataset's splits: embedded, catalog or prepared elsewhere.

`load_split_sources` prepares a dataset on first use (array_record, no TensorFlow) and
opens each requested split; what a user can fix (unknown name, missing split, no
TensorFlow for a catalog set that needs it, no network) becomes one-line errors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path

import filelock
import tensorflow_datasets as tfds

from crossjax.data import catalog
from crossjax.data.catalog import EMBEDDED_BUILDERS, FILES_DATASET
from crossjax.errors import ConfigError, CrossjaxError

log = logging.getLogger(__name__)


def default_data_dir() -> str:
    """`$CROSSJAX_DATA_DIR`, else TFDS's own default (`~/tensorflow_datasets`)."""
    return os.environ.get("CROSSJAX_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def _is_missing_tensorflow(error: BaseException) -> bool:
    """True for the ModuleNotFoundError of a missing TF (TFDS re-raises it with a prefix)."""
    missing = getattr(error, "name", None) == "tensorflow"
    return missing or "No module named 'tensorflow'" in str(error)


def _needs_tf_error(name: str, what: str) -> CrossjaxError:
    base = catalog.base_name(name)
    why = catalog.NEEDS_TENSORFLOW.get(base, "")
    elsewhere = (
        ""
        if base in catalog.UNREADABLE_WITHOUT_TENSORFLOW
        else " (or prepare it once elsewhere with file_format='array_record' and point "
        "data.data_dir at it)"
    )
    return CrossjaxError(
        f"{what} {name!r} needs TensorFlow{f' ({why})' if why else ''}: "
        f"pip install 'crossjax[tf]'{elsewhere}"
    )


def _make_builder(name: str, data_dir: str, builder_config=None):
    try:
        if builder_config is not None:  # a custom config of an embedded builder
            return tfds.builder(
                catalog.base_name(name), config=builder_config, data_dir=data_dir,
                file_format="array_record",
            )  # fmt: skip
        return tfds.builder(name, data_dir=data_dir, file_format="array_record")
    except tfds.core.registered.DatasetNotFoundError:
        raise ConfigError(
            f"unknown dataset {name!r}; embedded: {', '.join(sorted(EMBEDDED_BUILDERS))}, "
            f"{FILES_DATASET!r} for your own files (data.source), or any TFDS catalog name "
            "(see tfds.list_builders())"
        ) from None
    except ModuleNotFoundError as e:  # the builder's code needs TF just to be constructed
        if not _is_missing_tensorflow(e):
            raise
        try:  # prepared elsewhere: readable from its files without the builder's code
            return tfds.core.read_only_builder.builder_from_files(name, data_dir=data_dir)
        except Exception:  # noqa: BLE001 - not prepared, or unreadable without TF either
            raise _needs_tf_error(name, "reading dataset") from None
    except ValueError as e:  # e.g. unknown builder config "crossjax_digits/nope"
        raise ConfigError(f"bad dataset name {name!r}: {e}") from None


def preparing(data_dir: str | os.PathLike, name: str) -> contextlib.AbstractContextManager:
    """A lock on dataset `name` in `data_dir`, held from the check whether it is prepared
    until it is: processes that share a data_dir (test workers, the processes of one host)
    then prepare it once and the others read it (TFDS alone races: FileExistsError on
    its temporary folder, or a builder made before the files existed sees no splits).
    No lock where data_dir cannot be written (a read-only copy of prepared datasets) or
    is not a local path."""
    if "://" in str(data_dir):  # gs://, s3://: not a folder here; TFDS on its own
        return contextlib.nullcontext()
    folder = Path(data_dir) / ".locks"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = folder / f"{name.replace('/', '--')}.lock"
        lock.touch(exist_ok=True)
    except PermissionError:  # a read-only copy of prepared datasets: nothing to write
        return contextlib.nullcontext()
    return filelock.FileLock(str(lock))


def load_split_sources(name: str, data_dir: str | None, splits: list[str], builder_config=None):
    """Random-access sources for `splits` of TFDS dataset `name` and its DatasetInfo.
    `builder_config`: a custom BuilderConfig of embedded builder `name` (e.g. a pairing of
    local files, `crossjax.data.pairings.local_builder_config`).

    Embedded datasets are generated on first use (array_record, no network) and reused;
    catalog datasets are downloaded and prepared on first use. Splits may be TFDS split
    expressions ("train[:90%]", "train+test").
    """
    catalog.import_builder_module(name)
    data_dir = data_dir or default_data_dir()
    try:
        with preparing(data_dir, name):
            builder = _make_builder(name, data_dir, builder_config)
            if not isinstance(builder, tfds.core.read_only_builder.ReadOnlyBuilder):
                if catalog.base_name(name) in EMBEDDED_BUILDERS and not _is_prepared(builder):
                    log.info("Generating %s into %s (once; later runs reuse it)", name, data_dir)
                builder.download_and_prepare()
    except ModuleNotFoundError as e:  # mnist & co. decode their downloads with tf.io
        if _is_missing_tensorflow(e):
            raise _needs_tf_error(name, "preparing dataset") from None
        raise
    except PermissionError as e:
        raise ConfigError(
            f"cannot write dataset files to {data_dir} ({e}); set data.data_dir"
        ) from None
    except OSError as e:  # requests' ConnectionError after TFDS's retries, ...
        if not type(e).__module__.startswith(("requests", "urllib3")):
            raise
        raise CrossjaxError(
            f"cannot download dataset {name!r} ({type(e).__name__}); check the network, or "
            f"prepare it elsewhere and point data.data_dir at a copy of {data_dir}"
        ) from None
    available = list(builder.info.splits.keys())
    sources = {}
    for split in splits:
        names = re.sub(r"\[[^\]]*\]", "", split).split("+")
        missing = [s for s in names if s.strip() not in available]
        if available and missing:  # (mocked builders list no splits)
            raise ConfigError(
                f"dataset {name!r} has no split {missing[0].strip()!r}; it has: "
                f"{', '.join(available)} (slices work too, e.g. 'train[90%:]')"
            )
        try:
            sources[split] = builder.as_data_source(split=split)
        except ValueError as e:  # e.g. a slice past the end: "train[:512]" of 300
            raise ConfigError(f"bad split {split!r} of dataset {name!r}: {e}") from None
    return sources, builder.info


def _is_prepared(builder) -> bool:
    try:
        return builder.is_prepared()
    except Exception:  # noqa: BLE001 - older/mocked builders: just prepare.
        return False
