"""Training throughput of the MLP, the small CNN and CIFAR ResNets, and the glibc allocator.

Part 1, throughput: ``training.fit`` (ours) against the plainest PyTorch loop that does the
same work (peer: index a batch, forward, cross-entropy, zero_grad, backward, SGD step), on
MNIST-shaped inputs, batch 128. Both start from the same seeded weights and use the same
shuffling generator, and the script first checks that they end with bit-identical weights;
then it times them alternately (one warm-up epoch, median of ``--repeats`` epochs each). The
ratio peer/ours is the plain loop's time over fit's (< 1: fit is slower; 1: no overhead). Each line also gives the achieved
GFLOP/s and its share of this machine's fp32 peak. PGD training (10 steps) has no peer. The CIFAR-10
rows (3×32×32) time the ResNets of the ``cifar10`` study with channels-last (NHWC) off and on.

FLOPs are counted from the layers' multiply-accumulates (MACs, 1 MAC = 2 FLOPs), measured with
forward hooks on every Linear / Conv2d: per training sample, forward 2·MACs, weight gradients
2·MACs, input gradients 2·MACs for every layer except the first (its input needs no gradient)
— about 6·params for the MLP. A PGD step is a forward plus an input-gradient backward (all
layers, no weight gradients): 4·MACs. Activations, pooling and the optimizer are not counted.

Peak: cores × GHz × 2 FMA pipes × SIMD lanes (8 fp32 for AVX2, 16 for AVX-512) × 2 FLOPs,
from ``/proc/cpuinfo`` and the CPU affinity mask (2 × 2.45 GHz × 32 = 157 GFLOP/s here).

Part 2, allocator: large-batch steps (the MLP's forward+backward+SGD step on 3200 rows; one
PGD-training step, 10 PGD steps then the SGD step, on 3200 rows; the CNN's step on 512 rows)
in fresh subprocesses, one per allocator setting: glibc defaults; the ``MALLOC_MMAP_THRESHOLD_``
and ``MALLOC_TRIM_THRESHOLD_`` environment variables (set before the process starts);
``gradaudit._allocator.tune_malloc()`` (``mallopt`` at run time, as ``gradaudit``'s CLI does),
called before torch is imported or only after warm-up steps; tcmalloc through ``LD_PRELOAD``
when ``libtcmalloc_minimal.so.4`` is installed. Cases run interleaved in ``--rounds`` rounds.
Each reports the median wall time per step, the CPU time (user + sys) per step and the minor
page faults per step; ratios are default/case (> 1: the case is faster). On a shared machine
the CPU time and the page faults are the robust columns: wall time moves with the neighbours.

Part 3, stacked engines (``--stacked``, which runs this part alone): ``fit_stacked`` of ``--members`` models, one epoch
each, by every engine that can train the model family (mlp: "bmm", "vmap"; cnn and resnet:
"vmap") against ``engine="loop"`` (one ``training.fit`` after another), run alternately in
one process on ``--device``, median of ``--repeats`` after a warm-up. The ratio is
loop/stacked (> 1: stacking pays); a stacked engine is recorded only when it is ``--margin``
(1.05) times faster than the loop. ``--record`` writes, per family, the fastest engine with
its ratio, the date, the machine and the command into ``gradaudit/training/engine_table.json``
under the device type: the table ``fit_stacked(engine="auto")`` reads. Only the families
measured are replaced.

On a machine shared with other jobs, run it with ``OMP_WAIT_POLICY=PASSIVE``: with the default
(spinning) OpenMP threads, a 2-thread step measured 30–50× slower than with passive waiting
there, because each parallel region waits for a thread that lost its core.

Usage:
    python bench/train_throughput.py [--repeats 5] [--rounds 3] [--threads N] [--small]
        [--skip-throughput] [--skip-mnist] [--skip-cifar] [--skip-allocator]
        [--stacked [--members 4] [--families mlp,cnn,resnet] [--device cpu|cuda] [--record]
         [--table PATH] [--note TEXT]]
"""

from __future__ import annotations

import sys

if "mallopt-start" in sys.argv:  # the allocator child: mallopt before torch loads, as the CLI
    from gradaudit._allocator import tune_malloc as _tune_first

    _tune_first()

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gradaudit import data, models, training
from gradaudit._allocator import tune_malloc
from gradaudit._provenance import git_revision, versions

BATCH = 128
GIB = 1 << 30


# ----------------------------------------------------------------------------- machine
def cpu_info() -> dict[str, object]:
    """Model name, usable cores, clock, SIMD width and the fp32 peak."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    mhz = float(fields.get("cpu MHz") or 0) or float(fields.get("bogomips", 0)) / 2
    flags = set(fields.get("flags", "").split())
    lanes = 16 if "avx512f" in flags else 8 if {"avx2", "fma"} <= flags else 4
    peak = cores * mhz / 1000 * 2 * lanes * 2  # 2 FMA pipes, 2 FLOPs per FMA
    return {"model": fields.get("model name", platform.processor()), "cores": cores,
            "ghz": mhz / 1000, "lanes": lanes, "peak_gflops": peak}


def header(threads: int) -> dict[str, object]:
    cpu = cpu_info()
    rev = git_revision()
    v = versions()
    print(f"# device: {cpu['model']}, {cpu['cores']} cores @ {cpu['ghz']:.2f} GHz, "
          f"{cpu['lanes']} fp32 lanes x 2 FMA -> peak {cpu['peak_gflops']:.0f} GFLOP/s; "
          f"torch threads {threads} (OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}); "
          f"load avg {os.getloadavg()[0]:.1f}")
    print(f"# versions: python {v['python']}, torch {v['torch']}, numpy {v['numpy']}, "
          f"gradaudit {v['gradaudit']}; git {rev['commit']}{' (dirty)' if rev['dirty'] else ''}")
    return cpu


# ----------------------------------------------------------------------------- FLOPs
def layer_macs(model: nn.Module, input_shape: tuple[int, ...]) -> list[int]:
    """Multiply-accumulates per sample of each Linear / Conv2d, in forward order."""
    macs: list[int] = []

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        per_out = module.in_features if isinstance(module, nn.Linear) else (
            module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1])
        macs.append(out[0].numel() * per_out)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *input_shape))
    for h in handles:
        h.remove()
    model.train()
    return macs


def train_flops(macs: list[int]) -> int:
    """Forward + weight grads + input grads (none for the first layer), per sample."""
    return 6 * sum(macs) - 2 * macs[0]


def pgd_train_flops(macs: list[int], steps: int) -> int:
    """PGD steps (forward + input-gradient backward) plus the training step, per sample."""
    return steps * 4 * sum(macs) + train_flops(macs)


# ----------------------------------------------------------------------------- part 1
def plain_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer,
                gen: torch.Generator) -> None:
    """The peer: the minimal loop fit's standard recipe reduces to."""
    perm = torch.randperm(len(x), generator=gen)
    model.train()
    for i in range(0, len(x), BATCH):
        idx = perm[i : i + BATCH]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def time_alternately(build: Callable[[], nn.Module], train: data.ImageSet, recipe: training.Recipe,
                     repeats: int, with_peer: bool) -> tuple[list[float], list[float]]:
    """Epoch times of fit and of the plain loop, run alternately; the first pair warms up."""
    ours, peer = [], []
    for r in range(repeats + 1):
        net = build()
        t0 = time.perf_counter()
        training.fit(net, train, recipe.model_copy(update={"seed": r}), quiet=True)
        t1 = time.perf_counter()
        if with_peer:
            net = build()
            opt = training.make_optimizer(net.parameters(), recipe)
            t2 = time.perf_counter()
            plain_epoch(net, train.x, train.y, opt, torch.Generator().manual_seed(r))
            if r:
                peer.append(time.perf_counter() - t2)
        if r:
            ours.append(t1 - t0)
    return ours, peer


def check_same(build: Callable[[], nn.Module], train: data.ImageSet, recipe: training.Recipe) -> None:
    ours, peer = build(), build()
    training.fit(ours, train, recipe, quiet=True)
    plain_epoch(peer, train.x, train.y, training.make_optimizer(peer.parameters(), recipe),
                torch.Generator().manual_seed(recipe.seed))
    same = all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), peer.state_dict().values(), strict=True))
    if not same:
        raise SystemExit("fit and the plain loop disagree: the comparison would be meaningless")


def run_cases(cpu: dict[str, object], repeats: int, shape: tuple[int, ...],
              cases: list[tuple[str, str, dict[str, object], int, int | None]]) -> None:
    """One line per case (label, model name, build options, rows, PGD steps or None)."""
    g = torch.Generator().manual_seed(0)
    print(f"{'case':<34}{'samples/s ours':>15}{'peer':>10}{'peer/ours':>11}{'GFLOP/s':>9}{'% peak':>8}"
          f"{'MFLOP/sample':>14}")
    for label, name, options, n, pgd_steps in cases:
        x = torch.rand(n, *shape, generator=g)
        y = torch.randint(0, 10, (n,), generator=g)
        train = data.ImageSet(x, y, {"name": "bench", "classes": list(range(10))})
        build = lambda name=name, options=options: models.build(name, shape, 10, seed=0, **options)  # noqa: E731
        macs = layer_macs(build(), shape)
        if pgd_steps is None:
            recipe = training.Recipe(epochs=1, batch_size=BATCH, lr=0.01)
            flops = train_flops(macs)
            check_same(build, train, recipe)
            ours_t, peer_t = time_alternately(build, train, recipe, repeats, with_peer=True)
            ours, peer = statistics.median(ours_t), statistics.median(peer_t)
            peer_text, ratio_text = f"{n / peer:>10.0f}", f"{peer / ours:>11.2f}"
        else:
            recipe = training.Recipe(epochs=1, batch_size=BATCH, lr=0.01, attack="linf", eps=0.1,
                                     attack_steps=pgd_steps)
            flops = pgd_train_flops(macs, pgd_steps)
            ours = statistics.median(time_alternately(build, train, recipe, repeats, with_peer=False)[0])
            peer_text, ratio_text = f"{'-':>10}", f"{'-':>11}"
        gflops = n * flops / ours / 1e9
        print(f"{label:<34}{n / ours:>15.0f}{peer_text}{ratio_text}{gflops:>9.1f}"
              f"{100 * gflops / float(cpu['peak_gflops']):>7.1f}%{flops / 1e6:>14.2f}", flush=True)


def throughput(cpu: dict[str, object], repeats: int, scale: float) -> None:
    print("\n## training throughput, batch 128, MNIST-shaped inputs (1x28x28, 10 classes)")
    run_cases(cpu, repeats, (1, 28, 28), [
        ("mlp 784-256-256-10", "mlp", {}, int(25_600 * scale), None),
        ("cnn conv32-conv64-fc128", "cnn", {}, int(6_400 * scale), None),
        ("mlp, linf PGD-10 training", "mlp", {}, int(3_200 * scale), 10)])


# The CIFAR-10 ResNets of the cifar10 study: the --quick / CPU-config ResNet9 (width 16, stem
# average-pooled by 2) and the GPU default's ResNet18 (width 64), channels-last off and on
# (the model's ``channels_last`` option converts its input; the plain loop runs the same model).
CIFAR_MODELS = (("resnet9 w16 pool2", "resnet9", {"width": 16, "stem_pool": 2}, 2_048),
                ("resnet18 w64 (GPU default)", "resnet18", {"width": 64}, 256))


def cifar_throughput(cpu: dict[str, object], repeats: int, scale: float) -> None:
    print("\n## training throughput, batch 128, CIFAR-10-shaped inputs (3x32x32, 10 classes)")
    cases: list[tuple[str, str, dict[str, object], int, int | None]] = []
    for label, name, options, n in CIFAR_MODELS:
        for cl in (False, True):
            cases.append((f"{label}{', NHWC' if cl else ''}", name, {**options, "channels_last": cl},
                          max(BATCH, int(n * scale)), None))
    label, name, options, n = CIFAR_MODELS[0]
    cases.append((f"{label}, NHWC, linf PGD-2", name, {**options, "channels_last": True},
                  max(BATCH, int(n * scale) // 2), 2))
    run_cases(cpu, repeats, (3, 32, 32), cases)


# ----------------------------------------------------------------------------- part 3
# Per family: label, model, build options, input shape, rows (before --small), engines to try.
STACKED_CASES = {
    "mlp": ("mlp 784-256-256-10", "mlp", {}, (1, 28, 28), 4_096, ("bmm", "vmap")),
    "cnn": ("cnn conv32-conv64-fc128", "cnn", {}, (1, 28, 28), 1_024, ("vmap",)),
    "resnet": ("resnet9 w16 pool2", "resnet9", {"width": 16, "stem_pool": 2}, (3, 32, 32), 512, ("vmap",)),
}


def stacked_engines(families: list[str], members: int, repeats: int, scale: float, device: str,
                    record: Path | None, note: str = "", margin: float = 1.05) -> None:
    """Part 3: the stacked engines against one fit after another; ``record``: the engine
    table to write the measurements into. A stacked engine is chosen only when it beats the
    loop by ``margin`` (timings on a shared machine move by a few percent)."""
    from gradaudit.training.ensemble import Member, fit_stacked

    dev = torch.device(device)
    print(f"\n## stacked engines: fit_stacked of {members} members x 1 epoch, batch {BATCH}, on {dev.type}; "
          "ratio = loop / stacked (> 1: stacking pays)")
    print(f"{'family':<8}{'case':<26}{'rows':>7}{'loop s':>9}  {'engine':<6}{'stacked s':>10}{'ratio':>8}")
    g = torch.Generator().manual_seed(0)
    found: dict[str, dict[str, object]] = {}
    ms = [Member(init_seed=i, data_seed=100 + i) for i in range(members)]
    for family in families:
        label, name, options, shape, rows, engines = STACKED_CASES[family]
        n = max(BATCH, int(rows * scale))
        train = data.ImageSet(torch.rand(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g),
                              {"name": "bench", "classes": list(range(10))})
        spec = models.ModelSpec(name=name, input_shape=shape, num_classes=10, options=options)
        recipe = training.Recipe(epochs=1, batch_size=BATCH, lr=0.01, momentum=0.9)
        times: dict[str, list[float]] = {e: [] for e in ("loop", *engines)}
        for r in range(repeats + 1):  # alternately; the first round warms up
            for engine in times:
                t0 = time.perf_counter()
                fit_stacked(spec, train, recipe, ms, engine=engine, device=dev, quiet=True)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                if r:
                    times[engine].append(time.perf_counter() - t0)
        loop = statistics.median(times["loop"])
        best, best_s = "loop", loop
        for engine in engines:
            t = statistics.median(times[engine])
            print(f"{family:<8}{label:<26}{n:>7}{loop:>9.2f}  {engine:<6}{t:>10.2f}{loop / t:>8.2f}", flush=True)
            if t * margin < loop and t < best_s:
                best, best_s = engine, t
        found[family] = {"engine": best, "ratio": round(loop / best_s, 3), "margin": margin,
                         "measured": {e: round(statistics.median(t), 4) for e, t in times.items()},
                         "case": f"{label}, {members} members x {n} rows x 1 epoch, batch {BATCH}",
                         "date": time.strftime("%Y-%m-%d", time.gmtime()), "machine": machine(dev),
                         "threads": torch.get_num_threads(), "torch": torch.__version__,
                         "command": " ".join(["python", *sys.argv]), **({"note": note} if note else {})}
        print(f"{family:<8}-> {best}" + (f" (loop/{best} {loop / best_s:.2f})" if best != "loop"
                                         else f" (no stacked engine beats it by {margin:g}x)"))
    if record is not None:
        table = json.loads(record.read_text()) if record.exists() else {}
        table.setdefault(dev.type, {}).update(found)
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps(table, indent=2) + "\n")
        tmp.replace(record)  # atomic: a killed run leaves the old table
        print(f"# recorded {', '.join(found)} for {dev.type} in {record}")


def machine(dev: torch.device) -> str:
    """The device's name: the GPU's, or the CPU model and the cores this process may use."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    cpu = cpu_info()
    return f"{cpu['model']} ({cpu['cores']} usable cores, load avg {os.getloadavg()[0]:.1f})"


# ----------------------------------------------------------------------------- part 2
def child(mode: str, repeats: int) -> None:
    """Run the large-batch workloads in this process; print one JSON line of measurements."""
    g = torch.Generator().manual_seed(0)
    mlp = models.build("mlp", (1, 28, 28), 10, seed=0)
    cnn = models.build("cnn", (1, 28, 28), 10, seed=0)
    x = torch.rand(3200, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (3200,), generator=g)
    opts = {id(m): torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for m in (mlp, cnn)}

    def step(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> None:
        loss = F.cross_entropy(model(xb), yb)
        opts[id(model)].zero_grad(set_to_none=True)
        loss.backward()
        opts[id(model)].step()

    def pgd_step() -> None:
        adv = training.pgd(mlp, x, y, norm="linf", eps=0.1, steps=10, seed=0)
        step(mlp, adv, y)

    work = {"mlp-3200": (lambda: step(mlp, x, y), 8), "pgd-3200": (pgd_step, 1),
            "cnn-512": (lambda: step(cnn, x[:512], y[:512]), 2)}
    out: dict[str, dict[str, float]] = {}
    for name, (fn, k) in work.items():
        for _ in range(2):
            fn()
        if mode == "mallopt-late" and name == "mlp-3200":
            tune_malloc()  # after warm-up: the heap is already shaped by the defaults
        walls = []
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            walls.append((time.perf_counter() - t0) / k)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        steps = repeats * k
        out[name] = {"wall": statistics.median(walls),
                     "cpu": (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) / steps,
                     "sys": (r1.ru_stime - r0.ru_stime) / steps,
                     "faults": (r1.ru_minflt - r0.ru_minflt) / steps}
    print(json.dumps(out))


def tcmalloc() -> str | None:
    for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib"):
        path = Path(folder) / "libtcmalloc_minimal.so.4"
        if path.exists():
            return str(path)
    return None


def allocator_cases() -> dict[str, tuple[str, dict[str, str]]]:
    """Case label -> (child mode, extra environment)."""
    both = {"MALLOC_MMAP_THRESHOLD_": str(GIB), "MALLOC_TRIM_THRESHOLD_": str(GIB)}
    cases = {
        "glibc defaults": ("plain", {}),
        "env mmap+trim 1 GiB": ("plain", both),
        "env trim 1 GiB only": ("plain", {"MALLOC_TRIM_THRESHOLD_": str(GIB)}),
        "env mmap 1 GiB only": ("plain", {"MALLOC_MMAP_THRESHOLD_": str(GIB)}),
        "mallopt at start": ("mallopt-start", {}),
        "mallopt after warm-up": ("mallopt-late", {}),
    }
    lib = tcmalloc()
    if lib is not None:
        cases["tcmalloc (LD_PRELOAD)"] = ("plain", {"LD_PRELOAD": lib})
    return cases


def allocator(rounds: int, repeats: int, threads: int) -> None:
    cases = allocator_cases()
    if tcmalloc() is None:
        print("\n# tcmalloc: libtcmalloc_minimal.so.4 not installed, case skipped")
    results: dict[str, list[dict[str, dict[str, float]]]] = {c: [] for c in cases}
    for _ in range(rounds):  # interleaved, so that a change of load hits every case alike
        for label, (mode, extra) in cases.items():
            env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
            env.update(extra)
            proc = subprocess.run([sys.executable, __file__, "--child", mode, "--repeats", str(repeats),
                                   "--threads", str(threads)], env=env, capture_output=True, text=True, check=True)
            results[label].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    work = list(next(iter(results.values()))[0])
    print(f"\n## allocator: large-batch steps, {rounds} rounds x {repeats} repeats, torch threads {threads}")
    print(f"{'workload':<10}{'case':<24}{'wall ms':>9}{'cpu ms':>9}{'sys ms':>8}{'faults':>9}"
          f"{'wall def/case':>15}{'cpu def/case':>14}")
    for name in work:
        base = {k: statistics.median(r[name][k] for r in results["glibc defaults"]) for k in ("wall", "cpu")}
        for label in cases:
            med = {k: statistics.median(r[name][k] for r in results[label]) for k in ("wall", "cpu", "sys", "faults")}
            print(f"{name:<10}{label:<24}{1e3 * med['wall']:>9.1f}{1e3 * med['cpu']:>9.1f}{1e3 * med['sys']:>8.1f}"
                  f"{med['faults']:>9.0f}{base['wall'] / med['wall']:>15.2f}{base['cpu'] / med['cpu']:>14.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-allocator", action="store_true")
    parser.add_argument("--skip-mnist", action="store_true", help="no MNIST-shaped rows")
    parser.add_argument("--skip-cifar", action="store_true", help="no CIFAR-10 ResNet rows")
    parser.add_argument("--small", action="store_true", help="a quarter of the rows per case (a quick look)")
    parser.add_argument("--stacked", action="store_true", help="part 3: stacked engines against the loop")
    parser.add_argument("--members", type=int, default=4, help="members per stacked run (--stacked)")
    parser.add_argument("--families", default="mlp,cnn,resnet", help="model families (--stacked)")
    parser.add_argument("--device", default="cpu", help="device of the stacked runs (--stacked)")
    parser.add_argument("--record", action="store_true",
                        help="write the fastest engine per family into the engine table (--table)")
    parser.add_argument("--table", type=Path, default=None,
                        help="the engine table --record writes (default: the package's engine_table.json)")
    parser.add_argument("--margin", type=float, default=1.05,
                        help="how much faster than the loop a stacked engine must be to be recorded")
    parser.add_argument("--note", default="", help="a remark recorded with the entries (e.g. a shared core)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    families = [f for f in args.families.split(",") if f]
    if args.stacked and (not families or any(f not in STACKED_CASES for f in families)):
        parser.error(f"--families takes a comma-separated list of {', '.join(STACKED_CASES)}; got {args.families!r}")
    if args.record and not args.stacked:
        parser.error("--record writes the measurements of --stacked: add --stacked")
    if args.stacked and args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: this machine has no CUDA device")
    torch.set_num_threads(args.threads)
    if args.child is not None:
        child(args.child, args.repeats)
        return
    cpu = header(args.threads)
    if args.stacked:  # part 3 alone
        from gradaudit.training.stacked_vmap import ENGINE_TABLE

        table = (args.table or ENGINE_TABLE) if args.record else None
        stacked_engines(families, args.members, args.repeats, 0.25 if args.small else 1.0, args.device,
                        table, args.note, args.margin)
        return
    if not args.skip_throughput:
        print(f"# allocator for part 1: tune_malloc() -> {tune_malloc()} (as the CLI's start-up)")
        scale = 0.25 if args.small else 1.0
        if not args.skip_mnist:
            throughput(cpu, args.repeats, scale)
        if not args.skip_cifar:
            cifar_throughput(cpu, args.repeats, scale)
    if not args.skip_allocator:
        allocator(args.rounds, args.repeats, args.threads)


if __name__ == "__main__":
    main()
