#!/usr/bin/env python3
"""Prints kvtier-eval continuation's JSON as a table and, with --png, plots
each policy's greedy agreement with the full cache against the
continuation length.

    continuation_report.py REPORT.json [--png OUT.png]
"""
from report_table import load_report, pyplot, save_figure, table


def main():
    rep, png = load_report(__doc__)
    lengths = rep["lengths"]
    cols = (["policy", "budget"] + [f"agree@{n}" for n in lengths] +
            [f"KL@{n}" for n in lengths] + ["identical", "repetition", "reference rep."])
    rows_text = []
    for r in rep["results"]:
        budget = "all" if r["policy"] == "full" else f"1/{r['budget_fraction']}"
        if "error" in r:
            rows_text.append([r["policy"], budget, r["error"]] + [""] * (len(cols) - 3))
            continue
        rows_text.append([r["policy"], budget] + [f"{a:.3f}" for a in r["agreement"]] +
                     [f"{k:.4f}" for k in r["mean_kl"]] +
                     [f"{r['identical_prefix']:.1f}", f"{r['repetition']:.3f}",
                      f"{r['reference_repetition']:.3f}"])
    unit = ("all layers' KV bytes within 1/N of the full cache's"
            if rep.get("budget_unit") == "memory" else "1/N of the context in every layer")
    print(f"{len(rep['prompts'])} prompts, context {rep['context']} tokens; budget 1/N = "
          f"{unit}; agreement and KL teacher-forced on the full cache's greedy tokens; "
          f"identical = tokens a free run shares with it; repetition = share of repeated "
          f"4-grams in a free run")
    print(table(rows_text, cols))
    if not png:
        return
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rep["results"]:
        if "error" in r or r["policy"] == "full":
            continue
        ax.plot(lengths, r["agreement"], "o-", label=f"{r['policy']} 1/{r['budget_fraction']}")
    ax.set_xscale("log", base=2)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("continuation length (tokens)")
    ax.set_ylabel("greedy agreement with the full cache")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, png)


if __name__ == "__main__":
    main()
