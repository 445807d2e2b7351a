"""Recipes of plans that name other models or carry scales: mergekit's shape, and back."""

from __future__ import annotations

import pytest
import yaml

from frankensweep.search import Plan, RecipeError, plan_to_recipe, recipe_to_plan

SOURCES = {"b": "/models/b", "c": "org/c"}


def test_scaled_slice_carries_mergekits_filtered_scale():
    text = plan_to_recipe(Plan.parse("0-16,8-16*0.5,16-30"), "/models/a", "float32")
    data = yaml.safe_load(text)
    assert "base_model" not in data and not text.startswith("#")  # a self-merge: as before
    assert data["slices"][1] == {
        "sources": [{"model": "/models/a", "layer_range": [8, 16]}],
        "parameters": {
            "scale": [{"filter": "o_proj", "value": 0.5}, {"filter": "down_proj", "value": 0.5}]
        },
    }
    assert "parameters" not in data["slices"][0] and "parameters" not in data["slices"][2]
    assert "    - {filter: o_proj, value: 0.5}\n" in text


@pytest.mark.parametrize(
    "text",
    ["0-16,8-16*0.5,16-30", "0-8,4-12@b*0.75,8-16", "0-4,2-6@b*1e-05,4-8@c*3", "0-8@b,8-16@c*2"],
)
def test_round_trip_with_models_and_scales(text):
    plan = Plan.parse(text)
    recipe_text = plan_to_recipe(plan, "/models/a", "float32", SOURCES)
    recipe = recipe_to_plan(recipe_text, names={v: k for k, v in SOURCES.items()})
    assert recipe.plan == plan and recipe.model == "/models/a"
    assert recipe.to_yaml() == recipe_text  # the names map back to the same paths


def test_other_models_get_the_base_model_as_embedding_and_head_donor():
    plan = Plan.parse("0-8@b,4-12,8-16@b")
    data = yaml.safe_load(plan_to_recipe(plan, "/models/a", "float32", SOURCES))
    ranges = [(s["sources"][0]["model"], s["sources"][0]["layer_range"]) for s in data["slices"]]
    assert ranges == [
        ("/models/a", [0, 0]),  # mergekit's embeddings: the first slice's model
        ("/models/b", [0, 8]),
        ("/models/a", [4, 12]),
        ("/models/b", [8, 16]),
        ("/models/a", [0, 0]),  # final norm and LM head: the last slice's model
    ]
    assert data["base_model"] == "/models/a"  # config and tokenizer
    # read back: empty slices are no layers; names come from the paths given
    recipe = recipe_to_plan(yaml.safe_dump(data), names={"/models/b": "b"})
    assert recipe.plan == plan and recipe.sources == {"b": "/models/b"}
    # without names each other model is named by itself
    assert str(recipe_to_plan(yaml.safe_dump(data)).plan) == "0-8@/models/b,4-12,8-16@/models/b"


def test_names_map_paths_and_undeclared_models_are_refused():
    text = plan_to_recipe(Plan.parse("0-8,8-16@b,16-24@c,24-30"), "a", sources=SOURCES)
    with pytest.raises(RecipeError, match=r"takes layers from org/c, which is neither the base"):
        recipe_to_plan(text, names={"/models/b/": "b"})
    recipe = recipe_to_plan(text, names={"/models/b/": "b", "org/c": "c"})  # paths normalized
    assert str(recipe.plan) == "0-8,8-16@b,16-24@c,24-30"


def _two(first: str, second: str) -> str:
    """Two slices, of models ``first`` and ``second``."""
    return (
        f"[{{sources: [{{model: {first}, layer_range: [0, 8]}}]}}, "
        f"{{sources: [{{model: {second}, layer_range: [8, 16]}}]}}]"
    )


@pytest.mark.parametrize(
    ("slices", "match"),
    [
        (
            _two("b", "a"),
            r"embeddings from b \(its first slice\), but frankensweep takes them from",
        ),
        (_two("a", "b"), "final norm and LM head from b"),
    ],
)
def test_recipe_whose_ends_are_not_the_base_models_is_refused(slices, match):
    text = f"merge_method: passthrough\nbase_model: a\nslices: {slices}\n"
    with pytest.raises(RecipeError, match=match):
        recipe_to_plan(text)


def _scaled(params: str, where: str = "slice") -> str:
    source = (
        "{model: a, layer_range: [0, 4]"
        + (f", parameters: {params}" if where == "source" else "")
        + "}"
    )
    entry = (
        "{sources: [" + source + "]" + (f", parameters: {params}" if where == "slice" else "") + "}"
    )
    return f"merge_method: passthrough\nslices: [{entry}]\n"


@pytest.mark.parametrize("where", ["slice", "source"])
@pytest.mark.parametrize(
    ("params", "plan"),
    [
        ("{scale: [{filter: o_proj, value: 0.5}, {filter: down_proj, value: 0.5}]}", "0-4*0.5"),
        (
            "{scale: [{filter: down_proj, value: 2}, {filter: o_proj, value: 2}, {value: 1}]}",
            "0-4*2",
        ),
        ("{scale: [{filter: o_proj, value: 1}, {filter: down_proj, value: 1}]}", "0-4"),
    ],
)
def test_scale_spellings_are_read(params, plan, where):
    assert str(recipe_to_plan(_scaled(params, where)).plan) == plan


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ("{scale: 0.5}", "source has parameters|has parameters a plan cannot express"),
        ("{scale: [{filter: o_proj, value: 0.5}]}", "scales {'o_proj': 0.5}"),
        ("{scale: [{filter: o_proj, value: 0.5}, {filter: down_proj, value: 0.7}]}", "scales"),
        ("{scale: [{filter: q_proj, value: 0.5}]}", "scales 'q_proj'"),
        (
            "{scale: [{filter: o_proj, value: 0.5}, {filter: down_proj, value: 0.5}, {value: 2}]}",
            "scales every tensor by 2",
        ),
        (
            "{scale: [{filter: o_proj, value: 0}, {filter: down_proj, value: 0}]}",
            "finite number > 0",
        ),
        ("{weight: 0.5}", "has parameters a plan cannot express"),
    ],
)
def test_scales_a_plan_cannot_express_are_refused(params, match):
    with pytest.raises(RecipeError, match=match) as info:
        recipe_to_plan(_scaled(params))
    assert "\n" not in str(info.value)
