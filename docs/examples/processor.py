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

Outputs are stored with the sector and sent with every later request, so they may be at most
64 KiB of JSON; more is refused (not tried again). A large artefact (a real Commit1 output is
megabytes) goes to a file under the sector's temp_path (or, in Finalize, cache_path), named
under "files" with its size and sha256, which sealpool checks before the phase completes:

    {"files": {"c1_output": {"path": "/scratch/f01000-7/c1-output.json",
                             "sha256": "<64 hex digits>", "bytes": 8388608}}}

Later phases find that entry in "inputs"; the file is readable where its directory is (the
host that wrote it, or shared storage: Commit2 may run on any GPU host).

Finalize copies (or moves) the sealed file to sealed_path and the cache files to the directory
cache_path (a lotus storage path's sealed/s-t0<miner>-<n> and cache/s-t0<miner>-<n>), leaves
temp_path alone, and reports "sealed_bytes", "sealed_sha256" and "cache_files" ({file name:
bytes}, at least p_aux, t_aux and the sc-02-data-tree-r-last*.dat files lotus proves with):
sealpool checks the files there and only then removes temp_path; a mismatch fails the phase
(tried again), and the sector stays in Finalize.

A prove-commit batch of 4 or more sectors asks once for one SnarkPack aggregate of their
proofs; it reads {"aggregate": "<hex>"} (an error: the batch asks again later):

    {"phase": "Aggregate", "miner": "f01000", "sectors": [7, 8, 9, 10], "seal_proof": 8,
     "aggregate_type": "SnarkPackV2", "proofs": ["<hex>", ...]}

PreCommit2 returns CommR (and CommD, for a sector with deals) as CIDs, Commit2 the proof's
bytes in hex: sealpool builds the chain messages from them. This one writes small stand-in
files instead of computing proofs (a real one would call rust-fil-proofs), makes proofs that
sealpool's simulated chain accepts, and reports the CPU cores and GPUs it was given. Set
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

from sealpool.chain.commitments import SEALED, UNSEALED, commitment_cid
from sealpool.chain.sim import sim_aggregate, sim_proof
from sealpool.proving_layout import cache_names


def digest(*parts):
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def file_entry(path):
    """How a file is reported to sealpool: its path, sha256 and size."""
    data = path.read_bytes()
    return {"path": str(path), "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


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
        for name in cache_names(request["sector_size"]):
            (scratch / "cache" / name).write_bytes(b"\3" * 64)
        comm_r = commitment_cid(SEALED, bytes.fromhex(digest("comm_r", inputs["PreCommit1"])))
        comm_d = inputs["AddPiece"]["comm_d"]
        unsealed = commitment_cid(UNSEALED, bytes.fromhex(comm_d)) if request["deal_ids"] else None
        return {"comm_r": str(comm_r), "comm_d": unsealed and str(unsealed)}
    if phase == "Commit1":  # a big output (in real life): a file, reported under "files"
        c1_output = digest("c1", inputs["PreCommit2"]["comm_r"], request["seed"])
        path = scratch / "c1-output.json"
        path.write_text(json.dumps({"c1": c1_output}))
        return {"files": {"c1_output": file_entry(path)}}
    if phase == "Commit2":
        ticket, seed = request["ticket"]["value"], request["seed"]["value"]
        comm_r = inputs["PreCommit2"]["comm_r"]
        proof = sim_proof(request["miner"], request["number"], comm_r, ticket, seed)
        return {"proof": proof.hex()}
    if phase == "Finalize":  # copies: sealpool removes the scratch once it checked them
        target, cache = Path(request["sealed_path"]), Path(request["cache_path"])
        cache.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(scratch / "sealed", target)
        names = cache_names(request["sector_size"])
        for name in names:
            shutil.copyfile(scratch / "cache" / name, cache / name)
        sealed = file_entry(scratch / "sealed")
        return {
            "stored": str(target),
            "sealed_bytes": sealed["bytes"],
            "sealed_sha256": sealed["sha256"],
            "cache_files": {name: (cache / name).stat().st_size for name in names},
        }
    return {"error": f"unknown phase {phase}", "retry": False}


def main():
    request = json.load(sys.stdin)
    if request["phase"] == "Aggregate":  # no sector: the proofs of a prove-commit batch
        proofs = [bytes.fromhex(proof) for proof in request["proofs"]]
        json.dump({"aggregate": sim_aggregate(proofs).hex()}, sys.stdout)
        return
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
