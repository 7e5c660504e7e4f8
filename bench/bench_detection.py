#!/usr/bin/env python3
"""Detection and recovery of a cut link, hisguard at its shipped defaults next to Prometheus and Zabbix.

All in one run, all watching the same faults at the same time (the trials do not multiply):
  - hisguard: a real `hisguard-server run` and `hisguard-agent run` whose ping job has nothing but
    its targets configured (interval 5 s, 5 requests, confirming round 1 s later, 2 of 3 rounds);
    timestamp = the incident open (or resolved) on the server's API, polled every 0.25 s.
  - Prometheus + blackbox_exporter (Debian's blackbox.yml, module icmp as shipped) + Alertmanager,
    twice: their defaults (scrape and evaluation 1 m, `probe_success == 0` for 1m, group_wait 30 s,
    group_interval 5 m) and a tuned set (15 s, for: 30s, group_wait 10 s); timestamp = the webhook
    notification (firing / resolved) reaching a local receiver. Grouped by instance, so each
    target's fault is its own trial.
  - Zabbix 6.0 server (Debian zabbix-server-pgsql) on the shared PostgreSQL in a database of its own
    that this script creates and drops, configured through its JSON-RPC API (frontend served by
    `php -S`): one host per target linked to the stock "ICMP Ping" template unchanged, a script
    media type that timestamps every problem and recovery message, a trigger action for them.

Each target is a host in a network namespace (tests/support/netns.TestNet). After a warm-up in
which every peer has seen every target answer, each target's link is cut at a random moment in
the next minute (a random phase of every peer's schedule); when every peer has reported it (or
--max-detect passed) the link comes back, and recovery is timed to each peer's resolved
message. Another target drops 20 % of ICMP at random for the whole run (at least --loss-minutes):
every alarm any peer raises for it is a false alarm.

Default: 5 trials, about 12–14 minutes (the peers' own cadence sets the pace: Prometheus at its
defaults only sends a resolved notification a group_interval (5 m) after the first one).
`--trials 8` (or more) costs no more time. `--hisguard-only` skips the peers (about 11 minutes with
the 10-minute loss window; shorten it with --loss-minutes). Needs root (namespaces, raw ICMP).
Prints RESULT lines (JSON) for bench/run_all.py.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_agent import low_port  # noqa: E402  (Zabbix, like zabbix_agent2, wants a port below 32768)
from tests.support.netns import TestNet  # noqa: E402
from tests.support.procs import AgentProc, ServerProc, free_port, wait_until  # noqa: E402

HISGUARD = "hisguard (shipped defaults)"
PROM_DEFAULT = "Prometheus + blackbox + Alertmanager, defaults"
PROM_TUNED = "Prometheus + blackbox + Alertmanager, tuned 15 s / for 30s / group_wait 10 s"
ZABBIX = "Zabbix 6.0, stock ICMP Ping template"
LABEL = {HISGUARD: "hisguard", PROM_DEFAULT: "Prometheus defaults", PROM_TUNED: "Prometheus tuned", ZABBIX: "Zabbix"}


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@dataclass
class Seen:
    """What one peer reported, by target address: first problem and first resolution (wall-clock times)."""

    problems: dict[str, list[float]] = field(default_factory=dict)
    resolved: dict[str, list[float]] = field(default_factory=dict)

    def problem(self, address: str, at: float) -> None:
        self.problems.setdefault(address, []).append(at)

    def resolve(self, address: str, at: float) -> None:
        self.resolved.setdefault(address, []).append(at)

    def first_problem_after(self, address: str, t: float) -> float | None:
        return next((x for x in sorted(self.problems.get(address, [])) if x >= t), None)

    def first_resolved_after(self, address: str, t: float) -> float | None:
        return next((x for x in sorted(self.resolved.get(address, [])) if x >= t), None)


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300, **kw)


# -- hisguard -------------------------------------------------------------------------------------
class Hisguard:
    def __init__(self, tmp: Path, targets: dict[str, str]) -> None:
        self.server = ServerProc(tmp / "server").start()
        token = self.server.agent_token("his-bench", "bench")
        rows = "\n".join(f'  {{ address = "{a}", name = "{n}" }},' for n, a in targets.items())
        config = f"""
[agent]
name = "his-bench"
state_dir = "state"
log_level = "WARNING"

[server]
url = "{self.server.url}"
token = "{token}"

[[probe.ping]]
name = "network"
targets = [
{rows}
]
"""
        self.agent = AgentProc(tmp / "agent", config).start()
        self.seen = Seen()
        self._open: set[str] = set()
        self._resolved: set[str] = set()

    def ready(self) -> bool:
        return bool(any(a["last_seen"] for a in self.server.get("/agents")))

    def poll(self) -> None:
        now = time.time()
        for inc in self.server.incidents():
            subject = str(inc["evidence"].get("subject"))
            if inc["id"] not in self._open:
                self._open.add(inc["id"])
                self.seen.problem(subject, now)
            if inc["status"] == "resolved" and inc["id"] not in self._resolved:
                self._resolved.add(inc["id"])
                self.seen.resolve(subject, now)

    def stop(self) -> None:
        self.agent.stop()
        self.server.stop()


# -- Prometheus + blackbox_exporter + Alertmanager ----------------------------------------------
class Webhook:
    """Alertmanager's webhook receiver: the time each notification arrives, per alert."""

    def __init__(self) -> None:
        self.seen = {PROM_DEFAULT: Seen(), PROM_TUNED: Seen()}
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                now = time.time()
                for alert in body.get("alerts", []):
                    labels = alert.get("labels", {})
                    peer = PROM_TUNED if labels.get("set") == "tuned" else PROM_DEFAULT
                    instance = labels.get("instance", "")
                    if alert.get("status") == "firing":
                        seen[peer].problem(instance, now)
                    else:
                        seen[peer].resolve(instance, now)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()


class Prometheus:
    def __init__(self, tmp: Path, addresses: list[str], webhook: Webhook) -> None:
        d = tmp / "prometheus"
        d.mkdir()
        self.procs: list[subprocess.Popen[bytes]] = []
        bb, am, prom = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{prom}"
        log = (d / "peers.log").open("ab")
        self.procs.append(
            subprocess.Popen(
                ["prometheus-blackbox-exporter", "--config.file=/etc/prometheus/blackbox.yml",
                 f"--web.listen-address=127.0.0.1:{bb}"], stdout=log, stderr=subprocess.STDOUT)
        )  # fmt: skip
        (d / "alertmanager.yml").write_text(
            f"""route:
  receiver: bench
  group_by: [alertname, set, instance]
  routes:
    - matchers: ['set="tuned"']
      group_wait: 10s
      receiver: bench
receivers:
  - name: bench
    webhook_configs:
      - url: http://127.0.0.1:{webhook.port}/
"""
        )
        self.procs.append(
            subprocess.Popen(
                ["prometheus-alertmanager", f"--config.file={d / 'alertmanager.yml'}", f"--storage.path={d / 'am'}",
                 f"--web.listen-address=127.0.0.1:{am}", "--cluster.listen-address="],
                stdout=log, stderr=subprocess.STDOUT)
        )  # fmt: skip
        targets = json.dumps(addresses)
        jobs = []
        for name, extra in (("default", ""), ("tuned", "    scrape_interval: 15s\n")):
            jobs.append(
                f"""  - job_name: icmp_{name}
{extra}    metrics_path: /probe
    params: {{module: [icmp]}}
    static_configs: [{{targets: {targets}, labels: {{set: {name}}}}}]
    relabel_configs:
      - {{source_labels: [__address__], target_label: __param_target}}
      - {{source_labels: [__param_target], target_label: instance}}
      - {{target_label: __address__, replacement: "127.0.0.1:{bb}"}}
"""
            )
        (d / "prometheus.yml").write_text(
            "rule_files: [rules.yml]\n"
            f"alerting:\n  alertmanagers: [{{static_configs: [{{targets: ['127.0.0.1:{am}']}}]}}]\n"
            "scrape_configs:\n" + "".join(jobs)
        )
        (d / "rules.yml").write_text(
            """groups:
  - name: default
    rules:
      - alert: HostDown
        expr: probe_success{set="default"} == 0
        for: 1m
  - name: tuned
    interval: 15s
    rules:
      - alert: HostDown
        expr: probe_success{set="tuned"} == 0
        for: 30s
"""
        )
        self.procs.append(
            subprocess.Popen(
                ["prometheus", f"--config.file={d / 'prometheus.yml'}", f"--storage.tsdb.path={d / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{prom}"], stdout=log, stderr=subprocess.STDOUT)
        )  # fmt: skip
        self.addresses = addresses

    def ready(self) -> bool:
        """Both jobs have scraped every target as up."""
        try:
            r = httpx.get(f"{self.url}/api/v1/query", params={"query": "probe_success == 1"}, timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return False
        up = {(s["metric"].get("set"), s["metric"].get("instance")) for s in r.get("data", {}).get("result", [])}
        return all((s, a) in up for s in ("default", "tuned") for a in self.addresses)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


# -- Zabbix -----------------------------------------------------------------------------------------
class Zabbix:
    def __init__(self, tmp: Path, targets: dict[str, str]) -> None:
        self.dir = tmp / "zabbix"
        self.dir.mkdir()
        self.db = f"hg_zabbix_bench_{os.getpid()}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.php: subprocess.Popen[bytes] | None = None
        self.stamps = self.dir / "stamps.log"
        self.targets = targets
        self.seen = Seen()
        psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-q"]
        run([*psql, "-d", "postgres", "-c", f"CREATE DATABASE {self.db}"])
        try:
            for part in ("schema", "images", "data"):
                sql = gzip.decompress(Path(f"/usr/share/zabbix-server-pgsql/{part}.sql.gz").read_bytes()).decode()
                run([*psql, "-d", self.db], input=sql)
            self._frontend()
            self._configure()
            self._server()
        except BaseException:
            self.stop()  # the database and the processes go, whatever failed
            raise

    def _frontend(self) -> None:
        ui = self.dir / "ui"
        shutil.copytree("/usr/share/zabbix", ui, symlinks=True)
        conf = ui / "conf" / "zabbix.conf.php"
        core = ui / "include" / "classes" / "core" / "CConfigFile.php"
        core.write_text(core.read_text().replace("'/etc/zabbix/zabbix.conf.php'", repr(str(conf))))
        conf.write_text(
            f"""<?php
$DB['TYPE'] = 'POSTGRESQL'; $DB['SERVER'] = '127.0.0.1'; $DB['PORT'] = '5432';
$DB['DATABASE'] = '{self.db}'; $DB['USER'] = 'postgres'; $DB['PASSWORD'] = ''; $DB['SCHEMA'] = '';
$DB['ENCRYPTION'] = false; $DB['KEY_FILE'] = ''; $DB['CERT_FILE'] = ''; $DB['CA_FILE'] = '';
$DB['VERIFY_HOST'] = false; $DB['CIPHER_LIST'] = ''; $DB['VAULT_URL'] = ''; $DB['VAULT_DB_PATH'] = '';
$DB['VAULT_TOKEN'] = ''; $DB['DOUBLE_IEEE754'] = true;
$ZBX_SERVER_NAME = 'bench'; $IMAGE_FORMAT_DEFAULT = IMAGE_FORMAT_PNG;
"""
        )
        port = free_port()
        self.api = f"http://127.0.0.1:{port}/api_jsonrpc.php"
        self.php = subprocess.Popen(
            ["php", "-S", f"127.0.0.1:{port}", "-t", str(ui)],
            stdout=(self.dir / "php.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_until(self._api_up, 30, 0.2, "the Zabbix frontend")
        self.auth = self.call("user.login", {"username": "Admin", "password": "zabbix"}, auth=False)

    def _api_up(self) -> bool:
        try:
            return bool(self.call("apiinfo.version", {}, auth=False))
        except (httpx.HTTPError, RuntimeError):
            return False

    def call(self, method: str, params: Any, auth: bool = True) -> Any:
        body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params, "id": 1}
        if auth:
            body["auth"] = self.auth
        r = httpx.post(self.api, json=body, timeout=30).json()
        if "error" in r:
            raise RuntimeError(f"Zabbix {method}: {r['error']}")
        return r["result"]

    def _configure(self) -> None:
        for h in self.call("host.get", {"filter": {"host": ["Zabbix server"]}, "output": ["hostid"]}):
            self.call("host.update", {"hostid": h["hostid"], "status": 1})
        (template,) = self.call("template.get", {"filter": {"host": ["ICMP Ping"]}, "output": ["templateid"]})
        triggers = self.call(
            "trigger.get", {"templateids": template["templateid"], "output": ["description", "expression"],
                            "expandExpression": True})  # fmt: skip
        self.template_triggers = [f"{t['description']}: {t['expression']}" for t in triggers]
        group = self.call("hostgroup.create", {"name": "hisguard bench"})["groupids"][0]
        for name, address in self.targets.items():
            self.call(
                "host.create",
                {
                    "host": name,
                    "interfaces": [{"type": 1, "main": 1, "useip": 1, "ip": address, "dns": "", "port": "10050"}],
                    "groups": [{"groupid": group}],
                    "templates": [{"templateid": template["templateid"]}],
                },
            )
        media = self.call(
            "mediatype.create",
            {
                "type": 1,
                "name": "bench timestamp",
                "exec_path": "stamp.sh",
                "exec_params": "{ALERT.SUBJECT}\n",
                "message_templates": [
                    {"eventsource": 0, "recovery": 0, "subject": "PROBLEM|{HOST.HOST}|{TRIGGER.NAME}", "message": "-"},
                    {"eventsource": 0, "recovery": 1, "subject": "RESOLVED|{HOST.HOST}|{TRIGGER.NAME}", "message": "-"},
                ],
            },
        )["mediatypeids"][0]
        self.call(
            "user.update",
            {"userid": "1", "medias": [{"mediatypeid": media, "sendto": "bench", "active": 0, "severity": 63,
                                        "period": "1-7,00:00-24:00"}]},
        )  # fmt: skip
        self.call(
            "action.create",
            {
                "name": "bench: every problem of the bench hosts",
                "eventsource": 0,
                "esc_period": "1h",
                "filter": {"evaltype": 0, "conditions": [{"conditiontype": 0, "operator": 0, "value": group}]},
                "operations": [{"operationtype": 0, "opmessage": {"default_msg": 1, "mediatypeid": media},
                                "opmessage_usr": [{"userid": "1"}]}],
                "recovery_operations": [{"operationtype": 11, "opmessage": {"default_msg": 1}}],
            },
        )  # fmt: skip

    def _server(self) -> None:
        scripts = self.dir / "alert.d"
        scripts.mkdir()
        stamp = scripts / "stamp.sh"
        stamp.write_text(f'#!/bin/sh\necho "$(date +%s.%N)|$1" >> {self.stamps}\n')
        stamp.chmod(0o755)
        conf = self.dir / "zabbix_server.conf"
        conf.write_text(
            f"LogFile={self.dir / 'server.log'}\nPidFile={self.dir / 'server.pid'}\nSocketDir={self.dir}\n"
            f"DBHost=127.0.0.1\nDBPort=5432\nDBName={self.db}\nDBUser=postgres\nAllowRoot=1\n"
            f"ListenIP=127.0.0.1\nListenPort={low_port()}\nStartTrappers=0\nFpingLocation=/usr/bin/fping\n"
            f"AlertScriptsPath={scripts}\nTimeout=4\n"
        )
        self.proc = subprocess.Popen(
            ["zabbix_server", "-f", "-c", str(conf)], stdout=(self.dir / "out.log").open("ab"), stderr=subprocess.STDOUT
        )

    def ready(self) -> bool:
        items = self.call("item.get", {"search": {"key_": "icmpping"}, "filter": {"key_": "icmpping"},
                                       "output": ["lastvalue", "lastclock"], "selectHosts": ["host"]})  # fmt: skip
        up = {i["hosts"][0]["host"] for i in items if i["lastvalue"] == "1" and i["lastclock"] != "0"}
        return set(self.targets) <= up

    def poll(self) -> None:
        if not self.stamps.exists():
            return
        by_name = self.targets
        self.seen = Seen()
        for line in self.stamps.read_text().splitlines():
            at, kind, host, trigger = [*line.split("|"), "", "", ""][:4]
            address = by_name.get(host)
            if address is None:
                continue
            if kind == "PROBLEM":
                self.seen.problem(address, float(at))
                self.seen.problems.setdefault(f"{address}#{trigger}", []).append(float(at))
            elif kind == "RESOLVED":
                self.seen.resolve(address, float(at))

    def stop(self) -> None:
        for p in (self.proc, self.php):
            if p and p.poll() is None:
                p.terminate()
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-q", "-c",
             f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)"], capture_output=True, timeout=120)  # fmt: skip


def missing_peers() -> list[str]:
    need = ["prometheus", "prometheus-alertmanager", "prometheus-blackbox-exporter", "zabbix_server", "php", "psql",
            "fping"]  # fmt: skip
    return [b for b in need if not shutil.which(b) and not os.path.exists(f"/usr/sbin/{b}")]


# -- the run ------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=5, help="targets whose link is cut (in parallel)")
    ap.add_argument("--loss-minutes", type=float, default=10.0, help="minutes the 20 %% loss target is watched")
    ap.add_argument("--max-detect", type=float, default=420.0, help="seconds to wait for every peer's alarm")
    ap.add_argument("--max-recover", type=float, default=480.0, help="seconds to wait for every peer's recovery")
    ap.add_argument("--hisguard-only", action="store_true", help="no Prometheus or Zabbix (quick)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (network namespaces, raw ICMP)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hg-bench-detect-") as d, TestNet() as net:
        tmp = Path(d)
        hosts = {f"t{i + 1}": net.add(f"t{i + 1}").address for i in range(args.trials)}
        lossy = net.add("loss").address
        net.loss("loss", 20)
        targets = {**hosts, "loss": lossy}
        peers: dict[str, Any] = {}
        stoppers: list[Any] = []
        try:
            hg = Hisguard(tmp, targets)
            stoppers.append(hg)
            peers[HISGUARD] = hg
            prom = zbx = webhook = None
            if not args.hisguard_only:
                if missing := missing_peers():
                    sys.exit(f"peers not installed: {', '.join(missing)} (or pass --hisguard-only)")
                webhook = Webhook()
                stoppers.append(webhook)
                prom = Prometheus(tmp, list(targets.values()), webhook)
                stoppers.append(prom)
                zbx = Zabbix(tmp, targets)
                stoppers.append(zbx)
                print("Zabbix ICMP Ping template triggers:", *zbx.template_triggers, sep="\n  ", flush=True)
            checks = [hg.ready] + ([prom.ready, zbx.ready] if prom and zbx else [])
            wait_until(lambda: all(c() for c in checks), 300, 2.0, "every peer seeing every target up")
            warm = time.time()
            print(f"warm-up done after {time.monotonic() - started:.0f} s; cutting {args.trials} links", flush=True)

            def seen() -> dict[str, Seen]:
                hg.poll()
                out = {HISGUARD: hg.seen}
                if webhook and zbx:
                    zbx.poll()
                    out.update(webhook.seen)
                    out[ZABBIX] = zbx.seen
                return out

            cut_at = {n: warm + random.uniform(0, 60) for n in hosts}
            cut: dict[str, float] = {}
            restored: dict[str, float] = {}
            loss_until = warm + args.loss_minutes * 60
            while True:
                now = time.time()
                s = seen()
                for n, a in hosts.items():
                    if n not in cut and now >= cut_at[n]:
                        net.down(n)
                        cut[n] = time.time()
                    if n in cut and n not in restored:
                        alarmed = all(p.first_problem_after(a, cut[n]) for p in s.values())
                        if alarmed or now - cut[n] > args.max_detect:
                            net.up(n)
                            restored[n] = time.time()
                recovered = all(
                    all(p.first_resolved_after(hosts[n], restored[n]) for p in s.values())
                    or now - restored[n] > args.max_recover
                    for n in restored
                )
                if len(restored) == len(hosts) and recovered and now >= loss_until:
                    break
                time.sleep(0.25)
            s = seen()
            lasted = (time.time() - warm) / 60
        finally:
            for p in reversed(stoppers):
                p.stop()
    report(s, hosts, cut, restored, lossy, warm, lasted, time.monotonic() - started)


def report(
    s: dict[str, Seen],
    hosts: dict[str, str],
    cut: dict[str, float],
    restored: dict[str, float],
    lossy: str,
    warm: float,
    lasted: float,
    took: float,
) -> None:
    print(f"\n## Link cut → alarm, link back → resolved ({len(hosts)} trials at once, {took / 60:.1f} min)\n")
    print(
        f"| peer | detection p50 / p95 / max (s) | recovery p50 / p95 / max (s) | alarms, {lasted:.1f} min 20 % loss |"
    )
    print("|---|---|---|---|")
    figures: dict[str, dict[str, Any]] = {}
    for peer, seen in s.items():
        det = [x - cut[n] for n, a in hosts.items() if (x := seen.first_problem_after(a, cut[n])) is not None]
        rec = [
            x - restored[n] for n, a in hosts.items() if (x := seen.first_resolved_after(a, restored[n])) is not None
        ]
        alarms = len([x for x in seen.problems.get(lossy, []) if x >= warm])
        missed = len(hosts) - len(det)

        def fmt(v: list[float]) -> str:
            if not v:
                return "none"
            return f"{percentile(v, 50):.1f} / {percentile(v, 95):.1f} / {max(v):.1f}"

        note = f" ({missed} missed)" if missed else ""
        print(f"| {peer} | {fmt(det)}{note} | {fmt(rec)} | {alarms} |")
        figures[peer] = {"det": det, "rec": rec, "alarms": alarms, "missed": missed}
    for peer, f in figures.items():
        if f["det"]:
            each = [round(x, 1) for x in f["det"]]
            print(f"  {peer}: detection each trial {each}, mean {statistics.mean(f['det']):.1f} s")
    ours = figures[HISGUARD]

    def short(peer: str, key: str) -> str:
        f = figures.get(peer)
        if not f or not f[key]:
            return ""
        return f"{percentile(f[key], 50):.0f} / {percentile(f[key], 95):.0f} s"

    peers = "; ".join(f"{LABEL[p]} {short(p, 'det')}" for p in (ZABBIX, PROM_DEFAULT, PROM_TUNED) if short(p, "det"))
    rpeers = "; ".join(f"{LABEL[p]} {short(p, 'rec')}" for p in (ZABBIX, PROM_DEFAULT, PROM_TUNED) if short(p, "rec"))
    d, r = ours["det"], ours["rec"]
    rows = [
        {
            "metric": f"link down → incident on the server, p50 / p95 ({len(hosts)} trials, shipped defaults)",
            "hisguard": f"{percentile(d, 50):.1f} / {percentile(d, 95):.1f} s" if d else "missed",
            "peer": peers,
            "target": "p95 ≤ 10 s",
            "met": bool(d) and not ours["missed"] and percentile(d, 95) <= 10.0,
        },
        {
            "metric": "link up → incident resolved, p50 / p95",
            "hisguard": f"{percentile(r, 50):.1f} / {percentile(r, 95):.1f} s" if r else "none",
            "peer": rpeers,
            "target": "p95 ≤ 10 s",
            "met": len(r) == len(hosts) and percentile(r, 95) <= 10.0,
        },
        {
            "metric": f"alarms during {lasted:.0f} min of 20 % random loss",
            "hisguard": str(ours["alarms"]),
            "peer": "; ".join(f"{LABEL[p]} {f['alarms']}" for p, f in figures.items() if p != HISGUARD),
            "target": "0",
            "met": ours["alarms"] == 0,
        },
    ]
    for row in rows:
        print("RESULT " + json.dumps(row, ensure_ascii=False))


if __name__ == "__main__":
    main()
