# The whole study, from meta-atoms and data to figures, tables and executed notebooks.
#
#   snakemake --cores 4                         # default profile (2-core CPU)
#   snakemake --cores 4 --config profile=paper  # the paper's sizes (GPU)
#   snakemake -n                                # what would run
#
# Timed jobs (anything whose wall-clock time is a result) declare the CPU
# threads they use as the resource `cpu_slots`; profiles/default caps the sum
# at the machine's cores, so a timed job never shares a core with another job.
# Priorities follow the critical path: the equal-budget study's calibration and its
# E2E-from-scratch runs first (20; they need the main chain's stage 1 and stage 2),
# then the main chain (stage 1 -> DKO / E2E -> evaluation, 10), then the rest.
#
# Every rule that does work has a `benchmark:` file, results/<profile>/benchmarks/
# <rule>[.<wildcards>].tsv (wall s, CPU s, peak memory of the job); the onstart /
# onsuccess / onerror handlers keep the run's start and end beside them (run.json).
# `python scripts/dag_timing.py` turns both into dag_timing.csv and dag_jobs.csv.

from pathlib import Path
from dkolib.config import load_config
from dkolib.cpupaths import pin_cpu_code_paths
from dkolib.study.dagtiming import record_run

# Every job computes on the same vector code paths on any x86-64 CPU, so a run reproduces
# the committed results bit for bit on another machine (dkolib/cpupaths.py).
pin_cpu_code_paths()

PROFILE = config.get("profile", "default")
CFG = load_config(PROFILE)
R = f"results/{PROFILE}"
DATA = f"cache/data/{PROFILE}"
FIG = f"figures/{PROFILE}"
BENCH = f"{R}/benchmarks"
T = CFG.threads
# the sharded jobs (stage 2, E2E) run under torchrun with more than one process (dkolib.distributed)
NPROC = int(config.get("processes", CFG.processes))
if NPROC < 1:
    raise ValueError(f"processes must be >= 1, got {NPROC}")
LAUNCH = "python" if NPROC == 1 else f"torchrun --standalone --nproc_per_node {NPROC}"
GPUS = NPROC if CFG.device == "cuda" else 0
NOTEBOOKS = ["01_optics", "02_electronic_network", "03_dko_synthesis", "04_e2e_baseline",
             "05_equal_budget", "06_figures", "07_tolerances", "08_your_own_optics", "09_resnet18_example",
             "10_whole_sensor"]
SPLITS = ["train", "val", "test"]


def cfg_hash(*sections):
    """Digest of the config sections a rule depends on: editing them reruns the rule."""
    import hashlib
    import json

    d = CFG.to_dict()
    return hashlib.sha1(json.dumps({k: d[k] for k in sections}, sort_keys=True).encode()).hexdigest()[:12]


def profiles_hash(profiles, sections):
    """Digest of ``sections`` of several profiles' configs (rules that measure more than one)."""
    import hashlib
    import json

    d = {p: {k: load_config(p).to_dict()[k] for k in sections} for p in profiles}
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def files_hash(*paths):
    """Digest of source files a rule's results depend on beyond its script's command line."""
    import hashlib

    h = hashlib.sha1()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:12]


NET = ("seed", "threads", "data", "model", "stage1")
OPT = NET + ("optics", "dko", "e2e")
# the back ends fine-tuned on noisy whole-sensor images by the sensor study
SENSOR_TUNED = [f"{R}/{d}_finetune_sensor/model.pt" for d in CFG.sensor.finetune_designs]


# The run's wall time (not run for dry runs, nor when there is nothing to do).
onstart:
    record_run(BENCH, "start")


onsuccess:
    record_run(BENCH, "success")


onerror:
    record_run(BENCH, "error")


wildcard_constraints:
    nb=r"\d\d_[a-z0-9_]+",


rule all:
    input:
        # the dataset cache is not committed: on a fresh clone it is missing, so every
        # result of the profile downstream of it is recomputed (the committed results are
        # what such a run reproduces; scripts/compare_results.py checks it)
        expand(f"{DATA}/{{split}}.npz", split=SPLITS),
        expand(f"{R}/notebooks/{{nb}}.ipynb", nb=NOTEBOOKS),
        f"{R}/physical_eval.csv",
        f"{R}/dko/synthesis_study.csv",
        f"{R}/dko/operating_point.csv",
        f"{R}/layout/summary.csv",
        f"{R}/tolerances.csv",
        f"{R}/sensor/sensor_eval.csv",
        f"{R}/dko/crosstalk.csv",
        f"{R}/equal_budget.csv",
        "results/costs.csv",
        "results/benchmarks/psf_engines.csv",
        "results/benchmarks/training_throughput.csv",
        f"{R}/readme_results.md",
        # the stage-1 schedules are the default profile's (scripts/stage1_convergence.py)
        *([f"{R}/stage1/convergence.csv"] if PROFILE == "default" else []),


# Everything but the equal-budget study, the run's longest part: stage 1, DKO, its fine-tunes,
# E2E (its own step count, and at 1x and 4x the DKO run's FLOPs), the physical evaluation, the stage-2 studies, the tolerance study, the sensor and crosstalk studies and the layout.
rule main_chain:
    input:
        # as in `all`: the uncommitted dataset cache makes a fresh clone recompute the chain
        expand(f"{DATA}/{{split}}.npz", split=SPLITS),
        f"{R}/physical_eval.csv",
        f"{R}/dko/synthesis_study.csv",
        f"{R}/dko/operating_point.csv",
        f"{R}/layout/summary.csv",
        f"{R}/tolerances.csv",
        f"{R}/sensor/sensor_eval.csv",
        f"{R}/dko/crosstalk.csv",


# ---------------------------------------------------------------- optics inputs
# The meta-atom library (RCWA, ~50 min on one core) is committed; rebuild it
# explicitly with `snakemake --cores 1 metaatom_library --forcerun metaatom_library`.
rule metaatom_library:
    output:
        table="dkolib/optics/data/metaatom_library.csv",
        convergence="results/metaatoms/convergence.csv",
    resources:
        cpu_slots=1,
    benchmark:
        f"{BENCH}/metaatom_library.tsv"
    shell:
        "OMP_NUM_THREADS=1 python scripts/build_metaatom_library.py --out {output.table} "
        "--convergence {output.convergence}"


rule bench_psf:
    output:
        "results/benchmarks/psf_engines.csv",
        "results/benchmarks/psf_paper_array.csv",
    threads: 2
    resources:
        cpu_slots=2,
    benchmark:
        f"{BENCH}/bench_psf.tsv"
    shell:
        "python scripts/bench_psf_engines.py"


rule bench_sensor:
    # one whole-sensor PSF per wavelength and one noisy frame, at the default and the paper's size; run on
    # request (`snakemake --cores 1 bench_sensor`): the README reads its CSV where it exists
    params:
        config=profiles_hash(["default", "paper"], ("optics", "model", "data", "sensor")),
        code=files_hash("scripts/bench_sensor.py", "dkolib/optics/sensor_psf.py", "dkolib/optics/sensor.py"),
    output:
        "results/benchmarks/sensor_cost.csv",
    resources:
        cpu_slots=1,
    benchmark:
        f"{BENCH}/bench_sensor.tsv"
    shell:
        "python scripts/bench_sensor.py --sizes default paper --threads 1 --repeats 1 --out {output}"


rule bench_training:
    output:
        "results/benchmarks/training_throughput.csv",
    threads: 2
    resources:
        cpu_slots=2,
    benchmark:
        f"{BENCH}/bench_training.tsv"
    shell:
        "python scripts/bench_training.py --profile smoke --profile default --steps 20 --threads 2"


rule costs:
    params:
        # the default and paper profiles' optics, and the code that simulates them: a costs table
        # measured under another cell model or engine is stale
        config=profiles_hash(["default", "paper"], ("optics", "model", "data", "e2e", "dko")),
        code=files_hash("scripts/measure_costs.py", "dkolib/optics/propagation.py", "dkolib/optics/grids.py",
                        "dkolib/optics/metasurface.py"),
    output:
        "results/costs.csv",
    resources:
        cpu_slots=1,
    benchmark:
        f"{BENCH}/costs.tsv"
    shell:
        "python scripts/measure_costs.py --out {output} --threads 1"


# ---------------------------------------------------------------- data and stage 1
rule data:
    params:
        config=cfg_hash("data"),
    output:
        expand(f"{DATA}/{{split}}.npz", split=SPLITS),
    resources:
        cpu_slots=1,
    benchmark:
        f"{BENCH}/data.tsv"
    shell:
        f"python scripts/make_dataset.py --profile {PROFILE} --out {DATA} --quiet"


rule stage1:
    priority: 10
    params:
        config=cfg_hash(*NET),
    input:
        expand(f"{DATA}/{{split}}.npz", split=SPLITS),
    output:
        model=f"{R}/stage1/model.pt",
        log=f"{R}/stage1/log.csv",
    threads: T
    resources:
        cpu_slots=T,
    benchmark:
        f"{BENCH}/stage1.tsv"
    shell:
        f"python scripts/train_stage1.py --profile {PROFILE} --out {R}/stage1 --quiet --set threads={{threads}}"


rule stage1_convergence:
    # is the electronic reference a ceiling? the stage-1 network trained from scratch under other
    # schedules (longer, step decay), chosen on validation, its test AbsRel beside the main chain's
    params:
        config=cfg_hash(*NET),
    input:
        data=expand(f"{DATA}/{{split}}.npz", split=SPLITS),
        log=f"{R}/stage1/log.csv",
        metrics=f"{R}/stage1/metrics.csv",
    output:
        csv=f"{R}/stage1/convergence.csv",
        fig=f"{FIG}/stage1_convergence.png",
    threads: T
    resources:
        cpu_slots=T,
    benchmark:
        f"{BENCH}/stage1_convergence.tsv"
    shell:
        f"python scripts/stage1_convergence.py --profile {PROFILE} --quiet --set threads={{threads}} "
        "--out {output.csv}"


# ---------------------------------------------------------------- DKO and E2E designs
rule dko:
    priority: 10
    params:
        config=cfg_hash(*OPT),
    input:
        f"{R}/stage1/model.pt",
    output:
        model=f"{R}/dko/model.pt",
        fidelity=f"{R}/dko/fidelity.csv",
        summary=f"{R}/dko/summary.csv",
        history=f"{R}/dko/history.csv",
    threads: T * NPROC
    resources:
        cpu_slots=T * NPROC,
        gpu=GPUS,
    benchmark:
        f"{BENCH}/dko.tsv"
    shell:
        f"{LAUNCH} scripts/run_dko.py --profile {PROFILE} --stage1 {{input}} --out {R}/dko "
        f"--threads {T} --no-progress"


rule synthesis_study:
    # stage-2 settings (init x lr, leakage weight / paper loss, smoother phase) on two selection channels,
    # and the profile's own setting run on to 5x its cap
    params:
        config=cfg_hash(*OPT),
    input:
        f"{R}/stage1/model.pt",
    output:
        table=f"{R}/dko/synthesis_study.csv",
        figure=f"{FIG}/dko_pareto.png",
    threads: T
    resources:
        cpu_slots=T,
    benchmark:
        f"{BENCH}/synthesis_study.tsv"
    shell:
        f"python scripts/synthesis_study.py --profile {PROFILE} --stage1 {{input}} --threads {{threads}} "
        f"--milestones {max(1, CFG.dko.steps // 2)},{CFG.dko.steps} "
        f"--step-milestones {int(2.5 * CFG.dko.steps)},{5 * CFG.dko.steps}"


rule dko_finetune:
    priority: 10
    params:
        config=cfg_hash(*OPT),
    input:
        f"{R}/dko/model.pt",
    output:
        model=f"{R}/dko_finetune/model.pt",
        log=f"{R}/dko_finetune/log.csv",
    threads: T
    resources:
        cpu_slots=T,
    benchmark:
        f"{BENCH}/dko_finetune.tsv"
    shell:
        f"python scripts/finetune_dko.py --profile {PROFILE} --dko {{input}} --out {R}/dko_finetune "
        f"--quiet --set threads={{threads}}"


rule dko_finetune_psf:
    priority: 10
    params:
        config=cfg_hash(*OPT),
    input:
        f"{R}/dko/model.pt",
    output:
        model=f"{R}/dko_finetune_psf/model.pt",
        log=f"{R}/dko_finetune_psf/log.csv",
    threads: T
    resources:
        cpu_slots=T,
    benchmark:
        f"{BENCH}/dko_finetune_psf.tsv"
    shell:
        f"python scripts/finetune_dko.py --profile {PROFILE} --dko {{input}} --out {R}/dko_finetune_psf "
        f"--mode full_psf --quiet --set threads={{threads}}"


rule dko_finetune_noise:
    priority: 10
    params:
        config=cfg_hash(*OPT),
    input:
        f"{R}/dko/model.pt",
    output:
        model=f"{R}/dko_finetune_noise/model.pt",
        log=f"{R}/dko_finetune_noise/log.csv",
    threads: T
    resources:
        cpu_slots=T,
    benchmark:
        f"{BENCH}/dko_finetune_noise.tsv"
    shell:
        f"python scripts/finetune_dko.py --profile {PROFILE} --dko {{input}} --out {R}/dko_finetune_noise "
        f"--mode full_psf_noise --quiet --set threads={{threads}}"


rule e2e:
    priority: 10
    params:
        config=cfg_hash(*OPT),
    input:
        expand(f"{DATA}/{{split}}.npz", split=SPLITS),
    output:
        model=f"{R}/e2e/model.pt",
        log=f"{R}/e2e/log.csv",
    threads: T * NPROC
    resources:
        cpu_slots=T * NPROC,
        gpu=GPUS,
    benchmark:
        f"{BENCH}/e2e.tsv"
    shell:
        f"{LAUNCH} scripts/train_e2e.py --profile {PROFILE} --variant joint --out {R}/e2e --quiet "
        f"--set threads={T}"


rule e2e_budget:
    # the E2E baseline at 1x and 4x C_ref (the main chain's DKO run, stage 1 + stage 2), constant
    # learning rate as in the equal-budget study; the 4x run continues the 1x run's checkpoint
    priority: 10
    params:
        config=cfg_hash(*OPT),
        start=lambda wc: "" if wc.fraction == "1" else f"--start-from {R}/e2e_1x/ckpt.pt",
    input:
        data=expand(f"{DATA}/{{split}}.npz", split=SPLITS),
        dko=f"{R}/dko/model.pt",
        start=lambda wc: [] if wc.fraction == "1" else [f"{R}/e2e_1x/ckpt.pt"],
    output:
        model=f"{R}/e2e_{{fraction}}x/model.pt",
        ckpt=f"{R}/e2e_{{fraction}}x/ckpt.pt",
        log=f"{R}/e2e_{{fraction}}x/log.csv",
    wildcard_constraints:
        fraction="1|4",
    threads: T * NPROC
    resources:
        cpu_slots=T * NPROC,
        gpu=GPUS,
    benchmark:
        f"{BENCH}/e2e_budget.{{fraction}}.tsv"
    shell:
        f"{LAUNCH} scripts/train_e2e.py --profile {PROFILE} --variant joint --out {R}/e2e_{{wildcards.fraction}}x "
        f"--quiet --set threads={T} --budget-of {{input.dko}} --budget-fraction {{wildcards.fraction}} "
        "{params.start}"


rule physical_eval:
    # every design in the paper's crop, the whole PSF (with noise) and on the whole sensor (with noise); the
    # sensor study runs first: it computes the whole-sensor PSFs (cached) and the sensor-tuned back ends
    priority: 10
    params:
        config=cfg_hash(*OPT, "sensor"),
        tuned=" ".join(f"{d}_finetune_sensor={R}/{d}_finetune_sensor/model.pt" for d in CFG.sensor.finetune_designs),
    input:
        stage1=f"{R}/stage1/model.pt",
        dko=f"{R}/dko/model.pt",
        dko_ft=f"{R}/dko_finetune/model.pt",
        dko_ft_psf=f"{R}/dko_finetune_psf/model.pt",
        dko_ft_noise=f"{R}/dko_finetune_noise/model.pt",
        e2e=f"{R}/e2e/model.pt",
        e2e_1x=f"{R}/e2e_1x/model.pt",
        e2e_4x=f"{R}/e2e_4x/model.pt",
        sensor=f"{R}/sensor/sensor_eval.csv",
        tuned=SENSOR_TUNED,
    output:
        f"{R}/physical_eval.csv",
    threads: T
    resources:
        cpu_slots=T,
    benchmark:
        f"{BENCH}/physical_eval.tsv"
    shell:
        f"python scripts/evaluate_designs.py --profile {PROFILE} --out {{output}} --threads {{threads}} "
        "--evals crop full_psf full_psf_noise sensor sensor_noise "
        "--design electronic={input.stage1} dko={input.dko} dko_finetune={input.dko_ft} "
        "dko_finetune_psf={input.dko_ft_psf} dko_finetune_noise={input.dko_ft_noise} e2e={input.e2e} "
        "e2e_1x={input.e2e_1x} e2e_4x={input.e2e_4x} {params.tuned} --ideal-optics {input.stage1}"


rule operating_point:
    # stage 2's leakage weight chosen by validation accuracy under sensor noise
    params:
        config=cfg_hash(*OPT),
    input:
        f"{R}/stage1/model.pt",
    output:
        csv=f"{R}/dko/operating_point.csv",
        fig=f"{FIG}/dko_operating_point.png",
    threads: T
    resources:
        cpu_slots=T,
    benchmark:
        f"{BENCH}/operating_point.tsv"
    shell:
        f"python scripts/operating_point.py --profile {PROFILE} --stage1 {{input}} --threads {{threads}} "
        f"--out {{output.csv}} --figure {FIG}/dko_operating_point"


rule crosstalk_study:
    # stage 2 against crosstalk: each leakage weight's design on the whole sensor (light in the kernel, own
    # region, neighbours' regions) beside its kernel fidelity; the operating point's stage-2 runs are reused
    params:
        config=cfg_hash(*OPT, "sensor"),
    input:
        stage1=f"{R}/stage1/model.pt",
        dko=f"{R}/dko/model.pt",
        # runs after the operating point (whose stage-2 runs it reuses) and the sensor study (whose cached
        # PSFs of the profile's design it reuses), never beside them
        operating=f"{R}/dko/operating_point.csv",
        sensor=f"{R}/sensor/sensor_eval.csv",
    output:
        csv=f"{R}/dko/crosstalk.csv",
        fig=f"{FIG}/dko_crosstalk.png",
    threads: T
    resources:
        cpu_slots=T,
    benchmark:
        f"{BENCH}/crosstalk_study.tsv"
    shell:
        f"python scripts/crosstalk_study.py --profile {PROFILE} --stage1 {{input.stage1}} --threads {{threads}} "
        f"--quiet --out {{output.csv}} --figure {FIG}/dko_crosstalk"


rule tolerances:
    # physical AbsRel of each design under fabrication, assembly and sensor errors
    params:
        config=cfg_hash(*OPT, "tolerances"),
    input:
        stage1=f"{R}/stage1/model.pt",
        dko=f"{R}/dko/model.pt",
        dko_ft=f"{R}/dko_finetune/model.pt",
        dko_ft_noise=f"{R}/dko_finetune_noise/model.pt",
        e2e=f"{R}/e2e/model.pt",
        e2e_4x=f"{R}/e2e_4x/model.pt",
    output:
        f"{R}/tolerances.csv",
    threads: T
    resources:
        cpu_slots=T,
    benchmark:
        f"{BENCH}/tolerances.tsv"
    shell:
        f"python scripts/tolerance_study.py --profile {PROFILE} --threads {{threads}} --quiet "
        "--design dko={input.dko} dko_finetune={input.dko_ft} dko_finetune_noise={input.dko_ft_noise} "
        "e2e={input.e2e} e2e_4x={input.e2e_4x} --stage1 {input.stage1} "
        "--out {output}"


rule sensor_study:
    # every design read on the whole sensor: halo, crosstalk, noise on the sum (dkolib.optics.sensor), and
    # the back ends of sensor.finetune_designs (DKO's and the 4x E2E's) fine-tuned on noisy whole-sensor images
    params:
        config=cfg_hash(*OPT, "sensor"),
        designs=" ".join(f"{d}={R}/{d}/model.pt" for d in CFG.sensor.designs),
        finetune=" ".join(f"{d}={R}/{d}_finetune_sensor" for d in CFG.sensor.finetune_designs),
    input:
        [f"{R}/stage1/model.pt"] + [f"{R}/{d}/model.pt" for d in CFG.sensor.designs],
    output:
        [f"{R}/sensor/light_budget.csv", f"{R}/sensor/sensor_eval.csv", f"{R}/sensor/cost.csv",
         f"{FIG}/sensor_frame.png"] + SENSOR_TUNED,
    threads: T
    resources:
        cpu_slots=T,
    benchmark:
        f"{BENCH}/sensor_study.tsv"
    shell:
        f"python scripts/sensor_study.py --profile {PROFILE} --stage1 {R}/stage1/model.pt --threads {{threads}} "
        "--no-progress --design {params.designs} --finetune {params.finetune}"


rule layout:
    # the mask of the DKO design's first two metasurfaces (GDSII) and the cost of the whole array's;
    # the GDS and radii are regenerated, only summary.csv is committed
    params:
        config=cfg_hash(*OPT),
    input:
        f"{R}/dko/model.pt",
    output:
        gds=f"{R}/layout/dko_subset.gds",
        radii=f"{R}/layout/dko_subset_radii.csv",
        summary=f"{R}/layout/summary.csv",
    benchmark:
        f"{BENCH}/layout.tsv"
    shell:
        f"python scripts/export_layout.py --profile {PROFILE} --design {R}/dko "
        f"--elements 0 1 --out-gds {{output.gds}} --out-radii {{output.radii}} "
        f"--out-summary {{output.summary}} --no-progress"


# ---------------------------------------------------------------- equal-budget experiment
include: "workflow/equal_budget.smk"


# ---------------------------------------------------------------- notebooks and README
NB_INPUTS = {
    "01_optics": ["results/benchmarks/psf_engines.csv"],
    "02_electronic_network": [f"{R}/stage1/model.pt"],
    "03_dko_synthesis": [f"{R}/dko/model.pt", f"{R}/dko/fidelity.csv"],
    "04_e2e_baseline": [f"{R}/e2e/model.pt", f"{R}/physical_eval.csv", f"{R}/stage1/metrics.csv"],
    "05_equal_budget": [f"{R}/equal_budget.csv", f"{R}/equal_budget_summary.csv", f"{R}/time_to_accuracy.csv",
                        f"{R}/stage1/metrics.csv"],
    "06_figures": [f"{R}/physical_eval.csv", f"{R}/equal_budget.csv", "results/costs.csv",
                   f"{R}/notebooks/02_electronic_network.ipynb"],
    "07_tolerances": [f"{R}/tolerances.csv"],
    "08_your_own_optics": [],
    "09_resnet18_example": [],  # makes its own data; its optics are the profile's (default: OpticalConv2d's own)
    "10_whole_sensor": [f"{R}/sensor/sensor_eval.csv", f"{R}/sensor/light_budget.csv", f"{R}/sensor/cost.csv",
                        f"{R}/dko/crosstalk.csv"],
}


ruleorder: notebook_02 > notebook


rule notebook_02:
    input:
        nb="notebooks/02_electronic_network.ipynb",
        deps=NB_INPUTS["02_electronic_network"],
    output:
        nb=f"{R}/notebooks/02_electronic_network.ipynb",
        metrics=f"{R}/stage1/metrics.csv",
    threads: T
    resources:
        cpu_slots=T,
    benchmark:
        f"{BENCH}/notebook_02.tsv"
    shell:
        f"papermill {{input.nb}} {{output.nb}} -p profile {PROFILE} -k python3 --cwd notebooks --no-progress-bar "
        f"&& python -m dkolib.study.nbclean {{output.nb}}"


rule notebook:
    input:
        nb="notebooks/{nb}.ipynb",
        deps=lambda wc: NB_INPUTS[wc.nb],
    output:
        f"{R}/notebooks/{{nb}}.ipynb",
    threads: T
    resources:
        cpu_slots=T,
    benchmark:
        f"{BENCH}/notebook.{{nb}}.tsv"
    shell:
        f"papermill {{input.nb}} {{output}} -p profile {PROFILE} -k python3 --cwd notebooks --no-progress-bar "
        f"&& python -m dkolib.study.nbclean {{output}}"


rule readme_results:
    input:
        f"{R}/physical_eval.csv",
        f"{R}/dko/synthesis_study.csv",
        f"{R}/dko/operating_point.csv",
        f"{R}/tolerances.csv",
        f"{R}/layout/summary.csv",
        f"{R}/sensor/sensor_eval.csv",
        f"{R}/dko/crosstalk.csv",
        f"{R}/equal_budget_summary.csv",
        f"{R}/time_to_accuracy.csv",
        "results/costs.csv",
        f"{R}/notebooks/06_figures.ipynb",
        *([f"{R}/stage1/convergence.csv"] if PROFILE == "default" else []),
    output:
        f"{R}/readme_results.md",
    benchmark:
        f"{BENCH}/readme_results.tsv"
    shell:
        # only the default profile's results are the README's; other profiles write the section alone
        f"python scripts/render_readme_results.py --profile {PROFILE} --out {{output}}"
        + (" --readme README.md" if PROFILE == "default" else "")
