#!/usr/bin/env python3
"""Prints kvtier-eval needles' JSON as a table and, with --png, plots each
policy's accuracy (with its 95% Wilson interval) against the budget.

    needle_report.py REPORT.json [--png OUT.png]
"""
from report_table import load_report, pyplot, save_figure, table


def label(r):
    """The policy, with its layer budget allocator unless uniform."""
    a = r.get("allocator", "uniform")
    return r["policy"] if a == "uniform" else f"{r['policy']}+{a}"


def split(tally):
    return " ".join(f"{k} {c}/{n}" for k, (c, n) in sorted(tally.items()))


def main():
    rep, png = load_report(__doc__)
    rows = rep["results"]
    cols = ["context", "policy", "budget", "found", "accuracy", "95% CI", "resident",
            "digests", "agreement", "KL", "by task", "by filler", "by format"]
    rows_text = []
    for r in rows:
        budget = "all" if r["policy"] == "full" else f"1/{r['budget_fraction']}"
        if "error" in r:
            rows_text.append([str(r["context"]), label(r), budget, "-", "-", "-", "-", "-",
                              "-", "-", r["error"], "", ""])
            continue
        lo, hi = r["ci95"]
        rows_text.append([str(r["context"]), label(r), budget, f"{r['correct']}/{r['cases']}",
                      f"{r['accuracy']:.3f}", f"{lo:.2f}-{hi:.2f}",
                      f"{r['resident_fraction']:.3f}",
                      f"{r.get('digest_fraction', 0.0):.3f}", f"{r['greedy_agreement']:.3f}",
                      f"{r['mean_kl']:.4f}", split(r["by_task"]), split(r["by_filler"]),
                      split(r["by_format"])])
    memory = rep.get("budget_unit") == "memory"
    unit = ("1/N = all layers' KV bytes within 1/N of the full cache's" if memory
            else "1/N = 1/N of the context in every budgeted layer")
    print(f"{len(rep['cases'])} cases, pages of {rep['page_size']} tokens, "
          f"{rep.get('digest_type', 'f32')} digests; budget {unit}; "
          f"resident = peak KV bytes held / the full cache's; digests = peak bytes of the "
          f"page digests a policy scores by / the full cache's KV bytes (not in resident)")
    print(table(rows_text, cols))
    if not png:
        return
    plt = pyplot()
    ok = [r for r in rows if "error" not in r]
    contexts = sorted({r["context"] for r in ok})
    fig, axes = plt.subplots(1, len(contexts), figsize=(6 * len(contexts), 4), squeeze=False)
    for ax, context in zip(axes[0], contexts):
        here = [r for r in ok if r["context"] == context]
        full = [r for r in here if r["policy"] == "full"]
        names = sorted({label(r) for r in here} - {"full"})
        for i, name in enumerate(names):
            pts = sorted((r for r in here if label(r) == name),
                         key=lambda r: r["budget_fraction"])
            # Policies side by side around each budget, so the bars do not hide each other.
            shift = 2 ** (0.05 * (i - (len(names) - 1) / 2))
            xs = [shift / r["budget_fraction"] for r in pts]
            ys = [r["accuracy"] for r in pts]
            err = [[r["accuracy"] - r["ci95"][0] for r in pts],
                   [r["ci95"][1] - r["accuracy"] for r in pts]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name)
        if full:
            ax.axhline(full[0]["accuracy"], color="k", linestyle="--", label="full cache")
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("budget (fraction of the full cache's memory)" if memory
                      else "budget (fraction of the context per layer)")
        ax.set_ylabel("retrieval accuracy")
        ax.set_title(f"{context}-token prompts, {here[0]['cases']} cases")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, png)


if __name__ == "__main__":
    main()
