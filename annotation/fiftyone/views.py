"""Saved views for curators (they appear in the App's view bar of the dataset).

| name | what it shows |
| --- | --- |
| ``least-confident-masklets`` | videos by their least confident masklet (mean predicted IoU), frames' masks below the threshold |
| ``most-corrected-videos`` | videos with edited frames, most edited first |
| ``rejected-at-verification`` | videos with rejected masklets, only those masks shown |
| ``sent-back-at-verification`` | videos whose re-propagated masklets were judged unsatisfactory (back in review), only those masks shown |
| ``gt-disagreement`` | synthetic videos whose masks disagree with the ground truth (mean IoU below the threshold) |
| ``near-duplicates`` | videos whose pooled SAM 2 embedding nearly repeats another video's |
| ``to-reannotate`` / ``excluded`` / ``needs-review`` | what curators tagged (samples or labels) |
"""
from __future__ import annotations

from collections.abc import Sequence

__all__ = ["VIEWS_VERSION", "VIEW_NAMES", "build_views", "save_views"]

# Bump when a definition below changes: publish re-saves the views only then (saving is slow).
VIEWS_VERSION = 2

VIEW_NAMES = ("least-confident-masklets", "most-corrected-videos", "rejected-at-verification",
              "sent-back-at-verification", "gt-disagreement", "near-duplicates", "to-reannotate",
              "excluded", "needs-review")


def build_views(ds, *, confidence_thresh: float = 0.7, gt_iou_thresh: float = 0.7) -> dict:
    """{name: view} for ``ds`` (a dataset published by ``annotation.fiftyone.publish``)."""
    from fiftyone import ViewField as F

    views = {
        "least-confident-masklets": (
            ds.exists("least_masklet_pred_iou")
            .sort_by("least_masklet_pred_iou")
            .filter_labels("frames.masks", F("predicted_iou") < confidence_thresh, only_matches=False)
        ),
        "most-corrected-videos": (
            ds.match(F("effort_frames_edited") > 0).sort_by("effort_frames_edited", reverse=True)
        ),
        "rejected-at-verification": (
            ds.match(F("rejected_masklets") > 0)
            .filter_labels("frames.masks", F("status") == "rejected", only_matches=False)
        ),
        "sent-back-at-verification": (
            ds.match(F("sent_back_masklets") > 0)
            .filter_labels("frames.masks", (F("status") == "in_review")
                           & F("source").starts_with("repropagated:"), only_matches=False)
        ),
        "gt-disagreement": (
            ds.match(F("gt_iou_mean") < gt_iou_thresh).sort_by("gt_iou_mean")
            .filter_labels("frames.masks", F("gt_iou") < gt_iou_thresh, only_matches=False)
        ),
        "near-duplicates": ds.exists("near_duplicate_of").sort_by("near_duplicate_of"),
    }
    for name, tag in (("to-reannotate", "reannotate"), ("excluded", "exclude"),
                      ("needs-review", "needs-review")):
        tagged_samples = F("tags").contains(tag)
        tagged_labels = F("frames").filter(
            F("masks.detections").filter(F("tags").contains(tag)).length() > 0).length() > 0
        views[name] = ds.match(tagged_samples | tagged_labels)
    return views


def save_views(ds, families: Sequence[str] = (), **thresholds) -> list[str]:
    """Save (or refresh) every view of ``build_views`` on the dataset; returns their names."""
    names = []
    for name, view in build_views(ds, **thresholds).items():
        ds.save_view(name, view, overwrite=True)
        names.append(name)
    return names
