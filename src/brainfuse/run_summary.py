"""The summary printed at the end of a run: who was excluded and why, what was skipped, where
the report is.

A real dataset loses samples to a few causes repeated across subjects; listing each exclusion would
bury them. Reasons are grouped after shortening file paths to names and masking the subject,
session and run labels, so one cause shows once with its count.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

TOP_REASONS = 3

# A path is a token with a slash in it; the name after its last slash is what tells files apart.
_PATH = re.compile(r"[^\s'\"(),:;]*/([^\s/'\"(),:;]+)")
# BIDS entities that differ between samples of one cause (sub-01 vs sub-02).
_SAMPLE_ENTITY = re.compile(r"(?<![A-Za-z0-9])(sub|ses|run)-[A-Za-z0-9]+")


def reason_group(reason: str, subject: str | None = None) -> str:
    """The cause in ``reason``: file paths shortened to names, subject/session/run labels masked.

    Parameters
    ----------
    reason : str
        An exclusion reason from the QC table, e.g.
        ``"/data/sub-01/func/sub-01_bold.nii.gz: file is truncated"``.
    subject : str, optional
        The sample's subject label, masked too where a file name holds it outside a BIDS
        entity, in a name with an underscore (``OHSU_0050146_rois_cc200.1D`` for ``50146``).

    Returns
    -------
    str
        The same text with ``sub-*`` in place of ``sub-01`` and no directories, e.g.
        ``"sub-*_bold.nii.gz: file is truncated"``.
    """
    group = _SAMPLE_ENTITY.sub(r"\1-*", _PATH.sub(r"\1", reason))
    if subject:  # only inside names with an underscore, so "only 1 run" keeps its number
        label = re.compile(
            rf"(?<![A-Za-z0-9])0*{re.escape(subject.removeprefix('sub-'))}(?![A-Za-z0-9])"
        )
        group = re.sub(r"\S*_\S*", lambda name: label.sub("*", name.group()), group)
    return group


def run_summary(
    qc_table_path: str | Path,
    skipped: dict[str, str],
    report_path: str | Path,
    wall_seconds: float | None = None,
) -> str:
    """A short text summary of a finished run.

    Parameters
    ----------
    qc_table_path : str or Path
        The dataset QC table (``results/qc/qc.tsv``) with ``modality``, ``status`` and ``reason``.
    skipped : dict of str to str
        Methods the plan skipped, name -> reason.
    report_path : str or Path
        The report's index page.
    wall_seconds : float, optional
        Seconds from planning to the end of this invocation (a resumed run counts only its own).

    Returns
    -------
    str
        Per modality the included and excluded counts and the most frequent exclusion causes, then
        the skipped methods and the report's absolute path (noted when a partial run has not made
        it yet).
    """
    qc = pd.read_csv(qc_table_path, sep="\t", dtype=str, keep_default_na=False)
    lines = ["brainfuse run summary", "samples:"]
    for modality, rows in qc.groupby("modality", sort=False):
        excluded = rows[rows["status"] != "included"]
        lines.append(
            f"  {modality}: {len(rows) - len(excluded)} included, {len(excluded)} excluded"
        )
        subjects = excluded["subject"] if "subject" in excluded else excluded["sample_id"]
        causes = pd.Series(
            [reason_group(r, s) for r, s in zip(excluded["reason"], subjects, strict=True)],
            dtype=object,
        ).value_counts()
        lines += [f"    {count} x {cause}" for cause, count in causes.head(TOP_REASONS).items()]
        if len(causes) > TOP_REASONS:
            lines.append(f"    ... and {len(causes) - TOP_REASONS} other reasons")
    if skipped:
        lines.append("methods skipped:")
        lines += [f"  {name}: {reason}" for name, reason in skipped.items()]
    report = Path(report_path).resolve()
    lines.append(f"report: {report}" if report.exists() else f"report: not made yet ({report})")
    if wall_seconds is not None:
        minutes, seconds = divmod(round(wall_seconds), 60)
        lines.append(f"wall time: {minutes} min {seconds:02d} s")
    return "\n".join(lines)
