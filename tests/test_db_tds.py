"""Real pymssql (FreeTDS) end to end against a small TDS responder serving the recorded SQL Server rows.

The responder speaks just enough TDS 7.x for a client to log in and run batches: PRELOGIN (no
encryption), LOGIN7 → LOGINACK (or error 18456 for a wrong password), and per SQL batch the rows
recorded in tests/data/mssql for the statement's tag, as NVARCHAR / BIGINT / BIT columns.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from pathlib import Path
from typing import Any

import pytest

from hisguard.agent.classify import Failing, classify
from hisguard.checks.base import ProbeContext, ProbeError
from hisguard.checks.database import Config, probe
from hisguard.checks.database.dialects.base import TAG
from hisguard.checks.database.rebaseline import record
from hisguard.plan import Severity, Trigger
from tests.test_db_live import driver
from tests.test_db_mssql import load_scenario, recorded_result

DATA = Path(__file__).parent / "data" / "mssql"
PASSWORD = "门诊-Pw-825"

# Packet types and tokens (MS-TDS 2.2.3, 2.2.7).
SQL_BATCH, TABULAR, LOGIN7, PRELOGIN, ATTENTION = 0x01, 0x04, 0x10, 0x12, 0x06
COLMETADATA, ROW, DONE, LOGINACK, ERROR, ENVCHANGE = 0x81, 0xD1, 0xFD, 0xAD, 0xAA, 0xE3
NVARCHAR, VARCHAR, INTN, BITN = 0xE7, 0xA7, 0x26, 0x68
COLLATION = bytes([0x04, 0x08, 0xD0, 0x00, 0x00])  # Chinese_PRC_CI_AS (LCID 0x0804), sort id 0


def _us(text: str) -> bytes:
    return text.encode("utf-16-le")


def _b_varchar(text: str) -> bytes:
    return bytes([len(text)]) + _us(text)


def _us_varchar(text: str) -> bytes:
    return struct.pack("<H", len(text)) + _us(text)


class TdsResponder:
    """One thread accepting connections on 127.0.0.1, each served in its own thread."""

    def __init__(self, scenario: str, varchar: bool = False) -> None:
        self.data = self.load(scenario)
        self.text_type = VARCHAR if varchar else NVARCHAR  # VARCHAR: GBK bytes under Chinese_PRC_CI_AS
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.batches: list[str] = []
        self.logins: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @staticmethod
    def load(scenario: str) -> dict[str, Any]:
        return load_scenario(scenario)

    def __enter__(self) -> TdsResponder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.sock.close()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    # -- packets --------------------------------------------------------------------------------
    @staticmethod
    def _read(conn: socket.socket) -> tuple[int, bytes]:
        kind, payload = 0, b""
        while True:
            head = b""
            while len(head) < 8:
                chunk = conn.recv(8 - len(head))
                if not chunk:
                    raise ConnectionError
                head += chunk
            kind, status, length = head[0], head[1], struct.unpack(">H", head[2:4])[0]
            body = b""
            while len(body) < length - 8:
                chunk = conn.recv(length - 8 - len(body))
                if not chunk:
                    raise ConnectionError
                body += chunk
            payload += body
            if status & 0x01:
                return kind, payload

    def _send(self, conn: socket.socket, kind: int, payload: bytes) -> None:
        size = self.packet_size - 8
        chunks = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
        for n, chunk in enumerate(chunks):
            last = n == len(chunks) - 1
            conn.sendall(struct.pack(">BBHHBB", kind, 0x01 if last else 0x00, len(chunk) + 8, 0, n + 1, 0) + chunk)

    # -- a session ------------------------------------------------------------------------------
    def _serve(self, conn: socket.socket) -> None:
        self.packet_size = 4096
        self.version = 0x74000004
        try:
            with conn:
                while True:
                    kind, payload = self._read(conn)
                    if kind == PRELOGIN:
                        self._send(conn, TABULAR, self._prelogin())
                    elif kind == LOGIN7:
                        self._send(conn, TABULAR, self._login(payload))
                    elif kind == SQL_BATCH:
                        self._send(conn, TABULAR, self._batch(payload))
                    elif kind == ATTENTION:
                        self._send(conn, TABULAR, self._done(0x0020, 0))
                    else:
                        return
        except (ConnectionError, OSError):
            return

    @staticmethod
    def _prelogin() -> bytes:
        options = [(0x00, bytes([15, 0, 0x11, 0x17, 0, 0])), (0x01, b"\x02"), (0x02, b"\x00"), (0x04, b"\x00")]
        offset = len(options) * 5 + 1
        head, body = b"", b""
        for token, value in options:
            head += struct.pack(">BHH", token, offset + len(body), len(value))
            body += value
        return head + b"\xff" + body

    def _login(self, p: bytes) -> bytes:
        self.version = struct.unpack("<I", p[4:8])[0]
        self.packet_size = min(max(struct.unpack("<I", p[8:12])[0], 512), 32767)

        def field(at: int) -> bytes:
            off, n = struct.unpack("<HH", p[at : at + 4])
            return p[off : off + 2 * n]

        user = field(40).decode("utf-16-le")
        scrambled = field(44)
        # Password bytes: nibbles swapped, then XOR 0xA5 (MS-TDS 2.2.6.4).
        plain = bytes(((b ^ 0xA5) >> 4 | ((b ^ 0xA5) & 0x0F) << 4) & 0xFF for b in scrambled).decode("utf-16-le")
        self.logins.append(user)
        if plain != PASSWORD:
            return self._error(18456, f"Login failed for user '{user}'.", 14) + self._done(0x0002, 0)
        ack = bytes([1]) + struct.pack(">I", self.version) + _b_varchar("Microsoft SQL Server") + bytes([15, 0, 17, 23])
        envchange = bytes([1]) + _b_varchar("master") + _b_varchar("")  # database
        return (
            bytes([ENVCHANGE])
            + struct.pack("<H", len(envchange))
            + envchange
            + bytes([LOGINACK])
            + struct.pack("<H", len(ack))
            + ack
            + self._done(0, 0)
        )

    def _error(self, number: int, text: str, klass: int) -> bytes:
        body = (
            struct.pack("<IBB", number, 1, klass)
            + _us_varchar(text)
            + _b_varchar("HIS-DB01")
            + _b_varchar("")
            + struct.pack("<I", 1)
        )
        return bytes([ERROR]) + struct.pack("<H", len(body)) + body

    def _done(self, status: int, rows: int) -> bytes:
        count = struct.pack("<Q", rows) if self.version >= 0x72000000 else struct.pack("<I", rows)
        return bytes([DONE]) + struct.pack("<HH", status, 0xC1) + count

    def _batch(self, p: bytes) -> bytes:
        if self.version >= 0x72000000:
            p = p[struct.unpack("<I", p[:4])[0] :]  # ALL_HEADERS
        sql = p.decode("utf-16-le")
        self.batches.append(sql)
        try:
            result = recorded_result(self.data, sql)
        except KeyError:
            result = None
        except Exception as exc:  # the recorded 916: the login is no user of that database
            text = exc.args[0][1].decode() if exc.args and isinstance(exc.args[0], tuple) else str(exc)
            return self._error(916, text, 14) + self._done(0x0002, 0)
        if result is not None:
            return self._result(result["columns"], result["rows"])
        return self._done(0, 0)  # SET …, USE …, BEGIN/ROLLBACK TRANSACTION: nothing to return

    def _result(self, columns: list[str], rows: list[list[Any]]) -> bytes:
        kinds = []
        for i in range(len(columns)):
            values = [r[i] for r in rows if r[i] is not None]
            if values and all(isinstance(v, bool) for v in values):
                kinds.append(BITN)
            elif values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                kinds.append(INTN)
            else:
                kinds.append(self.text_type)
        user_type = "<I" if self.version >= 0x72000000 else "<H"
        meta = bytes([COLMETADATA]) + struct.pack("<H", len(columns))
        for name, kind in zip(columns, kinds, strict=True):
            meta += struct.pack(user_type, 0) + struct.pack("<H", 0x0001) + bytes([kind])
            if kind in (NVARCHAR, VARCHAR):
                meta += struct.pack("<H", 8000) + COLLATION
            else:
                meta += bytes([8 if kind == INTN else 1])
            meta += _b_varchar(name)
        body = b""
        for row in rows:
            body += bytes([ROW])
            for value, kind in zip(row, kinds, strict=True):
                if kind in (NVARCHAR, VARCHAR):
                    raw = None if value is None else (_us(str(value)) if kind == NVARCHAR else str(value).encode("gbk"))
                    body += b"\xff\xff" if raw is None else struct.pack("<H", len(raw)) + raw
                elif value is None:
                    body += b"\x00"
                elif kind == INTN:
                    body += b"\x08" + struct.pack("<q", int(value))
                else:
                    body += b"\x01" + bytes([1 if value else 0])
        return meta + body + self._done(0x0010, len(rows))


def his_config(port: int, **extra: Any) -> Config:
    from tests.test_db_mssql import his_config as recorded_config

    cfg = recorded_config(**extra)
    return cfg.model_copy(update={"host": "127.0.0.1", "port": port, "password": PASSWORD_SECRET, "timeout": 10.0})


PASSWORD_SECRET = Config.model_validate({"dialect": "mssql", "databases": ["x"], "password": PASSWORD}).password


@pytest.fixture(autouse=True)
def _pymssql() -> None:
    driver("pymssql")


def test_real_pymssql_logs_in_and_reads_the_recorded_server(tmp_path: Path) -> None:
    with TdsResponder("healthy") as server:
        cfg = his_config(server.port)
        record(cfg, tmp_path, "tds")
        obs = asyncio.run(probe(cfg, ProbeContext(host="h", state_dir=tmp_path)))
    assert [o for o in obs if o.ok is False] == []
    assert server.logins and set(server.logins) == {"hisguard"}
    sent = [b for b in server.batches if TAG.search(b)]
    assert {TAG.search(b).group(1) for b in sent} >= {"session", "server", "databases", "backups", "columns"}
    # Chinese names arrived through FreeTDS as Unicode.
    state = {o.subject.split("/", 1)[1]: o for o in obs if o.check == "db.state"}
    assert state["住院数据库"].ok and state["住院数据库"].detail["state"] == "ONLINE"
    rows = next(o for o in obs if o.check == "db.rows" and o.name == "门诊收费")
    assert rows.detail["tables_judged"] == 3  # dbo.门诊挂号 included


def test_real_pymssql_bad_night_and_wrong_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with TdsResponder("healthy") as server:
        cfg = his_config(server.port)
        record(cfg, tmp_path)
        server.data = TdsResponder.load("incident")
        obs = asyncio.run(probe(cfg, ProbeContext(host="h", state_dir=tmp_path)))
        wrong = cfg.model_copy(update={"password": None, "password_env": "HG_TDS_WRONG"})
        monkeypatch.setenv("HG_TDS_WRONG", "wrong-" + PASSWORD)
        with pytest.raises(ProbeError) as info:
            asyncio.run(probe(wrong, ProbeContext(host="h", state_dir=tmp_path)))
    incidents = {i.key.split("/", 1)[1].replace(f"127.0.0.1:{server.port}/", ""): i for i in _classify(obs)}
    expected = {
        "db.state/住院数据库": (Trigger.DATABASE, Severity.CRITICAL),
        "db.state/药房库": (Trigger.DATABASE, Severity.CRITICAL),
        "db.table/HIS/dbo.ZY_FYMX": (Trigger.DATABASE, Severity.CRITICAL),
        "db.rows/门诊收费": (Trigger.DATA_LOSS, Severity.URGENT),
        "db.anomaly.patient_fee/门诊负数收费": (Trigger.DATA_LOSS, Severity.URGENT),
        "db.corruption/HIS": (Trigger.DATABASE, Severity.CRITICAL),
        "db.log_full.urgent/HIS/log": (Trigger.DATA_LOSS, Severity.URGENT),
    }
    assert {k: (i.trigger, i.severity) for k, i in incidents.items() if k in expected} == expected
    assert "住院数据库 [SUSPECT]" in incidents["db.state/住院数据库"].title.zh
    # A refused login: error 18456 from the server, a clear probe error, the password nowhere.
    assert "login failed" in str(info.value) and "18456" in str(info.value)
    assert PASSWORD not in str(info.value) and "wrong-" not in str(info.value)


def _classify(obs: list[Any]) -> list[Any]:
    return classify("his-db-01", [Failing("his-db", o) for o in obs if o.ok is False])


def test_real_pymssql_nothing_listening_is_unreachable_at_once(tmp_path: Path) -> None:
    from tests.support.procs import free_port

    cfg = his_config(free_port())
    (obs,) = asyncio.run(probe(cfg, ProbeContext(host="h", state_dir=tmp_path)))
    assert (obs.check, obs.ok, obs.detail["error"]) == ("db.connect", False, "unreachable")
    (inc,) = _classify([obs])
    assert inc.trigger is Trigger.SOFTWARE and inc.severity is Severity.CRITICAL
    assert "HIS 主数据库 数据库服务无法连接" == inc.title.zh


def test_varchar_in_a_chinese_collation_arrives_as_unicode(tmp_path: Path) -> None:
    # Many HIS databases keep names in varchar under Chinese_PRC_CI_AS (code page 936, GBK bytes on the wire).
    with TdsResponder("healthy", varchar=True) as server:
        cfg = his_config(server.port)
        record(cfg, tmp_path)
        obs = asyncio.run(probe(cfg, ProbeContext(host="h", state_dir=tmp_path)))
    assert [o for o in obs if o.ok is False] == []
    names = {o.name for o in obs if o.check in ("db.state", "db.table")}
    assert "住院数据库 [ONLINE]" in names and "HIS.dbo.门诊挂号" in names


def test_real_pymssql_reads_a_frozen_server_through_the_lock_views(tmp_path: Path) -> None:
    with TdsResponder("healthy") as server:
        cfg = his_config(server.port)
        record(cfg, tmp_path)
        server.data = TdsResponder.load("frozen")
        obs = asyncio.run(probe(cfg, ProbeContext(host="h", state_dir=tmp_path)))
    incidents = {i.evidence["check"]: i for i in _classify(obs)}
    frozen = incidents["db.frozen"]
    assert "4 sessions blocked by session 87 (his_app@HIS-APP-03, 门诊收费系统) for 95 s on dbo.MZ_SFMX" in (
        frozen.title.en
    )
    assert frozen.severity is Severity.CRITICAL and incidents["db.idle_in_transaction"].severity is Severity.URGENT
    assert {"lock_waits", "hobt_tables", "sessions", "long_transactions", "connections"} <= {
        TAG.search(b).group(1) for b in server.batches if TAG.search(b)
    }
