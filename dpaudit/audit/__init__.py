"""Audit: empirical epsilon lower bounds against the accountants' upper bounds, and the self-test."""

from dpaudit._lazy import lazy_exports

_EXPORTS = {
    "EpsilonLowerBound": "lower_bound",
    "bound_threshold": "lower_bound",
    "bound_one_run": "lower_bound",
    "audit_threshold": "lower_bound",
    "audit_threshold_grid": "lower_bound",
    "audit_one_run": "lower_bound",
    "audit_one_run_estimators": "lower_bound",
    "ESTIMATORS": "estimators",
    "Estimator": "estimators",
    "get_estimator": "estimators",
    "register_estimator": "estimators",
    "mu_lower_bound": "fdp",
    "clopper_pearson_upper": "bounds",
    "clopper_pearson_lower": "bounds",
    "epsilon_lower_bound_counts": "bounds",
    "one_run_epsilon_lower_bound": "one_run",
    "one_run_p_value": "one_run",
    "AuditVerdict": "verdict",
    "judge": "verdict",
    "GradientCanaryHooks": "gradient_canaries",
    "gradient_canary_audit": "gradient_canaries",
    "VARIANTS": "variants",
    "make_variant": "variants",
    "run_selftest": "selftest",
    "SelftestResult": "selftest",
    "run_audit_stage": "stage",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
