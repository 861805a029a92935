#!/usr/bin/env python3
"""Prints kvtier-eval's fidelity JSON as tables and, with --png, plots
accuracy versus budget per policy.

    fidelity_report.py REPORT.json [--png OUT.png]

Panels: end-to-end greedy agreement and passkey accuracy (when the JSON has
end-to-end runs), and 1 - mean relative attention-output error on the trace,
each against the budget fraction, one line per policy (uniform budgets;
XKV/LU-KV dashed/dotted where present).
"""
import sys

from report_table import load_report, pyplot, table


def print_report(rep):
    t = rep["trace"]
    print(f"trace: {t['prompt_tokens']} prompt tokens + {t['decode_steps']} decode steps, "
          f"{t['layers']} layers, {t['q_heads']}/{t['kv_heads']} heads x {t['head_dim']}, "
          f"pages of {t['page_size']} ({t['task']})\n")
    print("page estimators vs exact per-page max attention (mean over steps x layers)")
    rows = [[e["digest"], e.get("selection", "shared"), str(e["k"]), f"{e['recall']:.3f}",
             f"{e['mass']:.3f}"] for e in rep["estimators"]]
    print(table(rows, ["digest", "selection", "k", "recall@k", "mass@k"]) + "\n")
    print("policies on the trace (attention output vs full cache, per decode step over all layers)")
    errors = [f"  {p['policy']} 1/{p['budget_fraction']} {p['allocator']}: {p['error']}"
              for p in rep["policies"] if "error" in p]
    rows = [[p["policy"], f"1/{p['budget_fraction']}", str(p["budget_pages"]), p["allocator"],
             f"{p['mean_rel_error']:.4f}", f"{p['max_rel_error']:.4f}",
             f"{p['pages_attended_per_step']:.0f}", f"{p['pages_recalled_per_step']:.1f}",
             f"{p['bytes_recalled_per_step'] / 1024:.0f}"]
            for p in rep["policies"] if "error" not in p]
    print(table(rows, ["policy", "budget", "pages/layer", "alloc", "rel err", "max err",
                       "attended", "recalled", "KiB recalled"]))
    if errors:
        print("not run (the policy refuses the budget):\n" + "\n".join(errors))
    print()
    e2e = rep.get("end_to_end")
    if e2e:
        cases = ", ".join(f"{c['prompt_tokens']} tok @ {100 * c['depth']:.0f}%"
                          for c in e2e["cases"])
        print(f"end to end: passkey, {len(e2e['cases'])} cases ({cases}), "
              "teacher-forced on the answer tokens")
        errors = [f"  {r['policy']} 1/{r['budget_fraction']}: {r['error']}"
                  for r in e2e["results"] if "error" in r]
        rows = [[r["policy"], f"1/{r['budget_fraction']}", str(r["budget_tokens"]),
                 f"{r['greedy_agreement']:.3f}", f"{r['mean_kl']:.4f}",
                 f"{r['passkey_accuracy']:.2f}", f"{r['pages_recalled_per_step']:.1f}",
                 f"{r['bytes_recalled_per_step'] / 1024:.0f}"]
                for r in e2e["results"] if "error" not in r]
        print(table(rows, ["policy", "budget", "tokens", "agreement", "mean KL", "passkey",
                           "recalled/step", "KiB/step"]))
        if errors:
            print("not run (the policy refuses the budget):\n" + "\n".join(errors))


def plot(rep, path):
    plt = pyplot()
    from matplotlib.lines import Line2D

    e2e = rep.get("end_to_end")
    panels = [("trace", "trace: 1 - mean rel. attention error")]
    if e2e:
        panels = [("agreement", "end to end: greedy agreement vs full"),
                  ("passkey", "end to end: passkey accuracy")] + panels
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels) + 2.2, 4.6),
                             squeeze=False)
    styles = {"uniform": "-", "xkv": "--", "lukv": ":"}
    order = ["full", "sliding_window", "streaming_llm", "h2o", "tova", "quest", "arkvale",
             "arkv"]
    markers = "osv^DPX*"
    cmap = plt.get_cmap("tab10")
    idx = lambda policy: order.index(policy) if policy in order else len(order) - 1
    seen = set()
    for ax, (kind, title) in zip(axes[0], panels):
        series = {}
        if kind == "trace":
            for p in rep["policies"]:
                if p["policy"] == "full" or "error" in p:
                    continue
                series.setdefault((p["policy"], p["allocator"]), []).append(
                    (p["budget_fraction"], 1 - p["mean_rel_error"]))
        else:
            field = "greedy_agreement" if kind == "agreement" else "passkey_accuracy"
            for r in e2e["results"]:
                if r["policy"] == "full" or "error" in r:
                    continue
                series.setdefault((r["policy"], "uniform"), []).append(
                    (r["budget_fraction"], r[field]))
        for (policy, alloc), pts in sorted(series.items()):
            pts.sort(reverse=True)
            i = idx(policy)
            # Policies that coincide stay visible: each is nudged sideways.
            xs = [(1 / f) * 2 ** (0.035 * (i - 4)) for f, _ in pts]
            ax.plot(xs, [y for _, y in pts], styles.get(alloc, "-"), marker=markers[i % 8],
                    color=cmap(i), markersize=5, linewidth=1.4, alpha=0.9)
            seen.add(policy)
        ax.set_xscale("log", base=2)
        fractions = sorted({p["budget_fraction"] for p in rep["policies"]})
        ax.set_xticks([1 / f for f in fractions], [f"1/{f}" for f in fractions])
        ax.minorticks_off()
        ax.set_xlabel("KV budget (fraction of the context)")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], color=cmap(idx(p)), marker=markers[idx(p) % 8], label=p)
               for p in order if p in seen]
    handles += [Line2D([], [], color="black", linestyle=styles[a], label=f"{a} budgets")
                for a in ("uniform", "xkv", "lukv")
                if any(p.get("allocator") == a for p in rep["policies"])]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    t = rep["trace"]
    fig.suptitle(f"kvtier-eval: {t['prompt_tokens'] + t['decode_steps']}-token trace"
                 + (f", {e2e['context']}-token passkey runs ({len(e2e['cases'])} cases)"
                    if e2e else ""))
    fig.tight_layout(rect=(0, 0, 1 - 2.0 / (5.0 * len(panels) + 2.2), 1))
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}", file=sys.stderr)


def main():
    rep, png = load_report(__doc__)
    print_report(rep)
    if png:
        plot(rep, png)


if __name__ == "__main__":
    main()
