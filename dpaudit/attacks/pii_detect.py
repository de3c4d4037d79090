"""PII recognizers and leaked-PII matching for the PII-extraction attacks.

Lukas et al. 2023 ("Analyzing Leakage of Personally Identifiable Information in
Language Models") tag PII in generated text with Presidio/Flair and count how many
tagged values are training PII (precision) and how many training PII values were
extracted (recall). Here:

- ``EMAIL, PHONE, SSN, CREDIT_CARD, IBAN, DATE_OF_BIRTH, MRN`` are found by regular
  expressions with validators: the Luhn checksum for cards
  (:func:`~dpaudit.datasets.synth.luhn_valid`), the ISO 13616 mod-97 checksum and
  country length for IBANs (:func:`iban_valid`), the never-issued area/group/serial
  rules for SSNs (:func:`ssn_valid`), NANP rules (area and exchange codes start with
  2-9) for North American phones, and a real calendar date for dates.
- ``PERSON`` and ``ADDRESS`` cannot be found reliably by regex. They are found by
  matching a gazetteer of known values (``known_values``), which is how leakage of
  *known* training PII is measured: the attacker's universe is the training PII. When
  ``presidio_analyzer`` is importable its ``AnalyzerEngine`` also tags ``PERSON``
  (see :func:`detect_pii`); it is optional and never installed by dpaudit.

Dates. A bare date is only a date; whether it is a date of birth depends on context.
With ``date_policy="any"`` (the default) every valid calendar date between 1900 and
today in one of the formats ``YYYY-MM-DD``, ``MM/DD/YYYY``, ``Month D, YYYY`` or
``D Month YYYY`` is reported as ``DATE_OF_BIRTH``: in the synthetic corpus the only
full dates are dates of birth, and a date in generated text that equals a training
date of birth is leakage whatever its wording. ``date_policy="context"`` keeps only
dates preceded within 30 characters by a birth cue (``DOB``, ``born``, ``date of
birth``, ``birth date``, ``birthday``), for corpora with other dates.

Overlaps are resolved greedily by preferring, in order, the more trusted recognizer
(gazetteer > checksum-validated > rule-validated > format-only > Presidio), then the
longer match, then the earlier one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple, Protocol

from dpaudit.datasets.records import PII_KINDS, PiiSpan, Record
from dpaudit.datasets.synth import luhn_valid
from dpaudit.errors import DpauditError, unknown_name

__all__ = [
    "GAZETTEER_KINDS",
    "REGEX_KINDS",
    "Gazetteer",
    "KindMatch",
    "LeakMatch",
    "PII_DETECTORS",
    "detect_pii",
    "detect_record_pii",
    "iban_valid",
    "luhn_valid",
    "match_leaked",
    "normalize_pii",
    "presidio_available",
    "ssn_valid",
]

REGEX_KINDS = ("EMAIL", "PHONE", "SSN", "CREDIT_CARD", "IBAN", "DATE_OF_BIRTH", "MRN")
"""Kinds found by built-in regex recognizers."""

GAZETTEER_KINDS = ("PERSON", "ADDRESS")
"""Kinds found only by matching known values (or by Presidio for ``PERSON``)."""

# Trust ranks for overlap resolution (higher wins).
_GAZETTEER, _CHECKSUM, _RULES, _FORMAT, _NER = 5, 4, 3, 2, 1

# ISO 13616 IBAN lengths by country (SWIFT IBAN registry).
# fmt: off
_IBAN_LENGTHS = dict(
    (c[:2], int(c[2:])) for c in (
        "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 "
        "DK18 DO28 EE20 EG29 ES24 FI18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HR21 HU28 "
        "IE22 IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 MC27 MD24 "
        "ME22 MK19 MR27 MT31 MU30 NL18 NO15 PK24 PL28 PS29 PT25 QA29 RO24 RS22 SA24 SC31 "
        "SE24 SI19 SK24 SM27 ST25 SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20"
    ).split()
)
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december")
# fmt: on
_MONTH_RE = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sept?|Oct|Nov|Dec)[a-z]*\.?"


def ssn_valid(ssn: str) -> bool:
    """Whether ``ssn`` (``AAA-GG-SSSS``, separators optional) could have been issued.

    Never issued: area ``000``, ``666`` and ``900``-``999``, group ``00``, serial ``0000``.
    """
    digits = "".join(ch for ch in ssn if ch.isdigit())
    if len(digits) != 9:
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def iban_valid(iban: str) -> bool:
    """ISO 13616 check: country length, then ``int(rearranged) mod 97 == 1``.

    The first four characters are moved to the end and letters become numbers
    (``A=10 ... Z=35``). Spaces are ignored; countries missing from the length table
    only need 15-34 characters.
    """
    raw = iban.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", raw):
        return False
    if len(raw) != _IBAN_LENGTHS.get(raw[:2], len(raw)):
        return False
    return int("".join(str(int(c, 36)) for c in raw[4:] + raw[:4])) % 97 == 1


def _date(year: int, month: int, day: int) -> dt.date | None:
    try:
        date = dt.date(year, month, day)
    except ValueError:
        return None
    return date if 1900 <= year and date <= dt.date.today() else None


_DATE_PATTERNS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], dt.date | None]], ...] = (
    (
        re.compile(r"(?<![\w/.-])(\d{4})-(\d{2})-(\d{2})(?![\w/-]|\.\d)"),
        lambda m: _date(int(m[1]), int(m[2]), int(m[3])),
    ),
    (
        re.compile(r"(?<![\w/.-])(\d{1,2})/(\d{1,2})/(\d{4})(?![\w/-]|\.\d)"),
        lambda m: _date(int(m[3]), int(m[1]), int(m[2])),
    ),
    (
        re.compile(rf"\b({_MONTH_RE}) (\d{{1,2}})(?:st|nd|rd|th)?,? (\d{{4}})(?!\d)", re.I),
        lambda m: _month_date(m[1], int(m[2]), int(m[3])),
    ),
    (
        re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)? ({_MONTH_RE}),? (\d{{4}})(?!\d)", re.I),
        lambda m: _month_date(m[2], int(m[1]), int(m[3])),
    ),
)
_BIRTH_CUE = re.compile(r"\b(?:DOB|D\.O\.B|born|date of birth|birth ?date|birthday)\b", re.I)


def _month_date(name: str, day: int, year: int) -> dt.date | None:
    prefix = name.rstrip(".").lower()
    months = [i for i, m in enumerate(_MONTHS, 1) if m.startswith(prefix)]
    return _date(year, months[0], day) if months else None


def _parse_date(value: str) -> dt.date | None:
    """The date ``value`` spells in one of the recognised formats, else ``None``."""
    for pattern, to_date in _DATE_PATTERNS:
        match = pattern.fullmatch(value.strip())
        if match:
            return to_date(match)
    return None


class _Hit(NamedTuple):
    start: int
    end: int
    kind: str
    rank: float


_EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b")
_PHONE_NANP = re.compile(
    r"(?<![\w+.-])(?:\+1[\s.-]?)?"  # optional country code
    r"(?:\([2-9]\d{2}\)\s?|[2-9]\d{2}[\s.-])[2-9]\d{2}[\s.-]\d{4}(?![\w-]|\.\d)"
)
_PHONE_INTL = re.compile(r"(?<![\w+])\+[2-9]\d{0,2}(?:[\s.-]?\(?\d{1,5}\)?){2,6}(?![\w-]|\.\d)")
_SSN = re.compile(r"(?<![\w-])\d{3}([- ])\d{2}\1\d{4}(?![\w-])")
_DIGIT_RUN = re.compile(r"(?<![\w-])\d+(?:[ -]\d+)*(?![\w-])")
_IBAN = re.compile(r"(?<!\w)[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
_MRN = re.compile(r"(?i:\bMRN\b|\bmedical record (?:number|no\.?|#))[\s:#.]*(\d{6,10})(?!\d)")


def _email(text: str, date_policy: str) -> Iterator[_Hit]:
    for m in _EMAIL.finditer(text):
        yield _Hit(m.start(), m.end(), "EMAIL", _RULES)


def _phone(text: str, date_policy: str) -> Iterator[_Hit]:
    for m in _PHONE_NANP.finditer(text):
        yield _Hit(m.start(), m.end(), "PHONE", _FORMAT)
    for m in _PHONE_INTL.finditer(text):
        if 8 <= sum(ch.isdigit() for ch in m[0]) <= 15:  # E.164: at most 15 digits
            yield _Hit(m.start(), m.end(), "PHONE", _FORMAT - 0.5)


def _ssn(text: str, date_policy: str) -> Iterator[_Hit]:
    for m in _SSN.finditer(text):
        if ssn_valid(m[0]):
            yield _Hit(m.start(), m.end(), "SSN", _RULES)


def _card_shape(lengths: list[int]) -> bool:
    """13-19 digits, contiguous or grouped like 4-4-4-4, 4-6-5 or 4-4-4-4-3."""
    if not 13 <= sum(lengths) <= 19:
        return False
    return len(lengths) == 1 or (
        lengths[0] == 4 and all(4 <= n <= 6 for n in lengths[1:-1]) and lengths[-1] <= 6
    )


def _card(text: str, date_policy: str) -> Iterator[_Hit]:
    # Every run of groups that is card-shaped and passes Luhn, so that a card next to
    # another number ("4111111111111111 2024") is still found; the resolver keeps one.
    for run in _DIGIT_RUN.finditer(text):
        groups = [(g.start(), g.end()) for g in re.finditer(r"\d+", run[0])]
        for i in range(len(groups)):
            for j in range(i, len(groups)):
                lengths = [b - a for a, b in groups[i : j + 1]]
                start, end = run.start() + groups[i][0], run.start() + groups[j][1]
                if _card_shape(lengths) and luhn_valid(text[start:end]):
                    yield _Hit(start, end, "CREDIT_CARD", _CHECKSUM)


def _iban(text: str, date_policy: str) -> Iterator[_Hit]:
    for m in _IBAN.finditer(text):
        # The greedy match may swallow a following capitalised word: try the country
        # length first, then shorter prefixes that end on a token boundary.
        pos = [m.start() + i for i, ch in enumerate(m[0]) if ch != " "]
        compact = m[0].replace(" ", "")
        known = _IBAN_LENGTHS.get(compact[:2])
        for n in [known] if known else range(len(compact), 14, -1):
            end = pos[n - 1] + 1 if n and n <= len(pos) else None
            if end and (end == len(text) or not text[end].isalnum()) and iban_valid(compact[:n]):
                yield _Hit(m.start(), end, "IBAN", _CHECKSUM)
                break


def _dob(text: str, date_policy: str) -> Iterator[_Hit]:
    for pattern, to_date in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            if to_date(m) is None:
                continue
            cued = _BIRTH_CUE.search(text, max(0, m.start() - 30), m.start()) is not None
            if cued or date_policy == "any":
                yield _Hit(m.start(), m.end(), "DATE_OF_BIRTH", _RULES if cued else _FORMAT)


def _mrn(text: str, date_policy: str) -> Iterator[_Hit]:
    for m in _MRN.finditer(text):
        yield _Hit(m.start(1), m.end(1), "MRN", _RULES)


_RECOGNIZERS: dict[str, Callable[[str, str], Iterator[_Hit]]] = {
    "EMAIL": _email,
    "PHONE": _phone,
    "SSN": _ssn,
    "CREDIT_CARD": _card,
    "IBAN": _iban,
    "DATE_OF_BIRTH": _dob,
    "MRN": _mrn,
}
"""Regex recognizer per kind: ``(text, date_policy) -> hits``."""

_TOKEN = re.compile(r"\w+|[^\w\s]")


def _glued(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` is glued into a longer token (email, URL, hyphenation)."""
    before = text[start - 1] if start else " "
    following = text[end : end + 2] + "  "
    after, beyond = following[0], following[1]
    return before in "@.-_+/" or after in "@_" or (after in ".-/" and beyond.isalnum())


class Gazetteer:
    """Known PII values per kind, matched token by token (case-insensitive).

    A value matches where its word and punctuation tokens appear consecutively in the
    text (any whitespace in between), so ``"Ann Lee"`` matches ``"ann  Lee"`` but not
    ``"Anna Lee"``, nor ``"ann"`` inside ``"ann@lee.org"`` or ``"Mary-Ann"``. Build it
    once and pass it to :func:`detect_pii` for many texts.

    Args:
        values: ``{kind: values}``, e.g. ``{"PERSON": {"Ann Lee"}, "ADDRESS": {...}}``.

    Raises:
        DpauditError: a kind is not one of ``PII_KINDS``.
    """

    def __init__(self, values: Mapping[str, Iterable[str]]):
        self._index: dict[str, dict[str, list[tuple[str, ...]]]] = {}
        for kind, kind_values in values.items():
            if kind not in PII_KINDS:
                raise unknown_name("PII kind", kind, PII_KINDS)
            index = self._index.setdefault(kind, {})
            for value in kind_values:
                tokens = tuple(t.casefold() for t in _TOKEN.findall(value))
                if tokens:
                    index.setdefault(tokens[0], []).append(tokens)
            for entries in index.values():
                entries.sort(key=len, reverse=True)

    @property
    def kinds(self) -> frozenset[str]:
        """Kinds with at least one known value."""
        return frozenset(k for k, index in self._index.items() if index)

    def find(self, text: str, kinds: Iterable[str] | None = None) -> list[PiiSpan]:
        """All (possibly overlapping) occurrences of known values in ``text``."""
        wanted = self.kinds if kinds is None else self.kinds & set(kinds)
        tokens = [(m[0].casefold(), m.start(), m.end()) for m in _TOKEN.finditer(text)]
        words = [t[0] for t in tokens]
        spans = []
        for kind in sorted(wanted):
            index = self._index[kind]
            for i, word in enumerate(words):
                for entry in index.get(word, ()):
                    if tuple(words[i : i + len(entry)]) == entry:
                        start, end = tokens[i][1], tokens[i + len(entry) - 1][2]
                        if _glued(text, start, end):
                            continue
                        spans.append(PiiSpan(start, end, kind, text[start:end]))
                        break  # longest entry first
        return spans


class _AnalyzerResult(Protocol):
    """What is read of Presidio's ``RecognizerResult``: a character span."""

    start: int
    end: int


class _Analyzer(Protocol):
    """What is used of Presidio's ``AnalyzerEngine``."""

    def analyze(
        self, *, text: str, entities: list[str], language: str
    ) -> Sequence[_AnalyzerResult]: ...


_PRESIDIO_ENGINES: dict[type, _Analyzer] = {}
_PRESIDIO_BROKEN: set[type] = set()


def _presidio_engine(required: bool) -> _Analyzer | None:
    """Presidio's ``AnalyzerEngine`` (built once per class), or ``None``."""
    try:
        from presidio_analyzer import AnalyzerEngine
    except ImportError as exc:
        if required:
            raise DpauditError(
                "use_presidio=True but presidio_analyzer is not installed "
                "(pip install presidio-analyzer and a spaCy English model)"
            ) from exc
        return None
    if AnalyzerEngine in _PRESIDIO_BROKEN and not required:
        return None
    if AnalyzerEngine not in _PRESIDIO_ENGINES:
        try:
            _PRESIDIO_ENGINES[AnalyzerEngine] = AnalyzerEngine()
        except Exception as exc:  # any set-up failure, e.g. no spaCy model
            if required:
                raise DpauditError(f"could not start Presidio's AnalyzerEngine: {exc}") from exc
            _PRESIDIO_BROKEN.add(AnalyzerEngine)
            warnings.warn(
                f"Presidio is installed but unusable, PERSON tagging off: {exc}", stacklevel=3
            )
            return None
    return _PRESIDIO_ENGINES[AnalyzerEngine]


def detect_pii(
    text: str,
    *,
    kinds: Iterable[str] | None = None,
    known_values: Mapping[str, Iterable[str]] | Gazetteer | None = None,
    date_policy: str = "any",
    use_presidio: bool | None = None,
) -> list[PiiSpan]:
    """Find PII spans in ``text``; ``text[s.start:s.end] == s.value`` for each.

    Args:
        text: the text to tag (a training record or a model generation).
        kinds: kinds to report (default: all of ``PII_KINDS``).
        known_values: gazetteer of known values per kind (any kind, typically
            ``PERSON`` and ``ADDRESS``); a :class:`Gazetteer` is reused as is.
        date_policy: ``"any"`` (every valid date is a ``DATE_OF_BIRTH``) or
            ``"context"`` (only dates after a birth cue); see the module docstring.
        use_presidio: tag ``PERSON`` with Presidio's ``AnalyzerEngine``. ``None``
            (default): when ``presidio_analyzer`` is importable and the gazetteer has
            no ``PERSON`` values; ``True``: always (error if unavailable); ``False``: never.

    Returns:
        Non-overlapping spans sorted by start (overlaps resolved as the module says).

    Raises:
        DpauditError: unknown kind or date policy; ``use_presidio=True`` without Presidio.
    """
    wanted = set(PII_KINDS) if kinds is None else set(kinds)
    for kind in wanted - set(PII_KINDS):
        raise unknown_name("PII kind", kind, PII_KINDS)
    if date_policy not in ("any", "context"):
        raise unknown_name("date policy", date_policy, ("any", "context"))
    gazetteer = (
        known_values if isinstance(known_values, Gazetteer) else Gazetteer(known_values or {})
    )

    hits = [h for kind in wanted & set(_RECOGNIZERS) for h in _RECOGNIZERS[kind](text, date_policy)]
    hits += [_Hit(s.start, s.end, s.kind, _GAZETTEER) for s in gazetteer.find(text, wanted)]
    if "PERSON" in wanted and use_presidio is not False:
        if use_presidio or "PERSON" not in gazetteer.kinds:
            engine = _presidio_engine(required=bool(use_presidio))
            if engine is not None:
                results = engine.analyze(text=text, entities=["PERSON"], language="en")
                hits += [_Hit(r.start, r.end, "PERSON", _NER) for r in results if r.end > r.start]

    taken = [False] * len(text)
    kept = []
    for hit in sorted(hits, key=lambda h: (-h.rank, h.start - h.end, h.start, h.kind)):
        if not any(taken[hit.start : hit.end]):
            taken[hit.start : hit.end] = [True] * (hit.end - hit.start)
            kept.append(PiiSpan(hit.start, hit.end, hit.kind, text[hit.start : hit.end]))
    return sorted(kept, key=lambda s: (s.start, s.end))


PII_DETECTORS = ("annotated", "regex", "presidio")
"""Where the PII spans of the attacked records come from: the records' own ``pii``
annotations, the regex and checksum recognizers above, or those plus Presidio's
``PERSON`` tagger (:func:`detect_record_pii`)."""


def presidio_available() -> bool:
    """Whether Presidio's ``AnalyzerEngine`` can be used here (optional, never required)."""
    return _presidio_engine(required=False) is not None


def detect_record_pii(
    records: Sequence[Record], *, date_policy: str = "context"
) -> tuple[list[Record], str]:
    """``records`` with PII spans, and the detector that found them (one of :data:`PII_DETECTORS`).

    Records of a user's file often carry no ``pii`` annotation (docs/inputs.md).
    When any record is annotated, the annotations are the truth and nothing is
    detected (``"annotated"``). Otherwise every record is tagged by
    :func:`detect_pii`: the regex and checksum recognizers (``"regex"``), and
    Presidio's ``PERSON`` tagger when it is importable and starts
    (``"presidio"``). ``PERSON`` and ``ADDRESS`` are found only by Presidio (names)
    or not at all: regex finds structured PII only. Dates count as dates of birth
    only after a birth cue (``date_policy="context"``), since a user's records may
    hold other dates.
    """
    if any(r.pii for r in records):
        return list(records), "annotated"
    presidio = presidio_available()
    tagged = [
        dataclasses.replace(
            r, pii=tuple(detect_pii(r.text, date_policy=date_policy, use_presidio=presidio))
        )
        for r in records
    ]
    return tagged, "presidio" if presidio else "regex"


_DIGIT_KINDS = frozenset({"SSN", "CREDIT_CARD", "MRN"})


def normalize_pii(kind: str, value: str) -> str:
    """Canonical form of a PII value, so that different spellings compare equal.

    Digits only for ``SSN``, ``CREDIT_CARD``, ``MRN`` and ``PHONE`` (a leading US
    country code ``1`` of an 11-digit phone dropped); upper-case alphanumerics for
    ``IBAN``; ISO ``YYYY-MM-DD`` for parseable dates; otherwise case-folded with
    whitespace collapsed (``EMAIL``, ``PERSON``, ``ADDRESS``).
    """
    if kind in _DIGIT_KINDS or kind == "PHONE":
        digits = "".join(ch for ch in value if ch.isdigit())
        return digits[1:] if kind == "PHONE" and len(digits) == 11 and digits[0] == "1" else digits
    if kind == "IBAN":
        return "".join(ch for ch in value if ch.isalnum()).upper()
    if kind == "DATE_OF_BIRTH":
        date = _parse_date(value)
        if date is not None:
            return date.isoformat()
    return " ".join(value.split()).casefold()


class KindMatch(NamedTuple):
    """Distinct normalised values of one kind: detected, true, and in both."""

    detected: int
    truth: int
    matched: int

    @property
    def precision(self) -> float:
        """``matched / detected`` (0.0 when nothing was detected)."""
        return self.matched / self.detected if self.detected else 0.0

    @property
    def recall(self) -> float:
        """``matched / truth`` (0.0 when there is no truth)."""
        return self.matched / self.truth if self.truth else 0.0


class LeakMatch(NamedTuple):
    """Result of :func:`match_leaked`; unpacks as ``precision, recall, per_kind``."""

    precision: float
    recall: float
    per_kind: dict[str, KindMatch]


def match_leaked(detected: Iterable[PiiSpan], truth: Iterable[PiiSpan]) -> LeakMatch:
    """Compare PII found in generations with the training PII (Lukas et al. 2023, §4).

    Both sides are reduced to distinct ``(kind, normalize_pii(kind, value))`` pairs,
    so repeats count once. Precision is the share of distinct detected values that are
    training PII; recall the share of distinct training PII values that were detected.
    Either is 0.0 when its denominator is 0; the counts in ``per_kind`` are exact.
    """
    found = {(s.kind, normalize_pii(s.kind, s.value)) for s in detected}
    true = {(s.kind, normalize_pii(s.kind, s.value)) for s in truth}
    hit = found & true
    n_found, n_true, n_hit = (Counter(k for k, _ in pairs) for pairs in (found, true, hit))
    per_kind = {
        kind: KindMatch(n_found[kind], n_true[kind], n_hit[kind])
        for kind in sorted(set(n_found) | set(n_true))
    }
    total = KindMatch(len(found), len(true), len(hit))
    return LeakMatch(total.precision, total.recall, per_kind)
