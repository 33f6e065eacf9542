"""Render the benchmark JSON results as a Markdown table and PNG plots.

``python -m benchmarks.render [RESULT.json ...] [--out DIR]``

Without arguments, reads every ``bench_fem-*.json`` and ``run-*.json`` under
``benchmarks/results/`` and keeps, for each configuration, the newest full run (a quick run
only when no full run of that configuration exists; it is marked "quick"). Writes
``TABLE.md`` and ``scaling.png``, ``batch_sweep.png``, ``fem_throughput.png`` next to them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
KEY_FLAGS = ("avx512f", "avx512_bf16", "amx")


# ------------------------------------------------------------------------------ loading


def load_configs(paths: list[Path]) -> tuple[dict[str, dict[str, Any]], dict[str, dict]]:
    """``{config: result}`` (newest full run wins, else newest quick) and ``{config: meta}``."""
    runs = []
    for p in paths:
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if "configs" not in data:
            continue
        runs.append((p.name.rsplit("-", 1)[-1], p, data))
    runs.sort(key=lambda r: r[0])  # UTC stamp in the name
    chosen: dict[str, tuple[bool, str, Path, dict, dict]] = {}
    for stamp, path, data in runs:
        quick = bool(data.get("quick"))
        for name, res in data["configs"].items():
            if not isinstance(res, dict) or "error" in res or "skipped" in res:
                continue
            prev = chosen.get(name)
            if prev is None or (prev[0] and not quick) or (prev[0] == quick):
                chosen[name] = (quick, stamp, path, res, data)
    configs = {k: v[3] for k, v in chosen.items()}
    meta = {
        k: {
            "quick": v[0],
            "file": v[2].name,
            "machine": v[4].get("machine", {}),
            "workers": v[4].get("workers", {}),
        }
        for k, v in chosen.items()
    }
    return configs, meta


# ----------------------------------------------------------------------------- formatting


def num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    x = float(x)
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.{digits}g}"


def spread(s: dict[str, Any] | None) -> str:
    """``median (min–max)``."""
    if not s or s.get("median") is None:
        return "–"
    return f"{num(s['median'])} ({num(s['min'])}–{num(s['max'])})"


def ratio_cell(s: dict[str, Any] | None, bound: float | None = None) -> str:
    if not s or s.get("median") is None:
        return "–"
    cell = f"{s['median']:.2f}x ({s['min']:.2f}–{s['max']:.2f})"
    if bound is not None:
        cell += " ✅" if s["median"] >= bound else " ❌"
    return cell


def ips(res: dict[str, Any], name: str) -> dict[str, Any] | None:
    cand = res.get("candidates", {}).get(name)
    return cand["items_per_s"] if cand else None


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def noise(res: dict[str, Any]) -> str:
    f = res.get("foreign_cpus") or {}
    if f.get("median") is None:
        return "–"
    return f"{f['median']:.2f} ({f['min']:.2f}–{f['max']:.2f})"


# ------------------------------------------------------------------------------ sections


def section_header(meta: dict[str, dict]) -> list[str]:
    any_meta = next(iter(meta.values()), {})
    m = any_meta.get("machine", {})
    v = m.get("versions", {})
    workers = any_meta.get("workers", {})
    tf = workers.get("tensorflow", {})
    lines = [
        "# fastfem benchmarks",
        "",
        f"Machine: {m.get('cpu', '?')}, {m.get('logical_cpus', '?')} logical CPUs "
        f"({', '.join(f for f in m.get('cpu_flags', []) if f.startswith(KEY_FLAGS))}), "
        f"{(m.get('mem_total_bytes') or 0) / 2**30:.0f} GiB; {m.get('platform', '')}.",
        f"Versions: fastfem {v.get('fastfem')}, jax/jaxlib {v.get('jax')}/{v.get('jaxlib')}, "
        f"keras {v.get('keras')}, tensorflow {v.get('tensorflow')} (oneDNN: "
        f"{tf.get('tf_onednn', '?')}), xplique {v.get('xplique')}; JAX devices: "
        f"{', '.join(workers.get('jax', {}).get('jax_devices', []))}.",
        "",
        "Method: a coordinator drives one persistent worker per Keras backend (JAX for fastfem, "
        "TensorFlow for Xplique and the TF peers); every candidate is warmed up (the first call, "
        "compilation included, is reported apart), then timed one repetition at a time in "
        "interleaved rounds (A B C, B C A, C A B, ...), so only one worker computes at a time "
        "and all candidates see the same machine conditions. Cells: median (min–max) over rounds; "
        "ratios are paired per round. *Foreign CPUs* is the CPU time other processes used "
        "during the repetitions (from /proc/stat), in cores: the noise level of a shared machine.",
        "",
        "Sources: "
        + ", ".join(
            sorted({f"`{x['file']}`" + (" (quick)" if x["quick"] else "") for x in meta.values()})
        ),
        "",
    ]
    return lines


def _compile_s(cand: dict[str, Any]) -> float:
    """JAX: measured trace + lower + compile of the first call; TF: first call - median call."""
    if cand.get("backend") == "jax" and cand.get("jax_compile_s_first_call") is not None:
        return cand["jax_compile_s_first_call"]
    return cand["compile_s_est"]


def section_fem(configs: dict[str, Any], meta: dict[str, dict]) -> list[str]:
    keys = [k for k in ("fem_cnn", "fem_resnet50", "fem_mobilenetv2") if k in configs]
    if not keys:
        return []
    rows, ratios, compile_rows = [], [], []
    for k in keys:
        r = configs[k]
        best = next((n for n in r["candidates"] if n.startswith("xplique_bs")), None)
        q = " (quick)" if meta[k]["quick"] else ""
        rows.append(
            [
                f"{r['model']}{q}",
                str(r["n"]),
                str(r["batch_size"]),
                spread(ips(r, "fastfem")),
                spread(ips(r, "limit")),
                spread(ips(r, "xplique")),
                f"{spread(ips(r, best))} @ {best[len('xplique_bs') :]}" if best else "–",
                spread(ips(r, "tf_forward_function")),
                spread(ips(r, "tf_forward_eager")),
                noise(r),
            ]
        )
        rr = r["ratios"]
        ratios.append(
            [
                r["model"],
                ratio_cell(rr.get("fastfem/xplique"), 2.0),
                ratio_cell(rr.get(f"fastfem/{best}"), 2.0) if best else "–",
                ratio_cell(rr.get("fastfem/limit"), 0.95),
                ratio_cell(rr.get("limit/tf_forward_function")),
                ratio_cell(rr.get("fastfem/tf_forward_function")),
            ]
        )
        cands = r["candidates"]
        compile_rows.append(
            [r["model"]]
            + [
                f"{cands[n]['first_call_s']:.2f} / {_compile_s(cands[n]):.2f}"
                if n in cands
                else "–"
                for n in ("fastfem", "limit", "xplique", "tf_forward_function")
            ]
        )
        diff = (r.get("output_diff") or {}).get("fastfem vs xplique")
        if diff:
            compile_rows[-1].append(f"{diff['max_rel_diff']:.1e} / {diff['mean_rel_diff']:.1e}")
        else:
            compile_rows[-1].append("–")
    out = ["## FEM: fastfem vs Xplique vs the forward pass", ""]
    out += table(
        [
            "model",
            "N",
            "fastfem batch",
            "fastfem img/s",
            "limit img/s",
            "Xplique (bs 32) img/s",
            "Xplique best bs",
            "TF fwd tf.function",
            "TF fwd eager bs 32",
            "foreign CPUs",
        ],
        rows,
    )
    out += [
        "",
        "*limit*: fastfem's own batch loop (same batch, padding, NumPy in) around the jitted "
        "Keras-JAX forward pass up to the explained layer, activations summed per image on the "
        "device; *TF fwd*: TensorFlow's forward pass to the same layer, summed per image.",
        "",
    ]
    out += table(
        [
            "model",
            "fastfem / Xplique (target ≥ 2)",
            "fastfem / Xplique best bs (≥ 2)",
            "fastfem / limit (target ≥ 0.95)",
            "limit / TF fwd tf.function",
            "fastfem / TF fwd tf.function",
        ],
        ratios,
    )
    out += [
        "",
        "First call (s, compilation included) / compile time (s; JAX: measured trace + lower + "
        "compile; TF: first call − median call):",
        "",
    ]
    out += table(
        [
            "model",
            "fastfem",
            "limit",
            "Xplique",
            "TF fwd tf.function",
            "max / mean abs(fastfem − Xplique) / max abs(Xplique)",
        ],
        compile_rows,
    )
    return out + [""]


def _what(cand: dict[str, Any]) -> str:
    """The candidate's label, else its factory and the arguments that tell candidates apart."""
    if cand.get("label"):
        return cand["label"]
    keys = ("batch_size", "n_pairs", "bf16", "resize", "kind", "dtype", "jit_compile", "mode")
    args = ", ".join(f"{k}={cand['kwargs'][k]}" for k in keys if k in cand.get("kwargs", {}))
    return f"`{cand.get('factory', '').split(':')[-1]}({args})`"


def section_generic(
    title: str, res: dict[str, Any], note: str, bounds: dict[str, float] | None = None
) -> list[str]:
    rows = [
        [n, spread(c["items_per_s"]), f"{c['first_call_s']:.2f}", _what(c)]
        for n, c in res["candidates"].items()
    ]
    out = [f"## {title}", "", note, ""]
    out += table(["candidate", "items/s", "first call s", "what"], rows)
    out += [""]
    rr = res.get("ratios", {})
    if rr:
        out += table(
            ["ratio", "median (min–max)"],
            [[k, ratio_cell(v, (bounds or {}).get(k))] for k, v in rr.items()],
        )
        out += [""]
    for k, d in (res.get("output_diff") or {}).items():
        if "max_rel_diff" in d:
            out.append(
                f"- {k}: max |diff| / max|ref| = {d['max_rel_diff']:.2e}, "
                f"mean = {d['mean_rel_diff']:.2e}"
            )
    out += [f"- foreign CPUs during the rounds: {noise(res)}", ""]
    return out


def section_kernel(res: dict[str, Any]) -> list[str]:
    rows = []
    for name, r in res["shapes"].items():
        c0 = next(iter(r["candidates"].values()))["info"]
        b = r["bandwidth"]
        rows.append(
            [
                f"{name} {tuple(c0['feature_shape'])} x{c0['batch']}",
                f"{b['read_gb_s']}",
                f"{b['copy_gb_s (read + write)']}",
                f"{b['fem_gb_s (activation bytes / time)']}",
                f"{b['fem_fraction_of_read']:.2f}",
                f"{b['fem_fraction_of_copy']:.2f}",
                f"{b['fem_resize_fraction_of_read']:.2f}",
                f"{b['us_per_image_fem']:.1f}",
                ratio_cell(b["fem_bf16_speedup_vs_f32"]),
            ]
        )
    out = [
        "## FEM kernel alone vs moving the activations",
        "",
        "Device-resident activations; *read*: `sum(a)` per image (one read); *copy*: `-a` (one "
        "read + one write, new buffer); *fem*: `fem_map` (xplique variant). Fractions: the "
        "kernel's activation bytes per second over the read's (1.0 = as fast as one read of "
        "its input) and over the copy's.",
        "",
    ]
    out += table(
        [
            "shape",
            "read GB/s",
            "copy GB/s",
            "fem GB/s",
            "fem / read",
            "fem / copy",
            "fem+resize / read",
            "µs / image (fem)",
            "bf16 / f32 speed",
        ],
        rows,
    )
    return out + [""]


def section_scaling(res: dict[str, Any]) -> list[str]:
    rows = []
    for n, r in res["sizes"].items():
        cands = r["candidates"]
        f, x = cands[f"fastfem@{n}"], cands[f"xplique@{n}"]
        rows.append(
            [
                n,
                f"{1000 / f['items_per_s']['median']:.3f}",
                f"{1000 / x['items_per_s']['median']:.3f}",
                ratio_cell(r["ratios"]["fastfem/xplique"]),
                f"{f['peak_rss_mb']['median']:.0f} / +{f['peak_over_start_mb']['median']:.0f}",
                f"{x['peak_rss_mb']['median']:.0f} / +{x['peak_over_start_mb']['median']:.0f}",
                noise(r),
            ]
        )
    out = [
        "## Scaling in N (bundled CNN, 64x64)",
        "",
        "Peak RSS of each worker during the explain call (MB) / its growth above the RSS just "
        "before the call (the output alone is N x 16 KiB). ![scaling](scaling.png)",
        "",
    ]
    out += table(
        [
            "N",
            "fastfem ms/img",
            "Xplique ms/img",
            "fastfem / Xplique",
            "fastfem peak / growth MB",
            "Xplique peak / growth MB",
            "foreign CPUs",
        ],
        rows,
    )
    return out + [""]


def section_sweep(res: dict[str, Any]) -> list[str]:
    s = res["series"]
    sizes = sorted({int(b) for series in s.values() for b in series})
    rows = []
    for b in sizes:
        rows.append(
            [
                str(b),
                spread(s["fastfem"].get(str(b)) or s["fastfem"].get(b)),
                spread(s["limit"].get(str(b)) or s["limit"].get(b)),
                ratio_cell(res["ratios"].get(f"fastfem/limit@{b}")),
                spread(s["xplique"].get(str(b)) or s["xplique"].get(b)),
            ]
        )
    out = [
        f"## Batch size sweep (bundled CNN, N={res['n']})",
        "",
        "![batch sweep](batch_sweep.png)",
        "",
    ]
    out += table(
        ["batch", "fastfem img/s", "limit img/s", "fastfem / limit", "Xplique img/s"], rows
    )
    return out + ["", f"- foreign CPUs: {noise(res)}", ""]


def section_malloc(res: dict[str, Any]) -> list[str]:
    rows = []
    for name, c in res["candidates"].items():
        rows.append(
            [
                name,
                spread(c["items_per_s"]),
                spread(res["page_faults_per_call"][name]),
                spread(res["sys_s_per_call"][name]),
            ]
        )
    out = [
        f"## Allocator: glibc default vs fixed mmap threshold (bundled CNN, N={res['n']})",
        "",
        "Minor page faults and system CPU seconds per call. XLA:CPU allocates its per-step "
        "buffers with malloc; whether glibc serves them from the heap or from fresh mmap'ed "
        "pages depends on the process's allocation history (default) or on their size (fixed "
        "32 MiB threshold), and each fresh page costs a fault.",
        "",
    ]
    out += table(["candidate", "images/s", "page faults / call", "system s / call"], rows)
    out += [""]
    out += table(
        ["ratio", "median (min–max)"], [[k, ratio_cell(v)] for k, v in res["ratios"].items()]
    )
    return out + [f"- foreign CPUs: {noise(res)}", ""]


def render_markdown(configs: dict[str, Any], meta: dict[str, dict]) -> str:
    out = section_header(meta)
    out += section_fem(configs, meta)
    if "tf_graph_peers" in configs:
        out += section_generic(
            "TF graph-mode peers (Xplique's formula in tf.function / XLA)",
            configs["tf_graph_peers"],
            f"Bundled CNN, N={configs['tf_graph_peers'].get('n')}.",
        )
    if "fam" in configs:
        out += section_generic(
            "FAM pairs: fastfem vs the eager-TF reference",
            configs["fam"],
            f"Bundled CNN, {configs['fam'].get('pairs')} pairs (items = pairs; 2 images each).",
            {"fastfem_fam/fam_tf": 3.0, "fastfem_fam/fam_tf_bs64": 3.0},
        )
    if "mlfem" in configs:
        out += section_generic(
            "MLFEM",
            configs["mlfem"],
            f"Bundled CNN, N={configs['mlfem'].get('n')}, layers {configs['mlfem'].get('layers')}.",
        )
    if "kernel" in configs:
        out += section_kernel(configs["kernel"])
    if "scaling" in configs:
        out += section_scaling(configs["scaling"])
    if "batch_sweep" in configs:
        out += section_sweep(configs["batch_sweep"])
    if "bf16" in configs:
        out += section_generic(
            "bfloat16 vs float32 (model under mixed_bfloat16)",
            configs["bf16"],
            f"Bundled CNN, N={configs['bf16'].get('n')}.",
        )
    if "audit" in configs:
        a = configs["audit"]
        out += section_generic(
            "Audit: PNG folder -> Parquet vs in-memory explain",
            a,
            f"{a.get('n')} PNG files. The audit call is timed whole (it builds and compiles its "
            f"step every call: {spread(a.get('audit_compile_s_per_call'))} s of JAX compile "
            f"per call); without that compile time: "
            f"{spread(a.get('audit_excluding_compile_images_per_s'))} img/s; the audit's own "
            f"loop figure: {spread(a.get('audit_loop_images_per_s'))} img/s.",
            {"audit/explain": 0.8, "audit/explain_feature_res": 0.8},
        )
    if "malloc" in configs:
        out += section_malloc(configs["malloc"])
    if "decode_threads" in configs:
        out += section_decode_threads(configs["decode_threads"])
    return "\n".join(out).rstrip() + "\n"


def section_decode_threads(res: dict[str, Any]) -> list[str]:
    """Host decoding vs threads: img/s, ms per image, speed-up over one thread."""
    rows = []
    for name, c in res["candidates"].items():
        r = res.get("ratios", {}).get(f"{name}/threads_1")
        rows.append(
            [
                str(c["info"].get("threads", name)),
                spread(c["items_per_s"]),
                spread(res["ms_per_image"][name]),
                spread(
                    {
                        k: v / 1000 if k in ("median", "min", "max") else v
                        for k, v in c["cpu_us_per_item"].items()
                    }
                ),
                ratio_cell(r) if r else "1",
            ]
        )
    d = res.get("default_threads") or {}
    note = (
        f"The audit's host side alone (listing, reading, JPEG draft decoding, crop to 224x224; "
        f"no device) on {res.get('n')} photo-like files ({res.get('photo')}), "
        f"{res.get('cores')} usable cores; the audit's default threads here: {d.get('cpu')} "
        f"with the model on the CPU, {d.get('gpu')} on an accelerator. Wall time per image "
        "counts other processes' load (foreign CPUs below); the CPU time per image does not."
    )
    out = ["## Host decoding vs threads", "", note, ""]
    out += table(["threads", "img/s", "ms per image", "CPU ms per image", "vs 1 thread"], rows)
    return out + ["", f"- foreign CPUs during the rounds: {noise(res)}", ""]


# --------------------------------------------------------------------------------- plots


def plot_scaling(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = sorted(int(n) for n in res["sizes"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for side, color in (("fastfem", "C0"), ("xplique", "C1")):
        cands = [res["sizes"][str(n)]["candidates"][f"{side}@{n}"] for n in ns]
        med = [1000 / c["items_per_s"]["median"] for c in cands]
        lo = [1000 / c["items_per_s"]["max"] for c in cands]
        hi = [1000 / c["items_per_s"]["min"] for c in cands]
        ax1.errorbar(
            ns,
            med,
            yerr=[
                [m - a for m, a in zip(med, lo, strict=True)],
                [b - m for m, b in zip(med, hi, strict=True)],
            ],
            marker="o",
            color=color,
            label=side,
            capsize=3,
        )
        ax2.plot(
            ns,
            [c["peak_over_start_mb"]["median"] for c in cands],
            marker="o",
            color=color,
            label=f"{side}: growth during explain",
        )
        ax2.plot(
            ns,
            [c["peak_rss_mb"]["median"] for c in cands],
            marker="s",
            ls="--",
            color=color,
            label=f"{side}: peak RSS",
        )
    ax2.plot(
        ns, [n * 16 / 1024 for n in ns], color="gray", ls=":", label="output size (N x 16 KiB)"
    )
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("N images (64x64)")
        ax.grid(alpha=0.3)
    ax1.set_ylabel("ms / image (median, min–max)")
    ax1.set_title("time per image")
    ax2.set_ylabel("MB")
    ax2.set_yscale("log")
    ax2.set_title("memory")
    ax1.legend()
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sweep(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, color in (("fastfem", "C0"), ("limit", "C2"), ("xplique", "C1")):
        series = res["series"][key]
        bs = sorted(int(b) for b in series)
        s = [series.get(str(b)) or series.get(b) for b in bs]
        med = [x["median"] for x in s]
        ax.errorbar(
            bs,
            med,
            yerr=_yerr(med, s),
            marker="o",
            capsize=3,
            color=color,
            label=key,
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s (median, min–max)")
    ax.set_title(f"bundled CNN, N={res['n']}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_fem(configs: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("fem_cnn", "fem_resnet50", "fem_mobilenetv2") if k in configs]
    if not keys:
        return
    names = ["fastfem", "limit", "xplique", "tf_forward_function", "tf_forward_eager"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.6), squeeze=False)
    for ax, k in zip(axes[0], keys, strict=True):
        r = configs[k]
        present = [n for n in names if n in r["candidates"]]
        s = [r["candidates"][n]["items_per_s"] for n in present]
        med = [x["median"] for x in s]
        ax.bar(
            range(len(present)),
            med,
            color=[f"C{i}" for i in range(len(present))],
            yerr=_yerr(med, s),
            capsize=3,
        )
        ax.set_xticks(
            range(len(present)),
            [n.replace("tf_forward_", "TF fwd ") for n in present],
            rotation=30,
            ha="right",
        )
        ax.set_title(f"{r['model']} (N={r['n']})")
        ax.set_ylabel("images / s")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _yerr(med: list[float], s: list[dict[str, Any]]) -> list[list[float]]:
    """Asymmetric error bars (min, max) around the medians."""
    return [
        [m - x["min"] for m, x in zip(med, s, strict=True)],
        [x["max"] - m for m, x in zip(med, s, strict=True)],
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="result JSON files (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="output folder")
    args = parser.parse_args(argv)
    files = args.files or sorted([*RESULTS.glob("bench_fem*.json"), *RESULTS.glob("run-*.json")])
    configs, meta = load_configs(files)
    if not configs:
        print("no results found", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "TABLE.md").write_text(render_markdown(configs, meta))
    if "scaling" in configs:
        plot_scaling(configs["scaling"], args.out / "scaling.png")
    if "batch_sweep" in configs:
        plot_sweep(configs["batch_sweep"], args.out / "batch_sweep.png")
    plot_fem(configs, args.out / "fem_throughput.png")
    print(f"wrote {args.out / 'TABLE.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
