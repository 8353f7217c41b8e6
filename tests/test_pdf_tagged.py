"""Documents are tagged PDF (issue 11 point 4): every document kind, rendered from a real case
in its language, is a PDF/A-3a + PDF/UA-1 file whose structure tree a screen reader can walk —
read back with pypdf, an independent PDF parser, not with WeasyPrint."""

from __future__ import annotations

import html as htmllib
import io
import re
from datetime import UTC, datetime

import pypdf
import pytest
from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject

from activities.document_context import agenda_context, document_context, monthly_report_context
from activities.rendering import catalogue, html_to_pdf, render_document_html
from activities.report import compute_report, render_report_html
from tests.test_documents import escalated_case, full_case

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"


@pytest.fixture(scope="module")
def case():
    return full_case()


def structure(node: object, seen: list[str]) -> list[str]:
    """The structure types (/H1, /P, /Table ...) of the tree under `node`, depth first."""
    node = node.get_object() if isinstance(node, IndirectObject) else node
    if not isinstance(node, DictionaryObject):
        return seen
    if "/S" in node:
        seen.append(str(node["/S"]))
    kids = node.get("/K")
    kids = kids.get_object() if isinstance(kids, IndirectObject) else kids
    for kid in kids if isinstance(kids, ArrayObject) else [kids]:
        if isinstance(kid, IndirectObject | DictionaryObject):
            structure(kid, seen)
    return seen


def check_tagged(pdf: bytes, language: str, title: str, must: set[str]) -> list[str]:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    root = reader.trailer["/Root"]
    assert reader.pdf_header == "%PDF-1.7"
    assert bool(root["/MarkInfo"]["/Marked"]) is True
    assert root["/Lang"] == language
    assert root["/ViewerPreferences"]["/DisplayDocTitle"]  # viewers show the title, not a file name
    assert reader.metadata.title == title
    assert root["/OutputIntents"][0]["/S"] == "/GTS_PDFA1"
    assert "/ID" in reader.trailer
    tags = structure(root["/StructTreeRoot"], [])
    assert tags[0] == "/Document" and must <= set(tags), (must - set(tags), tags[:40])
    # Every page's marked content belongs to the tree (the parent tree maps it back).
    assert "/ParentTree" in root["/StructTreeRoot"]
    assert all("/StructParents" in page for page in reader.pages)

    xmp = reader.xmp_metadata
    assert xmp.dc_title == {"x-default": title}
    described = {k: v for d in xmp.rdf_root.getElementsByTagNameNS(RDF, "Description")
                 for k, v in d.attributes.items()}
    assert described["pdfaid:part"] == "3" and described["pdfaid:conformance"] == "A"
    assert described["pdfuaid:part"] == "1"
    return tags


# What each kind's structure must hold: headings, paragraphs, the tables and lists it shows.
MUST = {
    "assessment_report": {"/H1", "/H2", "/Table", "/TR", "/TH", "/TD"},
    "joint_plan": {"/H1", "/H2", "/P", "/Table", "/L", "/LI"},
    "status_minutes": {"/H1", "/H2", "/P", "/Table"},
    "decision_letter": {"/H1", "/P"},
    "closing_summary": {"/H1", "/H2", "/Table"},
}


@pytest.mark.parametrize(("kind", "language"), [
    ("assessment_report", "da"), ("joint_plan", "sv"), ("status_minutes", "en"),
    ("decision_letter", "da"), ("closing_summary", "en")])
def test_case_documents_are_tagged_pdf(case, kind: str, language: str) -> None:
    context = document_context(case, kind, 1)
    html = render_document_html(kind, language, {**context, "kind": kind, "version": 1,
                                                 "staff_names": {"anna": "Anna Berg"}})
    title = f"{catalogue(language)['doc.' + kind]} · {context['case_ref']} · v1"
    check_tagged(html_to_pdf(html), language, title, MUST[kind])


def test_committee_agenda_and_monthly_report_are_tagged_pdf(case) -> None:
    other = escalated_case()
    agenda = agenda_context("committee-dk-1", datetime(2026, 11, 24, 12, 0, tzinfo=UTC),
                            [(other, other.escalations[0].id)])
    html = render_document_html("committee_agenda", "da", {**agenda, "kind": "committee_agenda",
                                                           "version": 3, "staff_names": {}})
    title = f"{catalogue('da')['doc.committee_agenda']} · {agenda['case_ref']} · v3"
    check_tagged(html_to_pdf(html), "da", title, {"/H1", "/H2", "/Table"})

    month = monthly_report_context("2027-01", [case, other], as_of=datetime(2027, 1, 31, tzinfo=UTC))
    html = render_document_html("monthly_report", "sv", {**month, "kind": "monthly_report",
                                                         "version": 1, "staff_names": {}})
    title = f"{catalogue('sv')['doc.monthly_report']} · {month['case_ref']} · v1"
    check_tagged(html_to_pdf(html), "sv", title, {"/H1", "/Table"})

    # The managers' monthly report (GET /reports/{month}/document) goes through the same renderer.
    data = compute_report([case, other], "2027-01", timezone="Europe/Copenhagen",
                          now=datetime(2027, 2, 1, tzinfo=UTC), country="DK")
    html = render_report_html(data)
    language = re.search(r'<html lang="([a-z]+)"', html).group(1)
    title = htmllib.unescape(re.search(r"<title>(.*?)</title>", html, re.S).group(1).strip())
    check_tagged(html_to_pdf(html), language, title, {"/H1", "/H2", "/Table"})
