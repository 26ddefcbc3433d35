"""``Standardizer.save`` and ``Standardizer.load`` (:class:`Persistence`),
and their file: an ``.npz`` archive that loads without pickle.

Entries: ``format`` (the string ``bnfast.Standardizer``), ``version`` (1),
``meta`` (JSON: the constructor's ``params``, the fitted data's ``ndim``,
its reduced ``axes``, the ``feature_shape`` and, when fitted on a DataFrame,
its ``feature_names``) and the moments ``count``,
``mean``, ``m2`` (arrays of the feature shape).
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from typing import Any, NamedTuple, TypeVar, Union

import numpy as np

from ._files import atomic_write, special_file_kind
from ._moments import Moments
from ._validate import normalize_axes

FORMAT = "bnfast.Standardizer"
FORMAT_VERSION = 1
PathLike = Union[str, "os.PathLike[str]"]
_P = TypeVar("_P", bound="Persistence")


class State(NamedTuple):
    """What a file holds: the constructor's parameters and the fit."""

    params: dict[str, Any]
    ndim: int
    axes: tuple[int, ...]
    feature_shape: tuple[int, ...]
    moments: Moments
    feature_names: np.ndarray | None = None  # of str (object dtype)


def _plain(value: object) -> object:
    """A JSON-ready copy of a parameter value (NumPy scalars from grids and
    the like become Python numbers)."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.dtype, type)):  # the dtype parameter: by name
        return np.dtype(value).name
    return value


def saved_name(path: PathLike) -> str:
    """The file :func:`write` writes: ``path``, with ``.npz`` appended unless
    it ends so (as np.savez names files)."""
    name = os.fspath(path)
    return name if name.endswith(".npz") else name + ".npz"


def write(path: PathLike, state: State) -> None:
    """Save a fitted Standardizer's state to ``path`` (``.npz`` appended as
    np.savez would), atomically (:func:`bnfast._files.atomic_write`)."""
    meta = {
        "params": {k: _plain(v) for k, v in state.params.items()},
        "ndim": state.ndim,
        "axes": list(state.axes),
        "feature_shape": list(state.feature_shape),
    }
    if state.feature_names is not None:
        meta["feature_names"] = [str(n) for n in state.feature_names]
    moments = state.moments
    with atomic_write(saved_name(path), "path") as f:
        np.savez(
            f,
            format=np.array(FORMAT),
            version=np.array(FORMAT_VERSION),
            meta=np.array(json.dumps(meta)),
            count=moments.count,
            mean=moments.mean,
            m2=moments.m2,
        )


def not_saved(name: str, why: object) -> ValueError:
    """The error for a file that is not a saved Standardizer."""
    return ValueError(f"{name} is not a saved bnfast Standardizer ({why})")


def read(path: PathLike) -> tuple[State, str]:
    """Read and check a file written by :func:`write`; returns its state (the
    parameters not yet checked) and the name of the file read (with the
    .npz suffix np.savez may have added).

    FileNotFoundError if there is no such file (with or without the .npz
    suffix), ValueError naming the file for anything but a saved Standardizer.
    """
    name = os.fspath(path)
    if not os.path.exists(name) and os.path.exists(name + ".npz"):
        name += ".npz"  # as np.savez named it
    if not os.path.exists(name):
        raise FileNotFoundError(f"No such file: {name!r}")
    kind = special_file_kind(name)
    if kind is not None:  # (np.load would wait forever on a FIFO)
        raise not_saved(name, f"it is {kind}, not a regular file")
    try:
        data = np.load(name, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise not_saved(name, exc) from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise not_saved(name, "not an .npz archive")
    try:
        with data:
            missing = {"format", "version", "meta", "count", "mean", "m2"} - set(data.files)
            if missing:
                raise not_saved(name, f"missing entries {sorted(missing)}")
            fmt, version = data["format"], data["version"]
            if fmt.shape != () or str(fmt) != FORMAT:
                raise not_saved(name, f"format is {str(fmt)!r}")
            if (
                version.shape != ()
                or version.dtype.kind not in "iu"
                or int(version) != FORMAT_VERSION
            ):
                raise not_saved(name, f"unsupported version {version!r}")
            meta = json.loads(str(data["meta"]))
            count, mean, m2 = data["count"], data["mean"], data["m2"]
    except (ValueError, TypeError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith(name):
            raise
        raise not_saved(name, exc) from None
    try:
        if mean.dtype.kind != "f" or m2.dtype.kind != "f":
            raise TypeError(f"mean/m2 must be floating point, got {mean.dtype}/{m2.dtype}")
        params = dict(meta["params"])
        if isinstance(params.get("axis"), list):
            params["axis"] = tuple(params["axis"])
        ndim = int(meta["ndim"])
        axes = normalize_axes(tuple(int(a) for a in meta["axes"]), ndim)
        feature_shape = tuple(int(n) for n in meta["feature_shape"])
        if len(feature_shape) != ndim - len(axes) or not axes:
            raise ValueError(
                f"feature shape {feature_shape} does not fit {ndim}-D data reduced over axes {axes}"
            )
        names = meta.get("feature_names")
        feature_names = None
        if names is not None:
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise TypeError("feature_names must be a list of strings")
            if len(names) != math.prod(feature_shape):
                raise ValueError(
                    f"{len(names)} feature names for features of shape {feature_shape}"
                )
            feature_names = np.asarray(names, dtype=object)
        moments = Moments(count, mean, m2)
        if moments.shape != feature_shape:
            raise ValueError(
                f"statistics of shape {moments.shape} for features of shape {feature_shape}"
            )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise not_saved(name, exc) from None
    return State(params, ndim, axes, feature_shape, moments, feature_names), name


class Persistence:
    """``save`` and ``load`` for a class that gives its state
    (``_saved_state``) and is made from one (``_from_saved``)."""

    def _saved_state(self) -> State:
        raise NotImplementedError

    @classmethod
    def _from_saved(cls: type[_P], state: State, name: str) -> _P:
        raise NotImplementedError

    def save(self, path: PathLike) -> None:
        """Write the parameters and statistics to an ``.npz`` file (no pickle).

        Parameters
        ----------
        path : str or os.PathLike
            The file; the suffix ``.npz`` is added when it is missing, as
            NumPy does (:meth:`load` finds the file either way). Written
            atomically: to a temporary file in the same directory, flushed
            and renamed over ``path`` when complete, so a failed save (a
            full disk, an interrupt) leaves a previous file intact.

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        OSError
            If the file cannot be written.
        ValueError
            If ``path`` is a FIFO, a device, a socket or a directory.

        Examples
        --------
        >>> import os, tempfile
        >>> import bnfast
        >>> path = os.path.join(tempfile.mkdtemp(), "stats.npz")
        >>> bnfast.Standardizer().fit([[1.0], [3.0]]).save(path)
        >>> bnfast.Standardizer.load(path).mean_
        array([2.])
        """
        write(path, self._saved_state())

    @classmethod
    def load(cls: type[_P], path: PathLike) -> _P:
        """Read a fitted Standardizer from a file written by :meth:`save`.

        Parameters
        ----------
        path : str or os.PathLike
            The file, with or without its ``.npz`` suffix.

        Returns
        -------
        Standardizer
            A fitted instance of ``cls`` with the saved parameters.

        Raises
        ------
        FileNotFoundError
            If there is no such file.
        ValueError
            If the file is not a saved Standardizer (the message names it).

        Examples
        --------
        See :meth:`save`.
        """
        state, name = read(path)
        return cls._from_saved(state, name)
