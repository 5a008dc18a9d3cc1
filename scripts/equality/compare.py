"""Compare two output folders of scripts/equality/run.sh bit for bit.

    python scripts/equality/compare.py BEFORE AFTER

For every run: each number in metrics.jsonl under a key both builds log (timings excluded) and
every final parameter must be identical. Keys only one build logs (new diagnostics) are listed,
not compared. Exit status 1 if anything differs.
"""

import json
import sys
from pathlib import Path

import torch


def metrics(run: Path) -> list[dict[str, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(("time", "perf"))} for r in rows]


def compare(before: Path, after: Path) -> bool:
    all_equal = True
    for name in sorted(p.name for p in before.iterdir() if p.is_dir()):
        rows_b, rows_a = metrics(before / name), metrics(after / name)
        shared = [sorted(rb.keys() & ra.keys()) for rb, ra in zip(rows_b, rows_a)]
        m_equal = len(rows_b) == len(rows_a) and all(
            rb[k] == ra[k] for rb, ra, keys in zip(rows_b, rows_a, shared) for k in keys
        )
        only_after = sorted({k for rb, ra in zip(rows_b, rows_a) for k in ra.keys() - rb.keys()})
        only_before = sorted({k for rb, ra in zip(rows_b, rows_a) for k in rb.keys() - ra.keys()})
        pb = torch.load(before / name / "checkpoint.pt", weights_only=True)["model"]
        pa = torch.load(after / name / "checkpoint.pt", weights_only=True)["model"]
        p_equal = pb.keys() == pa.keys() and all(torch.equal(pb[k], pa[k]) for k in pb)
        n_values = sum(len(keys) for keys in shared)
        n_params = sum(t.numel() for t in pb.values())
        line = (
            f"{name:12s} metrics: {'identical' if m_equal else 'DIFFERENT'} ({n_values} values)"
            f"  parameters: {'identical' if p_equal else 'DIFFERENT'} ({n_params} values)"
        )
        if only_after or only_before:
            new, gone = ", ".join(only_after) or "-", ", ".join(only_before) or "-"
            line += f"  new keys: {new}; gone: {gone}"
        print(line)
        all_equal &= m_equal and p_equal
    return all_equal


if __name__ == "__main__":
    sys.exit(0 if compare(Path(sys.argv[1]), Path(sys.argv[2])) else 1)
