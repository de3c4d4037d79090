"""The Jinja2 template of ``report.html``, kept as a string so it ships inside the package.

Self-contained: inline CSS, figures as ``data:`` URIs, no scripts, no external
URL. Rendered with autoescaping (:mod:`dpaudit.reports.render_html`), so every
value from the run is escaped. Colours always come with a word (PASS, FAIL,
N/A, VIOLATION...) so that the verdict survives greyscale printing.
"""

from __future__ import annotations

FEDERATION_FIELDS: tuple[tuple[str, str], ...] = (
    ("clients", "Clients N"),
    ("partition", "Partition"),
    ("rounds", "Rounds T"),
    ("mean_clients_per_round", "Replies per round (mean)"),
    ("empty_rounds", "Empty rounds (noise only)"),
    ("final_clip_norm", "Clipping norm C after the last round"),
    ("bytes_per_message", "Bytes per message to a client"),
    ("bytes_per_round", "Bytes per round (down + up, canary clients included)"),
    ("bytes_down", "Bytes to clients, all rounds"),
    ("bytes_up", "Bytes from clients, all rounds"),
    ("eval_loss_first", "Held-out loss after round 1"),
    ("eval_loss_last", "Held-out loss after the last round"),
    ("example_epsilon", "Example-level ε of local DP-SGD (most exposed client)"),
    ("client_mia_members", "Client membership inference: member clients"),
    ("client_mia_nonmembers", "Client membership inference: non-member clients"),
    ("canary_clients", "Update-canary clients (client-level audit)"),
    ("canary_dimension", "Trainable parameters the canaries span"),
)
"""The rows of a federation summary (``run.federation``)."""

MODEL_CARD_FIELDS: tuple[tuple[str, str], ...] = (
    ("model", "Model"),
    ("source", "Source"),
    ("architecture", "Architecture"),
    ("model_type", "Model type"),
    ("parameters", "Parameters"),
    ("trainable_parameters", "Parameters trained"),
    ("mode", "Fine-tuning mode"),
    ("lora_targets", "LoRA targets"),
    ("adapter", "Adapter"),
    ("revision", "Hub revision"),
    ("package", "Package"),
    ("package_version", "Package version"),
    ("gguf_file", "GGUF file"),
    ("gguf_sha256", "GGUF SHA-256"),
    ("cache_key", "Cache key"),
    ("weights_sha256", "Converted weights SHA-256"),
    ("quantisation", "Weights"),
    ("upstream", "Upstream model"),
    ("licence", "Licence"),
    ("weights", "Weight files SHA-256"),
)
"""The rows of a model card (``run.model_cards``): key of :class:`~dpaudit.runfiles.report.ModelCard`
and label; empty values are left out."""

CSS = """
:root { --pass: #1a7f37; --fail: #b42318; --none: #9a6700; --na: #6e7781; --target: #1f5fa8;
        --baseline: #c46a13; --ink: #1f2328; --muted: #57606a; --line: #d0d7de; --soft: #f6f8fa; }
* { box-sizing: border-box; }
body { font-family: "Segoe UI", Roboto, "Helvetica Neue", "DejaVu Sans", Arial, sans-serif; color: var(--ink);
       max-width: 1120px; margin: 0 auto; padding: 24px 36px 48px; line-height: 1.45; font-size: 14px; }
header h1 { font-size: 26px; margin: 0 0 2px; }
.subtitle { color: var(--muted); margin: 0 0 12px; }
h2 { font-size: 20px; border-bottom: 2px solid var(--line); padding-bottom: 4px; margin: 30px 0 10px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
p { margin: 6px 0 10px; }
.muted { color: var(--muted); }
nav.toc { font-size: 13px; margin: 0 0 8px; color: var(--muted); }
nav.toc a { color: var(--target); text-decoration: none; margin-right: 14px; white-space: nowrap; }
.verdict { border: 3px solid var(--na); border-radius: 10px; padding: 14px 20px 10px; margin: 14px 0 18px; }
.verdict.pass { border-color: var(--pass); background: #eef8f0; }
.verdict.fail { border-color: var(--fail); background: #fdf0ee; }
.verdict.none { border-color: var(--none); background: #fff8e5; }
.verdict.inconclusive { border-color: var(--none); background: #fff8e5; }
.verdict .head { display: flex; align-items: center; gap: 18px; }
.verdict .word { font-size: 30px; font-weight: 800; letter-spacing: .03em; padding: 4px 16px; border-radius: 6px;
                 color: #fff; background: var(--na); white-space: nowrap; }
.verdict.pass .word { background: var(--pass); }
.verdict.fail .word { background: var(--fail); }
.verdict.none .word { background: var(--none); font-size: 22px; }
.verdict.inconclusive .word { background: var(--none); font-size: 24px; }
.verdict .headline { font-size: 15px; font-weight: 600; }
.badge { display: inline-block; font-weight: 700; font-size: 12px; padding: 1px 8px; border-radius: 4px;
         color: #fff; white-space: nowrap; }
.badge.pass, .badge.consistent { background: var(--pass); }
.badge.fail, .badge.violation { background: var(--fail); }
.badge.not-applicable, .badge.none { background: var(--na); }
.badge.inconclusive { background: var(--none); color: #222; }
.badge.not-private { background: var(--baseline); }
table { border-collapse: collapse; width: 100%; margin: 6px 0 14px; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th.target { border-top: 3px solid var(--target); }
th.baseline { border-top: 3px solid var(--baseline); }
tr.row-baseline td { color: #444; background: #fffaf3; }
.key td.target { font-weight: 700; }
.ci { color: var(--muted); font-size: 11px; }
.mono { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 11px; word-break: break-all; }
figure { margin: 10px 0 16px; text-align: center; break-inside: avoid; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { font-size: 12px; color: var(--muted); margin-top: 4px; text-align: left; }
.warning { border-left: 5px solid var(--none); background: #fff8e5; padding: 8px 12px; margin: 8px 0; }
.warning.severe { border-left-color: var(--fail); background: #fdf0ee; }
.explain { background: var(--soft); border-radius: 6px; padding: 8px 12px; margin: 6px 0 12px; }
.audit-text { border-left: 5px solid var(--na); padding: 6px 12px; margin: 8px 0; background: var(--soft); }
.audit-text.consistent { border-left-color: var(--pass); }
.audit-text.violation { border-left-color: var(--fail); background: #fdf0ee; }
.audit-text.not-private { border-left-color: var(--baseline); }
.audit-text.inconclusive { border-left-color: var(--none); background: #fff8e5; }
.confidential { border: 3px solid var(--fail); background: #fdf0ee; color: var(--fail); font-weight: 700;
                padding: 10px 14px; margin: 10px 0; text-align: center; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px; }
.config { background: var(--soft); padding: 10px 14px; border-radius: 6px; columns: 2; column-gap: 28px; }
.config-section { break-inside: avoid; margin-bottom: 10px; }
table.wide { font-size: 12px; }
table.wide th { white-space: normal; }
footer { margin-top: 36px; font-size: 12px; color: var(--muted); border-top: 1px solid var(--line); padding-top: 8px; }
@media print {
  body { max-width: none; padding: 0; font-size: 10.5px; }
  nav.toc { display: none; }
  h2 { break-after: avoid; page-break-after: avoid; }
  table, figure, .verdict, .audit-text { break-inside: avoid; page-break-inside: avoid; }
  .verdict, .badge, .word, th, .confidential, tr.row-baseline td, .warning {
    -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  a { color: inherit; text-decoration: none; }
  table { font-size: 9px; }
  th, td { padding: 3px 4px; }
  td.num, th.num { white-space: normal; }
  table.wide { font-size: 8.5px; table-layout: fixed; }
  table.wide th, table.wide td { white-space: normal; overflow-wrap: anywhere; padding: 3px 4px; }
  @page { size: A4; margin: 14mm 12mm; }
}
"""

TEMPLATE = (
    "{% set federation_fields = " + repr([list(pair) for pair in FEDERATION_FIELDS]) + " %}"
    "{% set card_fields = "
    + repr([list(pair) for pair in MODEL_CARD_FIELDS])
    + " %}"
    + """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="dpaudit {{ v.generator }}">
<title>{{ v.title }}</title>
<style>{{ css|safe }}</style>
</head>
<body>
<header>
  <h1>{{ v.title }}</h1>
  <p class="subtitle">Run <strong>{{ v.run.name }}</strong>{% if v.run.created %}, created {{ v.run.created }}{% endif %}
  &middot; dpaudit {{ v.run.dpaudit_version or v.generator }}
  &middot; <span class="swatch" style="background:#1f5fa8"></span>target: the model to release
  {% if 'baseline' in v.models %}&middot; <span class="swatch" style="background:#c46a13"></span>baseline: the same
  recipe without differential privacy, for contrast{% endif %}</p>
  <nav class="toc">
    <a href="#verdict">Verdict</a><a href="#guarantee">DP guarantee</a><a href="#audit">Empirical audit</a>
    <a href="#attacks">Attacks</a><a href="#canaries">Canaries</a><a href="#leakage">Memorization and PII</a>
    <a href="#utility">Utility</a>{% if v.recovered is not none %}<a href="#recovered">Recovered secrets</a>{% endif %}
    {% if v.run.federated_attacks is defined and v.run.federated_attacks %}<a href="#federated-attacks">Attacks on federated updates</a>{% endif %}
    <a href="#provenance">Provenance</a>
  </nav>
</header>
{% if v.revealed %}
<div class="confidential">CONFIDENTIAL: this report lists recovered secrets and personal data (built with reveal).
Do not distribute.</div>
{% endif %}

<section id="verdict" class="verdict {{ v.verdict.status }}">
  <div class="head">
    <div class="word">{{ v.verdict.word }}</div>
    <div class="headline">{{ v.verdict.headline }}</div>
  </div>
  <table>
    <thead><tr><th>Release check (target model)</th><th class="num">Threshold</th>
      <th class="num target">Target (measured)</th><th>Result</th>
      {% if 'baseline' in v.models %}<th class="num baseline">Baseline (contrast)</th>{% endif %}</tr></thead>
    <tbody>
    {% for i in v.verdict['items'] %}
      <tr><td>{{ i.description }}</td><td class="num">{{ i.threshold }}</td><td class="num">{{ i.target }}</td>
        <td><span class="badge {{ i.verdict }}">{% if i.verdict == 'pass' %}&#10004; {% elif i.verdict == 'fail' %}&#10008; {% endif %}{{ i.word }}</span></td>
        {% if 'baseline' in v.models %}<td class="num">{{ i.baseline }}</td>{% endif %}</tr>
    {% endfor %}
    </tbody>
  </table>
</section>

<h3>Key numbers</h3>
<table class="key">
  <thead><tr><th>Measure</th>{% for m in v.models %}<th class="num {{ m }}">{{ m|capitalize }}</th>{% endfor %}</tr></thead>
  <tbody>{% for r in v.key_numbers %}<tr><td>{{ r.label }}</td>{% for m in v.models %}<td class="num {{ m }}">{{ r[m] }}</td>{% endfor %}</tr>{% endfor %}</tbody>
</table>
{% if v.attacks.blind and v.attacks.blind.warning %}
<div class="warning severe"><strong>Warning: the member/non-member split is suspect.</strong> {{ v.attacks.blind.warning }}</div>
{% endif %}
{% if v.warnings %}
<div class="warning"><strong>Notes and warnings</strong><ul>{% for w in v.warnings %}<li>{{ w }}</li>{% endfor %}</ul></div>
{% endif %}

<section id="guarantee">
<h2>DP guarantee as claimed</h2>
{% if v.guarantee.meaning %}<p class="explain">{{ v.guarantee.meaning }}</p>{% endif %}
<table>
  <thead><tr><th></th>{% for m in v.models %}<th class="{{ m }}">{{ m|capitalize }}</th>{% endfor %}</tr></thead>
  <tbody>{% for r in v.guarantee.rows %}<tr><td>{{ r.label }}</td>{% for m in v.models %}<td>{{ r[m] }}</td>{% endfor %}</tr>{% endfor %}</tbody>
</table>
<h3>ε under every accountant</h3>
<p class="muted"><strong>Rigorous</strong> accountants ({{ accountants.rigorous }}) give proven upper bounds on ε.
<strong>Approximate</strong> ones ({{ accountants.approximate }}) are estimates that can fall below the true ε; they are shown for
comparison and never carry the claim.</p>
{% if v.guarantee.approximate_primary %}<div class="warning severe">The claimed ε comes from an approximate accountant, not a proven upper bound.</div>{% endif %}
<table>
  <thead><tr><th>Accountant</th><th>Kind</th>{% for m in v.models %}<th class="num {{ m }}">{{ m|capitalize }} ε</th>{% endfor %}</tr></thead>
  <tbody>{% for a in v.guarantee.accountants %}<tr><td>{{ a.name }}{% if a.primary %} <strong>(primary: the claim)</strong>{% endif %}</td>
    <td>{{ a.kind }}</td>{% for m in v.models %}<td class="num">{{ a[m] }}</td>{% endfor %}</tr>{% endfor %}</tbody>
</table>
</section>

<section id="audit">
<h2>Empirical audit</h2>
<p class="muted">The audit plants random canaries in the training data, each included by a coin flip, and tries to
guess from the trained model which were included. The more guesses are right, the larger the ε that training
must have spent: this gives a lower bound ε<sub>lb</sub> that holds with the stated confidence. A correct DP
implementation always satisfies ε<sub>lb</sub> &le; claimed ε.</p>
{% for t in v.audit.texts %}<div class="audit-text {{ t.verdict }}"><span class="badge {{ t.verdict }}">{{ t.model|capitalize }}: {{ t.word }}</span> {{ t.text }}</div>{% endfor %}
{% if plots.audit %}<figure><img alt="Bar chart of the claimed epsilon per accountant with the empirical lower bounds as vertical lines" src="{{ plots.audit }}">
<figcaption>Bars: the target's claimed ε under each accountant (solid: rigorous, hatched: approximate). Lines: empirical
lower bounds. A lower bound to the right of a rigorous bar would be a violation.</figcaption></figure>{% endif %}
<table>
  <thead><tr><th>Model</th><th class="num">ε lower bound</th><th class="num">Confidence</th><th class="num">δ</th><th>Method</th>
    <th>Guesses</th><th class="num">Claimed ε</th><th class="num">Tightness</th><th>Verdict</th></tr></thead>
  <tbody>{% for r in v.audit.rows %}<tr class="row-{{ r.model }}"><td>{{ r.model }}</td><td class="num">{{ r.lower }}</td>
    <td class="num">{{ r.confidence }}</td><td class="num">{{ r.delta }}</td><td>{{ r.method }}<br><span class="muted mono">{{ r.selection }}</span></td>
    <td>{{ r.guesses }}</td><td class="num">{{ r.claimed }}</td><td class="num">{{ r.tightness }}</td>
    <td><span class="badge {{ r.verdict }}">{{ r.word }}</span></td></tr>{% endfor %}</tbody>
</table>
{% if v.audit.per_accountant %}
<h3>Target: lower bound against each accountant (at the audit's δ)</h3>
<table>
  <thead><tr><th>Accountant</th><th>Kind</th><th class="num">ε upper bound</th><th class="num">ε<sub>lb</sub> / ε<sub>ub</sub></th><th>Verdict</th></tr></thead>
  <tbody>{% for r in v.audit.per_accountant %}<tr><td>{{ r.name }}</td><td>{{ r.kind }}</td><td class="num">{{ r.upper }}</td>
    <td class="num">{{ r.tightness }}</td><td><span class="badge {{ r.verdict }}">{{ r.word }}</span></td></tr>{% endfor %}</tbody>
</table>
{% endif %}
</section>

<section id="attacks">
<h2>Membership-inference attacks</h2>
<p class="muted">Each attack scores every example and guesses "member of the training set" above a threshold.
AUC 0.5 means it cannot tell members from non-members better than a coin flip. The true-positive rate (TPR) at a
low false-positive rate (FPR) is the share of members an attacker identifies while almost never accusing a
non-member, the risk that matters for individuals (Carlini et al. 2022). Brackets are 95% bootstrap intervals.</p>
{% if v.attacks.blind %}
<p>{% if v.attacks.blind.warning %}<span class="badge fail">SPLIT SUSPECT</span>{% else %}<span class="badge pass">SPLIT OK</span>{% endif %}
Blind baseline (a classifier on the texts alone, without the model): AUC {{ v.attacks.blind.auc }} {{ v.attacks.blind.ci }}.
{% if v.attacks.blind.warning %}{{ v.attacks.blind.warning }}{% else %}Members and non-members look alike, so the
attack numbers are not inflated by a difference between the two sets.{% endif %}</p>
{% endif %}
{% if plots.roc %}<figure><img alt="Log-log ROC curves of every attack, target against baseline" src="{{ plots.roc }}">
<figcaption>ROC curves on log-log axes (the low-FPR corner, where attacks on individuals matter, is magnified). The
dotted diagonal is chance; the dashed vertical line marks 0.1% FPR.</figcaption></figure>{% endif %}
<table>
  <thead><tr><th>Attack</th><th>Model</th><th class="num">AUC</th>
    {% for f in v.attacks.fprs %}<th class="num">TPR @ {{ f }} FPR</th>{% endfor %}<th class="num">Balanced acc.</th><th class="num">Members / non-members</th></tr></thead>
  <tbody>{% for r in v.attacks.rows %}<tr class="row-{{ r.model }}"><td>{{ r.attack }}</td><td>{{ r.model }}</td>
    <td class="num"><strong>{{ r.auc }}</strong> <span class="ci">{{ r.auc_ci }}</span></td>{% for t in r.tprs %}<td class="num">{{ t.value }} <span class="ci">{{ t.ci }}</span></td>{% endfor %}
    <td class="num">{{ r.balanced_accuracy }}</td><td class="num">{{ r.n }}</td></tr>{% endfor %}</tbody>
</table>
{% if v.attacks.note %}<p class="muted">{{ v.attacks.note }}</p>{% endif %}
</section>

<section id="canaries">
<h2>Canaries</h2>
{% if v.canaries %}
<p class="explain">{{ v.canaries.explanation }}</p>
{% if plots.exposure %}<figure><img alt="Canary exposure against the number of insertions, target against baseline" src="{{ plots.exposure }}">
<figcaption>Exposure of the planted canaries against how often each was inserted. The dotted line is the maximum,
log2|R|: the secret ranked first among all candidates.</figcaption></figure>{% endif %}
<table>
  <thead><tr><th class="num">Insertions</th>{% for m in v.models %}<th class="num {{ m }}">{{ m|capitalize }} exposure, bits: mean (min–max)</th>{% endfor %}</tr></thead>
  <tbody>{% for r in v.canaries.rows %}<tr><td class="num">{{ r.insertions }}</td>{% for m in v.models %}<td class="num">{{ r[m] }}</td>{% endfor %}</tr>{% endfor %}</tbody>
</table>
<h3>Extraction: does decoding from the prefix reproduce the secret?</h3>
<p class="muted">Canaries whose secret the model generated verbatim after the prefix, out of the canaries with that
number of insertions, per decoding strategy.</p>
<table>
  <thead><tr><th class="num">Insertions</th>{% for m in v.models %}{% for s in v.canaries.strategies %}<th class="num {{ m }}">{{ m|capitalize }}: {{ s }}</th>{% endfor %}{% endfor %}</tr></thead>
  <tbody>{% for r in v.canaries.extraction %}<tr><td class="num">{{ r.insertions }}</td>{% for m in v.models %}{% for cell in r[m] %}<td class="num">{{ cell }}</td>{% endfor %}{% endfor %}</tr>{% endfor %}</tbody>
</table>
{% else %}<p class="muted">No canary results in this run.</p>{% endif %}
</section>

<section id="leakage">
<h2>Memorization and PII leakage</h2>
<table>
  <thead><tr><th></th>{% for m in v.models %}<th class="{{ m }}">{{ m|capitalize }}</th>{% endfor %}</tr></thead>
  <tbody><tr><td>Verbatim memorization (greedy continuation of a training record reproduces it exactly)</td>{% for m in v.models %}<td>{{ v.leakage.mem_total[m] }}</td>{% endfor %}</tr>
  <tr><td>PII extraction (sampled text contains a training PII value)</td>{% for m in v.models %}<td>{{ v.leakage.pii_total[m] }}</td>{% endfor %}</tr></tbody>
</table>
{% if plots.pii %}<figure><img alt="Share of training PII values extracted, per kind, target against baseline" src="{{ plots.pii }}">
<figcaption>Share of the distinct training PII values of each kind that appeared in sampled generations.</figcaption></figure>{% endif %}
{% if v.leakage.pii_rows %}
<h3>PII leakage by kind</h3>
<p class="muted">Extraction: distinct training values found in sampled text (found / in training). Inference: the
model picks the true value of a masked field among candidates; compare with chance.</p>
<table class="wide">
  <thead><tr><th>Kind</th>{% for m in v.models %}<th class="num {{ m }}">{{ m|capitalize }} extraction</th>{% for r in v.leakage.rankings %}<th class="num {{ m }}">{{ m|capitalize }} {{ r }}</th>{% endfor %}{% endfor %}</tr></thead>
  <tbody>{% for r in v.leakage.pii_rows %}<tr><td>{{ r.kind }}</td>{% for m in v.models %}<td class="num">{{ r[m ~ '_extraction'] }}</td>{% for c in r[m ~ '_rankings'] %}<td class="num">{{ c }}</td>{% endfor %}{% endfor %}</tr>{% endfor %}</tbody>
</table>
{% endif %}
{% if v.leakage.mem_rows %}
<h3>Verbatim memorization by copies in training</h3>
<table>
  <thead><tr><th class="num">Copies</th>{% for m in v.models %}<th class="num {{ m }}">{{ m|capitalize }}</th>{% endfor %}</tr></thead>
  <tbody>{% for r in v.leakage.mem_rows %}<tr><td class="num">{{ r.copies }}</td>{% for m in v.models %}<td class="num">{{ r[m] }}</td>{% endfor %}</tr>{% endfor %}</tbody>
</table>
{% endif %}
</section>

<section id="utility">
<h2>Utility vs baseline</h2>
<p class="muted">The price of privacy: the same training recipe with and without differential privacy, measured on
held-out data.</p>
<table>
  <thead><tr><th>Metric</th>{% for m in v.models %}<th class="num {{ m }}">{{ m|capitalize }}</th>{% endfor %}<th class="num">Target vs baseline</th></tr></thead>
  <tbody>{% for r in v.utility.rows %}<tr><td>{{ r.label }}</td>{% for m in v.models %}<td class="num">{{ r[m] }}</td>{% endfor %}<td class="num">{{ r.change }}</td></tr>{% endfor %}</tbody>
</table>
</section>

{% if v.run.federated_attacks is defined and v.run.federated_attacks %}
<section id="federated-attacks">
<h2>Attacks on federated updates</h2>
<p class="muted">Each attack measured without a defence and with each defence (<code>dpaudit federated …</code>), in experiments beside the audited model; metrics only, no recovered text. These results are not part of the verdict above; the notes say when they show leakage.</p>
{% for name, sec in v.run.federated_attacks.items() %}
<h3 id="federated-attack-{{ name }}">{{ sec.title }}</h3>
<p>{{ sec.statement }}</p>
<p class="muted">Threat model: {{ sec.threat_model }}.</p>
{% if plots.get('fl_' ~ name) %}<figure><img alt="{{ sec.title }}: each defence against no defence" src="{{ plots.get('fl_' ~ name) }}"><figcaption>{{ sec.title }}: each defence against no defence.</figcaption></figure>{% endif %}
<table><thead><tr>{% for c in sec.columns %}<th{% if not loop.first %} class="num"{% endif %}>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>{% for r in sec.rows %}<tr>{% for x in r %}<td{% if not loop.first %} class="num"{% endif %}>{{ x }}</td>{% endfor %}</tr>{% endfor %}</tbody></table>
{% if sec.not_measured %}<p class="muted">Not measured: {{ sec.not_measured|join("; ") }}.</p>{% endif %}
{% endfor %}
</section>
{% endif %}

{% if v.recovered is not none %}
<section id="recovered">
<h2>Recovered secrets and PII (confidential)</h2>
<div class="confidential">Planted canary secrets with the exposure the model gives them, and the PII values the attacks recovered.</div>
{% for m, rec in v.recovered.items() %}
<h3>{{ m|capitalize }}</h3>
<table><thead><tr><th>Canary</th><th>Secret</th><th class="num">Insertions</th><th class="num">Exposure (bits)</th><th>Extracted</th></tr></thead>
<tbody>{% for r in rec.canaries %}<tr><td class="mono">{{ r.id }}</td><td class="mono">{{ r.secret }}</td><td class="num">{{ r.insertions }}</td><td class="num">{{ r.exposure }}</td><td>{{ r.extracted }}</td></tr>{% endfor %}</tbody></table>
<table><thead><tr><th>Kind</th><th>Extracted PII value</th><th class="num">Records containing it</th><th class="num">Times generated</th></tr></thead>
<tbody>{% for r in rec.pii_extracted %}<tr><td>{{ r.kind }}</td><td>{{ r.value }}</td><td class="num">{{ r.duplicates }}</td><td class="num">{{ r.times }}</td></tr>{% else %}<tr><td colspan="4" class="muted">none</td></tr>{% endfor %}</tbody></table>
<table><thead><tr><th>Attack</th><th>Kind</th><th>Record</th><th>Correctly inferred value</th></tr></thead>
<tbody>{% for r in rec.pii_inferred %}<tr><td>{{ r.attack }}</td><td>{{ r.kind }}</td><td class="mono">{{ r.record }}</td><td>{{ r.value }}</td></tr>{% else %}<tr><td colspan="4" class="muted">none</td></tr>{% endfor %}</tbody></table>
{% endfor %}
</section>
{% else %}
<p class="muted">Recovered secrets and PII are not listed in this report. Rebuilding it with reveal lists them; the
report is then confidential.</p>
{% endif %}

<section id="provenance">
<h2>Provenance</h2>
<table><tbody>{% for r in v.provenance.rows %}<tr><th style="width:28%">{{ r.label }}</th><td class="mono">{{ r.value }}</td></tr>{% endfor %}</tbody></table>
{% if v.run.model_cards is defined and v.run.model_cards %}
{% for m, card in v.run.model_cards.items() %}
<h3 id="model-card-{{ m }}">Model card: {{ m }}</h3>
<p>{{ card.statement }}</p>
<table><tbody>{% for key, label in card_fields %}{% set value = card.get(key) %}{% if value is not none and value != [] and value != {} %}
<tr><th style="width:28%">{{ label }}</th><td class="mono">{% if value is mapping %}{% for f, h in value.items() %}{{ f }}: {{ h }}{% if not loop.last %}<br>{% endif %}{% endfor %}{% elif value is number %}{{ "{:,}".format(value) }}{% elif value is string %}{{ value }}{% else %}{{ value|join(", ") }}{% endif %}</td></tr>
{% endif %}{% endfor %}</tbody></table>
{% endfor %}
{% endif %}
{% if v.run.federation is defined and v.run.federation %}
{% if plots.rounds %}<figure><img alt="Held-out loss after each federated round, target against baseline" src="{{ plots.rounds }}"><figcaption>Utility by round: held-out loss of the global model after each round.</figcaption></figure>{% endif %}
{% for m, fed in v.run.federation.items() %}
<h3 id="federation-{{ m }}">Federated training: {{ m }}</h3>
<p>{{ fed.statement }}</p>
<table><tbody>{% for key, label in federation_fields %}{% set value = fed.get(key) %}{% if value is not none %}
<tr><th style="width:28%">{{ label }}</th><td class="mono">{% if value is number and value is not integer and value|abs >= 1000 %}{{ "{:,.0f}".format(value) }}{% elif value is number and value is not integer %}{{ "{:.4g}".format(value) }}{% elif value is number %}{{ "{:,}".format(value) }}{% else %}{{ value }}{% endif %}</td></tr>
{% endif %}{% endfor %}</tbody></table>
{% endfor %}
{% endif %}
<h3>Seeds</h3>
<table><tbody>{% for r in v.provenance.seeds %}<tr><th style="width:28%">{{ r.label }}</th><td class="num" style="text-align:left">{{ r.value }}</td></tr>{% endfor %}</tbody></table>
<h3>Stages</h3>
<table><thead><tr><th>Stage</th><th>Status</th><th class="num">Seconds</th></tr></thead>
<tbody>{% for r in v.provenance.stages %}<tr><td>{{ r.name }}</td><td>{{ r.status }}</td><td class="num">{{ r.seconds }}</td></tr>{% endfor %}</tbody></table>
<h3>Versions</h3>
<table><tbody>{% for r in v.provenance.versions %}<tr><th style="width:28%">{{ r.label }}</th><td>{{ r.value }}</td></tr>{% endfor %}</tbody></table>
<h3>SHA-256 fingerprints</h3>
<p class="muted">Inputs and weight files as recorded in the run's manifest, and every file this report was built from.</p>
<table><thead><tr><th>Kind</th><th>File</th><th>SHA-256</th></tr></thead>
<tbody>{% for r in v.provenance.fingerprints %}<tr><td>{{ r.group }}</td><td class="mono">{{ r.file }}</td><td class="mono">{{ r.sha256 }}</td></tr>{% endfor %}</tbody></table>
{% if v.run.files_at_rest is defined and v.run.files_at_rest %}
<h3>Files at rest</h3>
<p class="muted">{{ v.run.files_at_rest.statement }}</p>
<table><thead><tr><th>File</th><th>Mode</th></tr></thead>
<tbody>{% for path, mode in v.run.files_at_rest.private.items() %}<tr><td class="mono">{{ path }}</td><td class="mono">{{ mode }}</td></tr>{% endfor %}</tbody></table>
{% endif %}
<h3>Resolved configuration</h3>
<div class="config">{% for sec in v.provenance.config %}<div class="config-section"><strong>[{{ sec.name }}]</strong>
{% for line in sec.lines %}<div class="mono">{{ line }}</div>{% endfor %}</div>{% endfor %}</div>
</section>

<footer>Generated by dpaudit {{ v.generator }}{% if v.generated %} on {{ v.generated }}{% endif %} from the run directory
alone; report.json holds the same numbers in machine-readable form.</footer>
</body>
</html>
"""
)
