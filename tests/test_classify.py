from collections import deque

from hisguard.agent.classify import RULES, Failing, classify
from hisguard.agent.debounce import Debouncer
from hisguard.checks.base import Impact, Observation, ProbeConfig
from hisguard.plan import Scope, Severity, Trigger


def failing(check, subject, impact=Impact(), **kw):
    return Failing("job", Observation(check, subject, False, impact, **kw))


def test_unreachable_target_is_trigger_1_scoped_by_its_place():
    core = failing("ping.reachable", "198.18.0.2", Impact(hospital_critical=True), name="核心交换机")
    billing = failing("ping.reachable", "198.18.0.6", Impact(department="门诊收费"))
    spare = failing("ping.reachable", "198.18.0.10")
    by_subject = {i.evidence["subject"]: i for i in classify("agent-1", [core, billing, spare])}
    assert by_subject["198.18.0.2"].trigger is Trigger.HARDWARE
    assert (by_subject["198.18.0.2"].scope, by_subject["198.18.0.2"].severity) == (Scope.HOSPITAL, Severity.CRITICAL)
    assert "核心交换机" in by_subject["198.18.0.2"].title.zh
    assert (by_subject["198.18.0.6"].scope, by_subject["198.18.0.6"].severity) == (Scope.DEPARTMENT, Severity.URGENT)
    assert by_subject["198.18.0.6"].departments == ["门诊收费"]
    assert (by_subject["198.18.0.10"].scope, by_subject["198.18.0.10"].severity) == (Scope.HOST, Severity.ROUTINE)


def test_software_failures_are_trigger_2_and_exhaustion_is_capped_at_urgent():
    his_db = Impact(hospital_critical=True)
    (proc,) = classify("db", [failing("host.process", "sqlservr", his_db)])
    assert proc.trigger is Trigger.SOFTWARE and proc.severity is Severity.CRITICAL
    (cpu,) = classify("db", [failing("host.cpu", "cpu", his_db, value=99.0)])
    assert cpu.trigger is Trigger.SOFTWARE and cpu.severity is Severity.URGENT
    (loop,) = classify("db", [failing("host.reboot_loop", "boot", his_db, value=4.0)])
    assert loop.trigger is Trigger.SOFTWARE


def test_keys_are_stable_and_unknown_checks_raise_nothing():
    a = classify("h", [failing("ping.reachable", "1.2.3.4")])
    b = classify("h", [failing("ping.reachable", "1.2.3.4", value=1.0)])
    assert a[0].key == b[0].key == "h/ping.reachable/1.2.3.4"
    assert classify("h", [failing("metric.only", "x")]) == []


def test_every_rule_has_both_languages():
    for check, rule in RULES.items():
        assert rule.title.zh and rule.title.en, check


def cfg(n, m, k):
    return ProbeConfig(interval=1, timeout=1, fail_after=n, fail_window=m, clear_after=k)


def feed(deb, c, pattern):
    states = []
    for ok in pattern:
        deb.update("j", c, Observation("ping.reachable", "t", ok))
        states.append(deb.is_failing(("j", "ping.reachable", "t")))
    return states


def test_n_of_m_needs_confirmation_and_clears_after_k_good_rounds():
    deb = Debouncer()
    c = cfg(2, 3, 2)
    # One lost round never fails; two within three do.
    assert feed(deb, c, [False, True, True, False, True, True]) == [False] * 6
    assert feed(deb, c, [False, True, False]) == [False, False, True]
    # One good round is not recovery; two are.
    assert feed(deb, c, [True, False, True, True]) == [True, True, True, False]


def test_restart_assumes_reported_conditions_still_failed():
    deb = Debouncer()
    deb.assume_failing(("j", "ping.reachable", "t"), cfg(2, 3, 2))
    assert deb.is_failing(("j", "ping.reachable", "t"))
    assert deb.failing() == []  # no observation yet: nothing to classify, nothing to resolve
    assert feed(deb, cfg(2, 3, 2), [True, True]) == [True, False]
    assert isinstance(deb.states[("j", "ping.reachable", "t")].recent, deque)
