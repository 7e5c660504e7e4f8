"""The console's pages and actions. Reads go through domain/views.py, changes through the domain's
actions (cases.acknowledge, cases.do_step, …) with the user as a Principal, exactly as the API does."""

from __future__ import annotations

import asyncio
import importlib.util
import secrets
import signal
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, FastAPI, Form, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from hisguard.plan import Severity
from hisguard.server.api.roles import STAFF
from hisguard.server.domain import cases, clocks, users, views, workflow
from hisguard.server.domain.tokens import Principal
from hisguard.server.domain.users import Login
from hisguard.server.storage.db import Database
from hisguard.server.storage.models import Case
from hisguard.server.web import charts, i18n, timerange

HERE = Path(__file__).parent
COOKIE = "hg_session"
PRE_CSRF = "hg_login_csrf"  # double-submit token for the login form (no session yet)
# Pages run scripts and styles from /static only; nothing inline, nothing from elsewhere.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
STREAM_SECONDS = 30.0  # an event stream ends after this; the browser reconnects (keeps shutdown prompt)
POLL_SECONDS = 1.0

templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(include_in_schema=False)


class NeedLogin(Exception):
    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


def _db(request: Request) -> Database:
    return request.app.state.db


def _login(request: Request) -> Login:
    """The logged-in user of this request (a redirect to the login page otherwise)."""
    token = request.cookies.get(COOKIE, "")
    with _db(request).session() as s:
        who = users.session_login(s, token, clocks.now()) if token else None
    if who is None:
        raise NeedLogin(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    return who


def _check_csrf(request: Request, who: Login, token: str) -> None:
    if not users.same_token(token, who.csrf) or not _same_origin(request):
        raise HTTPException(403, i18n.t("csrf", who.lang))


def _same_origin(request: Request) -> bool:
    """A cross-site form post carries a foreign Origin (or Referer); refuse it."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin is None
    # Behind a reverse proxy the Host may be the upstream's; the proxy's X-Forwarded-Host is the public one.
    hosts = {request.headers.get("host", ""), request.headers.get("x-forwarded-host", "")} - {""}
    return urlsplit(origin).netloc in hosts


def render(
    request: Request,
    name: str,
    ctx: dict[str, Any],
    status: int = 200,
    who: Login | None = None,
    lang: str | None = None,
) -> Response:
    lang = lang or (who.lang if who else request.cookies.get("hg_lang", "zh"))
    lang = lang if lang in users.LANGS else "zh"
    base = {
        "request": request,
        "who": who,
        "lang": lang,
        "t": lambda key, **kw: i18n.t(key, lang, **kw),
        "sev": lambda v: i18n.severity(v, lang),
        "scope": lambda v: i18n.scope(v, lang),
        "trig": lambda v: i18n.trigger(v, lang),
        "ev": lambda v: i18n.event(v, lang),
        "clk": lambda v: i18n.clock(v, lang),
        "tx": lambda zh, en: zh if lang == "zh" else (en or zh),
        "is_admin": bool(who and who.role == "admin"),
        "now": clocks.now(),
    }
    resp = templates.TemplateResponse(request, name, {**base, **ctx}, status_code=status)
    resp.headers.update(PAGE_HEADERS)
    return resp


def _redirect(url: str) -> RedirectResponse:
    resp = RedirectResponse(url, status_code=303)
    resp.headers.update(PAGE_HEADERS)
    return resp


def _safe_next(url: str | None) -> str:
    # Only a path on this server: never an absolute or scheme-relative URL (open redirect).
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return "/"
    return url


# --- login ----------------------------------------------------------------------------------------


@router.get("/login")
def login_page(request: Request, next: str = "/", error: str = "", lang: str = "") -> Response:
    token = request.cookies.get(PRE_CSRF) or secrets.token_urlsafe(32)
    ctx = {"next": _safe_next(next), "error": error, "pre_csrf": token}
    # Before login the language choice lives in a cookie; after, on the user.
    resp = render(request, "login.html", ctx, lang=lang if lang in users.LANGS else None)
    resp.set_cookie(PRE_CSRF, token, httponly=True, samesite="strict", secure=request.url.scheme == "https")
    if lang in users.LANGS:
        resp.set_cookie("hg_lang", lang, max_age=365 * 86400, samesite="lax", secure=request.url.scheme == "https")
    return resp


@router.post("/login")
def login_submit(
    request: Request,
    name: str = Form(..., max_length=200),
    password: str = Form(..., max_length=1000),
    csrf: str = Form(""),
    next: str = Form("/"),
) -> Response:
    if not users.same_token(csrf, request.cookies.get(PRE_CSRF, "")) or not _same_origin(request):
        return _redirect(f"/login?error=csrf&next={quote(_safe_next(next))}")
    now = clocks.now()
    error = ""
    with _db(request).session() as s:
        try:
            user = users.check_password(s, name, password, now)
        except users.LoginFailed as exc:
            error = "locked:" + exc.locked_until.strftime("%H:%M UTC") if exc.locked_until else "failed"
            # Whoever tried: no role is known until the password is right.
            who = Principal("engineer", name[:200], None, None, 0, "anonymous")
            cases.audit(s, who, "login_failed", now, None, None, locked=bool(exc.locked_until))
        else:
            token = users.start_session(s, user, now)
            cases.audit(s, users.principal_of(user.name, user.role, user.site), "login", now, user.site, None)
    if error:
        return _redirect(f"/login?error={quote(error)}&next={quote(_safe_next(next))}")
    resp = _redirect(_safe_next(next))
    resp.set_cookie(
        COOKIE,
        token,
        max_age=int(users.SESSION_TTL.total_seconds()),
        httponly=True,
        # Lax: a link to a case in a WeCom/e-mail message opens logged in; every POST still needs the CSRF token.
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    resp.delete_cookie(PRE_CSRF)
    return resp


@router.post("/logout")
def logout(request: Request, csrf: str = Form("")) -> Response:
    who = _login(request)
    _check_csrf(request, who, csrf)
    with _db(request).session() as s:
        users.end_session(s, request.cookies.get(COOKIE, ""))
        cases.audit(s, who.principal, "logout", clocks.now(), who.site, None)
    resp = _redirect("/login")
    resp.delete_cookie(COOKIE, path="/")
    return resp


@router.post("/lang")
def set_lang(request: Request, lang: str = Form(...), csrf: str = Form(""), next: str = Form("/")) -> Response:
    who = _login(request)
    _check_csrf(request, who, csrf)
    with _db(request).session() as s:
        try:
            users.set_lang(s, who.user_id, lang)
        except users.UserError as exc:
            raise HTTPException(422, str(exc)) from None
    return _redirect(_safe_next(next))


# --- pages ----------------------------------------------------------------------------------------


@router.get("/")
def overview(request: Request) -> Response:
    who = _login(request)
    settings = request.app.state.settings
    now = clocks.now()
    with _db(request).session() as s:
        tiles = views.overview(s, who.principal, now, settings)
    trouble = sum(1 for t in tiles if t.worst)
    return render(request, "overview.html", {"tiles": tiles, "trouble": trouble, "live": "overview"}, who=who)


def _site_or_404(who: Login, site: str) -> None:
    if not views.may_see(who.principal, site):
        raise HTTPException(404, "no such site")


@router.get("/sites/{site}")
def site_page(request: Request, site: str) -> Response:
    who = _login(request)
    _site_or_404(who, site)
    settings = request.app.state.settings
    with _db(request).session() as s:
        view = views.site_view(s, site, clocks.now(), settings)
        site_cases = views.site_cases(s, site)
    zh, en = views.site_names(settings, site)
    ctx = {"site": site, "site_zh": zh, "site_en": en, "view": view, "cases": site_cases, "live": f"site:{site}"}
    return render(request, "site.html", ctx, who=who)


@router.get("/hosts/{agent_id}")
def host_page(request: Request, agent_id: int) -> Response:
    who = _login(request)
    span = timerange.from_query(request.query_params, clocks.now())  # ?range=7d or ?from=…&to=…
    with _db(request).session() as s:
        found = views.agent(s, agent_id)
        if found is None or not views.may_see(who.principal, found[0].site):
            raise HTTPException(404, "no such host")
        agent, status = found
        history = views.host_history(s, agent_id, span.since, span.until)
    span, drawn = charts.host_charts(history, span, status.snapshot if status else None, who.lang)
    rows = views._rows(status.snapshot if status else None)
    ctx = {"agent": agent, "status": status, "charts": drawn, "rows": rows, "live": f"host:{agent_id}", "span": span}
    return render(request, "host.html", ctx, who=who)


def _case_for(s: Any, who: Login, case_id: int) -> Case:
    case = s.get(Case, case_id)
    if case is None or not views.may_see(who.principal, case.site):
        raise HTTPException(404, "no such case")
    return case


@router.get("/cases/{case_id}")
def case_page(request: Request, case_id: int, error: str = "") -> Response:
    who = _login(request)
    p = who.principal
    with _db(request).session() as s:
        case = _case_for(s, who, case_id)
        data = cases.case_json(s, case, full=True)
        review_data = _review(s, case) if case.status != "open" else None
    staff = p.role in STAFF and data["status"] == "open"
    allowed = {
        "acknowledge": staff and not data["acknowledged_at"],
        "activate": staff and data["plan"] is None,
        "resolve": staff,
        "raise": staff and data["severity"] != Severity.CRITICAL.value,
        "reply": p.role in STAFF and data["source"] == "reported" and not data["written_reply_at"],
    }
    higher = [sev.value for sev in Severity if sev.rank > Severity(data["severity"]).rank]
    for step in data["steps"]:
        step["can"] = step["done_at"] is None and p.role in workflow.MAY_DO.get(step["role"], frozenset())
    ctx = {
        "c": data,
        "allowed": allowed,
        "higher": higher,
        "error": error,
        "review": review_data,
        "may_review": p.role in STAFF,
        "live": f"case:{case_id}",
        "activation_steps": [st for st in data["steps"] if st["phase"] == "activation"],
        "trigger_steps": [st for st in data["steps"] if st["phase"] == "trigger"],
        "step_text": {st["key"]: st["text"] for st in data["steps"]},
        "backfill": [st for st in data["steps"] if st["phase"] == "backfill"],
    }
    return render(request, "case.html", ctx, who=who)


@router.post("/cases/{case_id}/do")
def case_action(
    request: Request,
    case_id: int,
    action: str = Form(...),
    csrf: str = Form(""),
    step: str = Form("", max_length=200),
    note: str = Form("", max_length=4000),
    severity: str = Form(""),
    reason: str = Form("", max_length=4000),
    text: str = Form("", max_length=20000),
) -> Response:
    who = _login(request)
    _check_csrf(request, who, csrf)
    p = who.principal
    now = clocks.now()
    error = ""
    try:
        with _db(request).session() as s:
            case = _case_for(s, who, case_id)
            if action != "step" and p.role not in STAFF:
                raise HTTPException(403, f"{action} needs the role {' or '.join(STAFF)}")
            if action == "acknowledge":
                cases.acknowledge(s, case, p, note.strip() or None, now)
            elif action == "activate":
                cases.activate(s, case, p, reason.strip(), now)
            elif action == "resolve":
                cases.resolve(s, case, p, note.strip() or None, now)
            elif action == "raise":
                try:
                    level = Severity(severity)
                except ValueError:
                    raise cases.CaseError(f"unknown severity {severity!r}", 422) from None
                cases.raise_severity(s, case, p, level, reason, now)
            elif action == "reply":
                if not text.strip():
                    raise cases.CaseError("the written reply is empty", 422)
                cases.written_reply(s, case, p, text.strip(), now)
            elif action == "step":
                cases.do_step(s, case, p, step, note.strip() or None, now)
            else:
                raise HTTPException(422, f"unknown action {action!r}")
    except cases.CaseError as exc:
        error = str(exc)
    suffix = f"?error={quote(error)}" if error else ""
    return _redirect(f"/cases/{case_id}{suffix}")


@router.get("/drills")
def drills_page(request: Request) -> Response:
    who = _login(request)
    only = views.site_filter(who.principal)
    now = clocks.now()
    with _db(request).session() as s:
        schedule, drill_rows = _drills(s, request.app.state.settings, now, only)
    ctx = {"schedule": schedule, "drills": drill_rows, "live": "drills"}
    return render(request, "drills.html", ctx, who=who)


def _drills(s: Any, settings: Any, now: Any, site: str | None) -> tuple[list[Any] | None, list[Any] | None]:
    """The training/drill schedule and the drills (None, None where the drills feature is not installed)."""
    if importlib.util.find_spec("hisguard.server.domain.drills") is None:
        return None, None
    from sqlalchemy import select

    from hisguard.server.domain import drills
    from hisguard.server.storage.drill_models import Drill

    schedule = drills.schedule(s, settings, now, site)
    q = select(Drill).order_by(Drill.started_at.desc()).limit(100)
    if site is not None:
        q = q.where(Drill.site == site)
    return schedule, [drills.drill_json(s, d, now) for d in s.scalars(q)]


def _review(s: Any, case: Case) -> dict[str, Any] | None:
    if importlib.util.find_spec("hisguard.server.domain.review") is None:
        return None
    from hisguard.server.domain import review

    data = review.review_json(s, case)
    data["labels"] = {k: (v.zh, v.en) for k, v in review.FIELDS.items()}
    return data


@router.post("/cases/{case_id}/review")
async def review_save(request: Request, case_id: int) -> Response:
    """The review's fields (2.10) from the case page's form; only staff, only after recovery."""
    form = await request.form()
    who = await run_in_threadpool(_login, request)
    _check_csrf(request, who, str(form.get("csrf", "")))
    if who.principal.role not in STAFF:
        raise HTTPException(403, "the review is written by the vendor's staff")
    from hisguard.server.domain import review

    values = {k: str(form[k])[:20000] for k in review.FIELDS if k in form}

    def save() -> str:
        try:
            with _db(request).session() as s:
                review.save(s, _case_for(s, who, case_id), who.principal, values, clocks.now())
        except review.ReviewError as exc:
            return str(exc)
        return ""

    error = await run_in_threadpool(save)
    return _redirect(f"/cases/{case_id}" + (f"?error={quote(error)}" if error else "#review"))


@router.get("/cases/{case_id}/review.{fmt}")
def review_export(request: Request, case_id: int, fmt: str) -> Response:
    who = _login(request)
    if fmt not in ("md", "pdf"):
        raise HTTPException(404, "export as review.md or review.pdf")
    from hisguard.server.domain import review

    try:
        with _db(request).session() as s:
            case = _case_for(s, who, case_id)
            body = review.markdown(s, case).encode() if fmt == "md" else review.pdf(s, case)
    except review.ReviewError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    media = "text/markdown; charset=utf-8" if fmt == "md" else "application/pdf"
    disposition = f'attachment; filename="review-{case_id}.{fmt}"'
    return Response(body, media_type=media, headers={**PAGE_HEADERS, "Content-Disposition": disposition})


@router.get("/audit")
def audit_page(request: Request, offset: int = 0) -> Response:
    who = _login(request)
    if who.role != "admin":
        raise HTTPException(403, "the audit log is for admins")
    with _db(request).session() as s:
        rows = views.audit_log(s, 200, max(offset, 0))
    return render(request, "audit.html", {"rows": rows, "offset": offset}, who=who)


# --- live updates ---------------------------------------------------------------------------------

_stopping = threading.Event()
_fingerprints: dict[tuple[Any, ...], tuple[float, tuple[Any, ...]]] = {}


def _watch_shutdown() -> None:
    """End event streams as soon as the server is told to stop: the server waits for open responses
    before it exits, and a stream would otherwise hold a restart up for its whole lifetime."""
    if threading.current_thread() is not threading.main_thread():
        return  # signals are the main thread's (a test client's app has none to watch)
    for sig in (signal.SIGINT, signal.SIGTERM):
        prev = signal.getsignal(sig)
        if getattr(prev, "_hisguard_web", False):
            continue

        def handler(signum: int, frame: Any, prev: Any = prev) -> None:
            _stopping.set()
            if callable(prev):
                prev(signum, frame)

        handler._hisguard_web = True  # type: ignore[attr-defined]
        signal.signal(sig, handler)


@router.get("/events")
async def events(request: Request, page: str = "overview") -> Response:
    """Server-sent events: `change` whenever what this page shows may have changed."""
    who = await run_in_threadpool(_login, request)
    p = who.principal
    kind, _, arg = page.partition(":")
    site = arg if kind == "site" and arg else None
    agent_id = int(arg) if kind == "host" and arg.isdigit() else None
    if site is not None and not views.may_see(p, site):
        raise HTTPException(404, "no such site")
    db = _db(request)
    _watch_shutdown()

    key = (id(db), views.site_filter(p), site, agent_id)

    def snap() -> tuple[Any, ...]:
        # Every open page of the same view shares one query a poll interval.
        cached = _fingerprints.get(key)
        if cached is not None and time.monotonic() - cached[0] < POLL_SECONDS * 0.9:
            return cached[1]
        with db.session() as s:
            value = views.fingerprint(s, p, site, agent_id)
        _fingerprints[key] = (time.monotonic(), value)
        return value

    async def stream() -> Any:
        last = await run_in_threadpool(snap)
        yield f"retry: 1000\nevent: hello\ndata: {len(last)}\n\n"
        ends = time.monotonic() + STREAM_SECONDS
        while time.monotonic() < ends and not _stopping.is_set():
            await asyncio.sleep(POLL_SECONDS)
            if await request.is_disconnected():
                return
            now = await run_in_threadpool(snap)
            if now != last:
                last = now
                yield "event: change\ndata: 1\n\n"
            else:
                yield ": keep-alive\n\n"

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.exception_handler(NeedLogin)
    async def _need_login(request: Request, exc: NeedLogin) -> Response:
        if request.headers.get("accept", "").startswith("text/event-stream"):
            return Response(status_code=401)
        return _redirect(f"/login?next={quote(_safe_next(exc.next_url))}")

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        # A person's browser gets a page; the API (and every other client) keeps its JSON errors.
        page = not request.url.path.startswith(("/api/", "/metrics", "/docs", "/openapi", "/healthz"))
        if not page or "text/html" not in request.headers.get("accept", ""):
            return await http_exception_handler(request, exc)
        return HTMLResponse(
            templates.get_template("error.html").render(status=exc.status_code, detail=str(exc.detail)),
            status_code=exc.status_code,
            headers=PAGE_HEADERS,
        )
