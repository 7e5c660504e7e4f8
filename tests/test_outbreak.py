"""Outbreak correlation on a real server process: many hosts of one hospital infected within minutes → one
whole-hospital trigger-5 incident grouping them; slower or isolated detections stay host incidents."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from hisguard.report import API_PREFIX, IncidentEvent, ReportBatch
from hisguard.server.domain.tokens import create_agent_token
from hisguard.server.storage.db import Database
from tests.support.procs import ServerProc

NOW = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # The numbers: five hosts within two minutes (the defaults are 3 hosts / 10 minutes).
    srv = ServerProc(tmp_path_factory.mktemp("outbreak"), extra_config="outbreak_hosts = 5\noutbreak_window_min = 2\n")
    srv.start()
    yield srv
    srv.stop()


_DBS: dict[str, Database] = {}


def _db(server: ServerProc) -> Database:
    url = f"sqlite:///{server.data_dir.resolve() / 'hisguard.sqlite3'}"
    if url not in _DBS:
        _DBS[url] = Database(url)
    return _DBS[url]


class SimAgent:
    """An agent as the server sees it: its token, and batches of incident events it delivers."""

    def __init__(self, server: ServerProc, name: str, site: str) -> None:
        self.server, self.name, self.site = server, name, site
        # Made in-process on the server's database (the CLI would cost a second per agent).
        with _db(server).session() as s:
            self.token = create_agent_token(s, name, site)

    def send(self, *events: IncidentEvent) -> None:
        batch = ReportBatch(agent=self.name, version="sim", items=list(events))
        r = httpx.post(
            f"{self.server.url}{API_PREFIX}/reports",
            content=batch.model_dump_json(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            timeout=10,
        )
        r.raise_for_status()

    def detection(self, at: datetime, threat: str = "Worm.Win32.Autorun.xyz", server_role: bool = False, **kw):
        check = "av.detection.server" if server_role else "av.detection"
        f = rf"C:\Users\{self.name}\Desktop\报表{uuid.uuid4().hex[:6]}.exe"
        return IncidentEvent(
            key=f"{self.name}/{check}/det-{uuid.uuid4().hex[:16]}",
            state=kw.get("state", "open"),
            trigger=5,
            severity="urgent" if server_role else "routine",
            scope="host",
            host=self.name,
            department=kw.get("department"),
            departments=[kw["department"]] if kw.get("department") else [],
            title_zh=f"{self.name} 检出病毒：{threat} — {f}",
            title_en=f"{self.name}: virus detected: {threat} — {f}",
            observed_at=at,
            evidence={"check": check, "file": f, "threat": threat, "action": "quarantined", "source": "clamav"},
        )


def _outbreaks(server: ServerProc, site: str, status: str | None = None) -> list[dict]:
    params = {"status": status} if status else {}
    return [i for i in server.incidents(**params) if i["site"] == site and i["key"] == "outbreak/trigger5"]


def test_five_hosts_within_two_minutes_make_one_hospital_incident(server):
    agents = [SimAgent(server, f"renmin-ws-{i}", "renmin") for i in range(5)]
    first = NOW - timedelta(minutes=3)
    for i, a in enumerate(agents):
        ev = a.detection(first + timedelta(seconds=25 * i), department="门诊收费" if i < 2 else "住院药房")
        a.send(ev)
        # A host reporting again (a second file) is still one host.
        if i == 1:
            a.send(a.detection(first + timedelta(seconds=30)))
        if i < 4:
            assert _outbreaks(server, "renmin") == [], f"outbreak after {i + 1} hosts"
    (ob,) = _outbreaks(server, "renmin", "open")
    assert (ob["trigger"], ob["scope"], ob["severity"]) == (5, "hospital", "critical")
    ev = ob["evidence"]
    assert ev["host_count"] == 5
    assert ev["first_detection_at"] == first.isoformat()
    # 5 hosts from the first detection to the fifth host 100 s later: 3 hosts per minute.
    assert ev["spread_hosts_per_min"] == pytest.approx(5 / (100 / 60), abs=0.01)
    assert [h["machine"] for h in ev["affected_hosts"]] == [a.name for a in agents]
    host_incidents = {
        i["id"]: i for i in server.incidents(status="open") if i["site"] == "renmin" and i["id"] != ob["id"]
    }
    assert {m["id"] for m in ev["incidents"]} == set(host_incidents)  # all six host incidents, grouped
    assert set(ob["departments"]) == {"门诊收费", "住院药房"}
    assert (
        "全院病毒集中爆发" in ob["title_zh"] and "5 hosts" in ob["title_en"] and "workstations only" in ob["title_en"]
    )

    # The case engine files the host incidents under the outbreak's case.
    (case,) = [c for c in server.get("/cases", status="open", site="renmin")]
    full = server.get(f"/cases/{case['id']}")
    assert full["key"] == "outbreak/trigger5" and full["severity"] == "critical"
    assert {i["id"] for i in full["incidents"]} == {ob["id"], *host_incidents}

    # A sixth host (a server) a minute later joins the same outbreak: still exactly one.
    late = SimAgent(server, "renmin-his-db", "renmin")
    late.send(late.detection(first + timedelta(minutes=4), server_role=True))
    (ob2,) = _outbreaks(server, "renmin")
    assert ob2["id"] == ob["id"] and ob2["evidence"]["host_count"] == 6
    assert ob2["evidence"]["servers_hit"] == ["renmin-his-db"] and "servers hit" in ob2["title_en"]

    # When every host incident is over (the detections' hold ran out), the outbreak is over too.
    for a in [*agents, late]:
        for inc in [i for i in server.incidents(status="open") if i["host"] == a.name]:
            a.send(
                IncidentEvent.model_validate(
                    {
                        **{k: inc[k] for k in ("key", "trigger", "severity", "scope", "host", "title_zh", "title_en")},
                        "state": "resolved",
                        "observed_at": NOW,
                        "evidence": inc["evidence"],
                    }
                )
            )
    (done,) = _outbreaks(server, "renmin")
    assert done["status"] == "resolved"


def test_slower_or_isolated_detections_do_not_escalate(server):
    # Five hosts, but three minutes apart: never five within two minutes.
    slow = [SimAgent(server, f"xiehe-ws-{i}", "xiehe") for i in range(5)]
    for i, a in enumerate(slow):
        a.send(a.detection(NOW - timedelta(minutes=15) + timedelta(minutes=3 * i)))
    # Four hosts within a minute, one of them reporting many files: below five hosts.
    few = [SimAgent(server, f"zhongyi-ws-{i}", "zhongyi") for i in range(4)]
    for i, a in enumerate(few):
        a.send(*(a.detection(NOW - timedelta(seconds=60 - 10 * i + k)) for k in range(3 if i == 0 else 1)))
    # Five hosts within two minutes — but of two different hospitals.
    for i, site in enumerate(["hospital-a"] * 3 + ["hospital-b"] * 2):
        a = SimAgent(server, f"{site}-ws-{i}", site)
        a.send(a.detection(NOW - timedelta(seconds=10 * i)))
    for site in ("xiehe", "zhongyi", "hospital-a", "hospital-b"):
        assert _outbreaks(server, site) == [], site
    # Each detection is still there as its own host incident, routine as one workstation hit is.
    xiehe = [i for i in server.incidents(status="open") if i["site"] == "xiehe"]
    assert len(xiehe) == 5 and {i["severity"] for i in xiehe} == {"routine"}


# -- The rule itself, in-process, with the default settings (3 hosts within 10 minutes) -------------------


@pytest.fixture
def db(tmp_path, monkeypatch):
    from hisguard.server.domain import cases
    from hisguard.server.settings import ServerSettings

    monkeypatch.setattr(cases, "_settings", ServerSettings())  # the defaults, whatever other tests configured
    d = Database(f"sqlite:///{tmp_path / 'o.sqlite3'}")
    d.migrate()
    yield d
    d.dispose()


def _open(s, host: str, check: str, at: datetime, site: str = "renmin") -> int:
    from hisguard.server.domain import incidents

    fields = {
        "key": f"{host}/{check}/{uuid.uuid4().hex[:8]}",
        "host": host,
        "trigger": 5,
        "severity": "routine",
        "scope": "host",
        "department": None,
        "departments": [],
        "functions": [],
        "title_zh": "x",
        "title_en": "x",
        "evidence": {"check": check},
    }
    return incidents.open_or_update(s, site, None, fields, at).id


def test_default_rule_counts_infections_not_protection_or_signatures(db):
    from hisguard.server.domain import outbreak

    assert (outbreak.rule().hosts, outbreak.rule().window) == (3, timedelta(minutes=10))
    t = NOW - timedelta(hours=1)
    with db.session() as s:
        # Protection off and stale signatures on many hosts are not an infection.
        noise = [_open(s, f"ws-{i}", c, t) for i in range(4) for c in ("av.protection", "av.signatures")]
        assert outbreak.correlate(s, "renmin", noise) == []
        a = _open(s, "ws-a", "av.detection", t)
        b = _open(s, "his-db", "canary.tripped.server", t + timedelta(minutes=4))
        assert outbreak.correlate(s, "renmin", [a, b]) == []
        c = _open(s, "ws-c", "canary.rename_burst", t + timedelta(minutes=9, seconds=59))
        (oid,) = outbreak.correlate(s, "renmin", [c])
        from hisguard.server.storage.models import Incident

        ob = s.get(Incident, oid)
        assert ob.evidence["host_count"] == 3 and ob.evidence["servers_hit"] == ["his-db"]
        assert ob.evidence["spread_hosts_per_min"] == pytest.approx(3 / 10, abs=0.01)
        assert {m["id"] for m in ob.evidence["incidents"]} == {a, b, c}
        # Another site's detections at the same moment are that site's business.
        other = [_open(s, f"x-{i}", "av.detection", t, site="xiehe") for i in range(2)]
        assert outbreak.correlate(s, "xiehe", other) == []


def test_a_resolved_outbreak_is_not_reopened_by_its_own_detections(db):
    from hisguard.server.domain import incidents, outbreak
    from hisguard.server.storage.models import Incident

    t = NOW - timedelta(minutes=30)
    with db.session() as s:
        ids = [_open(s, f"ws-{i}", "av.detection", t + timedelta(minutes=i)) for i in range(3)]
        (oid,) = outbreak.correlate(s, "renmin", ids)
        for iid in ids:
            inc = s.get(Incident, iid)
            incidents.resolve(s, "renmin", inc.key, NOW)
        assert outbreak.correlate(s, "renmin", ids) == [oid]
        assert s.get(Incident, oid).status == "resolved"
        # One new detection right after: with the old three already accounted for, no new outbreak.
        late = _open(s, "ws-9", "av.detection", t + timedelta(minutes=5))
        assert outbreak.correlate(s, "renmin", [late]) == []
