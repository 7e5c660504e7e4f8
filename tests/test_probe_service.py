"""The service probe against real peers on 127.0.0.1: what each kind of answer (or silence) is observed as.

Peers (tests/support/servicepeers.py): the standard library's HTTP server (plain and TLS, certificate
made with `cryptography`), a socket that accepts and never answers, aiosmtpd's SMTP greeting as a TCP
banner, pynetdicom's Verification SCP, python-hl7's MLLP server acknowledging AA / AE / nothing, and
Debian's dnsmasq as the hospital's DNS server.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hisguard.checks.base import Observation, ProbeContext
from hisguard.checks.service import Config, probe
from hisguard.checks.service.result import NotChecked
from tests.support import peers
from tests.support.procs import free_port, wait_until
from tests.support.servicepeers import (
    AUTH,
    DicomPeer,
    Dnsmasq,
    GarbagePeer,
    HttpPeer,
    HungPeer,
    MllpPeer,
    SilentUdp,
    SmtpPeer,
    make_cert,
)

TIMEOUT = 2.0  # each target's deadline here; nothing below depends on how fast the machine is


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_cert(tmp_path_factory.mktemp("pki"), days=5)


@pytest.fixture(scope="module")
def web() -> Any:
    with HttpPeer() as peer:
        yield peer


@pytest.fixture(scope="module")
def tls_web(pki: dict[str, Path]) -> Any:
    with HttpPeer((pki["cert"], pki["key"])) as peer:
        yield peer


@pytest.fixture(scope="module")
def hung() -> Any:
    with HungPeer() as peer:
        yield peer


def run(tmp_path: Path, *targets: dict[str, Any], **job: Any) -> dict[tuple[str, str], Observation]:
    cfg = Config(targets=list(targets), timeout=20, target_timeout=TIMEOUT, **job)
    obs = asyncio.run(probe(cfg, ProbeContext(host="his-app-01", state_dir=tmp_path)))
    return {(o.check, o.subject): o for o in obs}


def answer(found: dict[tuple[str, str], Observation], url: str) -> Observation:
    return found[("service.answer", url)]


# -- http:// ------------------------------------------------------------------------------------------


def test_http_answers_fails_and_hangs_as_they_do(tmp_path: Path, web: HttpPeer, hung: HungPeer) -> None:
    ok, error, loop, hop = web.url("/ok"), web.url("/error"), web.url("/loop"), web.url("/hop")
    silent = f"http://127.0.0.1:{hung.port}/his/health"
    closed = f"http://127.0.0.1:{free_port()}/"
    found = run(
        tmp_path,
        {"url": ok, "body": "status=UP", "name": "HIS 应用服务", "hospital_critical": True},
        {"url": error, "department": "门诊收费"},
        {"url": silent, "hospital_critical": True},
        {"url": loop},
        {"url": hop},
        {"url": closed},
    )
    o = answer(found, ok)
    assert (o.ok, o.detail["outcome"], o.detail["status"]) == (True, "answered", 200)
    assert o.value is not None and o.value > 0 and o.detail["latency_ms"] == o.value
    assert o.name == "HIS 应用服务" and o.impact.hospital_critical
    o = answer(found, error)
    assert (o.ok, o.detail["outcome"], o.detail["status"]) == (False, "wrong_answer", 500)
    assert o.detail["error"] == "HTTP 500, expected 2xx" and o.impact.department == "门诊收费"
    o = answer(found, silent)  # accepts, never answers: a hung application server
    assert (o.ok, o.detail["outcome"], o.value) == (False, "timeout", None)
    assert o.detail["timeout_s"] == TIMEOUT and "2s" in o.detail["error"]
    o = answer(found, loop)
    assert (o.ok, o.detail["outcome"]) == (False, "wrong_answer")
    assert o.detail["error"].startswith("redirect loop: ") and "/loop2 → " in o.detail["error"]
    o = answer(found, hop)
    assert (o.ok, o.detail["redirects"], o.detail["final_url"]) == (True, 1, ok)
    o = answer(found, closed)
    assert (o.ok, o.detail["outcome"], o.detail["error"]) == (False, "refused", "connection refused")
    assert not any(check == "service.latency" for check, _ in found)  # no threshold, no latency condition


def test_slow_answer_is_too_slow_not_down(tmp_path: Path, web: HttpPeer) -> None:
    slow = web.url("/slow?ms=600")
    found = run(tmp_path, {"url": slow, "slow_ms": 200})
    o = answer(found, slow)
    assert (o.ok, o.detail["outcome"]) == (True, "too_slow")
    lat = found[("service.latency", slow)]
    assert lat.ok is False and lat.value is not None and lat.value >= 600 and lat.detail["slow_ms"] == 200


def test_latency_is_unknown_while_nothing_answers(tmp_path: Path, hung: HungPeer) -> None:
    url = f"http://127.0.0.1:{hung.port}/"
    found = run(tmp_path, {"url": url}, slow_ms=500)
    assert found[("service.latency", url)].ok is None  # neither fast nor slow: the last state stands


def test_http_status_body_method_and_redirect_limits(tmp_path: Path, web: HttpPeer) -> None:
    found = run(
        tmp_path,
        {"url": web.url("/error"), "status": [500]},
        {"url": web.url("/ok"), "body": "status=DOWN"},
        {"url": web.url("/gbk"), "body": "门诊收费 正常"},
        {"url": web.url("/hop"), "redirects": 0, "status": ["3xx"]},
        {"url": web.url("/ok?head"), "method": "HEAD"},
        {"url": web.url("/missing")},
    )
    assert answer(found, web.url("/error")).ok is True
    o = answer(found, web.url("/ok"))
    assert (o.ok, o.detail["outcome"]) == (False, "wrong_answer") and "status=DOWN" in o.detail["error"]
    assert answer(found, web.url("/gbk")).ok is True  # decoded with the charset the server declares
    o = answer(found, web.url("/hop"))
    assert (o.ok, o.detail["status"]) == (True, 301) and "redirects" not in o.detail
    o = answer(found, web.url("/ok?head"))
    assert (o.ok, o.detail["bytes"]) == (True, 0)
    assert answer(found, web.url("/missing")).detail["error"] == "HTTP 404, expected 2xx"


def test_basic_auth_from_a_file_or_the_environment(
    tmp_path: Path, web: HttpPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "his.auth"
    secret.write_text(":".join(AUTH) + "\n")
    monkeypatch.setenv("HIS_PROBE_AUTH", ":".join(AUTH))
    monkeypatch.delenv("UNSET_AUTH", raising=False)
    found = run(
        tmp_path,
        {"url": web.url("/auth"), "auth_file": str(secret)},
        {"url": web.url("/auth?env"), "auth_env": "HIS_PROBE_AUTH"},
        {"url": web.url("/auth?none")},
        {"url": web.url("/auth?gone"), "auth_file": str(tmp_path / "missing")},
        {"url": web.url("/auth?unset"), "auth_env": "UNSET_AUTH"},
    )
    assert answer(found, web.url("/auth")).ok is True
    assert answer(found, web.url("/auth?env")).ok is True
    assert answer(found, web.url("/auth?none")).detail["status"] == 401
    for url in (web.url("/auth?gone"), web.url("/auth?unset")):
        o = answer(found, url)  # the agent could not try: the service's state stays as it was
        assert (o.ok, o.detail["outcome"]) == (None, "not_checked"), o.detail
    assert "missing" in answer(found, web.url("/auth?gone")).detail["error"]


# -- https:// and tls:// --------------------------------------------------------------------------------


def test_certificate_expiring_in_five_days(tmp_path: Path, tls_web: HttpPeer, pki: dict[str, Path]) -> None:
    https = tls_web.url("/ok")
    tls = f"tls://127.0.0.1:{tls_web.port}"
    found = run(tmp_path, {"url": https, "ca_file": str(pki["ca"])}, {"url": tls, "ca_file": str(pki["ca"])})
    for url in (https, tls):
        assert answer(found, url).ok is True
        warn, urgent = found[("service.cert", url)], found[("service.cert.urgent", url)]
        assert warn.ok is False and urgent.ok is False
        assert warn.value is not None and 4.9 < warn.value <= 5.0
        assert warn.detail["cert_subject"] == "CN=his-app.hospital.local"
        assert (warn.detail["cert_limit_days"], urgent.detail["cert_limit_days"]) == (30, 7)
    assert answer(found, tls).detail["tls_version"].startswith("TLSv1.")


def test_certificate_thresholds_are_the_jobs(tmp_path: Path, tls_web: HttpPeer, pki: dict[str, Path]) -> None:
    tls = f"tls://127.0.0.1:{tls_web.port}"
    found = run(tmp_path, {"url": tls, "ca_file": str(pki["ca"])}, cert_warn_days=10, cert_urgent_days=3)
    assert (found[("service.cert", tls)].ok, found[("service.cert.urgent", tls)].ok) == (False, True)


def test_untrusted_misnamed_and_expired_certificates_are_wrong_answers(
    tmp_path: Path, tls_web: HttpPeer, pki: dict[str, Path]
) -> None:
    untrusted = tls_web.url("/ok?system-cas")
    misnamed = f"tls://localhost:{tls_web.port}"
    found = run(
        tmp_path, {"url": untrusted}, {"url": misnamed, "ca_file": str(pki["ca"]), "server_name": "pacs.hospital.local"}
    )
    o = answer(found, untrusted)
    assert (o.ok, o.detail["outcome"]) == (False, "wrong_answer")
    assert o.detail["error"].startswith("certificate not trusted") and "ca_file" in o.detail["error"]
    assert found[("service.cert", untrusted)].value is not None  # its expiry is still read and reported
    o = answer(found, misnamed)
    assert o.ok is False and "does not name pacs.hospital.local" in o.detail["error"]

    old = make_cert(tmp_path / "old", days=-3)
    with HttpPeer((old["cert"], old["key"])) as peer:
        expired = f"tls://127.0.0.1:{peer.port}"
        loose = f"tls://localhost:{peer.port}"  # verify = false: the expiry is still judged
        found = run(tmp_path, {"url": expired, "ca_file": str(old["ca"])}, {"url": loose, "verify": False})
    for url in (expired, loose):
        o = answer(found, url)
        assert (o.ok, o.detail["outcome"], o.detail["error"]) == (
            False,
            "wrong_answer",
            "certificate expired 3.0 days ago",
        )
        days = found[("service.cert.urgent", url)].value
        assert days is not None and -3.01 < days < -2.99


def test_a_tls_port_that_never_handshakes_times_out(tmp_path: Path, hung: HungPeer) -> None:
    url = f"tls://127.0.0.1:{hung.port}"
    found = run(tmp_path, {"url": url})
    assert answer(found, url).detail["outcome"] == "timeout"
    assert found[("service.cert", url)].ok is None  # expiry unknown: no state change


# -- tcp:// ---------------------------------------------------------------------------------------------


def test_tcp_connect_and_banner(tmp_path: Path, hung: HungPeer) -> None:
    with SmtpPeer() as smtp:
        banner = f"tcp://127.0.0.1:{smtp.port}"
        other = f"tcp://127.0.0.1:{smtp.port}/"
        found = run(tmp_path, {"url": banner, "expect": r"^220 mail\.hospital "}, {"url": other, "expect": "^SSH-"})
    o = answer(found, banner)
    assert o.ok is True and o.detail["reply"].startswith("220 mail.hospital")
    o = answer(found, other)  # something answered, but not the service expected
    assert (o.ok, o.detail["outcome"]) == (False, "wrong_answer") and o.detail["reply"].startswith("220 ")
    silent = f"tcp://127.0.0.1:{hung.port}"
    connect_only = f"tcp://127.0.0.1:{hung.port}/"
    found = run(tmp_path, {"url": silent, "send": "PING\r\n", "expect": "PONG"}, {"url": connect_only})
    assert answer(found, silent).detail["outcome"] == "timeout"
    assert answer(found, connect_only).ok is True  # the port accepts: all a bare tcp:// target asks


# -- dicom:// -------------------------------------------------------------------------------------------


def test_dicom_echo_answered_rejected_and_stopped(tmp_path: Path, hung: HungPeer) -> None:
    pacs = DicomPeer("PACS").start()
    url, wrong_aet, silent = (
        f"dicom://PACS@127.0.0.1:{pacs.port}",
        f"dicom://RIS@127.0.0.1:{pacs.port}",
        f"dicom://PACS@127.0.0.1:{hung.port}",
    )
    try:
        found = run(
            tmp_path, {"url": url, "name": "PACS"}, {"url": wrong_aet}, {"url": silent}, calling_ae="HISGUARD01"
        )
    finally:
        pacs.stop()
    o = answer(found, url)
    assert (o.ok, o.detail["status"], o.detail["calling_ae"], o.detail["called_ae"]) == (True, 0, "HISGUARD01", "PACS")
    o = answer(found, wrong_aet)
    assert (o.ok, o.detail["outcome"]) == (False, "wrong_answer")
    assert o.detail["error"].startswith("association rejected: Called AE title not recognised")
    assert answer(found, silent).detail["outcome"] == "timeout"
    stopped = run(tmp_path, {"url": url})  # the same SCP, stopped
    assert (answer(stopped, url).ok, answer(stopped, url).detail["outcome"]) == (False, "refused")


async def test_a_stuck_echo_is_not_started_twice(tmp_path: Path, hung: HungPeer) -> None:
    """While one C-ECHO's thread has not returned, the same PACS is not tried again (threads never pile up)."""
    from hisguard.checks.service import dicom

    url = f"dicom://PACS@127.0.0.1:{hung.port}"
    cfg = Config(targets=[{"url": url}], timeout=10, target_timeout=1.0)
    ctx = ProbeContext(host="h", state_dir=tmp_path)
    target = cfg.targets[0]
    first = asyncio.create_task(dicom.check(target, target.endpoint, cfg, ctx, 1.0))
    for _ in range(1000):
        if url in ctx.memory.get("service.dicom.busy", ()):
            break
        await asyncio.sleep(0.01)
    with pytest.raises(NotChecked, match="has not returned yet"):
        await dicom.check(target, target.endpoint, cfg, ctx, 1.0)
    with pytest.raises(TimeoutError):  # pynetdicom's own timeout ends the stuck one
        await first
    assert url not in ctx.memory["service.dicom.busy"]


# -- mllp:// --------------------------------------------------------------------------------------------


def test_mllp_aa_ae_and_silence(tmp_path: Path) -> None:
    with MllpPeer("AA") as aa, MllpPeer("AE") as ae, MllpPeer(None) as mute:
        urls = [f"mllp://127.0.0.1:{p.port}" for p in (aa, ae, mute)]
        found = run(
            tmp_path,
            {"url": urls[0], "name": "LIS 接口", "receiving_application": "LIS"},
            {"url": urls[1]},
            {"url": urls[2]},
        )
        sent = aa.received[0].split("\r")[0].split("|")
    o = answer(found, urls[0])
    assert (o.ok, o.detail["ack_code"]) == (True, "AA")
    assert sent[2:5] == ["HISGUARD", "his-app-01", "LIS"] and sent[8] == "NMQ^N01" and sent[9] == o.detail["control_id"]
    o = answer(found, urls[1])
    assert (o.ok, o.detail["outcome"], o.detail["ack_code"]) == (False, "wrong_answer", "AE")
    assert o.detail["error"].startswith("MSA|AE")
    assert answer(found, urls[2]).detail["outcome"] == "timeout"


def test_mllp_custom_message_and_encoding(tmp_path: Path) -> None:
    message = (
        "MSH|^~\\&|HIS|医院|LIS|检验科|{timestamp}||QRY^A19|{control_id}|P|2.4\nQRD|{timestamp}|R|I|Q1|||1^RD|0001|DEM"
    )
    with MllpPeer("AA") as aa:
        url = f"mllp://127.0.0.1:{aa.port}"
        found = run(tmp_path, {"url": url, "message": message, "encoding": "utf-8"})
        got = aa.received[0]
    assert answer(found, url).ok is True
    assert "|医院|LIS|检验科|" in got and "\rQRD|" in got and "{control_id}" not in got


# -- dns:// ---------------------------------------------------------------------------------------------


def test_dns_through_the_hospitals_server(tmp_path: Path) -> None:
    with Dnsmasq(tmp_path / "dns", {"his-app.hospital.local": "10.20.0.8"}) as dns, SilentUdp() as mute:
        good = f"dns://127.0.0.1:{dns.port}/his-app.hospital.local"
        moved = f"dns://127.0.0.1:{dns.port}/HIS-APP.hospital.local"
        missing = f"dns://127.0.0.1:{dns.port}/lis.hospital.local"
        over_tcp = f"dns://127.0.0.1:{dns.port}/his-app.hospital.local."
        hung = f"dns://127.0.0.1:{mute.port}/his-app.hospital.local"
        found = run(
            tmp_path,
            {"url": good, "answers": ["10.20.0.8"]},
            {"url": moved, "answers": ["10.20.0.9"]},
            {"url": missing},
            {"url": over_tcp, "transport": "tcp"},
            {"url": hung},
        )
        dns.stop()
        stopped = run(tmp_path, {"url": good, "transport": "tcp"})
    o = answer(found, good)
    assert (o.ok, o.detail["answers"], o.detail["rcode"]) == (True, ["10.20.0.8"], "NOERROR")
    o = answer(found, moved)
    assert o.ok is False and "resolves to 10.20.0.8, not 10.20.0.9" in o.detail["error"]
    o = answer(found, missing)
    assert (o.ok, o.detail["rcode"]) == (False, "NXDOMAIN")
    assert answer(found, over_tcp).ok is True
    assert answer(found, hung).detail["outcome"] == "timeout"
    assert answer(stopped, good).detail["outcome"] == "refused"


# -- many at once -----------------------------------------------------------------------------------------


def test_every_target_has_its_own_deadline(tmp_path: Path, web: HttpPeer, hung: HungPeer) -> None:
    """Forty hung targets do not delay the others' results nor make the round outlast one deadline wave."""
    silent = [{"url": f"http://127.0.0.1:{hung.port}/{i}"} for i in range(40)]
    healthy = [{"url": web.url(f"/ok?{i}")} for i in range(10)]
    cfg = Config(targets=[*silent, *healthy], timeout=20, target_timeout=3.0)
    obs = asyncio.run(probe(cfg, ProbeContext(host="h", state_dir=tmp_path)))
    outcomes = [o.detail["outcome"] for o in obs]
    assert outcomes.count("timeout") == 40 and outcomes.count("answered") == 10


# -- peers from other hands: DCMTK's storescp (a PACS toolkit hospitals run) and OpenSSL's s_server -------------


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_dcmtk_storescp_answers_c_echo_and_is_refused_once_stopped(tmp_path: Path) -> None:
    exe = peers.need_binary("storescp")
    port = free_port()
    proc = subprocess.Popen([exe, "-od", str(tmp_path), "--aetitle", "DCMPACS", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"dicom://DCMPACS@127.0.0.1:{port}"
    try:
        wait_until(lambda: _listening(port), 10, what="storescp listening")
        o = answer(run(tmp_path, {"url": url, "name": "PACS (DCMTK)"}), url)
    finally:
        proc.terminate()
        proc.wait(10)
    assert (o.ok, o.detail["outcome"], o.detail["status"]) == (True, "answered", 0)
    stopped = answer(run(tmp_path, {"url": url}), url)
    assert (stopped.ok, stopped.detail["outcome"]) == (False, "refused")


def test_openssl_s_server_certificate_expiring_in_twenty_days(tmp_path: Path) -> None:
    exe = peers.need_binary("openssl")
    pki = make_cert(tmp_path / "pki", days=20)
    port = free_port()
    proc = subprocess.Popen(
        [exe, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(pki["cert"]), "-key", str(pki["key"]),
         "-www", "-quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    tls, https = f"tls://127.0.0.1:{port}", f"https://127.0.0.1:{port}/"
    try:
        wait_until(lambda: _listening(port), 10, what="openssl s_server listening")
        found = run(tmp_path, {"url": tls, "ca_file": str(pki["ca"])}, {"url": https, "ca_file": str(pki["ca"])})
    finally:
        proc.terminate()
        proc.wait(10)
    for url in (tls, https):
        assert answer(found, url).ok is True, answer(found, url).detail
        warn, urgent = found[("service.cert", url)], found[("service.cert.urgent", url)]
        assert (warn.ok, urgent.ok) == (False, True)  # within 30 days (routine), not yet within 7 (urgent)
        assert warn.value is not None and 19.9 < warn.value <= 20


# -- hostile or broken peers: bounded reads, no crash, a clear wrong answer ---------------------------------


def test_hostile_http_answers_are_bounded_and_named(tmp_path: Path, web: HttpPeer) -> None:
    huge, to_file, nowhere = web.url("/huge"), web.url("/to-file"), web.url("/to-nowhere")
    found = run(tmp_path, {"url": huge, "body": "never-there"}, {"url": to_file}, {"url": nowhere})
    o = answer(found, huge)  # 64 MiB offered: read up to 1 MiB, then judged
    assert (o.ok, o.detail["outcome"], o.detail["bytes"]) == (False, "wrong_answer", 1 << 20)
    o = answer(found, to_file)
    assert (o.ok, o.detail["error"]) == (False, "redirected to file:///etc/passwd, not an http(s) address")
    o = answer(found, nowhere)
    assert (o.ok, o.detail["outcome"]) == (False, "wrong_answer") and "redirect" in o.detail["error"]


def test_garbage_instead_of_hl7_or_http_is_a_wrong_answer(tmp_path: Path) -> None:
    with (
        GarbagePeer(b"\x0bnot hl7 at all\x1c\r") as not_hl7,
        GarbagePeer(b"\x0b" + b"A" * 200_000) as endless,
        GarbagePeer(b"MSH|^~\\&|X\r\x1c\r") as unframed,
        GarbagePeer(b"SSH-2.0-OpenSSH_9.2\r\n", close=True) as not_http,
        GarbagePeer(b"SSH-2.0-OpenSSH_9.2\r\n") as not_http_open,
    ):
        urls = [f"mllp://127.0.0.1:{p.port}" for p in (not_hl7, endless, unframed)]
        web, web_open = f"http://127.0.0.1:{not_http.port}/", f"http://127.0.0.1:{not_http_open.port}/"
        found = run(tmp_path, *({"url": u} for u in urls), {"url": web}, {"url": web_open})
    errors = [answer(found, u).detail for u in urls]
    assert [e["outcome"] for e in errors] == ["wrong_answer"] * 3, errors
    assert "not a readable HL7 message" in errors[0]["error"] or "no MSA segment" in errors[0]["error"]
    assert "not a readable HL7 message" in errors[1]["error"]  # 200 KB without an end block: over the limit
    assert errors[2]["error"] == "the reply is not framed in MLLP"
    o = answer(found, web)
    assert (o.ok, o.detail["outcome"]) == (False, "wrong_answer") and "not a proper HTTP answer" in o.detail["error"]
    # The same words on a connection kept open: no HTTP answer ever completes before the deadline.
    assert answer(found, web_open).detail["outcome"] == "timeout"
