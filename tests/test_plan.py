from datetime import timedelta

from hisguard.plan import (
    ACTIVATION_STEPS,
    CONTINUITY_PHASES,
    BusinessFunction,
    ContinuityPhase,
    Scope,
    Severity,
    Trigger,
    business_function,
    functions_of,
    scope_for,
    severity_for,
)


def test_six_triggers_with_both_languages():
    assert [int(t) for t in Trigger] == [1, 2, 3, 4, 5, 6]
    for t in Trigger:
        assert t.text.zh and t.text.en and t.short.zh and t.short.en
    assert "置疑" in Trigger.DATABASE.text.zh


def test_service_levels_fix_response_deadlines():
    assert Severity.CRITICAL.response_within == timedelta(minutes=10)
    assert Severity.URGENT.response_within == timedelta(minutes=30)
    assert Severity.ROUTINE.response_within == timedelta(minutes=60)
    assert Severity.CRITICAL.text.zh == "全面加急"
    assert Severity.ROUTINE.raised_to(Severity.URGENT) is Severity.URGENT
    assert Severity.CRITICAL.raised_to(Severity.URGENT) is Severity.CRITICAL


def test_scope_suggests_severity_and_rules_can_cap_it():
    assert scope_for(True, []) is Scope.HOSPITAL
    assert scope_for(False, ["门诊收费"]) is Scope.DEPARTMENT
    assert scope_for(False, []) is Scope.HOST
    assert severity_for(Scope.HOSPITAL) is Severity.CRITICAL
    assert severity_for(Scope.DEPARTMENT) is Severity.URGENT
    assert severity_for(Scope.HOST) is Severity.ROUTINE
    assert severity_for(Scope.HOSPITAL, cap=Severity.URGENT) is Severity.URGENT
    assert severity_for(Scope.HOST, floor=Severity.URGENT) is Severity.URGENT


def test_continuity_phases_name_the_plans_functions():
    first = {f.text.zh for f in CONTINUITY_PHASES[ContinuityPhase.AFTER_15_MIN]}
    later = {f.text.zh for f in CONTINUITY_PHASES[ContinuityPhase.AFTER_3_HOURS]}
    assert first == {"门诊挂号", "住院登记", "门诊收费", "急诊收费", "门诊药房", "住院药房"}
    assert later == {"护士站", "手术室", "医技检查"}
    assert ContinuityPhase.AFTER_15_MIN.after == timedelta(minutes=15)
    assert ContinuityPhase.AFTER_3_HOURS.after == timedelta(hours=3)


def test_department_names_map_to_functions_in_either_language():
    assert business_function("门诊收费") is BusinessFunction.OUTPATIENT_BILLING
    assert business_function("outpatient_billing") is BusinessFunction.OUTPATIENT_BILLING
    assert business_function("Outpatient billing") is BusinessFunction.OUTPATIENT_BILLING
    assert business_function("信息科") is None
    assert functions_of(["手术室", "信息科", "门诊挂号", "门诊挂号"]) == [
        BusinessFunction.OUTPATIENT_REGISTRATION,
        BusinessFunction.OPERATING_ROOM,
    ]


def test_activation_steps_follow_section_2_5():
    keys = [s.key for s in ACTIVATION_STEPS]
    assert keys == ["record", "leadership_informed", "activate", "hospital_notified", "result_fed_back"]
    assert {s.role for s in ACTIVATION_STEPS if s.key == "activate"} == {"service_manager"}
