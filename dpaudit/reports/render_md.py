"""``report.md``: the report's sections as Markdown tables (figures are in report.html)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from dpaudit.accounting import accountant_names
from dpaudit.reports.html_template import FEDERATION_FIELDS, MODEL_CARD_FIELDS
from dpaudit.reports.view import build_view

__all__ = ["render_markdown"]


def _cell(text: Any) -> str:
    """A table cell: pipes and newlines escaped so user text cannot break the table."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    if not rows:
        return ["_Nothing recorded._", ""]
    lines = [
        "| " + " | ".join(_cell(h) for h in header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _card_value(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: `{v}`" for k, v in value.items())
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, str):
        return value
    return ", ".join(str(v) for v in value)


def _model_cards(cards: Mapping[str, Any] | None) -> list[str]:
    """Each model card (``run.model_cards``): its statement, then its non-empty fields."""
    out: list[str] = []
    for model, card in (cards or {}).items():
        out += [f"Model card ({model}):", "", card["statement"], ""]
        out += _table(
            ["", ""],
            [
                [label, _card_value(card.get(key))]
                for key, label in MODEL_CARD_FIELDS
                if card.get(key) not in (None, [], {})
            ],
        )
    return out


def _fed_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return _card_value(value)


def _federation(summaries: Mapping[str, Any] | None) -> list[str]:
    """Each federated model (``run.federation``): its statement, then its fields."""
    out: list[str] = []
    for model, fed in (summaries or {}).items():
        out += [f"Federated training ({model}):", "", fed["statement"], ""]
        out += _table(
            ["", ""],
            [
                [
                    label,
                    _fed_value(fed[key]),
                ]
                for key, label in FEDERATION_FIELDS
                if fed.get(key) is not None
            ],
        )
        by_round = [v for v in fed.get("eval_loss_by_round") or [] if v is not None]
        if by_round:
            values = ", ".join(f"{float(v):.4g}" for v in by_round)
            out += [f"Held-out loss by round: {values}.", ""]
    return out


def _federated_attacks(sections: Mapping[str, Any] | None) -> list[str]:
    """``run.federated_attacks``: each attack's statement, threat model and table."""
    if not sections:
        return []
    out = [
        "## Attacks on federated updates",
        "",
        "Each attack measured without a defence and with each defence (`dpaudit federated …`), "
        "in experiments beside the audited model; metrics only, no recovered text. These results "
        "are not part of the verdict; the notes say when they show leakage.",
        "",
    ]
    for sec in sections.values():
        out += [
            f"### {sec['title']}",
            "",
            sec["statement"],
            "",
            f"Threat model: {sec['threat_model']}.",
            "",
        ]
        out += _table(list(sec["columns"]), [list(r) for r in sec["rows"]])
        if sec.get("not_measured"):
            out += [f"Not measured: {'; '.join(sec['not_measured'])}.", ""]
    return out


def _models_header(models: Sequence[str]) -> list[str]:
    return [m.capitalize() for m in models]


def render_markdown(report: Mapping[str, Any], *, generated: str | None = None) -> str:
    """Render the report mapping as Markdown.

    Args:
        report: the ``report.json`` mapping.
        generated: time of rendering for the footer (omitted when ``None``).
    """
    v = build_view(report, generated=generated)
    models = v["models"]
    out: list[str] = [f"# {v['title']}", ""]
    if v["revealed"]:
        out += [
            "> **CONFIDENTIAL — this report lists recovered secrets and PII (built with reveal).**",
            "",
        ]
    verdict = v["verdict"]
    out += [f"## Verdict: **{verdict['word']}**", "", verdict["headline"], ""]
    out += _table(
        ["Check", "Threshold", "Target (measured)", "Result", "Baseline (for contrast)"],
        [
            [i["description"], i["threshold"], i["target"], i["word"], i["baseline"]]
            for i in verdict["items"]
        ],
    )
    out += ["### Key numbers", ""]
    out += _table(
        ["Measure", *_models_header(models)],
        [[r["label"], *(r.get(m, "—") for m in models)] for r in v["key_numbers"]],
    )
    if v["attacks"]["blind"] and v["attacks"]["blind"]["warning"]:
        out += [f"> **Warning — member/non-member split:** {v['attacks']['blind']['warning']}", ""]
    if v["warnings"]:
        out += ["### Notes and warnings", ""] + [f"- {w}" for w in v["warnings"]] + [""]

    g = v["guarantee"]
    out += ["## DP guarantee as claimed", ""]
    out += _table(
        ["", *_models_header(models)], [[r["label"], *(r[m] for m in models)] for r in g["rows"]]
    )
    rigorous = ", ".join(accountant_names(rigorous=True))  # from the registry
    approximate = ", ".join(accountant_names(rigorous=False))
    out += [
        f"ε by accountant (rigorous: {rigorous} are proven upper bounds; approximate: {approximate} "
        "are estimates shown for comparison):",
        "",
    ]
    out += _table(
        ["Accountant", "Kind", *_models_header(models)],
        [
            [a["name"] + (" (primary)" if a["primary"] else ""), a["kind"], *(a[m] for m in models)]
            for a in g["accountants"]
        ],
    )
    if g["approximate_primary"]:
        out += ["> **The claimed ε comes from an approximate accountant, not a proven bound.**", ""]
    if g["meaning"]:
        out += [g["meaning"], ""]

    a = v["audit"]
    out += ["## Empirical audit", ""]
    out += _table(
        [
            "Model",
            "ε lower bound",
            "Confidence",
            "δ",
            "Method",
            "Guesses",
            "Claimed ε",
            "Tightness",
            "Verdict",
        ],
        [
            [
                r["model"],
                r["lower"],
                r["confidence"],
                r["delta"],
                r["method"],
                r["guesses"],
                r["claimed"],
                r["tightness"],
                r["word"],
            ]
            for r in a["rows"]
        ],
    )
    for t in a["texts"]:
        out += [f"**{t['model'].capitalize()}: {t['word']}.** {t['text']}", ""]
    if a["per_accountant"]:
        out += [
            "Target ε lower bound against each accountant's upper bound (at the audit's δ):",
            "",
        ]
        out += _table(
            ["Accountant", "Kind", "ε upper bound", "ε_lb / ε_ub", "Verdict"],
            [
                [r["name"], r["kind"], r["upper"], r["tightness"], r["word"]]
                for r in a["per_accountant"]
            ],
        )

    at = v["attacks"]
    out += [
        "## Membership-inference attacks",
        "",
        "AUC 0.5 means the attack cannot tell training members from non-members better than a coin flip. "
        "TPR at a low FPR is the share of members an attacker identifies while almost never accusing a "
        "non-member: the risk that matters for individuals. Brackets are 95% bootstrap intervals. "
        "ROC curves are in report.html.",
        "",
    ]
    out += _table(
        [
            "Attack",
            "Model",
            "AUC [95% CI]",
            *(f"TPR @ {f} FPR [95% CI]" for f in at["fprs"]),
            "Balanced acc.",
            "Members/non-members",
        ],
        [
            [
                r["attack"],
                r["model"],
                f"{r['auc']} {r['auc_ci']}",
                *(f"{t['value']} {t['ci']}".strip() for t in r["tprs"]),
                r["balanced_accuracy"],
                r["n"],
            ]
            for r in at["rows"]
        ],
    )
    if at["note"]:
        out += [at["note"], ""]
    if at["blind"]:
        b = at["blind"]
        out += [
            f"Blind baseline (model-free classifier on the texts alone): AUC {b['auc']} {b['ci']}. "
            + (
                "**" + b["warning"] + "**"
                if b["warning"]
                else "Members and non-members look alike, so the attack numbers are not inflated by the split."
            ),
            "",
        ]

    c = v["canaries"]
    out += ["## Canaries", ""]
    if c is None:
        out += ["_No canary results in this run._", ""]
    else:
        out += [c["explanation"], ""]
        out += _table(
            ["Insertions", *(f"{m.capitalize()} exposure, bits: mean (min–max)" for m in models)],
            [[r["insertions"], *(r[m] for m in models)] for r in c["rows"]],
        )
        out += ["Secrets extracted by decoding from the prefix (extracted/canaries):", ""]
        out += _table(
            ["Insertions", *(f"{m.capitalize()} {s}" for m in models for s in c["strategies"])],
            [[r["insertions"], *(cell for m in models for cell in r[m])] for r in c["extraction"]],
        )
        out += [
            "Highest exposure of an inserted canary: "
            + ", ".join(f"{m} {c['max'].get(m, '—')} bits" for m in models)
            + (f" (maximum possible {c['ceiling']} bits)." if c["ceiling"] else "."),
            "",
        ]

    lk = v["leakage"]
    out += ["## Memorization and PII leakage", ""]
    out += _table(
        ["", *_models_header(models)],
        [
            ["Verbatim memorization", *(lk["mem_total"][m] for m in models)],
            ["PII extraction", *(lk["pii_total"][m] for m in models)],
        ],
    )
    if lk["mem_rows"]:
        out += ["Verbatim memorization by copies of the text in training:", ""]
        out += _table(
            ["Copies", *_models_header(models)],
            [[r["copies"], *(r[m] for m in models)] for r in lk["mem_rows"]],
        )
    if lk["pii_rows"]:
        out += [
            "PII leakage by kind (extraction: training values emitted when sampling; inference: masked value "
            "picked among candidates):",
            "",
        ]
        header = ["Kind"]
        for m in models:
            header += [
                f"{m.capitalize()} extraction",
                *(f"{m.capitalize()} {r}" for r in lk["rankings"]),
            ]
        rows = []
        for r in lk["pii_rows"]:
            row = [r["kind"]]
            for m in models:
                row += [r[f"{m}_extraction"], *r[f"{m}_rankings"]]
            rows.append(row)
        out += _table(header, rows)

    out += ["## Utility vs baseline", ""]
    out += _table(
        ["Metric", *_models_header(models), "Target vs baseline"],
        [[r["label"], *(r[m] for m in models), r["change"]] for r in v["utility"]["rows"]],
    )

    out += _federated_attacks(v["run"].get("federated_attacks"))

    if v["recovered"] is not None:
        out += ["## Recovered secrets and PII (CONFIDENTIAL)", ""]
        for m, rec in v["recovered"].items():
            out += [f"### {m.capitalize()}", ""]
            out += _table(
                ["Canary", "Secret", "Insertions", "Exposure", "Extracted"],
                [
                    [r["id"], r["secret"], r["insertions"], r["exposure"], r["extracted"]]
                    for r in rec["canaries"]
                ],
            )
            out += _table(
                ["Kind", "Extracted PII value", "Records containing it", "Times generated"],
                [
                    [r["kind"], r["value"], r["duplicates"], r["times"]]
                    for r in rec["pii_extracted"]
                ],
            )
            out += _table(
                ["Attack", "Kind", "Record", "Correctly inferred value"],
                [[r["attack"], r["kind"], r["record"], r["value"]] for r in rec["pii_inferred"]],
            )
    else:
        out += [
            "_Recovered secrets and PII are not listed. Rebuild the report with reveal to list them "
            "(the report is then confidential)._",
            "",
        ]

    p = v["provenance"]
    out += ["## Provenance", ""]
    out += _table(["", ""], [[r["label"], r["value"]] for r in p["rows"]])
    out += _model_cards(v["run"].get("model_cards"))
    out += _federation(v["run"].get("federation"))
    out += ["Seeds:", ""] + _table(
        ["Stage", "Seed"], [[r["label"], r["value"]] for r in p["seeds"]]
    )
    out += ["Versions:", ""] + _table(
        ["Package", "Version"], [[r["label"], r["value"]] for r in p["versions"]]
    )
    out += ["Stages:", ""] + _table(
        ["Stage", "Status", "Seconds"],
        [[r["name"], r["status"], r["seconds"]] for r in p["stages"]],
    )
    out += ["SHA-256 fingerprints:", ""] + _table(
        ["Kind", "File", "SHA-256"],
        [[r["group"], r["file"], f"`{r['sha256']}`"] for r in p["fingerprints"]],
    )
    rest = v["run"].get("files_at_rest")
    if rest:  # null in a report.json built by an older dpaudit
        out += ["Files at rest:", "", rest["statement"], ""] + _table(
            ["File", "Mode"], [[f"`{k}`", m] for k, m in rest["private"].items()]
        )
    config = "\n".join(f"[{sec['name']}]\n" + "\n".join(sec["lines"]) + "\n" for sec in p["config"])
    fence = "```" + "`" * max((len(m) for m in re.findall(r"`{3,}", config)), default=0)
    out += ["Resolved configuration:", "", fence + "toml", config.rstrip("\n"), fence, ""]
    footer = f"Generated by dpaudit {v['generator']}"
    if generated:
        footer += f" on {generated}"
    out += [
        "---",
        "",
        footer + ". Figures (ROC curves, audit and exposure plots) are in report.html.",
        "",
    ]
    return "\n".join(out)
