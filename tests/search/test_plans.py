"""Plans and slices: parsing, canonical text, expansion, validation."""

import pytest

from frankensweep.search import Plan, PlanError, Slice


def test_slice_len_and_text():
    assert len(Slice(0, 16)) == 16
    assert str(Slice(0, 16)) == "0-16"
    assert str(Slice(0, 16, "org/model")) == "0-16@org/model"
    assert list(Slice(2, 5).layers()) == [2, 3, 4]


@pytest.mark.parametrize(
    ("start", "end", "match"),
    [(-1, 4, "start must be >= 0"), (4, 4, "end must be > start"), (5, 2, "end must be > start")],
)
def test_slice_rejects_bad_ranges(start, end, match):
    with pytest.raises(PlanError, match=match):
        Slice(start, end)


def test_slice_rejects_non_int_and_bad_model():
    with pytest.raises(PlanError, match="must be an integer"):
        Slice(0, 2.5)  # type: ignore[arg-type]
    with pytest.raises(PlanError, match="must be an integer"):
        Slice(True, 4)  # type: ignore[arg-type]
    with pytest.raises(PlanError, match="whitespace or commas"):
        Slice(0, 4, "my model")


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("0-16,8-24,16-30", "0-16,8-24,16-30"),
        (" 0 - 16 , 8-24,\t16-30 ", "0-16,8-24,16-30"),
        ("0-8@org/a, 8-16 @ org/b,16-24", "0-8@org/a,8-16@org/b,16-24"),
        ("3-4", "3-4"),
    ],
)
def test_parse_canonical_text(text, canonical):
    plan = Plan.parse(text)
    assert str(plan) == canonical
    assert Plan.parse(str(plan)) == plan


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "plan is empty"),
        ("   ", "plan is empty"),
        ("abc", 'slice 1 "abc" is not START-END'),
        ("0-8,,8-16", 'slice 2 "" is not START-END'),
        ("0-8,8-x", 'slice 2 "8-x" is not START-END'),
        ("0-8,-2-4", 'slice 2 "-2-4" starts before layer 0: start must be >= 0'),
        ("0-8,16-8", 'slice 2 "16-8" is empty or reversed: end must be > start \\(16\\)'),
        ("0-8,8-8", 'slice 2 "8-8" is empty or reversed'),
        ("0-8@", "empty model after '@'"),
        ("0-8@a b", "whitespace or commas"),
        ("0-8*0", "scale must be a finite number > 0, got 0"),
        ("0-8*-0.5", "write a positive number after"),
        ("0-8*nan", "write a positive number after"),
        ("0-8*1e400", "finite number > 0, got 1e400"),
        ("0-8*0.5@b", "write the model before the scale"),
        ("0-8@a*b*2", "write a positive number after"),
    ],
)
def test_parse_errors(text, message):
    with pytest.raises(PlanError, match=message):
        Plan.parse(text)


def test_parse_error_is_one_line_value_error():
    with pytest.raises(ValueError) as info:
        Plan.parse("0-8,12-4")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("0-16,8-24*0.5,16-30", "0-16,8-24*0.5,16-30"),
        ("8-16 @ other * 0.50", "8-16@other*0.5"),
        ("8-16*1", "8-16"),
        ("8-16*1.0,16-20*2.0", "8-16,16-20*2"),
        ("8-16@base*.75", "8-16*0.75"),
        ("0-8*1e-1", "0-8*0.1"),
        ("0-8*1E-05", "0-8*1e-05"),
    ],
)
def test_scales_have_one_canonical_text_and_digest(text, canonical):
    plan = Plan.parse(text)
    assert str(plan) == canonical
    assert Plan.parse(canonical) == plan and Plan.parse(canonical).digest == plan.digest


def test_scale_is_part_of_identity_and_positions():
    plain, scaled = Plan.parse("0-8,4-8,8-12"), Plan.parse("0-8,4-8*0.5,8-12")
    assert plain.digest != scaled.digest and plain != scaled
    assert plain.layers() == scaled.layers() and plain.sources() == scaled.sources()
    assert scaled.positions()[7:9] == [(None, 7, None), (None, 4, 0.5)]
    assert scaled.max_repeats() == 2 and scaled.is_scaled and not plain.is_scaled
    assert str(scaled.without_scales()) == "0-8,4-12"
    assert Slice(0, 4, "base", 1.0) == Slice(0, 4)
    with pytest.raises(PlanError, match="scale must be a number"):
        Slice(0, 4, scale="0.5")  # type: ignore[arg-type]


def test_digest_is_stable():
    assert Plan.parse("0-16,8-24,16-30").digest == "749d810a28fad4ac"
    assert Plan.parse(" 0-16, 8-24,16-30").digest == "749d810a28fad4ac"
    assert Plan.parse("0-16,8-24").digest != Plan.parse("0-16,8-25").digest


def test_value_semantics():
    a, b = Plan.parse("0-16,8-24"), Plan.parse("0-16, 8-24")
    assert a == b and hash(a) == hash(b)
    assert len({a, b, Plan.parse("0-24")}) == 2
    assert Plan.parse("0-4") < Plan.parse("0-8") < Plan.parse("1-2")
    assert repr(a) == "Plan('0-16,8-24')"
    assert Plan.coerce(a) is a and Plan.coerce("0-16,8-24") == a


def test_base_plan():
    assert str(Plan.base(30)) == "0-30"
    assert Plan.base(30).layers() == list(range(30))


def test_expansion():
    plan = Plan.parse("0-2,1-3")
    assert plan.layers() == [0, 1, 1, 2]
    assert len(plan) == 4
    assert plan.sources() == [(None, 0), (None, 1), (None, 1), (None, 2)]
    mixed = Plan.parse("0-2,1-2@other")
    assert mixed.layers() == [0, 1, 1]
    assert mixed.sources() == [(None, 0), (None, 1), ("other", 1)]
    assert not mixed.is_self_merge and plan.is_self_merge
    assert mixed.max_repeats() == 1 and plan.max_repeats() == 2


@pytest.mark.parametrize(
    ("text", "jumps", "repeats"),
    [
        ("0-30", [], 1),
        ("0-10,7-17,14-24,24-30", [3, 3, 0], 2),
        ("0-10,12-30", [-2], 1),
        ("0-16,0-16,0-16", [16, 16], 3),
        ("0-24,8-30", [16], 2),
    ],
)
def test_jumps_and_repeats(text, jumps, repeats):
    plan = Plan.parse(text)
    assert plan.jumps() == jumps
    assert plan.max_repeats() == repeats


def test_merged():
    assert str(Plan.parse("0-10,10-20,15-20").merged()) == "0-20,15-20"
    assert str(Plan.parse("0-10,10-20@x").merged()) == "0-10,10-20@x"


def test_validate():
    plan = Plan.parse("0-16,8-24,16-30")
    assert plan.validate(30) is plan
    with pytest.raises(PlanError) as info:
        Plan.parse("0-16,8-24,28-34").validate(30)
    assert str(info.value) == 'slice 3 "28-34" ends past the model\'s 30 layers: end must be <= 30'
    with pytest.raises(ValueError, match="num_layers"):
        plan.validate(0)


def test_validate_other_models():
    plan = Plan.parse("0-30,20-40@big/model")
    plan.validate(30, {"big/model": 40})
    with pytest.raises(PlanError, match="ends past big/model's 32 layers: end must be <= 32"):
        plan.validate(30, {"big/model": 32})
    with pytest.raises(PlanError, match="big/model's 30 layers"):
        plan.validate(30)


def test_plan_needs_slices():
    with pytest.raises(PlanError, match="no slices"):
        Plan(())
    assert Plan([Slice(0, 2)]).slices == (Slice(0, 2),)  # type: ignore[arg-type]
