"""Post-incident review (2.10): the automatic timeline of a closed case in order, the investigation's
fields, the Markdown export, and the PDF export with an embedded Chinese font (rendered with poppler's
pdftoppm and checked not blank); no CJK font means a clear refusal, never boxes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from hisguard.server.domain import review
from hisguard.server.domain.clocks import ManualClock
from tests.support.peers import need, need_binary
from tests.test_cases import (
    HttpSink,
    Server,
    SmtpSink,
    http_fixture,  # noqa: F401
    incident,
    site_settings,
    smtp_fixture,  # noqa: F401
)

FIELDS = {
    "cause": "核心交换机电源模块老化，单电源运行时故障。",
    "prevention": "建议院方为核心交换机配置双电源并接入 UPS。",
    "corrective_actions": "更换电源模块；恢复冗余链路。",
    "preventive_actions": "每季度巡检核心设备电源；预案增加备件清单。",
    "accountability": "值班工程师 3 分钟内响应，无迟报。",
}


def _closed_case(smtp: SmtpSink, http: HttpSink, tmp_path: Path) -> tuple[Server, int]:
    """A whole-hospital fault lived through: ack, a step, dispatch, continuity advisory, arrival, recovery."""
    settings = site_settings(smtp, http, tmp_path, city="洛阳")
    srv = Server(settings.model_copy(update={"vendor_city": "郑州"}), ManualClock())
    srv.token("his-db-01", agent=True)
    srv.token("li", "engineer")
    first = incident(srv.clock)
    srv.report(first)
    (case,) = srv.get("/cases", "li").json()
    cid = case["id"]
    srv.clock.advance(minutes=3)
    assert srv.post(f"/cases/{cid}/acknowledge", "li", {"note": "on it"}).status_code == 200
    srv.clock.advance(minutes=2)
    assert srv.post(f"/cases/{cid}/steps/record", "li").status_code == 200
    srv.clock.advance(minutes=1)
    assert srv.post(f"/cases/{cid}/dispatch", "li", {"engineer": "李工"}).status_code == 201
    r = srv.client.put(
        f"/api/v1/cases/{cid}/review", json={"cause": "x"}, headers={"Authorization": f"Bearer {srv.tokens['li']}"}
    )
    assert r.status_code == 409 and "still open" in r.json()["detail"]
    srv.clock.advance(minutes=10)  # 16 min: the 15-minute continuity clock is due
    srv.tick()
    srv.clock.advance(minutes=24)
    assert srv.post(f"/cases/{cid}/arrival", "li").status_code == 200
    srv.clock.advance(minutes=10)
    srv.report(incident(srv.clock, state="resolved"))
    return srv, cid


def _put_review(srv: Server, cid: int) -> dict:
    auth = {"Authorization": f"Bearer {srv.tokens['li']}"}
    r = srv.client.put(f"/api/v1/cases/{cid}/review", json=FIELDS, headers=auth)
    assert r.status_code == 200, r.text
    return r.json()


def test_markdown_review_has_the_whole_timeline_in_order_and_the_investigation(
    smtp: SmtpSink, http: HttpSink, tmp_path: Path
) -> None:
    srv, cid = _closed_case(smtp, http, tmp_path)
    try:
        data = _put_review(srv, cid)
        assert data["fields"] == FIELDS and data["updated_by"] == "li"
        kinds = {e["kind"] for e in data["timeline"]}
        assert {"detection", "event", "step", "clock", "notification", "dispatch", "arrival", "recovery"} <= kinds
        times = [e["at"] for e in data["timeline"]]
        assert times == sorted(times)

        r = srv.get(f"/cases/{cid}/review.md", "li")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/markdown")
        md = r.text
        rows = [line for line in md.splitlines() if re.match(r"^\| \d+ \|", line)]
        assert [int(line.split("|")[1]) for line in rows] == list(range(1, len(rows) + 1))
        assert len(rows) == len(data["timeline"])  # every moment, none left out
        stamps = [line.split("|")[2].strip() for line in rows]
        assert stamps == sorted(stamps) and stamps[0] == "2026-01-05 16:00:00"  # 08:00 UTC shown as UTC+8
        # The story in the order it happened.
        story = [
            "检测到：核心交换机 网络不可达",
            "立案，级别全面加急",
            "启动应急预案",
            "通知 li（email）",
            "确认响应",
            "步骤完成：记录故障描述",
            "派 李工 赴现场：外地客户，HIS 全院瘫痪：包车或服务车立即出发",
            "业务连续性时限到（第 1 阶段）",
            "第 1 阶段业务转手工",
            "李工 到达现场（按时到达）",
            "检测恢复：核心交换机 网络不可达",
            "案件恢复",
        ]
        at = [md.index(s) for s in story]
        assert at == sorted(at), [s for s, a in zip(story, at, strict=True) if a != sorted(at)[story.index(s)]]
        assert "| response:1 | 2026-01-05 16:10:00 | cancelled |" in md and "| continuity:1 |" in md
        for key, text in FIELDS.items():
            assert f"### {review.FIELDS[key].zh} / {review.FIELDS[key].en}\n\n{text}" in md
        assert "- [x] 记录故障描述" in md and "- [ ] 确认故障已告知院方领导" in md
    finally:
        srv.close()


def test_pdf_review_embeds_a_chinese_font_and_renders(smtp: SmtpSink, http: HttpSink, tmp_path: Path) -> None:
    pdftoppm = need_binary("pdftoppm")
    try:
        review.find_cjk_font()
    except review.FontMissing as exc:
        need(False, f"needs a CJK font (Debian fonts-noto-cjk): {exc}")
    srv, cid = _closed_case(smtp, http, tmp_path)
    try:
        _put_review(srv, cid)
        r = srv.get(f"/cases/{cid}/review.pdf", "li")
        assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
        pdf = tmp_path / "review.pdf"
        pdf.write_bytes(r.content)
        assert r.content.startswith(b"%PDF-")

        fonts = subprocess.run([need_binary("pdffonts"), str(pdf)], capture_output=True, text=True, check=True).stdout
        cjk = [line for line in fonts.splitlines() if "CJK" in line or "WenQuanYi" in line or "Droid" in line]
        assert cjk and all(" yes " in line for line in cjk), fonts  # embedded (subset)
        text = subprocess.run([need_binary("pdftotext"), str(pdf), "-"], capture_output=True, text=True, check=True)
        assert "事故调查报告" in text.stdout and "核心交换机电源模块老化" in text.stdout  # the glyphs map back to text

        page = str(tmp_path / "page")
        subprocess.run([pdftoppm, "-png", "-r", "50", "-f", "1", "-l", "1", str(pdf), page], check=True)
        (png,) = tmp_path.glob("page*.png")
        from PIL import Image

        img = Image.open(png).convert("L")
        dark = sum(img.histogram()[:128])  # pixels darker than mid-grey
        assert img.size[0] > 300 and dark > 0.005 * img.size[0] * img.size[1], dark  # ink on the page, not blank
    finally:
        srv.close()


@pytest.mark.parametrize(
    ("font", "says"),
    [("/nonexistent/font.ttc", "absent"), ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "no Chinese glyphs")],
)
def test_pdf_without_a_chinese_font_is_refused_with_the_reason(
    smtp: SmtpSink, http: HttpSink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, font: str, says: str
) -> None:
    if says != "absent" and not Path(font).exists():
        need(False, f"needs {font} (Debian fonts-dejavu-core)")
    srv, cid = _closed_case(smtp, http, tmp_path)
    try:
        monkeypatch.setenv("HISGUARD_CJK_FONT", font)
        r = srv.get(f"/cases/{cid}/review.pdf", "li")
        assert r.status_code == 503
        detail = r.json()["detail"]
        assert "needs a Chinese (CJK) font" in detail and says in detail and "fonts-noto-cjk" in detail
    finally:
        srv.close()


def test_pdf_refuses_characters_its_font_cannot_draw_and_drops_control_characters(
    smtp: SmtpSink, http: HttpSink, tmp_path: Path
) -> None:
    try:
        review.find_cjk_font()
    except review.FontMissing as exc:
        need(False, f"needs a CJK font (Debian fonts-noto-cjk): {exc}")
    srv, cid = _closed_case(smtp, http, tmp_path)
    auth = {"Authorization": f"Bearer {srv.tokens['li']}"}
    try:
        srv.client.put(f"/api/v1/cases/{cid}/review", json={"cause": "电源故障\x07\u200b 😀"}, headers=auth)
        r = srv.get(f"/cases/{cid}/review.pdf", "li")
        assert r.status_code == 422 and "U+1F600" in r.json()["detail"] and "U+0007" not in r.json()["detail"]
        assert "😀" in srv.get(f"/cases/{cid}/review.md", "li").text  # the Markdown keeps the text as written
        srv.client.put(f"/api/v1/cases/{cid}/review", json={"cause": "电源故障\x07\u200b"}, headers=auth)
        r = srv.get(f"/cases/{cid}/review.pdf", "li")
        assert r.status_code == 200 and r.content.startswith(b"%PDF-")
    finally:
        srv.close()
