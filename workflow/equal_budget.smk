# The equal-budget experiment (dkolib/study/protocol.py states the protocol).
# One single-threaded stage-1 job per seed (calibration of the budget unit,
# stage-1 snapshots), then one single-threaded job per (method, engine, seed),
# then the summary. Every job holds one cpu_slot, so at most as many timed jobs
# run as there are cores.

from dkolib.study.protocol import METHODS, lr_source, settings_from_config
from dkolib.study.pipeline import equal_budget_jobs

EB = f"{R}/equal_budget"
EB_SEEDS = [str(s) for s in CFG.budget.seeds]
EB_METHODS = list(METHODS)
EB_JOBS = equal_budget_jobs(CFG)  # (method, engine) pairs, see dkolib.study.pipeline
EB_OUTPUTS = [f"{EB}/{m}_{g}_{s}.csv" for (m, g) in EB_JOBS for s in EB_SEEDS]
EB_SETTINGS = settings_from_config(CFG)


def eb_lr_from(method, engine, seed):
    """{'lr': CSV of the job whose selected lr multiplier this job reuses}, or {} (it searches itself)."""
    src = lr_source(EB_SETTINGS, method, engine, int(seed))
    if src is None:
        return {}
    m, g, s = src
    return {"lr": f"{EB}/stage1_{s}.csv" if m == "stage1" else f"{EB}/{m}_{g}_{s}.csv"}


def eb_lr_arg(wildcards, input):
    return f"--lr-from {input.lr}" if hasattr(input, "lr") else ""



rule eb_stage1:
    input:
        unpack(lambda w: eb_lr_from("stage1", None, w.seed)),
        data=expand(f"{DATA}/{{split}}.npz", split=SPLITS),
    output:
        table=f"{EB}/stage1_{{seed}}.csv",
        budgets=f"{EB}/stage1_{{seed}}/budgets.json",
    params:
        lr_from=eb_lr_arg,
        config=cfg_hash(*OPT, "budget"),
    wildcard_constraints:
        seed=r"\d+",
    resources:
        cpu_slots=1,
    benchmark:
        f"{BENCH}/eb_stage1.{{seed}}.tsv"
    shell:
        f"python scripts/run_equal_budget.py --profile {PROFILE} --method stage1 --seed {{wildcards.seed}} "
        f"--stage1-dir {EB}/stage1_{{wildcards.seed}} --out {{output.table}} --threads 1 --no-progress "
        "{params.lr_from}"


rule eb_method:
    input:
        unpack(lambda w: eb_lr_from(w.method, w.engine, w.seed)),
        stage1=f"{EB}/stage1_{{seed}}.csv",
        budgets=f"{EB}/stage1_{{seed}}/budgets.json",
    output:
        f"{EB}/{{method}}_{{engine}}_{{seed}}.csv",
    params:
        lr_from=eb_lr_arg,
        config=cfg_hash(*OPT, "budget"),
    wildcard_constraints:
        method="|".join(EB_METHODS),
        engine="fast|reference",
        seed=r"\d+",
    resources:
        cpu_slots=1,
    benchmark:
        f"{BENCH}/eb_method.{{method}}_{{engine}}_{{seed}}.tsv"
    shell:
        f"python scripts/run_equal_budget.py --profile {PROFILE} --method {{wildcards.method}} "
        f"--engine {{wildcards.engine}} --seed {{wildcards.seed}} --stage1-dir {EB}/stage1_{{wildcards.seed}} "
        f"--out {{output}} --threads 1 --no-progress {{params.lr_from}}"


rule eb_summary:
    input:
        runs=EB_OUTPUTS,
        metrics=f"{R}/stage1/metrics.csv",  # the constant predictor and the electronic network, drawn as lines
    output:
        runs=f"{R}/equal_budget.csv",
        summary=f"{R}/equal_budget_summary.csv",
        tta=f"{R}/time_to_accuracy.csv",
    benchmark:
        f"{BENCH}/eb_summary.tsv"
    shell:
        f"python scripts/summarize_equal_budget.py --inputs {{input.runs}} --out {{output.runs}} "
        f"--summary {{output.summary}} --time-to-accuracy {{output.tta}} --stage1-metrics {{input.metrics}} "
        f"--figures {FIG}"
