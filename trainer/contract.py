"""The trainer <-> operator contract: names every other part of trainbench reads.

Torch-free on purpose: the operator, the report and the Helm chart tests import it. One place for each
fact: metric names, label names, result keys, states, exit codes, benchmark types and option values.
"""

from __future__ import annotations

RESULT_SCHEMA = "trainbench.dev/result/v1"

# --- benchmark options -------------------------------------------------------------------------
BENCH_TYPES = ("sft-full", "rl-full", "rl-lora", "generate", "verify")
TRAIN_TYPES = ("sft-full", "rl-full", "rl-lora")  # the types that train (bench.py); the others: generate.py, verify.py
LORA_TYPES = ("rl-lora",)
# --type calibrate (trainer/calibrate.py): a pool's measured ceilings (bf16 GEMM and attention TFLOP/s of one GPU);
# not a matrix type: the planner adds one case per pool when spec.calibrate is set
CALIBRATE_TYPE = "calibrate"
CALIBRATE_SEQ_LEN = 16384  # the attention sequence a planned calibration case measures (GPU; the CPU scales down)
SINGLE_GPU_TYPES = ("generate", "verify")  # run as one process on one GPU of the pool (the planner asks for 1 GPU)
GENERATE_BATCH_SIZES = (1, 8, 32, 128)  # type generate: default decode batch sizes
GENERATE_NEW_TOKENS = 128  # type generate: default tokens generated per sequence
VERIFY_SAMPLES = 8  # type verify: default samples per prompt (k of pass@k up to this)
MICRO_BATCH_AUTO = "auto"  # --micro-batch auto: the largest micro-batch that fits (autobatch.py)
AC_MODES = ("none", "recompute", "selective", "offload", "auto")
ATTN_BACKENDS = (
    "auto",
    "sdpa",  # let torch choose among its SDPA backends
    "sdpa-cudnn",
    "sdpa-flash",
    "sdpa-efficient",
    "sdpa-math",
    "flex",
    "varlen",  # torch.nn.attention.varlen (FlashAttention-2 varlen inside torch >= 2.10; fast impl only)
    "fa2",
    "fa3",
    "fa4",
    "eager",
)
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# --- exit codes ----------------------------------------------------------------------------------
EXIT_OK = 0
EXIT_ERROR = 1  # anything unexpected (traceback printed)
EXIT_BAD_CONFIG = 2  # the configuration cannot run (unknown model, bad shapes, ...): one-line reason
EXIT_OOM = 3  # the device ran out of memory: one-line reason

EXIT_REASONS = {EXIT_BAD_CONFIG: "BadConfig", EXIT_OOM: "OutOfMemory"}

# --- files -----------------------------------------------------------------------------------------
TERMINATION_LOG = "/dev/termination-log"
RESULT_LINE_PREFIX = "TRAINBENCH_RESULT "  # the last stdout line: prefix + compact JSON
METRICS_PORT_LINE_PREFIX = "TRAINBENCH_METRICS_PORT "  # rank 0 prints prefix + port before step 1

# --- Prometheus metrics (rank 0 serves them on METRICS_PORT) -----------------------------------------
METRICS_PORT = 9400
LABELS = ("run", "case", "model", "type", "pool")

M_STEP = "trainbench_step"  # gauge: the last finished step (1-based)
M_STEPS_TOTAL = "trainbench_steps_total_planned"  # gauge: warmup + measured steps
M_STEP_TIME = "trainbench_step_time_seconds"  # gauge: last step's wall time
M_TPS = "trainbench_tokens_per_second"  # gauge: global tokens/s of the last step
M_MFU = "trainbench_mfu_percent"  # gauge: MFU of the last step, percent
M_PEAK_MEMORY = "trainbench_peak_memory_bytes"  # gauge: max reserved device memory
M_POWER = "trainbench_power_watts"  # gauge: device power (sum over local GPUs)
M_ENERGY = "trainbench_energy_joules"  # gauge: energy used since start of measurement
M_LOSS = "trainbench_loss"  # gauge: last step's loss
M_STATE = "trainbench_state"  # enum: STATES
M_INFO = "trainbench_info"  # info: config of the case (attn that ran, ac, seq_len, ...)

STATES = ("starting", "warmup", "measuring", "done", "failed")

# type generate (labels LABELS + batch_size): one series per decode batch size
M_GEN_PREFILL_TPS = "trainbench_generate_prefill_tokens_per_second"
M_GEN_DECODE_TPS = "trainbench_generate_decode_tokens_per_second"
M_GEN_TTFT = "trainbench_generate_time_to_first_token_seconds"
M_GEN_PREFILL_MFU = "trainbench_generate_prefill_mfu_percent"
M_GEN_DECODE_BW = "trainbench_generate_decode_bandwidth_percent"  # weights + KV bytes read per step / peak HBM
M_GEN_CACHE_SPEEDUP = "trainbench_generate_cache_speedup_ratio"  # labels LABELS: KV cache vs none
# type verify (labels LABELS + cycle): RAFT cycle 0 is the first evaluation
M_VER_COMPILE_RATE = "trainbench_verify_compile_rate"  # 0..1
M_VER_PASS_RATE = "trainbench_verify_pass_rate"  # 0..1
M_VER_PASS_AT_K = "trainbench_verify_pass_at_k"  # labels LABELS + cycle + k: unbiased estimator, 0..1
M_CAL_TFLOPS = "trainbench_calibrate_tflops"  # type calibrate (labels LABELS + kernel): TFLOP/s of one device
M_MICRO_BATCH = "trainbench_micro_batch"  # gauge: the micro-batch that ran (auto: the size found)

# --- result JSON keys ---------------------------------------------------------------------------------
# {"schema": RESULT_SCHEMA, "config": {...}, "world_size": int, "flops_per_token": float,
#  "peak_flops": float (per GPU), "metrics": {"tps"|"mfu"|"step_time": SUMMARY},
#  "peak_memory_gib": float|null, "power_w": SUMMARY|null, "energy_j": float|null,
#  "tokens_per_joule": float|null, "first_step_s": float|null (step 1's wall time: compile, cold caches),
#  "environment": {...}, "status": "ok"|"failed", "error": str|null,
#  "parallel": {"world_size", "dp", "cp", "ep"} (training; dry run: the plan, trainer/parallel/layout.py)}
SUMMARY_KEYS = ("mean", "std", "min", "max", "n")
SUMMARY_METRICS = ("tps", "mfu", "step_time")

# --- the operator's own /metrics (history that outlives the pods; dashboards and alerts read these) ----------
OPERATOR_METRICS_PORT = 8080
RESULT_LABELS = ("suite", "run", "case", "model", "type", "pool", "seq_len", "ac", "attn")

OM_RUNS = "trainbench_runs"  # gauge{phase}: BenchmarkRuns by phase
OM_CASES = "trainbench_cases"  # gauge{phase}: cases by phase over all runs
OM_RESULT_MFU = "trainbench_result_mfu_percent"  # gauge{RESULT_LABELS}: finished case's mean MFU
OM_RESULT_TPS = "trainbench_result_tokens_per_second"  # gauge{RESULT_LABELS}
OM_RESULT_STEP_TIME = "trainbench_result_step_time_seconds"  # gauge{RESULT_LABELS}
OM_RESULT_PEAK_MEMORY = "trainbench_result_peak_memory_bytes"  # gauge{RESULT_LABELS}
OM_RESULT_POWER = "trainbench_result_power_watts"  # gauge{RESULT_LABELS}
OM_RESULT_TOKENS_PER_JOULE = "trainbench_result_tokens_per_joule"  # gauge{RESULT_LABELS}
OM_REGRESSION = "trainbench_result_regression"  # gauge{RESULT_LABELS + metric}: 1 when worse than threshold
OM_CASE_FAILED = "trainbench_case_failed"  # gauge{RESULT_LABELS + reason}: 1 for each failed case
# gauge{suite, case, model, type, pool, metric, direction, run}: unacknowledged change points of a suite's history
OM_CHANGE_POINTS = "trainbench_change_points_unacknowledged"
OM_RUN_COMPLETED = "trainbench_run_completion_timestamp_seconds"  # gauge{suite, run, phase}
OM_CASE_PROGRESS = "trainbench_case_progress_ratio"  # gauge{suite, run, case, pool}: live, 0..1
OM_RESULT_GEN_DECODE_TPS = "trainbench_result_generate_decode_tokens_per_second"  # gauge{RESULT_LABELS+batch_size}
OM_RESULT_GEN_TTFT = "trainbench_result_generate_time_to_first_token_seconds"  # gauge{RESULT_LABELS+batch_size}
OM_RESULT_VER_PASS_AT_K = "trainbench_result_verify_pass_at_k"  # gauge{RESULT_LABELS+k}: the last cycle's
OM_RESULT_VER_COMPILE_RATE = "trainbench_result_verify_compile_rate"  # gauge{RESULT_LABELS}: the last cycle's

# --- case phases and failure reasons (status, results.json, report) ------------------------------------
CASE_PHASES = ("Pending", "Running", "Succeeded", "Failed", "MetricsUnavailable", "Skipped", "Cancelled")
FAILURE_REASONS = (
    "OOMKilled",  # the container was killed by the kernel's OOM killer (host memory)
    "OutOfMemory",  # the trainer hit a device out-of-memory error (exit EXIT_OOM)
    "BadConfig",  # the trainer refused the configuration (exit EXIT_BAD_CONFIG)
    "Unschedulable",
    "Timeout",
    "ImagePullBackOff",
    "Evicted",
    "Error",  # non-zero exit; message has the exit code and the last log lines
    "MetricsUnavailable",
    "Interrupted",  # stopped by the user (local executor: Ctrl-C)
    "JobSetUnavailable",  # spec.multiNode.engine JobSet, but the cluster does not serve jobset.x-k8s.io/v1alpha2
    "JobDeleted",  # the case's Job (JobSet) was deleted before its result was collected (operator only)
    "CreateRefused",  # the API server refused to create the case's Job/Service/JobSet (a 4xx; operator only)
)
