"""`make bench`: run every benchmark once and print one table of ratios measured in this run.

Usage:
    python benchmarks/run_all.py            # every benchmark, moderate sizes (30-60 min, 2 cores)
    python benchmarks/run_all.py --quick    # the quick variant of each (~10-20 min)
    python benchmarks/run_all.py --only flops,memory

Each benchmark runs as its own subprocess (a fresh heap and thread pool, as a user runs it);
its full output goes to `<out>/<name>.log` and its ratios are parsed from what it prints. Every
figure in the table divides two numbers measured in this run on this machine (one row, LungSim
speed, divides by a fixed target and says so). A benchmark that fails or prints something the
parser does not recognise gets a row saying so and where its log is; the others still run.
On a shared machine absolute times drift with the load; the ratios are measured back to back
(most benchmarks alternate the two sides) so they drift much less.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Row:
    """One line of the table: which area, what is divided by what, and the ratio."""

    area: str
    figure: str
    ratio: str
    detail: str = ""


Parser = Callable[[str], list[Row]]


def _find(pattern: str, text: str) -> list[re.Match[str]]:
    return list(re.finditer(pattern, text, flags=re.MULTILINE))


def parse_cache(text: str) -> list[Row]:
    """bench_cache: decode epoch / cache epoch, per dataset; read_image / raw pydicom."""
    rows = []
    blocks = re.split(r"^(?=\S.*: \d+ samples$)", text, flags=re.MULTILINE)
    for block in blocks:
        name = _find(r"^(\S.*): \d+ samples$", block)
        decode = _find(r"decode epoch \(read \+ preprocess\):\s+([\d.]+) ms/sample", block)
        cached = _find(r"cache epoch, opening the .npy files:\s+([\d.]+) ms/sample", block)
        ratio = _find(r"ratio decode / cache epoch \(opening\):\s+([\d.]+)x", block)
        if name and ratio:
            detail = ""
            if decode and cached:
                detail = f"{decode[0].group(1)} vs {cached[0].group(1)} ms/sample"
            rows.append(
                Row(
                    "data loading",
                    f"decode epoch / cached epoch, {name[0].group(1)}",
                    f"{ratio[0].group(1)}x",
                    detail,
                )
            )
    raw = _find(r"raw pydicom loop ([\d.]+) s, read_image ([\d.]+) s", text)
    for match in _find(r"ratio read_image / raw pydicom:\s+([\d.]+)x", text):
        detail = f"{raw[0].group(2)} vs {raw[0].group(1)} s" if raw else ""
        rows.append(
            Row(
                "data loading",
                "read_image / raw pydicom loop (DICOM series)",
                f"{match.group(1)}x",
                detail,
            )
        )
    return rows


def parse_train(text: str) -> list[Row]:
    """bench_train: training img/s of the policy over naive fp32, per model; with --layouts,
    each layout and precision over fp32 contiguous, per model and dimension."""
    rows = []
    for match in _find(
        r"^\s+(\S+)\s+fp32 contiguous\s+([\d.]+) img/s \| (\S+) (\S+)\s+([\d.]+) img/s "
        r"\| ratio ([\d.]+)x",
        text,
    ):
        name, fp32, mode, layout, fast, ratio = match.groups()
        rows.append(
            Row(
                "training",
                f"img/s {mode}+{layout} / naive fp32, {name} 128x128 batch 32",
                f"{ratio}x",
                f"{fast} vs {fp32} img/s",
            )
        )
    for match in _find(
        r"^\s+(\S+)\s+(\d)D batch (\d+): fp32 contiguous\s+[\d.]+ img/s \| (.+)$", text
    ):
        name, dims, batch, cells = match.groups()
        for cell in _find(r"([^|]+?) ([\d.]+)x \(([\d.]+-[\d.]+)\)", cells):
            mode, ratio, spread = cell.groups()
            rows.append(
                Row(
                    "training",
                    f"img/s {mode.strip()} / fp32 contiguous, {name} {dims}D batch {batch}",
                    f"{ratio}x",
                    f"paired rounds ranged {spread}",
                )
            )
    return rows


def parse_inference(text: str) -> list[Row]:
    """bench_inference: fp32 / policy latency per slice and per volume; batched vs single."""
    rows = []
    model = _find(r"^(\S+), input (\d+x\d+)", text)
    where = f"{model[0].group(1)} {model[0].group(2)}" if model else ""
    for match in _find(
        r"^\s+per (slice|\d+-slice volume) \((.*?)\): fp32 (\d+) ms, (\S+) (\d+) ms, "
        r"fp32/policy ([\d.]+)x",
        text,
    ):
        unit, how, fp32, mode, fast, ratio = match.groups()
        rows.append(
            Row(
                "inference",
                f"latency per {unit}, fp32 / {mode} policy ({where})",
                f"{ratio}x",
                f"{fp32} ms vs {fast} ms; {how}",
            )
        )
    for match in _find(
        r"every slice of the volume, batches of 64: fp32 ([\d.]+) ms/slice, (\S+) ([\d.]+) "
        r"ms/slice, fp32/policy ([\d.]+)x; batched/single-slice latency ([\d.]+)",
        text,
    ):
        fp32, mode, fast, ratio, batched = match.groups()
        rows.append(
            Row(
                "inference",
                f"every slice of a volume (batches of 64), fp32 / {mode}",
                f"{ratio}x",
                f"{fp32} vs {fast} ms/slice",
            )
        )
        rows.append(
            Row(
                "inference",
                "batched per-slice cost / single-slice file latency",
                batched,
                "how much of a lone slice's latency is reading and set-up",
            )
        )
    return rows


def parse_export(text: str) -> list[Row]:
    """bench_export: eager PyTorch / ONNX Runtime latency."""
    rows = []
    for match in _find(
        r"^(\S+)\s+batch\s+(\d+): eager fp32\s+([\d.]+) ms \| ONNX Runtime fp32\s+([\d.]+) ms "
        r"\| fp32/ORT\s+([\d.]+)x(?: \| eager bf16\s+([\d.]+) ms \| bf16/ORT\s+([\d.]+)x)?",
        text,
    ):
        name, batch, fp32, ort, ratio, bf16, bf16_ratio = match.groups()
        rows.append(
            Row(
                "inference",
                f"eager fp32 / ONNX Runtime, {name} batch {batch}",
                f"{ratio}x",
                f"{fp32} vs {ort} ms",
            )
        )
        if bf16_ratio:
            rows.append(
                Row(
                    "inference",
                    f"eager bf16 / ONNX Runtime, {name} batch {batch}",
                    f"{bf16_ratio}x",
                    f"{bf16} vs {ort} ms",
                )
            )
    return rows


def parse_gan(text: str) -> list[Row]:
    """bench_gan --speed: GAN step time, fp32 / bf16 + channels_last."""
    fp32 = _find(r"fp32 naive:\s+([\d.]+) s/step", text)
    fast = _find(r"bf16\+channels_last:\s+([\d.]+) s/step", text)
    ratio = _find(r"speed-up: ([\d.]+)x", text)
    if not ratio:
        return []
    detail = f"{fp32[0].group(1)} vs {fast[0].group(1)} s/step" if fp32 and fast else ""
    return [
        Row("GAN", "step time, naive fp32 / bf16+channels_last", f"{ratio[0].group(1)}x", detail)
    ]


def parse_synth(text: str) -> list[Row]:
    """bench_synth: 2D slices per second per core against the 20/s target (a fixed target)."""
    match = _find(r"2D, setup included\s+([\d.]+) slices/s/core", text)
    if not match:
        return []
    speed = float(match[0].group(1))
    return [
        Row(
            "LungSim",
            "2D slices/s/core / target 20 (a fixed target, not measured)",
            f"{speed / 20:.2f}x",
            f"{speed:.1f} slices/s/core",
        )
    ]


def parse_memory(text: str) -> list[Row]:
    """bench_memory: peak RSS of each training case against the 8 GB budget."""
    rows = []
    for match in _find(
        r"^\s+(\S+) (\S+) (\S+) batch (\d+): peak RSS ([\d.]+) GB, ([\d.]+) of the budget", text
    ):
        dims, name, size, batch, peak, ratio = match.groups()
        rows.append(
            Row(
                "memory",
                f"peak RSS / 8 GB, {dims} {name} {size} batch {batch} training",
                ratio,
                f"{peak} GB",
            )
        )
    return rows


def parse_flops(text: str) -> list[Row]:
    """bench_flops: achieved FLOP/s over the measured matmul peak, per model and precision."""
    rows = []
    shape = _find(r"training step, (\S+), batch (\d+)", text)
    where = f"{shape[0].group(1)} batch {shape[0].group(2)}" if shape else ""
    peaks = _find(r"fp32 ([\d.]+) GFLOP/s, bf16 ([\d.]+) GFLOP/s \(bf16/fp32 ([\d.]+)x\)", text)
    if peaks:
        fp32, bf16, ratio = peaks[0].groups()
        rows.append(
            Row("FLOPs", "matmul peak bf16 / fp32", f"{ratio}x", f"{bf16} vs {fp32} GFLOP/s")
        )
    for match in _find(
        r"^\s+(\S+) (\S+): ([\d.]+) GFLOP/step, ([\d.]+) s/step, ([\d.]+) GFLOP/s, "
        r"utilisation ([\d.]+) of the (\S+) matmul peak",
        text,
    ):
        name, mode, _, seconds, achieved, utilisation, peak = match.groups()
        rows.append(
            Row(
                "FLOPs",
                f"achieved / {peak} matmul peak, {name} {mode} training ({where})",
                utilisation,
                f"{achieved} GFLOP/s, {seconds} s/step",
            )
        )
    return rows


@dataclass(frozen=True)
class Bench:
    """A benchmark script, its arguments (full and quick) and the parser of its output."""

    key: str
    script: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    parse: Parser


BENCHES = (
    Bench(
        "cache", "bench_cache.py", ("--pngs", "100", "--slices", "150"), ("--quick",), parse_cache
    ),
    Bench("train", "bench_train.py", ("--layouts",), ("--quick",), parse_train),
    Bench("inference", "bench_inference.py", ("--repeats", "3"), ("--quick",), parse_inference),
    Bench("export", "bench_export.py", ("--repeats", "16"), ("--quick",), parse_export),
    Bench(
        "gan",
        "bench_gan.py",
        ("--speed",),
        ("--speed", "--steps", "3", "--rounds", "2"),
        parse_gan,
    ),
    Bench(
        "synth",
        "bench_synth.py",
        ("--realism-patients", "8", "--lr-patients", "40", "--out", "runs/bench/synth"),
        (
            "--speed-patients",
            "6",
            "--realism-patients",
            "4",
            "--realism-size",
            "256",
            "--lr-patients",
            "20",
            "--out",
            "runs/bench/synth",
        ),
        parse_synth,
    ),
    Bench("memory", "bench_memory.py", (), ("--quick",), parse_memory),
    Bench("flops", "bench_flops.py", (), ("--quick",), parse_flops),
)


def run_bench(bench: Bench, quick: bool, log_dir: Path, timeout_s: float) -> list[Row]:
    """Run one benchmark as a subprocess; its rows, or one row saying why there are none."""
    script = HERE / bench.script
    log = log_dir / f"{bench.key}.log"
    if not script.is_file():
        return [Row(bench.key, f"{bench.script} is not in benchmarks/", "n/a")]
    command = [sys.executable, str(script), *(bench.quick if quick else bench.full)]
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, cwd=HERE.parent
        )
    except subprocess.TimeoutExpired as exc:
        log.write_text(f"$ {' '.join(command)}\ntimed out after {timeout_s:g} s\n{exc.stdout}")
        return [Row(bench.key, f"timed out after {timeout_s:g} s (log: {log})", "n/a")]
    seconds = time.perf_counter() - started
    log.write_text(
        f"$ {' '.join(command)}\n# exit {done.returncode} after {seconds:.0f} s\n"
        f"{done.stdout}\n# stderr\n{done.stderr}"
    )
    print(f"  {bench.key}: exit {done.returncode} after {seconds:.0f} s (log: {log})", flush=True)
    rows = bench.parse(done.stdout) if done.returncode == 0 else []
    if not rows:
        why = f"exit {done.returncode}" if done.returncode else "output not recognised"
        rows = [Row(bench.key, f"no figures ({why}; see {log})", "n/a")]
    return rows


def reparse(bench: Bench, log_dir: Path) -> list[Row]:
    """Rows from a log an earlier run wrote (the table again, without running anything)."""
    log = log_dir / f"{bench.key}.log"
    if not log.is_file():
        return [Row(bench.key, f"no log at {log}", "n/a")]
    text = log.read_text(encoding="utf-8")
    stdout = text.split("\n# stderr\n", 1)[0]
    return bench.parse(stdout) or [Row(bench.key, f"no figures in {log}", "n/a")]


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}"


def _load() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.1f} (1 min), {five:.1f} (5 min)"


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table (pasted as is into docs/readme/scale.md)."""
    lines = ["| area | figure (ratio of two numbers measured in this run) | ratio | measured |"]
    lines.append("| --- | --- | ---: | --- |")
    lines += [f"| {r.area} | {r.figure} | {r.ratio} | {r.detail} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the selected benchmarks and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each benchmark's quick variant")
    parser.add_argument("--only", default="", help="comma-separated keys: " + ",".join(
        b.key for b in BENCHES))  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("runs/bench"), help="log folder")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per benchmark")
    parser.add_argument(
        "--reparse", action="store_true", help="print the table from the logs in --out only"
    )
    args = parser.parse_args(argv)
    wanted = {k for k in args.only.split(",") if k}
    unknown = wanted - {b.key for b in BENCHES}
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    selected = [b for b in BENCHES if not wanted or b.key in wanted]
    if args.reparse:
        print(table([row for bench in selected for row in reparse(bench, args.out)]))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {_machine()}; load average at start {_load()}", flush=True)
    started = time.perf_counter()
    rows: list[Row] = []
    for bench in selected:
        rows += run_bench(bench, args.quick, args.out, args.timeout)
    minutes = (time.perf_counter() - started) / 60
    print(f"\nall benchmarks: {minutes:.1f} min; load average at the end {_load()}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
