"""On-site dispatch (2.9): travel advice inside/outside the vendor's home city for whole-hospital and
partial faults, the 8-hour arrival deadline, arrival recorded and shown against it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from hisguard.plan import Scope
from hisguard.server.domain import dispatch
from hisguard.server.domain.clocks import ManualClock
from tests.test_cases import (
    HttpSink,
    Server,
    SmtpSink,
    http_fixture,  # noqa: F401
    incident,
    site_settings,
    smtp_fixture,  # noqa: F401
)


@pytest.mark.parametrize(
    ("site_city", "scope", "mode", "go_now", "within_h", "words"),
    [
        ("洛阳", Scope.HOSPITAL, dispatch.CHARTERED, True, None, "包车或服务车立即出发"),
        ("洛阳", Scope.DEPARTMENT, dispatch.CHARTERED, False, 8, "8 小时内到达现场"),
        ("洛阳", Scope.HOST, dispatch.CHARTERED, False, 8, "8 小时内到达现场"),
        ("郑州", Scope.HOSPITAL, dispatch.TAXI, True, None, "乘出租车或服务车立即出发"),
        ("郑州市", Scope.DEPARTMENT, dispatch.TAXI, False, None, "乘出租车或服务车"),
        (None, Scope.HOSPITAL, dispatch.CHARTERED, True, None, "未配置，按外地处理"),
        (None, Scope.DEPARTMENT, dispatch.CHARTERED, False, 8, "未配置，按外地处理"),
    ],
)
def test_advice_inside_and_outside_the_home_city_for_whole_and_partial_faults(
    site_city: str | None, scope: Scope, mode: str, go_now: bool, within_h: int | None, words: str
) -> None:
    adv = dispatch.advise(site_city, "郑州", scope)
    assert (adv.mode, adv.go_now) == (mode, go_now)
    assert adv.arrive_within == (timedelta(hours=within_h) if within_h else None)
    assert words in adv.text.zh
    assert adv.text.en and ("chartered" in adv.text.en) == (mode == dispatch.CHARTERED)
    assert ("taxi" in adv.text.en) == (mode == dispatch.TAXI)


def _server(smtp: SmtpSink, http: HttpSink, tmp_path: Path, city: str) -> Server:
    settings = site_settings(smtp, http, tmp_path, city=city, location="洛阳市西工区中州路 1 号")
    srv = Server(settings.model_copy(update={"vendor_city": "郑州"}), ManualClock())
    srv.token("his-db-01", agent=True)
    srv.token("li", "engineer")
    srv.token("xxk", "hospital_contact", site="renmin")
    return srv


def test_partial_fault_outside_the_city_has_an_8_hour_arrival_deadline_shown_against_the_arrival(
    smtp: SmtpSink, http: HttpSink, tmp_path: Path
) -> None:
    srv = _server(smtp, http, tmp_path, "洛阳")
    try:
        srv.report(incident(srv.clock, scope="department", severity="urgent", departments=["门诊收费"]))
        (case,) = srv.get("/cases", "li").json()
        view = srv.get(f"/cases/{case['id']}/dispatch", "li").json()
        assert view["city"] == "洛阳" and view["vendor_city"] == "郑州" and view["location"].startswith("洛阳市")
        assert view["advice"]["arrive_within_h"] == 8 and view["dispatches"] == []

        start = srv.clock.now()
        r = srv.post(f"/cases/{case['id']}/dispatch", "li", {"engineer": "李工"})
        assert r.status_code == 201, r.text
        (d,) = r.json()["dispatches"]
        assert d["arrive_by"] == (start + timedelta(hours=8)).isoformat()
        assert d["arrival"]["state"] == "on_the_way"
        # A hospital contact may not send engineers, but sees the dispatch of its own hospital.
        assert srv.post(f"/cases/{case['id']}/dispatch", "xxk", {"engineer": "x"}).status_code == 403
        assert srv.get(f"/cases/{case['id']}/dispatch", "xxk").json()["dispatches"][0]["engineer"] == "李工"

        srv.clock.advance(hours=8, minutes=1)
        (d,) = srv.get(f"/cases/{case['id']}/dispatch", "li").json()["dispatches"]
        assert d["arrival"]["state"] == "overdue" and d["arrival"]["label"]["zh"] == "已超过到达时限"

        srv.clock.advance(minutes=29)
        (d,) = srv.post(f"/cases/{case['id']}/arrival", "xxk").json()["dispatches"]  # the hospital confirms it
        assert d["arrived_at"] == srv.clock.now().isoformat()
        assert d["arrival"] == {"state": "late", "label": {"zh": "超时到达", "en": "Arrived late"}, "minutes": 510.0}
        again = srv.post(f"/cases/{case['id']}/arrival", "li")
        assert again.status_code == 409 and "no dispatched engineer is still on the way" in again.json()["detail"]
        assert [e.detail["late"] for e in srv.events(case["id"], "arrived")] == [True]
    finally:
        srv.close()


def test_whole_hospital_down_inside_the_city_goes_now_by_taxi_and_arrives_without_a_fixed_deadline(
    smtp: SmtpSink, http: HttpSink, tmp_path: Path
) -> None:
    srv = _server(smtp, http, tmp_path, "郑州")
    try:
        srv.report(incident(srv.clock))
        (case,) = srv.get("/cases", "li").json()
        view = srv.post(f"/cases/{case['id']}/dispatch", "li", {"engineer": "赵工"}).json()
        assert view["advice"]["mode"] == "taxi_or_service_car" and view["advice"]["go_now"] is True
        assert "乘出租车或服务车立即出发" in view["advice"]["text"]["zh"]
        srv.clock.advance(minutes=35)
        (d,) = srv.post(f"/cases/{case['id']}/arrival", "li", {"dispatch_id": view["dispatches"][0]["id"]}).json()[
            "dispatches"
        ]
        assert d["arrive_by"] is None and d["arrival"]["state"] == "on_time" and d["arrival"]["minutes"] == 35.0
        assert srv.post(f"/cases/{case['id']}/arrival", "li", {"dispatch_id": 999}).status_code == 404
    finally:
        srv.close()
