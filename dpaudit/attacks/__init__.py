"""Attacks: per-example scores (higher = more likely member) and the metrics recomputed from them."""

from dpaudit._lazy import lazy_exports

_EXPORTS = {
    "AttackScores": "scores",
    "AttackMetrics": "scores",
    "compute_metrics": "metrics",
    "auc": "metrics",
    "tpr_at_fpr": "metrics",
    "roc_curve_points": "metrics",
    "ScoringModel": "scoring",
    "HFScoringModel": "scoring",
    "TokenStats": "scoring",
    "ATTACKS": "registry",
    "get_attack": "registry",
    "LiraAttack": "lira",
    "lira_scores": "lira",
    "RmiaAttack": "rmia",
    "rmia_scores": "rmia",
    "exact_exposure": "exposure",
    "extrapolated_exposure": "exposure",
    "exposure_by_repetition": "exposure",
    "canary_exposure": "canary",
    "canary_extraction": "canary",
    "verbatim_memorization": "memorization",
    "detect_pii": "pii_detect",
    "match_leaked": "pii_detect",
    "pii_extraction": "pii_extraction",
    "pii_inference": "pii_reconstruction",
    "pii_reconstruction": "pii_reconstruction",
    "blind_baseline": "blind",
    "run_attack_stage": "stage",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
