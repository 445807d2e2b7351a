"""Recipes: plan <-> mergekit passthrough YAML."""

import pytest

from frankensweep.search import Plan, Recipe, RecipeError, plan_to_recipe, recipe_to_plan

MODEL = "HuggingFaceTB/SmolLM2-135M"


def test_recipe_exact_shape():
    text = plan_to_recipe(Plan.parse("0-16,8-24"), MODEL)
    assert text == (
        "slices:\n"
        "- sources:\n"
        "  - model: HuggingFaceTB/SmolLM2-135M\n"
        "    layer_range: [0, 16]\n"
        "- sources:\n"
        "  - model: HuggingFaceTB/SmolLM2-135M\n"
        "    layer_range: [8, 24]\n"
        "merge_method: passthrough\n"
        "dtype: bfloat16\n"
    )


@pytest.mark.parametrize(
    "text",
    ["0-30", "0-16,8-24,16-30", "0-10,7-17,14-24,24-30", "0-8,8-16@other/model,16-24"],
)
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_round_trip(text, dtype):
    plan = Plan.parse(text)
    recipe = recipe_to_plan(plan_to_recipe(plan, MODEL, dtype))
    assert recipe == Recipe(plan=plan, model=MODEL, dtype=dtype)
    assert recipe_to_plan(recipe.to_yaml()) == recipe


def test_round_trip_interleave_names_its_base_model():
    plan = Plan.parse("0-8,8-16@b,16-24@b")
    text = plan_to_recipe(plan, "a")
    # the recipe says base_model: a (the most common slice model would be b)
    assert recipe_to_plan(text).plan == plan
    assert recipe_to_plan(text, model="a").plan == plan


def test_base_model_key_names_the_main_model():
    text = plan_to_recipe(Plan.parse("0-8,8-16@b,16-24@b"), "a") + "base_model: a\n"
    assert str(recipe_to_plan(text).plan) == "0-8,8-16@b,16-24@b"


def test_bad_dtype_and_model():
    with pytest.raises(RecipeError, match="dtype 'int8' is not supported"):
        plan_to_recipe(Plan.base(4), MODEL, "int8")
    with pytest.raises(RecipeError, match="model must be"):
        plan_to_recipe(Plan.base(4), "")


def test_block_list_layer_range_and_extra_keys():
    text = """
slices:
  - sources:
      - model: org/m
        layer_range:
          - 0
          - 16
  - sources:
      - model: org/m
        layer_range:
          - 8
          - 24
merge_method: passthrough
tokenizer_source: base
"""
    recipe = recipe_to_plan(text)
    assert str(recipe.plan) == "0-16,8-24"
    assert recipe.model == "org/m" and recipe.dtype is None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("slices: [\n", "recipe is not valid YAML: .* at line"),
        ("- a\n- b\n", "must be a YAML mapping, got list"),
        ("merge_method: slerp\nslices: []\n", "merge_method must be passthrough, found 'slerp'"),
        ("slices: []\n", "merge_method must be passthrough, found None"),
        ("merge_method: passthrough\nmodels: []\n", "non-empty slices list, found models"),
        ("merge_method: passthrough\nslices: []\n", "non-empty slices list"),
        (
            "merge_method: passthrough\nslices:\n- sources:\n  - {model: a, layer_range: [0, 4]}\n"
            "  - {model: b, layer_range: [0, 4]}\n",
            "recipe slice 1 must have exactly one source",
        ),
        (
            "merge_method: passthrough\nslices:\n- sources:\n  - {layer_range: [0, 4]}\n",
            "recipe slice 1 source needs a model name",
        ),
        (
            "merge_method: passthrough\nslices:\n- sources:\n"
            "  - {model: a, layer_range: [0, 4, 8]}\n",
            "layer_range must be two integers",
        ),
        (
            "merge_method: passthrough\nslices:\n- sources:\n  - {model: a, layer_range: [0, 4]}\n"
            "- sources:\n  - {model: a, layer_range: [8, 4]}\n",
            r"recipe slice 2 layer_range \[8, 4\] must satisfy 0 <= start < end",
        ),
        (
            "merge_method: passthrough\nslices:\n- sources:\n  - model: a\n"
            "    layer_range: [0, 4]\n    parameters: {scale: 0.5}\n",
            "source has parameters",
        ),
        (
            "merge_method: passthrough\nslices:\n- sources:\n  - {model: a, layer_range: [0, 4]}\n"
            "dtype: 16\n",
            "dtype must be a string",
        ),
    ],
)
def test_recipe_errors(text, match):
    with pytest.raises(ValueError, match=match) as info:
        recipe_to_plan(text)
    assert "\n" not in str(info.value)


def test_recipe_is_read_safely():
    text = "merge_method: !!python/object/apply:os.system ['true']\nslices: []\n"
    with pytest.raises(RecipeError, match="not valid YAML"):
        recipe_to_plan(text)
