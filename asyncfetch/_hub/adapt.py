"""Fitting a checkpoint to a model: unwrap it, strip prefixes, match names and shapes, report.

torch-free: tensors are only asked for their ``.shape``.
"""

from __future__ import annotations

import collections
import fnmatch
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._errors import CheckpointMismatch

DEFAULT_PREFIXES = ("module.", "_orig_mod.")
WRAPPER_KEYS = ("state_dict", "model", "model_ema", "state_dict_ema")
MAX_DEPTH = 3
LISTED = 8

Shape = tuple[int, ...] | None


@dataclass(frozen=True)
class LoadReport:
    """What :func:`asyncfetch.load_pretrained` did with each key.

    Attributes:
        loaded: model keys that got the checkpoint's values.
        missing: model keys the checkpoint has no value for (they keep their values).
        unexpected: checkpoint keys (after prefix stripping) the model does not have.
        mismatched_shapes: keys both have with different shapes, as
            ``{key: (checkpoint_shape, model_shape)}``; not loaded.
        ignored: keys dropped by an ``ignore_keys`` pattern (from either side).
        source: where the checkpoint came from.
        left_as_is: model keys an ``ignore_keys`` pattern kept from loading: they keep their
            current values (a random init); counted among the model's keys in the summary.
    """

    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched_shapes: Mapping[str, tuple[Shape, Shape]] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()
    source: str = ""
    left_as_is: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when every key matched (ignored ones aside)."""
        return not (self.missing or self.unexpected or self.mismatched_shapes)

    def summary(self) -> str:
        """A readable multi-line summary."""
        total = (
            len(self.loaded) + len(self.missing) + len(self.mismatched_shapes)
            + len(self.left_as_is)
        )  # fmt: skip
        mismatches = [
            f"{key}: checkpoint {_shape(c)} vs model {_shape(m)}"
            for key, (c, m) in self.mismatched_shapes.items()
        ]
        lines = [
            f"loaded weights from {self.source or 'a checkpoint'}:",
            f"  loaded      {len(self.loaded)} of {total} model keys",
            f"  missing     {_listing(self.missing)}",
            f"  unexpected  {_listing(self.unexpected)}",
            f"  mismatched  {_listing(mismatches, sep='; ')}",
            f"  ignored     {_listing(self.ignored)}",
            f"  left as is  {_listing(self.left_as_is)}",
        ]
        if self.left_as_is:
            lines[-1] += " (ignored: not loaded, they keep their current values)"
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _shape(shape: Shape) -> str:
    return "(no shape)" if shape is None else str(tuple(shape))


def _listing(items: Iterable[str], sep: str = ", ") -> str:
    items = list(items)
    if not items:
        return "0"
    shown = sep.join(items[:LISTED])
    more = f"{sep}... and {len(items) - LISTED} more" if len(items) > LISTED else ""
    return f"{len(items)}: {shown}{more}"


def log_report(report: LoadReport, logger: logging.Logger) -> None:
    """Log the summary: INFO when everything matched, else WARNING."""
    logger.log(logging.INFO if report.ok else logging.WARNING, "%s", report.summary())


def shape_of(value: Any) -> Shape:
    """A tensor's shape as a tuple; None for values without one."""
    shape = getattr(value, "shape", None)
    return None if shape is None else tuple(int(n) for n in shape)


def shapes_of(state: Mapping[str, Any]) -> dict[str, Shape]:
    """``{key: shape}`` of a state dict."""
    return {key: shape_of(value) for key, value in state.items()}


# unwrap -------------------------------------------------------------------------------------


def looks_like_state_dict(obj: Any) -> bool:
    """A mapping of names to tensors (a few non-tensor extras allowed, no nested dicts)."""
    if not isinstance(obj, Mapping) or not obj:
        return False
    values = list(obj.values())
    return (
        all(isinstance(k, str) for k in obj)
        and not any(isinstance(v, Mapping) for v in values)
        and any(hasattr(v, "shape") for v in values)
    )


def unwrap(checkpoint: Any, key: str | None = None, *, source: str = "") -> dict[str, Any]:
    """The state dict inside ``checkpoint``: itself, ``checkpoint[key]``, or the first of the
    common wrapper keys (state_dict, model, model_ema, state_dict_ema) that holds one.

    Raises:
        CheckpointMismatch: no state dict in there (the message lists the keys there are).
    """
    if key is not None:
        if isinstance(checkpoint, Mapping) and key in checkpoint:
            found = _unwrap(checkpoint[key], 1)
            if found is not None:
                return found
        raise CheckpointMismatch(
            f"{source}: the checkpoint has no state dict under {key!r} "
            f"({_describe(checkpoint)}); pick another checkpoint_key",
            url=source if "://" in source else None,
        )
    found = _unwrap(checkpoint, 0)
    if found is None:
        raise CheckpointMismatch(
            f"{source}: found no state dict in the checkpoint ({_describe(checkpoint)}); "
            f"pass checkpoint_key= naming the entry that holds the weights",
            url=source if "://" in source else None,
        )
    return found


def _unwrap(obj: Any, depth: int) -> dict[str, Any] | None:
    if callable(getattr(obj, "state_dict", None)) and not isinstance(obj, Mapping):
        obj = obj.state_dict()  # a pickled module, e.g. checkpoint["model"]
    if looks_like_state_dict(obj):
        return dict(obj)
    if not isinstance(obj, Mapping) or depth >= MAX_DEPTH:
        return None
    for key in WRAPPER_KEYS:
        if key in obj:
            found = _unwrap(obj[key], depth + 1)
            if found is not None:
                return found
    return None


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = [str(k) for k in obj]
        return f"a dict with keys {_listing(keys)}"
    return f"a {type(obj).__name__}"


# match --------------------------------------------------------------------------------------


def plan(
    state: Mapping[str, Any],
    model_shapes: Mapping[str, Shape],
    *,
    strip_prefixes: Iterable[str] = DEFAULT_PREFIXES,
    ignore_keys: Iterable[str] = (),
    strict: bool = False,
    source: str = "",
) -> tuple[LoadReport, dict[str, Any]]:
    """Decide which checkpoint values go into which model keys.

    Returns:
        The report, and the state dict to load (``load_state_dict(..., strict=False)``).

    Raises:
        CheckpointMismatch: nothing at all can be loaded (with a hint why), or ``strict`` and
            something does not match.
    """
    patterns = tuple(ignore_keys)
    renamed, clashes = _rename(state, model_shapes, tuple(strip_prefixes))
    selected, mismatched, unexpected = _sort(renamed, model_shapes, patterns)
    ignored = [k for k in renamed if _ignored(k, patterns)]
    ignored += [k for k in model_shapes if _ignored(k, patterns) and k not in renamed]
    missing = [
        k for k in model_shapes
        if k not in selected and k not in mismatched and not _ignored(k, patterns)
    ]  # fmt: skip
    left_as_is = [k for k in model_shapes if _ignored(k, patterns)]
    report = LoadReport(
        tuple(selected), tuple(missing), tuple(clashes + unexpected), mismatched,
        tuple(ignored), source, tuple(left_as_is),
    )  # fmt: skip
    url = source if "://" in source else None
    if not selected and renamed:
        message = _nothing_matches(report, renamed, model_shapes)
        raise CheckpointMismatch(message, url=url, report=report)
    if strict and not report.ok:
        raise CheckpointMismatch(
            f"strict loading failed: not every key matches.\n{report.summary()}\n"
            "Pass strict=False to load what matches, or ignore_keys= for keys you expect to differ",
            url=url,
            report=report,
        )
    return report, selected


def _sort(
    renamed: Mapping[str, Any], model_shapes: Mapping[str, Shape], patterns: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, tuple[Shape, Shape]], list[str]]:
    """Split the checkpoint's values into loadable, shape-mismatched and unexpected ones."""
    selected: dict[str, Any] = {}
    mismatched: dict[str, tuple[Shape, Shape]] = {}
    unexpected: list[str] = []
    for key, value in renamed.items():
        if _ignored(key, patterns):
            continue
        if key not in model_shapes:
            unexpected.append(key)
        elif shape_of(value) != model_shapes[key]:
            mismatched[key] = (shape_of(value), model_shapes[key])
        else:
            selected[key] = value
    return selected, mismatched, unexpected


def _ignored(key: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def _rename(
    state: Mapping[str, Any], model_shapes: Mapping[str, Shape], prefixes: tuple[str, ...]
) -> tuple[dict[str, Any], list[str]]:
    """Strip ``prefixes`` from keys the model does not have as they are; exact names win.

    Returns the renamed state and the original names that clash with a name already taken.
    """
    renamed = {k: v for k, v in state.items() if k in model_shapes}
    clashes = []
    for key, value in state.items():
        if key in model_shapes:
            continue
        new = strip(key, prefixes)
        if new in renamed:
            clashes.append(key)
        else:
            renamed[new] = value
    return renamed, clashes


def strip(key: str, prefixes: Iterable[str]) -> str:
    """``key`` without any of ``prefixes`` in front, repeatedly (``_orig_mod.module.x`` → ``x``)."""
    prefixes = tuple(p for p in prefixes if p)
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def _nothing_matches(
    report: LoadReport, renamed: Mapping[str, Any], model_shapes: Mapping[str, Shape]
) -> str:
    where = f"{report.source}: " if report.source else ""
    if report.mismatched_shapes:
        key, (have, want) = next(iter(report.mismatched_shapes.items()))
        shared = len(report.mismatched_shapes)
        return (
            f"{where}none of the checkpoint's weights fit the model: the {shared} "
            f"names they share all differ in shape (e.g. {key}: checkpoint {_shape(have)} vs model "
            f"{_shape(want)}); is it the same architecture and size?"
        )
    return (
        f"{where}no key of the checkpoint matches the model; {prefix_hint(renamed, model_shapes)}"
    )


def prefix_hint(checkpoint_keys: Iterable[str], model_keys: Iterable[str]) -> str:
    """Why two key sets do not meet, e.g. "keys look like they carry prefix 'encoder.'"."""
    ckpt, model = list(checkpoint_keys), list(model_keys)
    prefix = _best_prefix(ckpt, set(model))
    if prefix:
        return (
            f"the checkpoint's keys look like they carry prefix {prefix!r} "
            f"(e.g. {_first(ckpt, prefix)!r}): pass strip_prefixes=({prefix!r},)"
        )
    prefix = _best_prefix(model, set(ckpt))
    if prefix:
        return (
            f"the model's keys carry prefix {prefix!r} that the checkpoint's lack (e.g. "
            f"{_first(model, prefix)!r}): load into that submodule (model.{prefix[:-1]}) instead"
        )
    return (
        f"they share no names (checkpoint: {', '.join(ckpt[:3])}, ...; model: "
        f"{', '.join(model[:3])}, ...); is this the checkpoint for this model?"
    )


def _best_prefix(keys: list[str], targets: set[str]) -> str | None:
    """The dotted prefix whose removal makes the most of ``keys`` land in ``targets``."""
    counts: collections.Counter[str] = collections.Counter()
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts)):
            prefix = ".".join(parts[:n]) + "."
            if key[len(prefix) :] in targets:
                counts[prefix] += 1
    if not counts:
        return None
    return counts.most_common(1)[0][0]


def _first(keys: list[str], prefix: str) -> str:
    return next(k for k in keys if k.startswith(prefix))
