"""Statistics per site and period (the contract-review figures): cases by trigger and severity, response
times against the service levels (1.4), arrivals (2.9), drills and training done (2.8) — drills excluded
from every real figure."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from hisguard.server.domain.clocks import ManualClock
from tests.test_cases import (
    SITE,
    HttpSink,
    Server,
    SmtpSink,
    http_fixture,  # noqa: F401
    incident,
    site_settings,
    smtp_fixture,  # noqa: F401
)


def test_site_figures_for_a_period_count_real_cases_only(smtp: SmtpSink, http: HttpSink, tmp_path: Path) -> None:
    settings = site_settings(smtp, http, tmp_path, city="洛阳")
    srv = Server(settings.model_copy(update={"vendor_city": "郑州"}), ManualClock())
    srv.token("his-db-01", agent=True)
    srv.token("li", "engineer")
    srv.token("xxk", "hospital_contact", site=SITE)
    srv.token("other", "hospital_contact", site="other-hospital")
    try:
        start = srv.clock.now()

        def case_of(key: str) -> int:
            return next(c["id"] for c in srv.get("/cases", "li").json() if c["key"] == key)

        # A whole-hospital hardware fault acknowledged in 4 minutes (within 10).
        srv.report(incident(srv.clock, key="core-sw/ping"))
        a = case_of("core-sw/ping")
        srv.clock.advance(minutes=4)
        srv.post(f"/cases/{a}/acknowledge", "li")
        srv.report(incident(srv.clock, key="core-sw/ping", state="resolved"))

        # A drill in between: critical, acknowledged late, must not count anywhere but in drills.
        drill = srv.post("/drills", "li", {"site": SITE, "trigger": 1}).json()
        srv.clock.advance(minutes=20)
        srv.post(f"/cases/{drill['case_id']}/acknowledge", "li")
        srv.post(f"/drills/{drill['id']}/close", "li", {})

        # A department's database suspect acknowledged in 45 minutes (urgent: 30) with an engineer on site.
        srv.report(
            incident(
                srv.clock,
                key="his-db/suspect",
                trigger=3,
                severity="urgent",
                scope="department",
                host="his-db",
                departments=["门诊收费"],
                functions=["outpatient_billing"],
                title_zh="数据库置疑",
                title_en="DB suspect",
            )
        )
        b = case_of("his-db/suspect")
        srv.post(f"/cases/{b}/dispatch", "li", {"engineer": "李工"})
        srv.clock.advance(minutes=45)
        srv.post(f"/cases/{b}/acknowledge", "li")
        srv.clock.advance(hours=3)
        srv.post(f"/cases/{b}/arrival", "li")  # within the 8 hours for a partial fault outside the city

        # A routine software fault nobody acknowledged, past its 60 minutes.
        srv.report(
            incident(
                srv.clock,
                key="app-01/service",
                trigger=2,
                severity="routine",
                scope="host",
                host="app-01",
                departments=[],
                functions=[],
                title_zh="服务停止",
                title_en="Service stopped",
            )
        )
        srv.clock.advance(minutes=61)
        assert srv.post("/training", "li", {"site": SITE, "topic": "季度培训"}).status_code == 201

        r = srv.get("/stats", "li", site=SITE, **{"from": start.isoformat()})
        assert r.status_code == 200, r.text
        (st,) = r.json()["sites"]
        assert st["cases"] == 3
        assert st["by_trigger"] == {"1": 1, "2": 1, "3": 1}
        assert st["by_severity"] == {"critical": 1, "urgent": 1, "routine": 1}
        assert st["by_trigger_severity"] == {"1": {"critical": 1}, "2": {"routine": 1}, "3": {"urgent": 1}}
        crit, urg, rout = (st["response"][k] for k in ("critical", "urgent", "routine"))
        assert (crit["met"], crit["missed"], crit["median_min"], crit["compliance"]) == (1, 0, 4.0, 1.0)
        assert (urg["met"], urg["missed"], urg["max_min"], urg["within_min"], urg["compliance"]) == (
            0,
            1,
            45.0,
            30,
            0.0,
        )
        assert (rout["acknowledged"], rout["missed"]) == (0, 1)  # unacknowledged past its deadline counts as missed
        assert st["plans_activated"] == 1  # the critical case; the drill's plan is not counted
        assert st["arrivals"] == {"dispatched": 1, "on_time": 1, "late": 0, "overdue": 0, "on_the_way": 0}
        assert st["drills"]["done"] == 1 and st["drills"]["list"][0]["id"] == drill["id"]
        assert st["training"] == 1
        assert st["recovery_median_min"] == 4.0

        # The period bounds the figures; a hospital contact sees its own hospital only.
        later = srv.get("/stats", "li", site=SITE, **{"from": (srv.clock.now() - timedelta(minutes=1)).isoformat()})
        assert later.json()["sites"][0]["cases"] == 0
        assert srv.get("/stats", "xxk").json()["sites"][0]["cases"] == 3
        assert srv.get("/stats", "other", site=SITE).status_code == 403
        bad = srv.get("/stats", "li", **{"from": srv.clock.now().isoformat(), "to": start.isoformat()})
        assert bad.status_code == 422 and "before" in bad.json()["detail"]
    finally:
        srv.close()


def test_times_out_of_range_or_without_a_zone_are_refused(smtp: SmtpSink, http: HttpSink, tmp_path: Path) -> None:
    srv = Server(site_settings(smtp, http, tmp_path), ManualClock())
    srv.token("li", "engineer")
    try:
        for params in (
            {"from": "0001-01-01T00:00:00+02:01"},
            {"to": "2026-01-01T00:00:00"},
            {"from": "1900-01-01T00:00Z"},
        ):
            r = srv.get("/stats", "li", **params)
            assert r.status_code == 422, (params, r.text)
        for at in ("0001-01-01T00:00:00+02:01", "2026-01-01T09:00:00", "2026-03-01T09:00:00+08:00"):
            r = srv.post("/training", "li", {"site": SITE, "topic": "培训", "at": at})
            assert r.status_code == 422, (at, r.text)  # the last one is two months ahead of the clock
        assert (
            srv.post("/training", "li", {"site": SITE, "topic": "培训", "at": "2026-01-02T09:00:00+08:00"}).json()["at"]
            == "2026-01-02T01:00:00+00:00"
        )
    finally:
        srv.close()
