"""report.html on paper: printed to PDF by headless Chromium, checked on the PDF and the print layout.

Two views of the printed report:

* the PDF that ``chromium --print-to-pdf`` writes: its page size (the CSS
  ``@page``, A4), its printable area, and the scale Chromium printed at. Blink
  lays a page out at the printable width; when something is wider it shrinks
  the whole document to fit (up to 2x) and clips what is still wider. The PDF
  content stream records that scale, so a scale below 72/96 pt per CSS px means
  something did not fit the page (read with ``zlib`` alone: no PDF library).
* the print layout itself: Chromium with print media emulated (DevTools
  protocol over ``--remote-debugging-pipe``, no extra package) at the printable
  width read from the PDF, where the right edge of every table and figure is
  measured. A control with the print rules of the wide table undone must
  overflow, so the check is known to be able to fail.

The report is the synthetic run of ``_run_fixture`` with its PII section widened
to 12 kinds with long names and three inference attacks (7 columns of the "PII
leakage by kind" table). Needs ``chromium`` on PATH (skipped otherwise).
"""

from __future__ import annotations

import copy
import json
import os
import re
import select
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from _chromium import CHROMIUM_FLAGS, find_browser
from _run_fixture import write_run

from dpaudit.reports.collect import collect
from dpaudit.reports.render_html import render_html

pytestmark = pytest.mark.slow  # two or three browser starts and a synthetic run: ~5-10 s

A4_PT = (595.28, 841.89)
CSS_PX_PT = 72 / 96  # a CSS px printed at 100 %
KINDS = (
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD_NUMBER",
    "IBAN_CODE",
    "IP_ADDRESS",
    "US_SOCIAL_SECURITY_NUMBER",
    "US_DRIVER_LICENSE",
    "US_PASSPORT_NUMBER",
    "MEDICAL_LICENSE_NUMBER",
    "POSTAL_ADDRESS_WITH_CITY",
    "DATE_OF_BIRTH",
)
RANKINGS = ("inference", "reconstruction", "attribute_inference")
# Undo the print rules of the wide table (what the report had before they landed).
UNFIXED_WIDE_TABLE = """<style>@media print {
  table.wide { table-layout: auto !important; font-size: 13px !important; }
  table.wide th, table.wide td { white-space: nowrap !important; padding: 5px 8px !important; }
}</style>"""


@pytest.fixture(scope="module")
def browser() -> str:
    found = find_browser()
    if not found:
        pytest.skip(
            "chromium is not on PATH: install it (apt-get install chromium) to check the printed report"
        )
    return found


def widen_pii(report: dict[str, Any]) -> dict[str, Any]:
    """The report with 12 PII kinds of long names and three ranking attacks per model."""
    report = copy.deepcopy(report)
    for j, model in enumerate(("target", "baseline")):
        pii = report["models"][model]["pii"]
        ranking = next(iter(pii["rankings"].values()))
        pii["rankings"] = {name: ranking for name in RANKINGS}
        pii["by_kind"] = {}
        for i, kind in enumerate(KINDS):
            row: dict[str, Any] = {
                "detected": 10 + i,
                "extracted": i + 4 * j,
                "truth": 40,
                "extraction_precision": 0.5,
                "extraction_rate": (i + 4 * j) / 40,
            }
            for name in RANKINGS:
                row[f"{name}_accuracy"] = 0.25 + 0.01 * i
                row[f"{name}_chance"] = 0.2
            pii["by_kind"][kind] = row
    return report


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("print")
    run = write_run(root / "runs", "print", report={"max_epsilon": 8, "max_auc": 0.6})
    data = collect(run)
    html = root / "report.html"
    html.write_text(render_html(widen_pii(data.report), data.curves, generated="2025-01-01"))
    return html


# -- PDF ---------------------------------------------------------------------------------------


def print_pdf(browser: str, html: Path, out: Path, profile: Path) -> bytes:
    command = [
        browser,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "--no-pdf-header-footer",
        f"--print-to-pdf={out}",
        html.resolve().as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert out.is_file(), f"no PDF (exit {result.returncode}): {result.stderr[-2000:]}"
    return out.read_bytes()


def pdf_pages(pdf: bytes) -> list[dict[str, Any]]:
    """Per page: media box, printable area and print scale (pt per CSS px), from the PDF bytes.

    Chromium (Skia) writes each page's content stream as: a flip to device units
    (``u 0 0 -u 0 H cm``), a clip to the printable area (``x y w h re W* n``) and
    the CSS px → device scale (``k 0 0 k ...  cm``); a CSS px is ``u*k`` pt.
    """
    boxes = [
        tuple(float(v) for v in m.groups())
        for m in re.finditer(
            rb"/MediaBox\s*\[\s*([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*\]", pdf
        )
    ]
    head = re.compile(
        rb"^\s*([\d.]+) 0 0 -[\d.]+ 0 [\d.]+ cm\s+q\s+([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+) re\s+W\*? n"
        rb"\s+q\s+([\d.]+) 0 0 [\d.]+ [-\d.]+ [-\d.]+ cm"
    )
    pages = []
    for m in re.finditer(rb"stream\r?\n", pdf):
        end = pdf.find(b"endstream", m.end())
        try:
            content = zlib.decompress(pdf[m.end() : end])
        except zlib.error:
            continue
        found = head.match(content)
        if found:
            unit, x, y, w, h, scale = (float(v) for v in found.groups())
            pages.append(
                {
                    "printable_pt": (x * unit, y * unit, w * unit, h * unit),
                    "px_pt": unit * scale,
                }
            )
    assert boxes and len(pages) == len(boxes), "cannot read the page streams of Chromium's PDF"
    for page, box in zip(pages, boxes, strict=True):
        page["media_pt"] = (box[2] - box[0], box[3] - box[1])
    return pages


@pytest.fixture(scope="module")
def pages(browser, report_html, tmp_path_factory) -> list[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("pdf")
    return pdf_pages(print_pdf(browser, report_html, tmp / "report.pdf", tmp / "profile"))


def test_printed_report_pages_are_a4_with_margins(pages):
    assert len(pages) >= 3, f"the report prints on {len(pages)} page(s)"
    for number, page in enumerate(pages, 1):
        width, height = page["media_pt"]
        assert width == pytest.approx(A4_PT[0], abs=1.5), f"page {number}: {page['media_pt']}"
        assert height == pytest.approx(A4_PT[1], abs=1.5), f"page {number}: {page['media_pt']}"
        left, top, printable, _ = page["printable_pt"]
        mm = 72 / 25.4
        assert 8 * mm <= left <= 20 * mm and 8 * mm <= top <= 25 * mm, "page margins"
        assert printable == pytest.approx(width - 2 * left, abs=1), "printable area centred"


def test_printed_report_is_not_shrunk_to_fit(pages):
    """Nothing is wider than the printable page, so Chromium printed at 100 % (no shrink-to-fit)."""
    for number, page in enumerate(pages, 1):
        assert page["px_pt"] == pytest.approx(CSS_PX_PT, rel=0.01), (
            f"page {number} printed at {page['px_pt'] / CSS_PX_PT:.0%}: something is wider than "
            "the printable width, so Chromium shrank the document (and clips beyond 2x)"
        )


# -- print layout ------------------------------------------------------------------------------


class DevTools:
    """Headless Chromium driven over ``--remote-debugging-pipe`` (NUL-separated JSON on fds 3, 4)."""

    def __init__(self, browser: str, profile: Path, timeout: float = 60.0) -> None:
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()

        def child_fds() -> None:  # fds 3 and 4 in the browser, whatever numbers they have here
            read, write = os.dup(to_browser), os.dup(from_browser)
            os.dup2(read, 3)
            os.dup2(write, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self.process = subprocess.Popen(
            [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe"],
            preexec_fn=child_fds,
            close_fds=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser)
        os.close(from_browser)
        self.timeout = timeout
        self._buffer = b""
        self._id = 0
        self.session: str | None = None

    def call(self, method: str, session: bool = True, **params: Any) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\0" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._read], [], [], left)[0]:
                    raise TimeoutError(f"chromium did not answer {method}")
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium closed the pipe during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"][
            "value"
        ]

    def open_for_print(self, url: str, width: int) -> None:
        target = self.call("Target.createTarget", session=False, url="about:blank")["targetId"]
        self.session = self.call(
            "Target.attachToTarget", session=False, targetId=target, flatten=True
        )["sessionId"]
        self.call("Emulation.setEmulatedMedia", media="print")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=1100,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + self.timeout
        while self.evaluate("document.readyState") != "complete":
            assert time.monotonic() < deadline, "the report did not load"
            time.sleep(0.05)

    def close(self) -> None:
        try:
            self.call("Browser.close", session=False)
            self.process.wait(timeout=10)
        except (OSError, RuntimeError, TimeoutError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(timeout=10)
        finally:
            os.close(self._write)
            os.close(self._read)


MEASURE = """JSON.stringify({
  page: document.documentElement.clientWidth,
  items: [...document.querySelectorAll('table, figure, figure img')].map(e => ({
    what: e.tagName.toLowerCase() + (e.className ? '.' + e.className : ''),
    section: (e.closest('section') || {}).id || '',
    head: (e.querySelector('th, td, figcaption') || {textContent: ''}).textContent.trim().slice(0, 30),
    right: e.getBoundingClientRect().right,
    scroll: e.scrollWidth,
    width: e.clientWidth,
  })),
  cells: [...document.querySelectorAll('table.wide th, table.wide td')]
    .filter(c => c.scrollWidth > c.clientWidth + 1).map(c => c.textContent.trim()),
})"""


def print_layout(browser: str, html: Path, width: int, profile: Path) -> dict[str, Any]:
    """Widths of the tables and figures of ``html`` laid out for print at ``width`` CSS px."""
    tools = DevTools(browser, profile)
    try:
        tools.open_for_print(html.resolve().as_uri(), width)
        return json.loads(tools.evaluate(MEASURE))
    finally:
        tools.close()


def too_wide(layout: dict[str, Any], width: int, selector: str | None = None) -> list[str]:
    return [
        f"{i['what']} in #{i['section']} ({i['head']!r}): {max(i['right'], i['scroll']):.0f} px"
        for i in layout["items"]
        if (selector is None or i["what"].startswith(selector))
        and max(i["right"], i["scroll"]) > width + 0.5
    ]


@pytest.fixture(scope="module")
def printable_width(pages) -> int:
    """The printable width of the pages in CSS px (A4 less the ``@page`` margins: ~703)."""
    width = round(pages[0]["printable_pt"][2] / CSS_PX_PT)
    assert 600 <= width <= 760, width
    return width


@pytest.fixture(scope="module")
def layout(browser, report_html, printable_width, tmp_path_factory) -> dict[str, Any]:
    profile = tmp_path_factory.mktemp("layout") / "profile"
    measured = print_layout(browser, report_html, printable_width, profile)
    assert measured["page"] == printable_width
    return measured


def test_print_layout_pii_table_and_figures_fit_the_page(
    browser, report_html, printable_width, layout, tmp_path
):
    width = printable_width
    assert any(i["what"] == "table.wide" for i in layout["items"]), "no PII-by-kind table"
    assert sum(i["what"] == "img" for i in layout["items"]) >= 3, "figures missing"
    assert not too_wide(layout, width, "table.wide"), "PII table wider than the printed page"
    assert not too_wide(layout, width, "figure"), "a figure is wider than the printed page"
    assert not too_wide(layout, width, "img"), "a figure is wider than the printed page"

    # Control: without the wide table's print rules the same check catches the overflow.
    unfixed = tmp_path / "unfixed.html"
    unfixed.write_text(
        report_html.read_text().replace("</head>", UNFIXED_WIDE_TABLE + "</head>", 1)
    )
    control = print_layout(browser, unfixed, width, tmp_path / "profile")
    assert too_wide(control, width, "table.wide"), "the check cannot see an overflowing table"


def test_print_layout_pii_table_text_stays_in_its_cells(layout):
    assert not layout["cells"], f"text runs out of its cell: {layout['cells']}"


def test_print_layout_every_table_fits_the_page(layout, printable_width):
    wide = too_wide(layout, printable_width)
    assert not wide, "wider than the printed page: " + "; ".join(wide)
