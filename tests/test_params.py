"""One parameter model (cnn.params.RunParams): defaults written once, the Prefect form built from it, the CLI generated
from it, and what a comparison dispatches accepted by the training deployment's enforced schema."""

from __future__ import annotations

import inspect
import json
import re
from typing import Any

import pytest

from cnn.errors import ConfigError
from cnn.params import RunParams, check_of, default_of, parse_params
from flows.parameters import COMPARE_FIELDS, COMPARE_ONLY, VARIANT_FIELDS, VARIANT_ONLY


def _schema(flow: Any) -> dict[str, Any]:
    from prefect.utilities.callables import parameter_schema

    return parameter_schema(flow).model_dump_for_openapi()


def _walk(node: Any):
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


@pytest.fixture(scope="module")
def schemas() -> dict[str, dict[str, Any]]:
    from flows.compare import compare_architectures
    from flows.variant import train_variant_flow

    return {"compare": _schema(compare_architectures), "variant": _schema(train_variant_flow)}


def test_every_field_belongs_to_a_flow_and_both_flows_share_the_rest() -> None:
    assert set(COMPARE_FIELDS) | set(VARIANT_FIELDS) == set(RunParams.model_fields)
    assert set(COMPARE_FIELDS) & set(VARIANT_FIELDS) == set(RunParams.model_fields) - set(COMPARE_ONLY) - set(
        VARIANT_ONLY
    )
    assert {"weight_decay", "momentum", "lr_min", "variant_files", "variant_modules"} <= set(COMPARE_FIELDS) & set(
        VARIANT_FIELDS
    )


def test_library_defaults_come_from_the_model() -> None:
    from benchmarks import speed_cnn_lab as bench
    from cnn import lr_policy

    defaults = inspect.signature(lr_policy.range_test_sweep).parameters
    for name in ("lr_min", "lr_max"):
        assert defaults[name].default == default_of(name), name
    assert defaults["rule"].default == default_of("lr_rule") == lr_policy.DEFAULT_LR_RULE
    assert (bench.LR_MIN, bench.LR_MAX) == (default_of("lr_min"), default_of("lr_max")) == (1e-5, 1.0)


@pytest.mark.parametrize("flow", ["compare", "variant"])
def test_the_form_is_typed_described_and_has_no_dead_or_none_fields(schemas: dict[str, Any], flow: str) -> None:
    schema = schemas[flow]
    fields = COMPARE_FIELDS if flow == "compare" else VARIANT_FIELDS
    assert list(schema["properties"]) == list(fields) and not schema.get("required")
    for name, prop in schema["properties"].items():
        description = prop.get("description", "")
        assert description.startswith(RunParams.model_fields[name].description), name  # nothing lost on the way
        assert not re.search(r"<[A-Za-z/!]", description), f"{name}: the UI renders descriptions as HTML and drops tags"
        assert prop["default"] == default_of(name), name
        for node in _walk(prop):
            assert not (isinstance(node, dict) and ("const" in node or node.get("type") == "null")), f"{name}: {prop}"
    lr = schema["properties"]["lr"]["anyOf"]
    assert {"type": "string", "enum": ["auto"], "title": "auto"} in lr and {
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": 1000,
        "title": "number",
    } in lr
    assert schema["properties"]["optimizer"]["enum"] == ["sgd", "adam", "adamw"]
    assert {"type": "integer", "minimum": 1, "maximum": 10_000, "title": "number"} in schema["properties"]["epochs"][
        "anyOf"
    ] and schema["properties"]["momentum"]["exclusiveMaximum"] == 1
    assert {"type": "string", "enum": ["auto"], "title": "auto"} in schema["properties"]["batch_size"]["anyOf"]


def test_the_variants_description_lists_the_built_in_names_but_does_not_restrict_them(schemas: dict[str, Any]) -> None:
    prop = schemas["compare"]["properties"]["variants"]
    assert "Built in: alexnet, cnn2_3," in prop["description"] and "lenet5_dropout." in prop["description"]
    assert "enum" not in json.dumps(prop)  # plug-ins are checked when a run starts, not frozen at import


def test_the_server_accepts_defaults_and_rejects_bad_values_by_name(schemas: dict[str, Any]) -> None:
    from prefect.utilities.schema_tools import validate

    schema = schemas["compare"]
    assert validate(RunParams().model_dump(include=set(COMPARE_FIELDS)), schema) == []
    assert validate({"lr": 0.05, "refresh": True, "variant_files": {"mine": "mine.json"}}, schema) == []
    for bad, path in [
        ({"epochs": 0}, "$.epochs"),
        ({"epochs": 10_001}, "$.epochs"),
        ({"repeats": 10**9}, "$.repeats"),
        ({"lr": -1}, "$.lr"),
        ({"optimizer": "adma"}, "$.optimizer"),
        ({"variants": ["LeNet5"]}, "$.variants[0]"),
        ({"device": "tpu"}, "$.device"),
    ]:
        errors = validate(bad, schema)
        assert [e.json_path for e in errors] == [path], bad


def test_what_a_comparison_dispatches_passes_the_training_deployments_schema(schemas: dict[str, Any], tmp_path) -> None:
    from prefect.utilities.schema_tools import validate

    from flows.dispatch import variant_parameters
    from flows.settings import prepare_run

    config = tmp_path / "mine.json"
    config.write_text('{"conv_channels": [4], "fc_sizes": [8]}')
    params = parse_params(
        {
            "dataset": "digits",
            "storage": str(tmp_path / "results"),
            "variants": ["lenet1"],
            "variant_files": {"mine": str(config)},
            "run": "r1",
            "lr": 0.05,
            "repeats": 2,
        }
    )
    config = prepare_run(params)
    try:
        sent = variant_parameters(config, "mine", 1, "seed-1")
        assert validate(sent, schemas["variant"]) == []
        assert set(sent) == set(VARIANT_FIELDS)
        assert (
            sent["variant"] == "mine"
            and (sent["seed"], sent["repeat"]) == (0, 1)
            and sent["subdir"] == "seed-1"
            and sent["run"] == "r1"
        )
        assert json.loads(sent["variant_files"]["mine"]) == {
            "conv_channels": [4],
            "kernel_sizes": 3,
            "pool_sizes": 2,
            "fc_sizes": [8],
            "dropout": 0.0,
        }
        assert parse_params(sent).lr == 0.05
    finally:
        from cnn.models import unregister_variant

        unregister_variant("mine")


def test_parse_params_reports_the_first_bad_field_and_counts_the_others() -> None:
    with pytest.raises(ConfigError) as err:
        parse_params({"epochs": 0, "lr": "fast", "seed": -1})
    assert err.value.field == "epochs"
    assert (
        str(err.value)
        == "epochs: must be 'auto' or an integer in [1, 10000], got 0 (allowed: 'auto' or an integer in [1, 10000]); also bad: lr, seed"
    )


def test_values_from_text_are_parsed_as_the_cli_and_yaml_give_them() -> None:
    params = parse_params(
        {
            "epochs": "3",
            "lr": "1e-3",
            "variants": "lenet1, cnn2_5",
            "refresh": "train,lr",
            "max_train": None,
            "run": None,
            "variant_files": ["mine=a.json"],
            "variant_modules": "pkg.nets",
        }
    )
    assert (params.epochs, params.lr, params.variants, params.refresh, params.max_train, params.run) == (
        3,
        0.001,
        ["lenet1", "cnn2_5"],
        ["train", "lr"],
        0,
        "",
    )
    assert params.variant_files == {"mine": "a.json"} and params.variant_modules == ["pkg.nets"]
    assert parse_params({"lr": "AUTO", "refresh": True}).refresh == ["lr", "train", "evaluate", "features"]
    assert parse_params(
        {"variants": ["lenet1"], "variant_files": {"mine": "a.json", "lenet1": "b.json"}}
    ).compared() == ["lenet1", "mine"]


# ---------------------------------------------------------------- the CLI, generated from the model


def test_cli_has_an_option_for_every_run_parameter_with_its_description() -> None:
    from flows.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    compare = {a.dest: a for a in subparsers["compare"]._actions}
    assert set(COMPARE_FIELDS) <= set(compare)
    assert compare["variant_files"].option_strings == ["--variant"] and compare["weight_decay"].option_strings == [
        "--weight-decay"
    ]
    assert (
        compare["lr_min"].help.startswith(RunParams.model_fields["lr_min"].description)
        and "Default: 1e-05." in compare["lr_min"].help
    )
    retrain = {a.dest for a in subparsers["retrain"]._actions}
    assert {"variant", "momentum", "variant_modules", "comparison"} <= retrain and not {
        "subdir",
        "refresh",
        "variants",
        "parallel",
    } & retrain


def test_cli_passes_only_the_options_given_so_defaults_stay_in_the_model() -> None:
    from flows.cli import build_parser, run_params

    args = build_parser().parse_args(
        ["compare", "--epochs", "3", "--variant", "mine=a.json", "--variant", "yours=b.json", "--refresh"]
    )
    params = run_params(args)
    assert (
        params.epochs == 3
        and params.variant_files == {"mine": "a.json", "yours": "b.json"}
        and params.refresh == ["lr", "train", "evaluate", "features"]
    )
    assert params.model_dump(exclude={"epochs", "variant_files", "refresh"}) == RunParams().model_dump(
        exclude={"epochs", "variant_files", "refresh"}
    )


def test_cli_retrain_hands_the_retrain_flow_only_the_options_typed(tmp_path, monkeypatch) -> None:
    """The CLI and a deployment retrain run the same flow, which alone decides the settings (the comparison's unless
    given): the CLI passes what was typed and nothing else."""
    import flows.cli
    from cnn.comparisons import record_definition
    from cnn.storage import Storage
    from flows.retrain import retrain_variant

    record_definition(
        Storage(str(tmp_path)), RunParams(dataset="digits", variants=["lenet1"], storage=str(tmp_path), run="r")
    )
    seen = {}

    def fake_run(flow_fn, kwargs, quiet):
        seen.update(flow=flow_fn, kwargs=kwargs)
        raise KeyboardInterrupt  # stop before anything runs

    monkeypatch.setattr(flows.cli, "_run_flow", fake_run)
    monkeypatch.setattr(flows.cli, "_exit_now", lambda code: None)
    flows.cli.main(["retrain", "lenet1", "--dataset", "digits", "--storage", str(tmp_path), "--epochs", "2"])
    assert seen["flow"] is retrain_variant
    assert seen["kwargs"] == {"variant": "lenet1", "dataset": "digits", "storage": str(tmp_path), "epochs": 2}


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["compare", "--lr-min", "nan"],
            "cnn-lab: lr_min: must be a finite number in (0, 1000], got 'nan' (allowed: a finite number in (0, 1000])",
        ),
        (
            ["compare", "--optimizer", "adma"],
            "cnn-lab: optimizer: unknown optimizer 'adma'; did you mean 'adam'? (allowed: sgd, adam, adamw)",
        ),
        (
            ["compare", "--variants", "lenet1,Lenet5"],
            "cnn-lab: variants: 'Lenet5' is not a variant name; did you mean 'lenet5'? (allowed: lowercase letters, digits and _)",
        ),
        (
            ["compare", "--lr-min", "0.1", "--lr-max", "0.01"],
            "cnn-lab: lr_max: must be greater than lr_min=0.1, got 0.01 (allowed: a number in (0.1, 1000])",
        ),
        (
            ["retrain", "lenet1", "--momentum", "1"],
            "cnn-lab: momentum: must be a finite number in [0, 1), got '1' (allowed: a finite number in [0, 1))",
        ),
    ],
)
def test_cli_rejects_a_bad_value_with_one_line_and_exit_code_2(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main

    assert main(argv) == 2
    assert capsys.readouterr().err == line + "\n"


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["compare", "--variants", "lenet1,lenet7", "--storage", "{tmp}"],
            "cnn-lab: variants: unknown variant 'lenet7'; did you mean 'lenet5'? (allowed: alexnet, ",
        ),
        (
            ["compare", "--dataset", "fashion_mnist", "--storage", "{tmp}"],
            "cnn-lab: dataset: unknown dataset 'fashion_mnist'; did you mean 'fashion-mnist'? (allowed: ",
        ),
        (
            ["compare", "--variant", "mine={tmp}/missing.json", "--storage", "{tmp}"],
            "cnn-lab: variant_files: variant 'mine' from {tmp}/missing.json: no such file: {tmp}/missing.json",
        ),
        (
            ["retrain", "lenet1", "--variant-module", "no_such_cnn_lab_plugin", "--storage", "{tmp}"],
            "cnn-lab: variant_modules: cannot import 'no_such_cnn_lab_plugin': ModuleNotFoundError",
        ),
    ],
)
def test_cli_checks_names_against_the_registries_before_prefect_starts(
    argv: list[str], line: str, tmp_path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.cli

    monkeypatch.setattr(flows.cli, "_run_flow", lambda *a, **k: pytest.fail("the flow must not start"))
    assert flows.cli.main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(line.replace("{tmp}", str(tmp_path))) and err.count("\n") == 1, err


def test_cli_suggests_the_option_meant(capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--weightdecay", "0.1"])
    assert exit_info.value.code == 2
    assert (
        capsys.readouterr().err == "cnn-lab: unrecognized arguments: --weightdecay 0.1; did you mean --weight-decay?\n"
    )


NUMERIC = [name for name in RunParams.model_fields if check_of(name).upper() is not None]


def test_every_count_size_and_rate_has_an_upper_bound() -> None:
    """A numeric field without a bound fails here: a new count (or budget) declares its bound in its marker."""
    from cnn.checks import AutoOr, Number, Share

    numeric = [n for n, f in RunParams.model_fields.items() if isinstance(check_of(n), (Number, AutoOr, Share))]
    assert numeric == NUMERIC and {
        "epochs",
        "batch_size",
        "repeats",
        "parallel",
        "seed",
        "max_train",
        "max_test",
    } <= set(numeric)


@pytest.mark.parametrize("name", NUMERIC)
def test_a_value_past_the_bound_is_refused_with_the_allowed_range(name: str) -> None:
    bound = check_of(name).upper()
    with pytest.raises(ConfigError) as err:
        parse_params({name: bound * 10 + 1})
    assert err.value.field == name and str(int(bound)) in str(err.value.allowed), str(err.value)
