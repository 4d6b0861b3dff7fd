#!/usr/bin/env python3
"""An example sealpool processor: the contract a real proof processor implements.

sealpool runs the configured processor once per phase, with one JSON request on stdin:

    {"sector_id": "f01000-7", "miner": "f01000", "number": 7, "phase": "PreCommit1",
     "sector_size": 34359738368, "temp_path": "/scratch/f01000-7", "sealed_path": null,
     "ticket": {"epoch": 1234, "value": "<hex>"}, "seed": null, "deal_ids": [],
     "inputs": {"AddPiece": {...}}}            # the outputs of the earlier phases

and reads one JSON object from stdout: the phase's outputs. A failure is a non-zero exit (tried
again later, stderr shown) or {"error": "...", "retry": false} (not tried again). The process
runs pinned to its slot's CPU cores with CUDA_VISIBLE_DEVICES set to its slot's GPUs.

This one writes small stand-in files instead of computing proofs (a real one would call
rust-fil-proofs), and reports the CPU cores and GPUs it was given. Set
SEALPOOL_EXAMPLE_FAIL=<sector id>:<phase> to make that phase of that sector fail, and
SEALPOOL_EXAMPLE_LOG=<file> to have every run append "<sector id> <phase>" to that file;
name them in sealpool's processor_env setting, as a processor sees only the variables
allowed there (and PATH, HOME, LANG, LC_ALL, TMPDIR, USER, its slot's env).
"""

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path


def digest(*parts):
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def cpus_allowed():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    return ""


def seal(request):
    phase, scratch = request["phase"], Path(request["temp_path"])
    inputs = request["inputs"]
    if phase == "AddPiece":
        scratch.mkdir(parents=True, exist_ok=True)
        (scratch / "unsealed").write_bytes(b"\0" * 1024)
        return {"comm_d": digest("comm_d", request["sector_id"])}
    if phase == "PreCommit1":
        (scratch / "cache").mkdir(exist_ok=True)
        for layer in range(1, 12):
            (scratch / "cache" / f"sc-02-data-layer-{layer}.dat").write_bytes(b"\1" * 1024)
        return {"labels": digest("labels", request["ticket"]["value"])}
    if phase == "PreCommit2":
        (scratch / "sealed").write_bytes(b"\2" * 1024)
        (scratch / "cache" / "p_aux").write_bytes(b"\3" * 64)
        comm_r = digest("comm_r", inputs["PreCommit1"]["labels"])
        return {"comm_r": comm_r, "precommit_params": digest("params", comm_r)}
    if phase == "Commit1":
        return {"c1_output": digest("c1", inputs["PreCommit2"]["comm_r"], request["seed"])}
    if phase == "Commit2":
        proof = digest("proof", inputs["Commit1"]["c1_output"])
        return {"proof": proof, "provecommit_params": digest("params", proof)}
    if phase == "Finalize":
        target = Path(request["sealed_path"])
        (target / "cache").mkdir(parents=True, exist_ok=True)
        shutil.move(str(scratch / "sealed"), str(target / "sealed"))
        shutil.move(str(scratch / "cache" / "p_aux"), str(target / "cache" / "p_aux"))
        shutil.rmtree(scratch)
        return {"stored": str(target)}
    return {"error": f"unknown phase {phase}", "retry": False}


def main():
    request = json.load(sys.stdin)
    if os.environ.get("SEALPOOL_EXAMPLE_LOG"):
        with open(os.environ["SEALPOOL_EXAMPLE_LOG"], "a") as log:
            log.write(f"{request['sector_id']} {request['phase']}\n")
    if os.environ.get("SEALPOOL_EXAMPLE_FAIL") == f"{request['sector_id']}:{request['phase']}":
        sys.stderr.write(f"example processor: simulated failure of {request['phase']}\n")
        sys.exit(3)
    outputs = seal(request)
    outputs.update(
        processor="example",
        cpus_allowed=cpus_allowed(),
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
    )
    json.dump(outputs, sys.stdout)


if __name__ == "__main__":
    main()
