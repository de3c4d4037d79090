"""The report as a reader sees it: formatted rows and plain-English explanations.

:func:`build_view` turns the report mapping into strings and table rows that
the Markdown and HTML renderers only lay out, so both formats say exactly the
same thing. Nothing here reads files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from dpaudit.reports import fmt, policy
from dpaudit.reports.schema import APPROXIMATE_ACCOUNTANTS, RIGOROUS_ACCOUNTANTS, accountant_kind

__all__ = ["VERDICT_WORDS", "build_view"]

VERDICT_WORDS = {
    "pass": "PASS",
    "fail": "FAIL",
    "inconclusive": "INCONCLUSIVE",
    "not-applicable": "N/A",
}
AUDIT_WORDS = {
    "consistent": "CONSISTENT",
    "violation": "VIOLATION",
    "inconclusive": "INCONCLUSIVE",
    "not-private": "NOT PRIVATE",
}
MECHANISMS = {
    "poisson-subsampled-gaussian": "DP-SGD, Poisson-subsampled Gaussian mechanism",
    "shuffled-gaussian": "DP-SGD, shuffled fixed-size batches, Gaussian mechanism",
    "none": "none (trained without differential privacy)",
    "claimed": "not stated: the (ε, δ) is the publisher's claim",
}
NOT_STATED = "not stated (publisher's claim)"


def _models(report: Mapping[str, Any]) -> list[str]:
    return [m for m in ("target", "baseline") if m in report["models"]]


def _get(report: Mapping[str, Any], model: str, *path: str) -> Any:
    node: Any = report["models"].get(model)
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _verdict(report: Mapping[str, Any]) -> dict[str, Any]:
    pol = report["policy"]
    items = []
    for name, item in pol["items"].items():
        baseline_value = None
        if "baseline" in report["models"] and name in policy.POLICY_THRESHOLDS:
            check = policy.check_threshold(
                report["models"]["baseline"]["summary"], name, item["threshold"], model="baseline"
            )
            baseline_value = check.value
        if name == policy.AUDIT_CHECK:
            baseline = AUDIT_WORDS.get(
                _get(report, "baseline", "summary", "audit_verdict") or "", fmt.DASH
            )
        elif name == policy.LEARNED_CHECK:
            baseline = (
                "did not learn"
                if _get(report, "baseline", "summary", "did_not_learn")
                else fmt.DASH
            )
        else:
            baseline = _policy_value(name, baseline_value, None)
        items.append(
            {
                "name": name,
                "description": policy.DESCRIPTIONS.get(name, name),
                "threshold": "must hold"
                if name in (policy.AUDIT_CHECK, policy.LEARNED_CHECK)
                else fmt.threshold(item["threshold"]),
                "target": _policy_value(name, item["value"], item.get("attack")),
                "baseline": baseline,
                "verdict": item["verdict"],
                "word": VERDICT_WORDS[item["verdict"]],
                "detail": item["detail"],
            }
        )
    checked = [i for i in items if i["verdict"] != policy.NOT_APPLICABLE]
    failed = [i for i in items if i["verdict"] == policy.FAIL]
    if pol["verdict"] == policy.FAIL:
        status, word = "fail", "FAIL"
        headline = (
            f"The target model does not meet the release policy: {len(failed)} of {len(checked)} "
            "checks failed (" + "; ".join(i["detail"] for i in failed) + ")."
        )
    elif pol["verdict"] == policy.INCONCLUSIVE:
        unsure = [i for i in items if i["verdict"] == policy.INCONCLUSIVE]
        status, word = "inconclusive", "INCONCLUSIVE"
        headline = (
            "The checks made found no breach, but they cannot vouch for the model: "
            + "; ".join(i["detail"] for i in unsure)
            + ". An inconclusive check is not a pass."
        )
    elif pol["configured"]:
        status, word = "pass", "PASS"
        headline = (
            f"The target model meets every release threshold checked ({len(checked)} checks)."
        )
    else:
        status, word = "none", "NO POLICY SET"
        headline = (
            "No release thresholds were configured for this run ([report] max_epsilon, max_auc, "
            "max_tpr_at_low_fpr, max_exposure, max_pii_extraction_rate), so the model was not judged "
            "against a policy; the measurements below are reported as found."
            + (
                " The empirical audit does not contradict the claimed ε."
                if pol["items"].get(policy.AUDIT_CHECK, {}).get("verdict") == policy.PASS
                else ""
            )
        )
    return {
        "status": status,
        "word": word,
        "headline": headline,
        "items": items,
        "configured": pol["configured"],
    }


def _policy_value(name: str, value: Any, attack: str | None) -> str:
    if name == policy.AUDIT_CHECK:
        return AUDIT_WORDS.get(value or "", fmt.DASH)
    if name not in policy.POLICY_THRESHOLDS:  # utility_learned: its value is words
        return fmt.DASH if value is None else str(value)
    if value is None:
        return "not measured"
    shown = policy.show_value(name, value)
    if name in ("max_auc", "max_tpr_at_low_fpr") and attack:
        shown += f" ({attack})"
    if name == "max_exposure":
        shown += " bits"
    return shown


def _key_numbers(report: Mapping[str, Any]) -> list[dict[str, str]]:
    def row(label: str, render: Any, key: str) -> dict[str, str]:
        return {
            "label": label,
            **{m: render(_get(report, m, "summary", key)) for m in ("target", "baseline")},
        }

    def best(entry: Any) -> str:
        return fmt.DASH if not entry else f"{fmt.fixed(entry['value'])} ({entry['attack']})"

    def utility(entry: Any) -> str:
        return (
            fmt.DASH
            if not entry
            else f"{fmt.num(entry['value'], 4)} ({entry['metric'].replace('_', ' ')})"
        )

    return [
        row("Claimed ε (primary accountant)", fmt.eps, "epsilon"),
        row("Empirical ε lower bound", fmt.eps, "epsilon_lower"),
        row("Best membership-inference AUC (0.5 = chance)", best, "max_auc"),
        row("Best TPR at 0.1% FPR", best, "max_tpr_at_low_fpr"),
        row(
            "Highest exposure of an inserted canary (bits)", lambda v: fmt.num(v, 3), "max_exposure"
        ),
        row("Training PII values extracted by sampling", fmt.pct, "pii_extraction_rate"),
        row("Verbatim memorization rate", fmt.pct, "memorization_rate"),
        row("Utility", utility, "utility"),
    ]


def _guarantee(report: Mapping[str, Any]) -> dict[str, Any]:
    models = _models(report)
    p = {m: _get(report, m, "privacy") or {} for m in models}

    def claim_only(m: str) -> bool:
        return p[m].get("mechanism") == "claimed"

    def val(m: str, render: Any, key: str) -> str:
        if claim_only(m):
            return NOT_STATED
        return render(p[m].get(key)) if p[m] else fmt.DASH

    def unit(m: str) -> str:
        if not p[m]:
            return fmt.DASH
        return f"one training {p[m].get('unit', 'example')} ({p[m].get('adjacency', 'add/remove')} adjacency)"

    def claimed(m: str) -> str:
        if not p[m]:
            return fmt.DASH
        if not p[m]["dp"]:
            return "∞ (no guarantee)"
        primary = p[m]["primary_accountant"]
        if claim_only(m):
            return f"{fmt.eps(p[m]['epsilon'])} (stated by the publisher, not recomputed)"
        return f"{fmt.eps(p[m]['epsilon'])} ({primary}, {p[m]['accountant_kind'].get(primary, 'unknown')})"

    def delta(m: str) -> str:
        if not p[m]:
            return fmt.DASH
        source = p[m].get("delta_source")
        return fmt.sci(p[m]["delta"]) + (f" ({source})" if source else "")

    def noise(m: str) -> str:
        if not p[m]:
            return fmt.DASH
        if claim_only(m):
            return NOT_STATED
        if not p[m]["dp"]:
            return "0 (no noise)"
        source, target = p[m].get("noise_source"), p[m].get("target_epsilon")
        note = (
            f" (calibrated to ε = {fmt.eps(target)})"
            if source == "calibrated" and target is not None
            else (f" ({source})" if source else "")
        )
        return fmt.num(p[m]["noise_multiplier"], 4) + note

    def sampling(m: str) -> str:
        if not p[m]:
            return fmt.DASH
        if claim_only(m):
            return NOT_STATED
        q = fmt.num(p[m]["sample_rate"], 3)
        b, n = p[m].get("batch_size"), p[m].get("n_examples")
        if p[m].get("unit") == "client":  # DP-FedAvg: clients per round
            return q + (f" (expected {b} of {n} clients per round)" if b and n else "")
        return q + (f" (expected batch {b} of {n} examples)" if b and n else "")

    def steps(m: str) -> str:
        if not p[m]:
            return fmt.DASH
        if claim_only(m):
            return NOT_STATED
        planned = p[m].get("planned_steps")
        done = p[m]["steps"]
        extra = "" if planned in (None, done) else f" of {planned} planned"
        word = " rounds" if p[m].get("unit") == "client" else ""
        return f"{done}{word}{extra}" + ("" if p[m].get("complete", True) else " (incomplete)")

    rows = [
        (
            "Trained with differential privacy",
            lambda m: (
                fmt.DASH
                if not p[m]
                else "claimed by the publisher"
                if claim_only(m)
                else "yes"
                if p[m]["dp"]
                else "no"
            ),
        ),
        ("Claimed ε (primary accountant)", claimed),
        ("δ", delta),
        ("Unit of privacy", unit),
        (
            "Mechanism",
            lambda m: _mechanism(p[m].get("mechanism")) if p[m] else fmt.DASH,
        ),
        ("Sampling rate q", sampling),
        ("Noise multiplier σ", noise),
        (
            "Clipping norm C",
            lambda m: val(m, lambda v: fmt.DASH if v is None else fmt.num(v, 4), "max_grad_norm"),
        ),
        ("Steps", steps),
        ("Epochs", lambda m: val(m, lambda v: fmt.num(v, 3), "epochs")),
    ]
    table = [{"label": label, **{m: render(m) for m in models}} for label, render in rows]
    names = sorted(
        {a for m in models for a in (p[m].get("epsilon_upper") or {})},
        key=lambda a: (a not in RIGOROUS_ACCOUNTANTS, a),
    )
    accountants = []
    for name in names:
        kind = "stated by the publisher" if name == "claimed" else accountant_kind(name)
        entry = {
            "name": name,
            "kind": kind,
            "primary": name == p.get("target", {}).get("primary_accountant"),
        }
        for m in models:
            value = (p[m].get("epsilon_upper") or {}).get(name)
            error = (p[m].get("accountant_errors") or {}).get(name)
            entry[m] = f"failed: {error}" if error else fmt.eps(value)
        accountants.append(entry)
    meaning = None
    t = p.get("target") or {}
    e = fmt.as_float(t.get("epsilon"))
    if t and t.get("dp") and e is not None and math.isfinite(e):
        meaning = (
            f"What the claim means: for any one training {t.get('unit', 'example')}, adding it to or removing it "
            f"from the training set changes the probability of any outcome of training by at most a factor "
            f"e^ε = {_factor(e)}, except with probability δ = {fmt.sci(t.get('delta'))}. "
            "It is a worst-case bound over all examples and all attackers, and holds only if the implementation "
            "and the accounting are correct, which the empirical audit below tests."
        )
    elif t and not t.get("dp"):
        meaning = "The target model was trained without differential privacy: it carries no privacy guarantee."
    approx_primary = (
        bool(t) and t.get("dp") and t.get("primary_accountant") in APPROXIMATE_ACCOUNTANTS
    )
    return {
        "rows": table,
        "accountants": accountants,
        "meaning": meaning,
        "approximate_primary": approx_primary,
    }


def _factor(epsilon: float) -> str:
    """e^ε for the plain-language reading of a claim (``20.1``, ``2,981``, ``1.2e+13``)."""
    if epsilon > 700:
        return "astronomically large"
    factor = math.exp(epsilon)
    if factor < 100:
        return fmt.num(factor, 3)
    if factor < 1e9:
        return f"{factor:,.0f}"
    return f"{factor:.1e}"


GUARANTEE_WORDS = {
    "lower-bound": "a lower bound for any DP mechanism",
    "gdp-lower-bound": "valid only if the mechanism's trade-off curve is Gaussian",
    "estimate": "an estimate, not a bound",
}


def _estimates_text(audit: Mapping[str, Any] | None) -> str:
    """One sentence listing the other estimators' ε_lb on the same guesses."""
    if not audit or not audit.get("estimates"):
        return ""
    primary = (audit.get("epsilon_lower") or {}).get("estimator")
    parts = [
        f"{name} {fmt.eps(e.get('epsilon'))} ({GUARANTEE_WORDS.get(str(e.get('guarantee')), e.get('guarantee'))})"
        for name, e in sorted(audit["estimates"].items())
        if name != primary
    ]
    return (" Other estimators on the same guesses: " + "; ".join(parts) + ".") if parts else ""


def _audit_text(
    model: str, audit: Mapping[str, Any] | None, privacy: Mapping[str, Any] | None
) -> str:
    if audit is None:
        return f"The {model} model was not audited (no entry in audit/bounds.json)."
    lb = audit["epsilon_lower"]
    conf = fmt.as_float(lb["confidence"]) or 0.95
    value, claim = fmt.eps(lb["value"]), fmt.eps(audit.get("claimed_epsilon"))
    fluke = max(1, round(1 / max(1 - conf, 1e-9)))
    design = ""
    if audit.get("canary_design"):
        design = f" ({audit['canary_design']} design"
        design += f", scored by {audit['canary_score']})" if audit.get("canary_score") else ")"
    counts = (
        f"{lb['n_correct']} of {lb['n_guesses']} membership guesses on {lb['n_canaries']} audit canaries"
        f"{design} were correct"
    )
    if lb["n_guesses"] < lb["n_canaries"] and lb.get("method") == "one-run":
        counts += (
            "; the audit guesses only on the canaries the attack is surest of, the best of a fixed grid "
            "of guess counts, paid for by a union bound"
        )
    if audit["verdict"] == "violation":
        return (
            f"The audit proves, with {conf:.0%} confidence, that training the {model} model leaks at "
            f"least ε = {value}, more than the claimed ε = {claim} ({counts}). Either the DP training or its "
            f"privacy accounting is broken, or this is a 1-in-{fluke} statistical fluke. Do not rely on the "
            "claimed guarantee until this is explained; re-running the audit with a new seed tells a fluke "
            "from a bug."
        )
    if audit["verdict"] == "inconclusive":
        ceiling = fmt.eps(audit.get("ceiling"))
        reasons = audit.get("reasons") or ["its power was not demonstrated"]
        said = any("ceiling" in r for r in reasons)  # the ceiling reason states both numbers
        return (
            f"The audit found no violation (ε_lb = {value} at {conf:.0%} confidence, "
            f"{counts}), but it could not have found one: "
            + "; ".join(reasons)
            + (
                ""
                if said
                else f". Its ceiling (the ε_lb if every guess were right) is {ceiling}, "
                f"the claim ε = {claim}"
            )
            + ". This is no evidence for the claim; strengthen the audit (more or better "
            "canaries, a non-private control) before relying on it."
        )
    if audit["verdict"] == "not-private":
        return (
            f"The {model} model was trained without differential privacy, so there is no claim to check. "
            f"The audit shows, with {conf:.0%} confidence, that it leaks at least ε = {value} ({counts}); "
            "this is the contrast the DP target should be compared with."
        )
    if (fmt.as_float(lb["value"]) or 0.0) <= 0.0:
        return (
            f"The audit found no leakage it could certify at {conf:.0%} confidence (ε_lb = 0; {counts}), so the "
            f"claimed ε = {claim} is not contradicted. This does not show that the model leaks nothing: the audit "
            "was too weak to bound ε away from 0. More audit canaries, or canaries repeated more often, give a "
            "more informative audit."
        )
    tight = fmt.as_float(audit.get("tightness", {}).get(audit["primary_accountant"]))
    tight_text = (
        f" The audit confirms {fmt.pct(tight, 0)} of the claim." if tight is not None else ""
    )
    strength = ""
    if audit.get("ceiling") is not None:
        strength += (
            f" The test could have shown up to ε = {fmt.eps(audit.get('ceiling'))} (its ceiling)"
        )
        control = audit.get("control")
        if control:
            strength += (
                f", and it detected the non-private control ({control['model']}) at ε_lb = "
                f"{fmt.eps(control['epsilon_lower'])}"
            )
        strength += "."
    return (
        f"The audit tested the claimed ε = {claim} and found, with {conf:.0%} confidence, that "
        f"training the {model} model leaks at least ε = {value} ({counts}); no violation.{strength}"
        f"{tight_text} A lower bound is what this attack can prove, not an estimate of the true ε: "
        "a small one does not show that the model leaks less than claimed."
    )


def _mechanism(name: Any) -> str:
    """The description of a ``privacy.mechanism`` value, or the value itself when unknown."""
    return MECHANISMS.get(name, name) if isinstance(name, str) else str(name)


def _audit_word(verdict: Any) -> str:
    """The headline word of an audit verdict; ``NOT AUDITED`` without one."""
    return AUDIT_WORDS.get(verdict, "NOT AUDITED") if isinstance(verdict, str) else "NOT AUDITED"


def _audit(report: Mapping[str, Any]) -> dict[str, Any]:
    rows, texts = [], []
    for m in _models(report):
        audit, privacy = _get(report, m, "audit"), _get(report, m, "privacy")
        texts.append(
            {
                "model": m,
                "verdict": (audit or {}).get("verdict", "none"),
                "word": _audit_word((audit or {}).get("verdict")),
                "text": _audit_text(m, audit, privacy) + _estimates_text(audit),
            }
        )
        if audit is None:
            continue
        lb = audit["epsilon_lower"]
        rows.append(
            {
                "model": m,
                "lower": fmt.eps(lb["value"])
                + (
                    f" (ceiling {fmt.eps(lb.get('ceiling'))})"
                    if lb.get("ceiling") is not None
                    else ""
                ),
                "confidence": fmt.pct(lb["confidence"], 0),
                "delta": fmt.sci(lb["delta"]),
                "method": lb["method"] + (f", {lb['estimator']}" if lb.get("estimator") else ""),
                "guesses": f"{lb['n_correct']}/{lb['n_guesses']} correct of {lb['n_canaries']} canaries",
                "selection": lb["threshold_selection"],
                "claimed": f"{fmt.eps(audit['claimed_epsilon'])} ({audit['primary_accountant']})",
                "tightness": fmt.pct(audit["tightness"].get(audit["primary_accountant"]), 0)
                if math.isfinite(fmt.as_float(audit.get("claimed_epsilon")) or math.inf)
                else fmt.DASH,
                "verdict": audit["verdict"],
                "word": AUDIT_WORDS.get(audit["verdict"], audit["verdict"]),
            }
        )
    per_accountant = []
    target = _get(report, "target", "audit")
    if target:
        for name, upper in sorted(
            target["epsilon_upper"].items(),
            key=lambda kv: (kv[0] not in RIGOROUS_ACCOUNTANTS, kv[0]),
        ):
            verdict = target["per_accountant"].get(name, "")
            word = AUDIT_WORDS.get(verdict, verdict)
            if verdict == "consistent" and target.get("verdict") == "inconclusive":
                # ε_lb ≤ this ε_ub, but the audit could not have shown otherwise: not evidence
                verdict, word = "inconclusive", "NO VIOLATION (audit inconclusive)"
            per_accountant.append(
                {
                    "name": name,
                    "kind": accountant_kind(name),
                    "upper": fmt.eps(upper),
                    "tightness": fmt.pct(target["tightness"].get(name), 0),
                    "verdict": verdict,
                    "word": word,
                }
            )
    return {"rows": rows, "texts": texts, "per_accountant": per_accountant}


def _attacks(report: Mapping[str, Any]) -> dict[str, Any]:
    fprs: list[str] = []
    for m in _models(report):
        for a in (_get(report, m, "attacks") or {}).values():
            for k in a["tpr_at_fpr"]:
                if k not in fprs:
                    fprs.append(k)
    fprs.sort(key=float)
    rows = []
    attacks = sorted({a for m in _models(report) for a in (_get(report, m, "attacks") or {})})
    resolution = []
    for attack in attacks:
        for m in _models(report):
            a = (_get(report, m, "attacks") or {}).get(attack)
            if a is None:
                continue
            tprs = []
            res = fmt.as_float(a.get("min_resolvable_fpr"))
            for k in fprs:
                cell = a["tpr_at_fpr"].get(k)
                if cell is None:
                    tprs.append({"value": fmt.DASH, "ci": ""})
                elif res is not None and float(k) < res * (1 - 1e-9):
                    # fewer than 1/FPR non-members: the TPR at zero false positives, not at this FPR
                    tprs.append({"value": "n/r", "ci": ""})
                else:
                    tprs.append({"value": fmt.fixed(cell["tpr"]), "ci": fmt.interval(cell["ci"])})
            rows.append(
                {
                    "attack": attack,
                    "model": m,
                    "auc": fmt.fixed(a["auc"]),
                    "auc_ci": fmt.interval(a["auc_ci"]),
                    "tprs": tprs,
                    "balanced_accuracy": fmt.fixed(a["balanced_accuracy"]),
                    "n": f"{a['n_member']}/{a['n_nonmember']}",
                }
            )
            if res is not None and res > policy.LOW_FPR:
                resolution.append((m, attack, a["n_nonmember"], res))
    note = None
    if resolution:
        n0 = min(r[2] for r in resolution)
        note = (
            f"n/r: not resolvable. With {n0} non-members the smallest non-zero false-positive rate is "
            f"{fmt.pct(1 / n0, 2)}, so a TPR at a lower FPR would be the TPR at zero false positives "
            "(report.json keeps it, without an interval); at least 1/FPR non-members are needed to read it."
        )
    blind = report.get("blind_baseline")
    blind_view = None
    if blind:
        blind_view = {
            "auc": fmt.fixed(blind["auc"]),
            "ci": fmt.interval(blind["auc_ci"]),
            "warning": blind.get("warning"),
            "method": blind.get("method"),
        }
    return {
        "fprs": [fmt.fpr_label(k) for k in fprs],
        "rows": rows,
        "note": note,
        "blind": blind_view,
    }


def _canaries(report: Mapping[str, Any]) -> dict[str, Any] | None:
    models = [m for m in _models(report) if _get(report, m, "canaries")]
    if not models:
        return None
    c = {m: _get(report, m, "canaries") for m in models}
    reps = sorted({int(k) for m in models for k in c[m]["exposure_by_repetition"]})
    rows = []
    for k in reps:
        row: dict[str, Any] = {"insertions": str(k)}
        for m in ("target", "baseline"):
            e = c.get(m, {}).get("exposure_by_repetition", {}).get(str(k)) if m in c else None
            row[m] = (
                fmt.DASH
                if e is None
                else (
                    f"{fmt.num(e['mean'], 3)} ({fmt.num(e['min'], 3)}–{fmt.num(e['max'], 3)}), n = {e['n']}"
                )
            )
        rows.append(row)
    known = ("greedy", "beam", "sample")
    strategies = sorted(
        {s for m in models for by in c[m]["extraction"].values() for s in by},
        key=lambda s: (known.index(s) if s in known else len(known), s),
    )
    extraction = []
    for k in sorted({int(k) for m in models for k in c[m]["extraction"]}):
        row = {"insertions": str(k)}
        for m in ("target", "baseline"):
            by = c[m]["extraction"].get(str(k), {}) if m in c else {}
            row[m] = [
                fmt.DASH if by.get(s) is None else f"{by[s]['extracted']}/{by[s]['n']}"
                for s in strategies
            ]
        extraction.append(row)
    ceiling = next(
        (
            fmt.as_float(c[m].get("max_possible_exposure"))
            for m in models
            if c[m].get("max_possible_exposure") is not None
        ),
        None,
    )
    spaces = sorted({s for m in models for s in c[m].get("secret_spaces", {})})
    sizes = {
        s: c[m]["secret_spaces"][s]["size"] for m in models for s in c[m].get("secret_spaces", {})
    }
    space_text = ", ".join(f"{s} (|R| = {sizes[s]:,})" for s in spaces)
    methods = {m: ", ".join(f"{n} {k}" for k, n in c[m].get("methods", {}).items()) for m in models}
    explanation = (
        "A canary is a random secret planted in the training data a known number of times "
        f"(secret space {space_text or 'unknown'}). Exposure (Carlini et al. 2019, 'The Secret Sharer') counts "
        "in bits how much more likely the model finds the true secret than the other candidates: about 1–2 bits "
        "is chance"
        + (
            f", and {ceiling:.1f} bits (log2|R|) means the model ranks the secret first among all candidates, "
            "i.e. has memorised it"
            if ceiling
            else ""
        )
        + (". Canaries inserted 0 times show the chance level." if 0 in reps else ".")
    )
    return {
        "rows": rows,
        "extraction": extraction,
        "strategies": strategies,
        "explanation": explanation,
        "methods": methods,
        "max": {m: fmt.num(c[m].get("max_exposure"), 3) for m in models},
        "ceiling": fmt.num(ceiling, 3) if ceiling else None,
    }


def _leakage(report: Mapping[str, Any]) -> dict[str, Any]:
    models = _models(report)
    mem = {m: _get(report, m, "memorization") for m in models}
    dups = sorted({int(k) for m in models if mem[m] for k in mem[m].get("by_duplication", {})})
    mem_rows = []
    for k in dups:
        row: dict[str, Any] = {"copies": str(k)}
        for m in ("target", "baseline"):
            e = (mem.get(m) or {}).get("by_duplication", {}).get(str(k))
            row[m] = fmt.DASH if e is None else f"{fmt.pct(e['rate'])} of {e['n']}"
        mem_rows.append(row)
    mem_total = {
        m: (
            f"{fmt.pct(mem[m]['rate'])} ({mem[m]['n_memorized']} of {mem[m]['n_evaluated']} records; "
            f"{mem[m].get('prefix_tokens')}-token prompt, {mem[m].get('suffix_tokens')} tokens checked)"
        )
        if mem[m]
        else fmt.DASH
        for m in models
    }
    pii = {m: _get(report, m, "pii") for m in models}
    kinds = sorted({k for m in models if pii[m] for k in pii[m].get("by_kind", {})})
    rankings = sorted({r for m in models if pii[m] for r in pii[m].get("rankings", {})})
    pii_rows = []
    for kind in kinds:
        row = {"kind": kind}
        for m in ("target", "baseline"):
            e = (pii.get(m) or {}).get("by_kind", {}).get(kind)
            if e is None or e.get("extraction_rate") is None:
                row[f"{m}_extraction"] = fmt.DASH
            else:
                row[f"{m}_extraction"] = (
                    f"{fmt.pct(e['extraction_rate'])} ({e.get('extracted')}/{e.get('truth')})"
                )
            cells = []
            for r in rankings:
                if e is not None and e.get(f"{r}_accuracy") is not None:
                    cells.append(
                        f"{fmt.pct(e[f'{r}_accuracy'])} (chance {fmt.pct(e.get(f'{r}_chance'))})"
                    )
                else:
                    cells.append(fmt.DASH)
            row[f"{m}_rankings"] = cells
        pii_rows.append(row)
    pii_total = {}
    for m in models:
        ex = (pii[m] or {}).get("extraction")
        detector = (pii[m] or {}).get("detector")
        found_by = (
            f"; PII found by the {detector} detector"
            if detector and detector != "annotated"
            else ""
        )
        if (pii[m] or {}).get("unmeasured"):
            pii_total[m] = f"not measured: {pii[m]['unmeasured']}"
        elif not ex:
            pii_total[m] = "not measured" if pii[m] else fmt.DASH
        else:
            pii_total[m] = (
                f"{fmt.pct(ex.get('rate'))} of training PII values extracted "
                f"(precision {fmt.pct(ex.get('precision'))}, {ex.get('n_generations')} "
                f"generations{found_by})"
            )
    return {
        "mem_rows": mem_rows,
        "mem_total": mem_total,
        "pii_rows": pii_rows,
        "pii_total": pii_total,
        "rankings": [r.replace("_", " ") for r in rankings],
    }


_UTILITY_ROWS = (
    ("eval_perplexity", "Held-out perplexity (lower is better)", False),
    ("eval_loss", "Held-out loss per token (lower is better)", False),
    ("eval_accuracy", "Held-out accuracy (higher is better)", True),
    ("eval_f1", "Held-out macro F1 (higher is better)", True),
    ("train_perplexity", "Training perplexity", False),
    ("train_accuracy", "Training accuracy", True),
    ("steps", "Training steps", None),
    ("seconds_per_step", "Seconds per step", None),
)


def _utility(report: Mapping[str, Any]) -> dict[str, Any]:
    models = _models(report)
    u = {m: _get(report, m, "utility") or {} for m in models}
    rows = []
    for key, label, _ in _UTILITY_ROWS:
        if not any(key in u[m] for m in models):
            continue
        row = {"label": label, **{m: fmt.num(u[m].get(key), 4) for m in models}}
        t, b = (
            fmt.as_float(u.get("target", {}).get(key)),
            fmt.as_float(u.get("baseline", {}).get(key)),
        )
        row["change"] = (
            f"{(t - b) / b:+.1%}"
            if t is not None and b not in (None, 0) and math.isfinite(t) and math.isfinite(b)
            else fmt.DASH
        )
        rows.append(row)
    return {"rows": rows}


def _config_sections(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The resolved config as ``[{"name": section, "lines": ["key = value", ...]}]``, top-level keys first."""
    top = {k: v for k, v in config.items() if not isinstance(v, Mapping)}
    sections = [
        {
            "name": "run",
            "lines": [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in sorted(top.items())],
        }
    ]
    for name, values in sorted((k, v) for k, v in config.items() if isinstance(v, Mapping)):
        sections.append(
            {
                "name": name,
                "lines": [
                    f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in sorted(values.items())
                ],
            }
        )
    return [s for s in sections if s["lines"]]


def _provenance(report: Mapping[str, Any]) -> dict[str, Any]:
    run = report["run"]
    rows = [
        ("Run", run["name"]),
        ("Created", run.get("created") or fmt.DASH),
        ("dpaudit version of the run", run.get("dpaudit_version") or fmt.DASH),
        ("dpaudit version of this report", report["generator"]["dpaudit_version"]),
        ("Git commit", run.get("git_commit") or "unknown (not a git checkout)"),
        ("Command line", " ".join(run.get("argv") or []) or fmt.DASH),
        ("Device", run.get("device") or fmt.DASH),
        ("Platform", run.get("platform") or fmt.DASH),
    ]
    if run.get("config_changed_on_resume"):
        rows.append(("Warning", "the configuration changed when the run was resumed"))
    fingerprints = []
    fp = report["fingerprints"]
    for label, entry in sorted(fp.get("inputs", {}).items()):
        fingerprints.append(
            {
                "group": "input",
                "file": f"{label}: {entry.get('path')}",
                "sha256": entry.get("sha256"),
            }
        )
    for stage, files in fp.get("outputs", {}).items():
        for name, digest in files.items():
            fingerprints.append({"group": f"{stage} output", "file": name, "sha256": digest})
    for name, digest in fp.get("sources", {}).items():
        fingerprints.append({"group": "read by this report", "file": name, "sha256": digest})
    # In the order they finished (report.json keeps them by name), seconds to 0.1 s.
    ordered = sorted(
        run.get("stages", {}).items(), key=lambda kv: (kv[1].get("finished") or "", kv[0])
    )
    stages = [
        {
            "name": k,
            "status": v.get("status", ""),
            "seconds": fmt.fixed(v.get("seconds"), 1),
        }
        for k, v in ordered
    ]
    return {
        "rows": [{"label": k, "value": str(v)} for k, v in rows],
        "seeds": [{"label": k, "value": str(v)} for k, v in sorted(run.get("seeds", {}).items())],
        "versions": [
            {"label": k, "value": str(v) if v is not None else "not installed"}
            for k, v in sorted(report.get("versions", {}).items())
        ],
        "stages": stages,
        "fingerprints": fingerprints,
        "config": _config_sections(report.get("config", {})),
    }


def _recovered(report: Mapping[str, Any]) -> dict[str, Any] | None:
    if not report.get("revealed"):
        return None
    out = {}
    for m in _models(report):
        rec = _get(report, m, "recovered") or {}
        out[m] = {
            "canaries": [
                {
                    "id": r["canary_id"],
                    "secret": str(r["secret"]),
                    "insertions": str(r["insertions"]),
                    "exposure": fmt.num(r["exposure"], 3),
                    "extracted": {True: "yes", False: "no"}.get(r.get("extracted"), fmt.DASH),
                }
                for r in rec.get("canaries", [])
            ],
            "pii_extracted": [
                {
                    "kind": v.get("kind"),
                    "value": str(v.get("value")),
                    "duplicates": str(v.get("duplicates")),
                    "times": str(v.get("times_generated")),
                }
                for v in rec.get("pii_extracted", [])
            ],
            "pii_inferred": [
                {
                    "attack": v.get("attack"),
                    "kind": v.get("kind"),
                    "record": v.get("record_id"),
                    "value": str(v.get("truth")),
                }
                for v in rec.get("pii_inferred", [])
            ],
        }
    return out


def build_view(report: Mapping[str, Any], *, generated: str | None = None) -> dict[str, Any]:
    """Everything the renderers show, as strings and rows (see the module docstring)."""
    models = _models(report)
    return {
        "title": f"Privacy audit report: {report['run']['name']}",
        "run": report["run"],
        "models": models,
        "revealed": bool(report.get("revealed")),
        "generated": generated,
        "generator": report["generator"]["dpaudit_version"],
        "verdict": _verdict(report),
        "key_numbers": _key_numbers(report),
        "warnings": list(report.get("warnings", [])),
        "guarantee": _guarantee(report),
        "audit": _audit(report),
        "attacks": _attacks(report),
        "canaries": _canaries(report),
        "leakage": _leakage(report),
        "utility": _utility(report),
        "provenance": _provenance(report),
        "recovered": _recovered(report),
    }
