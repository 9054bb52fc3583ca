"""The planner: deterministic expansion, stable ids, include/exclude, and clear errors naming the field."""

import pytest

from trainbench.operator.api import SpecError, parse_spec
from trainbench.operator.plan import plan, with_repeats
from trainbench.operator.results.repeats import group_outcomes


def spec(**over):
    base = {
        "pools": [{"name": "h100", "gpusPerNode": 1}, {"name": "a6000", "gpusPerNode": 2, "peakTFLOPs": 154.85}],
        "matrix": {"models": ["Qwen/Qwen3-0.6B"], "types": ["sft-full", "rl-lora"], "seqLens": [8192, 16384]},
    }
    for k, v in over.items():
        if k == "matrix":
            base["matrix"] = {**base["matrix"], **v}
        else:
            base[k] = v
    return base


def test_matrix_expands_in_order_with_stable_ids():
    cases = plan(spec())
    assert len(cases) == 2 * 2 * 2  # types x seqLens x pools
    assert [c.id for c in cases] == [c.id for c in plan(spec())]
    assert len({c.id for c in cases}) == len(cases)
    assert all(len(c.id) <= 63 for c in cases)
    first = cases[0]
    assert (first.model, first.type, first.seq_len, first.pool) == ("qwen3-0.6b", "sft-full", 8192, "h100")


def test_lora_settings_only_on_lora_cases():
    cases = plan(spec())
    lora = [c for c in cases if c.type == "rl-lora"]
    assert lora and all(c.lora_rank == 16 and c.lora_alpha == 32 for c in lora)
    assert all(c.lora_rank is None for c in cases if c.type != "rl-lora")
    args = lora[0].trainer_args(run="r1")
    assert args[args.index("--lora-rank") + 1] == "16"
    assert "--run-name" in args and "--peak-tflops" not in args


def test_pool_settings_flow_into_cases():
    a6000 = [c for c in plan(spec()) if c.pool == "a6000"]
    assert all(c.gpus == 2 and c.peak_tflops == 154.85 for c in a6000)
    assert "--peak-tflops" in a6000[0].trainer_args()


def test_exclude_and_include():
    s = spec(
        matrix={
            "exclude": [{"type": "rl-lora", "pool": "a6000"}],
            "include": [{"model": "tiny-llama", "pool": "h100", "seqLen": 512}],
        }
    )
    cases = plan(s)
    assert not [c for c in cases if c.type == "rl-lora" and c.pool == "a6000"]
    inc = [c for c in cases if c.model == "tiny-llama"]
    assert len(inc) == 1 and inc[0].seq_len == 512 and inc[0].type == "sft-full"


def test_exclude_by_hf_name():
    cases = plan(spec(matrix={"exclude": [{"model": "Qwen/Qwen3-0.6B", "seqLen": 16384}]}))
    assert {c.seq_len for c in cases} == {8192}


def test_ids_change_with_configuration():
    a = {c.id for c in plan(spec())}
    b = {c.id for c in plan(spec(lora={"rank": 32}))}
    assert {i for i in a if "sft" in i} == {i for i in b if "sft" in i}
    assert {i for i in a if "lora" in i}.isdisjoint({i for i in b if "lora" in i})


@pytest.mark.parametrize(
    ("over", "field", "text"),
    [
        ({"matrix": {"models": ["gpt-17"]}}, "spec.matrix.models[0]", "unknown model 'gpt-17'"),
        ({"matrix": {"pools": ["b300"]}}, "spec.matrix.pools[0]", "unknown pool 'b300'"),
        ({"matrix": {"types": ["pretrain"]}}, "spec.matrix.types[0]", "Input should be"),
        ({"matrix": {"seqLens": [0]}}, "spec.matrix.seqLens[0]", "greater than"),
        ({"matrix": {"exclude": [{"type": "sft-full"}, {"type": "rl-lora"}]}}, "spec.matrix", "no cases"),
        ({"matrix": {"ep": [2]}}, "spec.matrix", "mixture-of-experts"),
        ({"matrix": {"models": ["tiny-qwen3-moe"], "ep": [3]}}, "spec.matrix", "must divide"),
        ({"matrix": {"cp": [2]}}, "spec.matrix", "does not divide the 1 GPUs of pool 'h100'"),
        ({"steps": 0}, "spec.steps", "greater than or equal to 1"),
        ({"pools": []}, "spec.pools", "at least 1"),
        ({"pools": [{"name": "h100"}, {"name": "h100"}]}, "spec.pools", "duplicate pool"),
        ({"pools": [{"name": "H 100"}]}, "spec.pools[0].name", "pattern"),
        ({"bogus": 1}, "spec.bogus", "unknown field"),
        ({"batchSize": 3, "microBatch": 2}, "spec.batchSize", "multiple of microBatch"),
        ({"baseline": {"source": "configMap"}}, "spec.baseline.configMap", "configMap is required"),
        ({"matrix": {"include": [{"type": "sft-full"}]}}, "spec.matrix.include[0]", "needs at least a model"),
        # refused by the trainer's own checks, at plan time
        ({"matrix": {"seqLens": [16]}}, "spec.matrix", "too short for"),
        (
            {
                "pools": [{"name": "h100", "gpusPerNode": 4}],
                "matrix": {"models": ["tiny-qwen3-moe"], "ep": [2], "cp": [2]},
            },
            "spec.matrix",
            "--cp and --ep together are not supported",
        ),
        (
            {"pools": [{"name": "h100", "gpusPerNode": 4}], "matrix": {"cp": [4], "seqLens": [8196]}},
            "spec.matrix",
            "must be a multiple of it",
        ),
    ],
)
def test_bad_specs_name_the_field(over, field, text):
    with pytest.raises(SpecError) as e:
        plan(spec(**over))
    assert e.value.field == field
    assert text in str(e.value)


def test_parse_spec_rejects_non_objects():
    with pytest.raises(SpecError, match="must be an object"):
        parse_spec(["not", "a", "spec"])


def test_trainer_args_survive_torchrun_parsing():
    # torchrun parses everything after `-m MODULE` too and expands abbreviations: no trainer option may be a
    # prefix of one of torchrun's (`--run` once was: "ambiguous option: --run could match --run-path")
    from torch.distributed.run import get_args_parser

    case = plan(spec())[1]
    args = get_args_parser().parse_args(
        [
            "--standalone",
            "--nproc-per-node=1",
            "-m",
            "trainbench.trainer",
            *case.trainer_args(run="r1", metrics_port=9400),
        ]
    )
    assert args.training_script == "trainbench.trainer"
    assert args.training_script_args == case.trainer_args(run="r1", metrics_port=9400)


def test_repeats_are_interleaved_units_of_their_own():
    spec = {
        "pools": [{"name": "cpu", "hardware": "CPU"}],
        "matrix": {"models": ["tiny-qwen3", "tiny-llama"], "types": ["sft-full"], "seqLens": [256]},
    }
    cases = plan(parse_spec(spec))
    a, b = cases
    units = with_repeats(cases, 2, confirm={b.id: 2})
    assert [(u.base_id, u.repeat, u.confirm) for u in units] == [
        (a.id, 1, False),
        (b.id, 1, False),
        (a.id, 2, False),
        (b.id, 2, False),
        (b.id, 3, True),
        (b.id, 4, True),
    ]
    assert units[0] is a and units[2].id == f"{a.id}-r2" and len({u.id for u in units}) == 6
    grouped = group_outcomes(units, {u.id: {"phase": "Succeeded", "n": i} for i, u in enumerate(units)})
    assert [o["n"] for o in grouped[b.id]["repeats"]] == [1, 3, 4, 5]
    assert [o["confirm"] for o in grouped[b.id]["repeats"]] == [False, False, True, True]
    assert with_repeats(cases, 1) == cases
