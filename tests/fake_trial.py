"""A stand-in for experiments.train in sweep tests: same CLI shape, instant, deterministic.

``python -m tests.fake_trial key=value ...`` prints a train-like JSON summary whose scores
depend on ``model`` and ``seed`` (the last word for a key wins, as in the config);
``train.test=false`` leaves the test figures ``null`` as train does; ``fail=true`` exits 1
with an error; ``sleep=S`` waits; every call is appended to ``$FAKE_TRIAL_CALLS`` so tests
can count runs and read their words.
"""
import json
import os
import sys
import time

args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:])
if os.environ.get("FAKE_TRIAL_CALLS"):
    with open(os.environ["FAKE_TRIAL_CALLS"], "a") as f:
        f.write(json.dumps({"argv": sys.argv[1:], "group": os.environ.get("WANDB_RUN_GROUP"),
                            "threads": os.environ.get("OMP_NUM_THREADS")})
                + "\n")
time.sleep(float(args.get("sleep", 0)))
if args.get("fail") == "true" or args.get("model") == "broken":
    print("Traceback: something went wrong in the model", file=sys.stderr)
    sys.exit(1)
base = {"late_fusion": 0.80, "mid_two_way": 0.90, "mel_only": 0.60}.get(args.get("model"), 0.5)
seed = int(args.get("seed", 0))
tested = args.get("train.test", "true").lower() != "false"
print("progress line that is not JSON")
print(json.dumps({"val/acc_clip": base + 0.02 * seed,
                  "test/acc_clip": base - 0.01 + 0.02 * seed if tested else None,
                  "test/acc_segment": base - 0.05 if tested else None,
                  "test/f1_macro": base - 0.02 if tested else None,
                  "ablation/acc_mel_zeroed": base / 2,
                  "interpretability/deletion_prob_auc_minus_shifted_gradcam_mel": -base / 4,
                  "interpretability/sanity_cascading_gradcam_mel": 0.1 * seed,
                  "run_dir": "/tmp/x", "checkpoint": "/tmp/x/best.ckpt"}))
