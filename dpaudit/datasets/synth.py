"""Synthetic sensitive corpora with ground-truth PII spans and controlled duplication.

Three domains — ``clinical`` notes, customer ``support`` tickets and ``banking``
messages — each rendered from ten templates filled with Faker-generated people
and numpy-drawn details. The corpus is the kind of data the PII-extraction and
membership attacks are evaluated on (Lukas et al. 2023, "Analyzing Leakage of
Personally Identifiable Information in Language Models"; Carlini et al. 2021,
"Extracting Training Data from Large Language Models").

Ground truth. The text is built by concatenating template literals and slot
values while recording offsets, so ``text[s.start:s.end] == s.value`` holds for
every :class:`~dpaudit.datasets.records.PiiSpan` by construction. Every template
mentions its person's ``PERSON`` name; each domain's templates together mention
``PERSON, EMAIL, PHONE, ADDRESS, SSN, CREDIT_CARD, DATE_OF_BIRTH`` plus ``MRN``
(clinical) or ``IBAN`` (banking). Credit-card numbers are Luhn-valid, IBANs have
valid ISO 13616 check digits, SSNs avoid the never-issued areas 000, 666, 9xx.

Duplication scheme (so that leakage can be measured against repetition, Kandpal
et al. 2022, "Deduplicating Training Data Mitigates Privacy Risks"). Every record
belongs to one person (``meta["user"]``) and all of its PII is that person's —
their fixed name, email, phone, address, SSN, card, date of birth, MRN, IBAN,
all distinct across people except dates of birth (about 26k possible days, so
people may share one). With duplication buckets ``B = (1, 2, 4, 8, 16, 32)``
the corpus gives each bucket an equal share of the ``n`` records: bucket ``b``
holds ``n // (len(B) * b)`` people with exactly ``b`` records each, and the
remaining records go to extra people with one record each. That is about
``n/3`` people for the default buckets. The person-to-record assignment is a
seeded random permutation, and user ids are assigned in a shuffled order so
that they do not reveal the bucket. Per record, ``meta`` holds:

- ``domain``, ``template`` (template index), ``user`` (``user-000123``);
- ``user_records``: how many records of the corpus belong to that person (its bucket);
- ``pii_duplicates``: for each span of ``pii`` (same order), how many records of
  the corpus contain that exact ``(kind, value)`` — at most ``user_records``,
  since not every template mentions every kind (dates of birth excepted).

Texts are unique within a corpus: when a person's record would repeat one of
their earlier texts word for word, its fillers are redrawn (up to 20 times;
every template has at least 300 filler combinations), so duplication is of PII
values, not of whole records.

Labels. Templates alternate between a benign class (even index: routine visit,
question, other banking request) and a sensitive class (odd index: urgent case,
complaint, fraud report); ``label = template_index % num_labels``, so with the
default ``num_labels=2`` the label is that semantic class, and a classifier can
learn it from the wording.

Reproducibility: ``numpy.random.SeedSequence([seed, domain_index])`` seeds both a
numpy Generator and a per-call ``Faker("en_US")`` (``seed_instance``); the same
seed, domain and Faker version give the same corpus, and different domains
drawn with the same seed do not share people. Faker is only called to build the
pool of people (the slow part); records are then assembled from the pool.
"""

from __future__ import annotations

import datetime as dt
import json
import string
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from dpaudit.atomic import atomic_open
from dpaudit.datasets.records import PII_KINDS, PiiSpan, Record
from dpaudit.errors import DpauditError, unknown_name

DEFAULT_DUPLICATION: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
"""Default duplication buckets: records per person."""

REQUIRED_KINDS = ("PERSON", "EMAIL", "PHONE", "ADDRESS", "SSN", "CREDIT_CARD", "DATE_OF_BIRTH")
"""PII kinds every domain's templates mention."""

# fmt: off
# Templates: UPPER-case slots are PII of the record's person, lower-case slots are
# fillers. Even index = label 0 (benign), odd index = label 1 (sensitive).
TEMPLATES: dict[str, tuple[str, ...]] = {
    "clinical": (
        "Routine follow-up. Patient {PERSON} (DOB {DATE_OF_BIRTH}, MRN {MRN}) seen for {chronic}. Reports {mild} for {duration}; vitals stable, BP {bp}. Continue {med}. Next visit in {weeks} weeks. Contact: {EMAIL}.",
        "URGENT: {PERSON}, DOB {DATE_OF_BIRTH}, MRN {MRN}, brought to the ED with {acute} that started {hours} hours ago. BP {bp}, HR {hr}. Started {emergency}; {specialty} consult requested stat. Emergency contact phone {PHONE}.",
        "Annual physical for {PERSON} (MRN {MRN}) on {weekday}. Lives at {ADDRESS}. Weight {weight} kg, no acute complaints; {screening} up to date. Labs ordered: {lab}. Prefers contact by email at {EMAIL} or phone {PHONE}.",
        "Triage note, high priority, {time}. {PERSON} called from {PHONE} reporting {acute}. Advised to go to the nearest emergency department immediately; ambulance dispatched to {ADDRESS}. MRN {MRN}.",
        "Prescription refill request #{ref} from {PERSON} (DOB {DATE_OF_BIRTH}) for {med}. Sent to pharmacy, patient will pick up on {weekday}. Copay charged to card {CREDIT_CARD}.",
        "Critical lab result for {PERSON}, MRN {MRN}: {lab} critically abnormal at {time}. Physician paged; patient reached at {PHONE} and told to return today. SSN {SSN} verified with insurer.",
        "New patient intake: {PERSON}, born {DATE_OF_BIRTH}, SSN {SSN}, address {ADDRESS}. History of {chronic}. Allergies: {allergy}. Referred by {clinic}.",
        "Post-operative complication: {PERSON} (MRN {MRN}, DOB {DATE_OF_BIRTH}) presented {days} days after {procedure} with {complication}. Admitted for observation; next of kin notified at {PHONE}.",
        "Telehealth visit with {PERSON} regarding {chronic}. Reports {mild}, improving. Plan: continue {med}, recheck {lab} in {weeks} weeks. Visit summary sent to {EMAIL}; billed to {CREDIT_CARD}.",
        "Severe medication reaction reported by {PERSON} (DOB {DATE_OF_BIRTH}): {reaction} at {time} after the first dose of {med}. Told to stop it now and call 911 if worse. Callback {PHONE}; email {EMAIL}.",
    ),
    "support": (
        "Hi, I'm {PERSON}, a customer since {year}. Quick question: how do I {task} in my {product} account? My login email is {EMAIL}. Thanks!",
        "This is unacceptable. Order #{order} ({item}) arrived {defect} and nobody has answered me for {days} days. Refund it to my card {CREDIT_CARD} now. {PERSON}, {PHONE}",
        "Hello, could you tell me whether {product} supports {feature} for a team of {count}? You can reach me at {PHONE} or {EMAIL}. Regards, {PERSON}",
        "I want to complain about the technician visit at {ADDRESS} on {weekday}: he was {hours} hours late and left {mess}. Account holder {PERSON}, phone {PHONE}.",
        "Hi team, I moved to {ADDRESS}. Can you update the shipping address for order #{order}? Name on the account: {PERSON}, email {EMAIL}.",
        "You charged my card {CREDIT_CARD} twice for {product} ({amount} each). This is the {ordinal} time. Fix it today or I cancel. {PERSON} <{EMAIL}>",
        "Good morning, I need to verify my identity to reset my {product} password; the code sent at {time} never arrived. Name: {PERSON}, date of birth {DATE_OF_BIRTH}, address {ADDRESS}. What else do you need?",
        "Extremely disappointed: {minutes} minutes on hold, then disconnected, and {issue} is still not fixed. Call me back at {PHONE}. {PERSON}, DOB {DATE_OF_BIRTH}.",
        "Question about the tax form for my {product} payout of {amount}: do you need my full SSN ({SSN}) or only the last four digits? Thanks, {PERSON} ({EMAIL})",
        "On {weekday} at {time} your agent asked me to type my SSN {SSN} into an unencrypted chat and now I get phishing emails at {EMAIL}. I demand an escalation. {PERSON}, {ADDRESS}",
    ),
    "banking": (
        "Hello, I would like a standing order of {amount} from account {IBAN} on day {dom} of each month. Account holder {PERSON}, {ADDRESS}.",
        "I want to report fraud: {count} card payments at {merchant} that I never made, {amount} in total, on card {CREDIT_CARD}. Please block it. {PERSON}, phone {PHONE}.",
        "Please update my contact details (request {ref}): new phone {PHONE}, new email {EMAIL}. Customer {PERSON}, DOB {DATE_OF_BIRTH}.",
        "Someone opened a credit line of {amount} in my name with my SSN {SSN} on {weekday}; I never applied. I am {PERSON}, born {DATE_OF_BIRTH}, living at {ADDRESS}. Please freeze my file.",
        "Hi, what is the current rate on the {bank_product} for {amount}? I hold account {IBAN}. Thanks, {PERSON} ({EMAIL})",
        "Unauthorised transfer of {amount} from {IBAN} to an unknown account this {weekday}. I did not authorise it. Contact me urgently at {PHONE} or {EMAIL}. {PERSON}",
        "Application for a {bank_product}. Applicant {PERSON}, SSN {SSN}, date of birth {DATE_OF_BIRTH}, address {ADDRESS}, annual income {income}.",
        "A text claiming to be from the bank asked me to confirm card {CREDIT_CARD}; now there are {count} charges totalling {amount} from {merchant}. Please investigate this fraud. {PERSON}, {PHONE}",
        "Please raise the limit on card {CREDIT_CARD} to {amount}. I have banked with you for {years} years. {PERSON}, {EMAIL}",
        "Phishing alert: at {time} on {weekday} I gave my online banking login to a caller posing as your fraud team. Account {IBAN} may be compromised. {PERSON}, DOB {DATE_OF_BIRTH}, phone {PHONE}.",
    ),
}

_WORDS: dict[str, tuple[str, ...]] = {
    "chronic": ("type 2 diabetes", "hypertension", "asthma", "hypothyroidism", "chronic back pain", "GERD", "migraine", "atrial fibrillation", "COPD", "osteoarthritis"),
    "mild": ("occasional headaches", "mild fatigue", "intermittent heartburn", "some joint stiffness", "trouble sleeping", "a dry cough", "mild dizziness on standing"),
    "acute": ("crushing chest pain", "sudden shortness of breath", "slurred speech and facial droop", "a high fever with neck stiffness", "severe abdominal pain", "coughing up blood", "a seizure"),
    "med": ("metformin 500 mg twice daily", "lisinopril 10 mg daily", "atorvastatin 20 mg nightly", "levothyroxine 75 mcg daily", "albuterol as needed", "omeprazole 20 mg daily", "sertraline 50 mg daily", "amlodipine 5 mg daily"),
    "emergency": ("aspirin and IV heparin", "IV fluids and broad-spectrum antibiotics", "nebulised salbutamol", "IV lorazepam", "high-flow oxygen"),
    "specialty": ("cardiology", "neurology", "general surgery", "pulmonology", "infectious disease"),
    "screening": ("colonoscopy", "mammogram", "flu vaccine", "cholesterol screening", "eye exam"),
    "lab": ("HbA1c", "potassium", "TSH", "lipid panel", "creatinine", "hemoglobin", "INR"),
    "allergy": ("penicillin", "none known", "sulfa drugs", "peanuts", "latex", "codeine"),
    "clinic": ("Riverside Family Practice", "the Northgate urgent care", "St. Mary's outpatient clinic", "a community health center", "their previous GP"),
    "procedure": ("a knee replacement", "an appendectomy", "gallbladder removal", "a hernia repair", "cataract surgery"),
    "complication": ("a wound infection", "calf swelling concerning for DVT", "fever and wound drainage", "uncontrolled pain", "low blood pressure"),
    "reaction": ("hives and lip swelling", "difficulty breathing", "a widespread rash", "severe vomiting", "fainting"),
    "task": ("change the billing address", "export my data", "add a second user", "turn on two-factor login", "cancel auto-renewal", "download past invoices"),
    "product": ("StreamBox", "CloudDrive Plus", "FitTrack", "HomeHub", "PhotoVault", "the mobile app", "QuickInvoice"),
    "feature": ("offline mode", "family sharing", "export to CSV", "dark mode", "single sign-on", "multiple currencies"),
    "item": ("a blender", "running shoes", "a laptop stand", "a winter jacket", "noise-cancelling headphones", "a coffee grinder"),
    "defect": ("broken", "two weeks late", "with missing parts", "in the wrong size", "already used"),
    "mess": ("a water leak", "mud all over the carpet", "the router unplugged", "a hole in the wall"),
    "issue": ("the login loop", "the missing refund", "the billing error", "the sync failure", "the cancelled order"),
    "ordinal": ("second", "third", "fourth", "fifth"),
    "weekday": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "merchant": ("an online electronics store", "a petrol station abroad", "a gaming website", "a luxury retailer", "a crypto exchange", "a food delivery app"),
    "bank_product": ("fixed-rate savings account", "personal loan", "30-year mortgage", "premium credit card", "car loan", "business current account"),
}


def _pick(options: tuple[str, ...]) -> Callable[[float], str]:
    return lambda u: options[int(u * len(options))]


def _int(lo: int, hi: int) -> Callable[[float], str]:
    return lambda u: str(lo + int(u * (hi - lo + 1)))


_FILLERS: dict[str, Callable[[float], str]] = {name: _pick(opts) for name, opts in _WORDS.items()}
_FILLERS.update(
    duration=_pick(("two days", "a week", "three weeks", "a month", "several months")),
    bp=lambda u: f"{100 + int(u * 70)}/{60 + int(u * 4999) % 35}",
    hr=_int(48, 150), weeks=_int(2, 12), hours=_int(1, 12), days=_int(2, 30),
    minutes=_int(20, 180), order=_int(100000, 999999), count=_int(2, 9), dom=_int(1, 28),
    years=_int(2, 40), weight=_int(45, 130), year=_int(2008, 2024), ref=_int(100000, 999999),
    time=lambda u: f"{int(u * 1440) // 60:02d}:{int(u * 1440) % 60:02d}",
    amount=lambda u: f"${10 ** (1 + 3 * u):,.2f}",
    income=lambda u: f"${20000 + int(u * 180) * 1000:,}",
)
# fmt: on

DOMAINS = tuple(TEMPLATES)


def _parse(template: str) -> list[tuple[str, str | None]]:
    return [(lit, field) for lit, field, _, _ in string.Formatter().parse(template)]


_PARSED = {d: [_parse(t) for t in ts] for d, ts in TEMPLATES.items()}
_MAX_REDRAWS = 20
_MAX_FILLERS = max(
    sum(f is not None and f not in PII_KINDS for _, f in p) for ps in _PARSED.values() for p in ps
)


def luhn_check_digit(payload: str) -> str:
    """Return the Luhn check digit to append to the digit string ``payload``."""
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch)
        if i % 2 == 0:  # doubled: these sit at odd positions once the check digit is appended
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    """Whether ``number`` (separators ignored) passes the Luhn checksum."""
    digits = "".join(ch for ch in number if ch.isdigit())
    return len(digits) > 1 and luhn_check_digit(digits[:-1]) == digits[-1]


def _iban_de(bank: int, account: int) -> str:
    bban = f"{bank:08d}{account:010d}"
    check = 98 - int(bban + "131400") % 97  # "DE00" moved to the end, D=13, E=14
    raw = f"DE{check:02d}{bban}"
    return " ".join(raw[i : i + 4] for i in range(0, len(raw), 4))


_MONTHS = (
    "January February March April May June July August September October November December".split()
)


def _people(k: int, faker_seed: int, rng: np.random.Generator) -> list[dict[str, str]]:
    """Build ``k`` people with distinct PII values (Faker for names and streets)."""
    from faker import Faker

    fake = Faker("en_US")
    fake.seed_instance(faker_seed)
    phone = rng.choice(789 * 800 * 10_000, size=k, replace=False)
    ssn = rng.choice(898 * 99 * 9999, size=k, replace=False)
    card = rng.choice(10**13, size=k, replace=False)
    mrn = rng.choice(90_000_000, size=k, replace=False) + 10_000_000
    account = rng.choice(10**10, size=k, replace=False)
    banks = rng.integers(10_000_000, 99_999_999, size=8)
    dob = rng.integers(dt.date(1935, 1, 1).toordinal(), dt.date(2006, 1, 1).toordinal(), size=k)
    style = rng.integers(0, 4, size=(k, 4))  # formats for phone, card, dob, email
    card_prefix = ("41", "45", "49", "51", "52", "53", "54", "55")
    names: set[str] = set()
    emails: set[str] = set()
    addresses: set[str] = set()
    people = []
    for i in range(k):
        for attempt in range(100):
            first, last = fake.first_name(), fake.last_name()
            name = (
                f"{first} {last}" if attempt < 50 else f"{first} {chr(65 + attempt % 26)}. {last}"
            )
            if name not in names:
                break
        else:
            raise DpauditError("synthetic corpus: could not draw enough distinct names; lower n")
        names.add(name)
        f_, l_ = ("".join(c for c in s.lower() if c.isalnum()) for s in (first, last))
        local = (f"{f_}.{l_}", f"{f_[:1]}{l_}", f"{f_}{l_}{i % 97}", f"{l_}.{f_}")[style[i, 3]]
        email = f"{local}@{fake.free_email_domain()}"
        while email in emails:
            email = f"{f_}.{l_}{fake.random_int(100, 99999)}@{fake.free_email_domain()}"
        emails.add(email)
        address = ""
        while not address or address in addresses:
            address = f"{fake.street_address()}, {fake.city()}, {fake.state_abbr(False, False)} {fake.zipcode()}"
        addresses.add(address)
        area, rest = divmod(int(phone[i]), 800 * 10_000)
        exch, line = divmod(rest, 10_000)
        a, e, ln = area + 201, exch + 200, f"{line:04d}"
        phone_s = (f"({a}) {e}-{ln}", f"{a}-{e}-{ln}", f"+1 {a}-{e}-{ln}", f"{a}.{e}.{ln}")[
            style[i, 0]
        ]
        s_area, s_rest = divmod(int(ssn[i]), 99 * 9999)
        s_area += 1 if s_area < 665 else 2  # skip 000 and 666
        digits = card_prefix[int(card[i]) % 8] + f"{int(card[i]):013d}"
        digits += luhn_check_digit(digits)
        groups = [digits[j : j + 4] for j in range(0, 16, 4)]
        card_s = (" ".join(groups), "-".join(groups), digits, " ".join(groups))[style[i, 1]]
        born = dt.date.fromordinal(int(dob[i]))
        dob_s = (
            born.isoformat(),
            f"{born.month:02d}/{born.day:02d}/{born.year}",
            f"{_MONTHS[born.month - 1]} {born.day}, {born.year}",
            born.isoformat(),
        )[style[i, 2]]
        people.append(
            {
                "PERSON": name, "EMAIL": email, "PHONE": phone_s, "ADDRESS": address,
                "SSN": f"{s_area:03d}-{s_rest // 9999 + 1:02d}-{s_rest % 9999 + 1:04d}",
                "CREDIT_CARD": card_s, "DATE_OF_BIRTH": dob_s, "MRN": str(int(mrn[i])),
                "IBAN": _iban_de(int(banks[i % 8]), int(account[i])),
            }
        )  # fmt: skip
    return people


def _render(
    pieces: list[tuple[str, str | None]], person: dict[str, str], u: list[float]
) -> tuple[str, tuple[PiiSpan, ...]]:
    """Concatenate template pieces, recording the offsets of the PII slots."""
    parts: list[str] = []
    spans: list[PiiSpan] = []
    pos = k = 0
    for literal, field in pieces:
        parts.append(literal)
        pos += len(literal)
        if field is None:
            continue
        if field in PII_KINDS:
            value = person[field]
            spans.append(PiiSpan(pos, pos + len(value), field, value))
        else:
            value = _FILLERS[field](u[k])
            k += 1
        parts.append(value)
        pos += len(value)
    return "".join(parts), tuple(spans)


def duplication_plan(n: int, buckets: Sequence[int] = DEFAULT_DUPLICATION) -> list[int]:
    """Records per person: equal record share per bucket, the rest as singletons.

    Returns one entry per person (its number of records); the entries sum to ``n``.
    """
    if (
        not buckets
        or any(int(b) != b or b < 1 for b in buckets)
        or len(set(buckets)) != len(buckets)
    ):
        raise DpauditError(
            f"duplication buckets must be distinct positive integers, got {tuple(buckets)}"
        )
    plan = [
        int(b) for b in sorted(buckets, reverse=True) for _ in range(n // (len(buckets) * int(b)))
    ]
    return plan + [1] * (n - sum(plan))


def synthesize(
    domain: str,
    n: int,
    seed: int,
    *,
    num_labels: int = 2,
    duplication: Sequence[int] = DEFAULT_DUPLICATION,
) -> list[Record]:
    """Generate ``n`` synthetic records of ``domain`` with PII ground truth.

    Args:
        domain: ``"clinical"``, ``"support"`` or ``"banking"``.
        n: number of records (ids ``rec-000001`` ...).
        seed: non-negative; with the domain, seeds both Faker and numpy (same
            seed, same corpus for a given Faker version).
        num_labels: number of classes, ``label = template_index % num_labels``;
            2 (default) is the domain's benign/sensitive split.
        duplication: records-per-person buckets (see the module docstring).

    Returns:
        The records, with ``meta`` keys ``domain``, ``template``, ``user``,
        ``user_records`` and ``pii_duplicates``.

    Raises:
        DpauditError: unknown domain, negative ``n`` or ``seed``, bad ``num_labels``
            or duplication buckets.
    """
    if domain not in TEMPLATES:
        raise unknown_name("domain", domain, DOMAINS)
    parsed = _PARSED[domain]
    if not 2 <= num_labels <= len(parsed):
        raise DpauditError(
            f"num_labels must be in 2..{len(parsed)} for domain {domain!r}, got {num_labels}"
        )
    if n < 0:
        raise DpauditError(f"number of records must be >= 0, got {n}")
    if seed < 0:
        raise DpauditError(f"seed must be >= 0, got {seed}")
    seeds = np.random.SeedSequence([seed, DOMAINS.index(domain)])
    rng = np.random.default_rng(seeds)
    plan = duplication_plan(n, duplication)
    plan = [plan[int(j)] for j in rng.permutation(len(plan))]  # user ids hide the bucket
    people = _people(len(plan), int(seeds.generate_state(1)[0]), rng)
    owner = rng.permutation(np.repeat(np.arange(len(plan)), plan)).tolist()
    template_of = rng.integers(0, len(parsed), size=n).tolist()
    uniforms = rng.random((n, _MAX_FILLERS)).tolist()
    width = max(6, len(str(len(plan))))

    rows = []
    counts: Counter[tuple[str, str]] = Counter()
    seen: set[str] = set()
    for i in range(n):
        person, t = people[owner[i]], template_of[i]
        text, spans = _render(parsed[t], person, uniforms[i])
        for _ in range(_MAX_REDRAWS):  # redraw the fillers of an exact duplicate text
            if text not in seen:
                break
            text, spans = _render(parsed[t], person, rng.random(_MAX_FILLERS).tolist())
        seen.add(text)
        counts.update({(s.kind, s.value) for s in spans})
        rows.append((text, t, spans))

    id_width = max(6, len(str(n)))
    return [
        Record(
            id=f"rec-{i + 1:0{id_width}d}",
            text=text,
            label=t % num_labels,
            pii=spans,
            meta={
                "domain": domain,
                "template": t,
                "user": f"user-{owner[i]:0{width}d}",
                "user_records": plan[owner[i]],
                "pii_duplicates": [counts[(s.kind, s.value)] for s in spans],
            },
        )
        for i, (text, t, spans) in enumerate(rows)
    ]


def write_jsonl(records: Sequence[Record], path: str | Path) -> Path:
    """Write records atomically, one ``Record.to_dict()`` JSON object per line."""
    with atomic_open(path, "w") as handle:
        for record in records:
            handle.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
    return Path(path)
