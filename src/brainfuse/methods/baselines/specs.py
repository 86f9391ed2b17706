"""The scikit-learn baselines: one ``fit`` stage each, a feature extractor and an estimator.

Torch-free and sklearn-free, so the Snakefile can read it at parse time.
"""

from __future__ import annotations

from brainfuse.methods.spec import MethodSpec

__all__ = ["SPECS"]


def _baseline(name: str, modality: str, estimator: str, features: str, text: str) -> MethodSpec:
    return MethodSpec(
        name=name,
        family="sklearn",
        modalities=(modality,) if modality else (),
        stages=("fit",),
        description=text,
        estimator=estimator,
        features=features,
    )


SPECS = (
    _baseline("majority", "", "majority", "first", "majority class (chance level)"),
    _baseline("logreg_fc", "fmri", "logreg", "fc", "logistic regression on Fisher-z FC"),
    _baseline("svm_fc", "fmri", "svm", "fc", "linear SVM on Fisher-z FC"),
    _baseline(
        "logreg_tangent", "fmri", "logreg", "tangent", "logistic regression on tangent-space FC"
    ),
    _baseline("svm_tangent", "fmri", "svm", "tangent", "linear SVM on tangent-space FC"),
    _baseline("logreg_sc", "sc", "logreg", "sc", "logistic regression on SC edges"),
    _baseline("svm_sc", "sc", "svm", "sc", "linear SVM on SC edges"),
    _baseline("logreg_eeg", "eeg", "logreg", "eeg", "logistic regression on log band power + AEC"),
    _baseline("svm_eeg", "eeg", "svm", "eeg", "linear SVM on log band power + AEC"),
)
