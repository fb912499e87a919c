"""Labeling configs, kept as XML files in ``configs/``; the object-dependent part (one brush label
and one verdict per object slot) is generated from the per-object template files.

A project serves a whole dataset, so its config has ``n_slots`` object slots (``object_1`` ..
``object_N``); each task's data says which masklet sits in which slot (``data.objects``) and shows
it in the header (``data.legend``).
"""
from __future__ import annotations

import re
from importlib import resources

__all__ = [
    "BRUSH_FROM_NAME",
    "CORRECTION",
    "CORRECTION_VERDICTS",
    "IMAGE_TO_NAME",
    "KINDS",
    "VERIFICATION",
    "VERIFICATION_VERDICTS",
    "build_label_config",
    "config_slots",
    "label_for_slot",
    "slot_of_label",
    "slot_of_verdict_name",
    "verdict_name",
]

CORRECTION = "correction"
VERIFICATION = "verification"
KINDS = (CORRECTION, VERIFICATION)
IMAGE_TO_NAME = "frames"
BRUSH_FROM_NAME = "mask"
CORRECTION_VERDICTS = ("fixed", "reject", "unsure")
VERIFICATION_VERDICTS = ("satisfactory", "unsatisfactory")
VERDICTS = {CORRECTION: CORRECTION_VERDICTS, VERIFICATION: VERIFICATION_VERDICTS}

# Distinct, readable overlay colours (cycled).
_COLORS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
           "#bfef45", "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3")

_LABEL_RE = re.compile(r"^object_([1-9][0-9]*)$")
_VERDICT_RE = re.compile(r"^verdict_object_([1-9][0-9]*)$")


def _read(name: str) -> str:
    return resources.files("annotation.labelstudio").joinpath("configs").joinpath(name).read_text("utf-8")


def label_for_slot(slot: int) -> str:
    return f"object_{slot}"


def verdict_name(slot: int) -> str:
    return f"verdict_object_{slot}"


def slot_of_label(label: str) -> int | None:
    m = _LABEL_RE.match(label) if isinstance(label, str) else None
    return int(m.group(1)) if m else None


def slot_of_verdict_name(name: str) -> int | None:
    m = _VERDICT_RE.match(name) if isinstance(name, str) else None
    return int(m.group(1)) if m else None


def build_label_config(kind: str, n_slots: int) -> str:
    """The labeling config XML of a ``kind`` project with ``n_slots`` object slots."""
    if kind not in KINDS:
        raise ValueError(f"unknown round kind {kind!r}; expected one of {KINDS}")
    if not isinstance(n_slots, int) or n_slots < 1:
        raise ValueError(f"n_slots must be a positive int, got {n_slots!r}")
    label_t = _read("object_label.xml").rstrip("\n")
    verdict_t = _read(f"{kind}_verdict.xml").rstrip("\n")
    labels = "\n".join(label_t.format(slot=s, color=_COLORS[(s - 1) % len(_COLORS)])
                       for s in range(1, n_slots + 1))
    verdicts = "\n".join(verdict_t.format(slot=s) for s in range(1, n_slots + 1))
    return _read(f"{kind}.xml").format(labels=labels, verdicts=verdicts)


def config_slots(label_config: str) -> int:
    """How many object slots a config built here has (0 for any other config)."""
    return len(re.findall(r'<Label value="object_[1-9][0-9]*"', label_config or ""))
