# The equal-budget experiment (dkolib/study/protocol.py states the protocol).
# Per seed, a calibration job (the budget unit: the main chain's DKO run, timed on this
# machine) and a stage-1 job (snapshots), then one single-threaded job per (method,
# engine, seed) -- E2E from scratch starts as soon as the calibration is done --, then
# the summary. Every job holds one cpu_slot, so at most as many timed jobs
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
    return {"lr": f"{EB}/{m}_{g}_{s}.csv"}


def eb_lr_arg(wildcards, input):
    return f"--lr-from {input.lr}" if hasattr(input, "lr") else ""



rule eb_calibrate:
    priority: 20
    input:
        data=expand(f"{DATA}/{{split}}.npz", split=SPLITS),
        # the budget unit C_ref is the main chain's DKO run: its stage-1 (plateau) and stage-2 step counts
        main_stage1=f"{R}/stage1/log.csv",
        main_dko=f"{R}/dko/summary.csv",
    output:
        table=f"{EB}/calibration_{{seed}}.csv",
        budgets=f"{EB}/stage1_{{seed}}/budgets.json",
    params:
        config=cfg_hash(*OPT, "budget"),
    wildcard_constraints:
        seed=r"\d+",
    resources:
        cpu_slots=1,
    benchmark:
        f"{BENCH}/eb_calibrate.{{seed}}.tsv"
    shell:
        f"python scripts/run_equal_budget.py --profile {PROFILE} --method calibrate --seed {{wildcards.seed}} "
        f"--stage1-dir {EB}/stage1_{{wildcards.seed}} --out {{output.table}} --threads 1 --no-progress"


rule eb_stage1:
    input:
        budgets=f"{EB}/stage1_{{seed}}/budgets.json",
    output:
        table=f"{EB}/stage1_{{seed}}.csv",
    params:
        config=cfg_hash(*OPT, "budget"),
    wildcard_constraints:
        seed=r"\d+",
    resources:
        cpu_slots=1,
    benchmark:
        f"{BENCH}/eb_stage1.{{seed}}.tsv"
    shell:
        f"python scripts/run_equal_budget.py --profile {PROFILE} --method stage1 --seed {{wildcards.seed}} "
        f"--stage1-dir {EB}/stage1_{{wildcards.seed}} --out {{output.table}} --threads 1 --no-progress"


def eb_stage1_input(wildcards):
    """E2E from scratch needs only the budgets; every other method reads stage-1 snapshots."""
    inputs = {"budgets": f"{EB}/stage1_{wildcards.seed}/budgets.json"}
    if wildcards.method != "e2e_scratch":
        inputs["stage1"] = f"{EB}/stage1_{wildcards.seed}.csv"
    return inputs


rule eb_method:
    input:
        unpack(lambda w: eb_lr_from(w.method, w.engine, w.seed)),
        unpack(eb_stage1_input),
    output:
        f"{EB}/{{method}}_{{engine}}_{{seed}}.csv",
    params:
        lr_from=eb_lr_arg,
        config=cfg_hash(*OPT, "budget"),
    wildcard_constraints:
        method="|".join(m for m in EB_METHODS if m != "e2e_scratch"),
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


# E2E from scratch is the study's critical path (the first seed searches the learning rate, the
# others wait for it, and each runs to the top of the ladder): the same job as eb_method, started
# as soon as its seed's budget unit is calibrated, ahead of everything else.
use rule eb_method as eb_e2e with:
    priority: 20
    wildcard_constraints:
        method="e2e_scratch",
        engine="fast|reference",
        seed=r"\d+",
    benchmark:
        f"{BENCH}/eb_e2e.{{method}}_{{engine}}_{{seed}}.tsv"


rule eb_summary:
    input:
        runs=EB_OUTPUTS,
        metrics=f"{R}/stage1/metrics.csv",  # the constant predictor and the electronic network, drawn as lines
        budgets=expand(f"{EB}/stage1_{{seed}}/budgets.json", seed=EB_SEEDS),  # every row's spend is checked
    params:
        stops_early="--stage2-stops-early" if int(CFG.dko.stop_window) > 0 else "",
    output:
        runs=f"{R}/equal_budget.csv",
        summary=f"{R}/equal_budget_summary.csv",
        tta=f"{R}/time_to_accuracy.csv",
    benchmark:
        f"{BENCH}/eb_summary.tsv"
    shell:
        f"python scripts/summarize_equal_budget.py --inputs {{input.runs}} --out {{output.runs}} "
        f"--summary {{output.summary}} --time-to-accuracy {{output.tta}} --stage1-metrics {{input.metrics}} "
        f"--figures {FIG} --budgets {{input.budgets}} {{params.stops_early}}"
