#!/usr/bin/env python3
"""Prints kvtier-eval prefix's JSON as a table and, with --png, plots time
to first token with and without prefix reuse against the shared prefix.

    prefix_report.py REPORT.json [--png OUT.png]
"""
from report_table import load_report, pyplot, save_figure, table


def main():
    rep, png = load_report(__doc__)
    rows = rep["results"]
    cols = ["prefix", "TTFT recompute s", "TTFT reuse s", "speedup", "estimate",
            "reused tok", "pages", "MiB", "load s", "get MiB/s", "load/ideal",
            "hand-off s"]
    rows_text = []
    for r in rows:
        est = ("load" if r["load"] else "recompute") if r["decided"] else "-"
        rows_text.append([str(r["prefix_tokens"]), f"{r['ttft_recompute_s']:.3f}",
                      f"{r['ttft_reuse_s']:.3f}", f"{r['speedup']:.1f}x", est,
                      str(r["reused_tokens"]), str(r["pages_loaded"]),
                      f"{r['bytes_loaded'] / 2**20:.1f}", f"{r['load_busy_s']:.3f}",
                      f"{r['get_bytes_per_s'] / 2**20:.0f}", f"{r['load_vs_bandwidth']:.2f}",
                      # the reuse request's hand-off to the cache, after its first token
                      f"{r['handoff_reuse_s']:.3f}" if "handoff_reuse_s" in r else "-"])
    print(f"store {rep['store']}, policy {rep['policy']} at 1/{rep['budget_fraction']}, "
          f"pages of {rep['page_size']} tokens")
    print(table(rows_text, cols))
    if not png:
        return
    plt = pyplot()
    xs = [r["prefix_tokens"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, [r["ttft_recompute_s"] for r in rows], "o-", label="recompute")
    ax.plot(xs, [r["ttft_reuse_s"] for r in rows], "s-", label="prefix reuse")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("shared prefix (tokens)")
    ax.set_ylabel("time to first token (s)")
    ax.set_title(f"TTFT, {rep['policy']} at 1/{rep['budget_fraction']}, store {rep['store']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save_figure(fig, png)


if __name__ == "__main__":
    main()
